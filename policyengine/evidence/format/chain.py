"""Walk the hash chains of an archive and name every break.

Each bundle records the SHA-256 of the previous bundle (the whole zip) of the same repository
and environment, and its sequence number in that chain. Walking a chain in recorded order,
each bundle's ``previous`` must be the digest of the bundle recorded just before it. When it
is not, the walk says what the break looks like:

* ``previous`` names nothing in the archive: a bundle before it was **deleted**;
* ``previous`` names a bundle recorded after it: bundles were **reordered** (swapped);
* two bundles name the same ``previous``: one of them was **inserted** or **replayed**;
* a bundle starts a new chain in the middle of one: a bundle was **inserted**;
* two records hold byte-identical bundles: one is a **replay** of the other.

Pure: the caller reads the bundles and passes what it found.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from msgspec import Struct

from policyengine.evidence.format.bundle import VerifyProblem

UNKNOWN = "?"  # a bundle whose manifest could not be read: its link is not checked


class ChainEntry(Struct, frozen=True):
    """One recorded bundle as the chain walk sees it.

    ``actual_sha256`` is None when the bundle could not be read; ``previous_sha256`` is
    ``UNKNOWN`` when its manifest could not be read, None when it starts its chain.
    """

    id: str
    key: tuple[str | None, str | None]
    recorded_sha256: str
    actual_sha256: str | None
    previous_sha256: str | None
    sequence: int | None


def _name(key: tuple[str | None, str | None]) -> str:
    return f"{key[0] or '(no repository)'} / {key[1] or '(no environment)'}"


def walk(entries: Sequence[ChainEntry], report_ids: Iterable[str] | None = None) -> list[VerifyProblem]:
    """Return a ``chain`` or ``replay`` problem for every break; ``entries`` in recorded order.

    Only problems of bundles in ``report_ids`` are returned (every bundle when None).
    """
    wanted = set(report_ids) if report_ids is not None else None
    digest_of = {e.id: e.actual_sha256 or e.recorded_sha256 for e in entries}
    holders: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        holders[digest_of[e.id]].append(e.id)
    followers: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        if e.previous_sha256 not in (None, UNKNOWN):
            followers[e.previous_sha256].append(e.id)

    chains: dict[tuple[str | None, str | None], list[ChainEntry]] = defaultdict(list)
    for e in entries:
        chains[e.key].append(e)
    position = {e.id: (e.key, i) for key, chain in chains.items() for i, e in enumerate(chain)}

    problems: list[VerifyProblem] = []

    def problem(bundle_id: str, check: str, message: str) -> None:
        if wanted is None or bundle_id in wanted:
            problems.append(VerifyProblem(bundle_id, None, check, message))

    for digest, ids in holders.items():
        for copy in ids[1:]:
            problem(copy, "replay", f"bundle {copy} is byte-identical to bundle {ids[0]} (sha256 {digest}): "
                    "an old bundle was replayed under a new name")

    for key, chain in chains.items():
        expected: str | None = None
        before: str | None = None
        last_seq: int | None = 0
        for i, e in enumerate(chain):
            prev = e.previous_sha256
            if prev != UNKNOWN and prev != expected:
                where = f"in the chain of {_name(key)}"
                if prev is None:
                    message = (f"bundle {e.id} starts a new chain {where}, but bundle {before} comes before it: "
                               "a bundle was inserted, or the chain was cut")
                elif prev not in holders:
                    message = (f"bundle {e.id} names as its previous bundle sha256 {prev}, which is not in the "
                               f"archive: a bundle {'after ' + before + ' ' if before else ''}was deleted")
                else:
                    other = holders[prev][0]
                    other_key, other_pos = position[other]
                    if other_key != key:
                        message = (f"bundle {e.id} names bundle {other} of the chain of {_name(other_key)} as "
                                   f"its previous bundle {where}: a bundle was moved between chains")
                    elif other_pos > i:
                        message = (f"bundle {e.id} names bundle {other}, recorded after it, as its previous bundle "
                                   f"{where}: bundles were reordered or swapped")
                    elif len(followers[prev]) > 1:
                        rivals = ", ".join(x for x in followers[prev] if x != e.id)
                        message = (f"bundle {e.id} and bundle {rivals} both name bundle {other} as their previous "
                                   f"bundle {where}: one of them was inserted or replayed")
                    else:
                        message = (f"bundle {e.id} names bundle {other} as its previous bundle, but follows bundle "
                                   f"{before} {where}: a bundle was inserted or bundles were reordered")
                problem(e.id, "chain", message)
            elif e.sequence is not None and last_seq is not None and e.sequence != last_seq + 1 and prev != UNKNOWN:
                problem(e.id, "chain", f"bundle {e.id} has sequence {e.sequence} but follows sequence {last_seq} "
                        f"in the chain of {_name(key)}")
            expected = digest_of[e.id]
            before = e.id
            last_seq = e.sequence
    return problems
