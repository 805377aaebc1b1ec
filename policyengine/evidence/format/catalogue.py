"""The store catalogue: which chains a store holds, how long each is, and one head for the whole store.

Every store keeps, beside its bundles, a numbered series of catalogues (``catalogue/<n>.json`` in
a folder or a git store, ``<prefix>/_catalogue/<n>.json`` in S3). Catalogue ``n`` lists every
chain of the store (repository and environment) with its length (the sequence of its newest
bundle), that bundle's id and SHA-256, and names the SHA-256 of catalogue ``n - 1``. It is an
in-toto Statement v1 in a DSSE envelope (predicate type ``CATALOGUE_PREDICATE_TYPE``), signed
with the writer's key where bundles are signed; its subjects are the chains' head bundles.

The **store head** is the SHA-256 of the newest catalogue's bytes. Each write makes a new
catalogue (the one before it, with the written bundle's chain moved forward), so the store head
changes with each write and ``check`` prints it. Anchored outside the store, one store head
covers every chain: ``evidence verify --head STOREHEAD`` fails when the catalogue it names is
gone, when a later catalogue does not descend from it, or when a chain it (or any later
catalogue) knows is absent or shorter than it says.

Pure: the stores read and write the bytes; this module builds, parses and checks them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from msgspec import Struct

from policyengine.evidence.format.bundle import (
    NEWER_VERSION,
    READABLE_SCHEMA_VERSIONS,
    VerifyProblem,
    newer_version_message,
)
from policyengine.evidence.format.signing import (
    STATEMENT_TYPE,
    SigningKey,
    envelope,
    open_envelope,
)

CATALOGUE_PREDICATE_TYPE = "https://policyengine.dev/attestation/catalogue/v1"
CATALOGUE_SCHEMA_VERSION = 3
"""The evidence schema version that introduced catalogues (``bundle.SCHEMA_VERSION``)."""
CATALOGUE_DIR = "catalogue"
_NAME_RE = re.compile(r"^([0-9]{12})\.json$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

Key = tuple[str | None, str | None]


def catalogue_name(sequence: int) -> str:
    """The file name of catalogue ``sequence`` (zero-padded: names sort as numbers)."""
    return f"{sequence:012d}.json"


def sequence_of_name(name: str) -> int | None:
    """The sequence a catalogue file name carries, None for any other name."""
    match = _NAME_RE.match(name.rsplit("/", 1)[-1])
    return int(match[1]) if match else None


def _name(key: Key) -> str:
    return f"{key[0] or '(no repository)'} / {key[1] or '(no environment)'}"


class ChainHead(Struct, frozen=True):
    """One chain as a catalogue knows it: its newest bundle (id, SHA-256) and its length."""

    repository: str | None
    environment: str | None
    sequence: int | None
    sha256: str
    id: str

    @property
    def key(self) -> Key:
        return self.repository, self.environment


class Catalogue(Struct, frozen=True):
    """One catalogue of a store. ``sha256`` is the digest of its bytes: the store head it makes.

    ``signature`` is what opening its envelope found (``valid``, ``unsigned``, ``unchecked``,
    ``invalid``, ``wrong-key``); ``signed_by`` the key ids it names.
    """

    sequence: int
    previous_sha256: str | None
    recorded_at: str
    chains: tuple[ChainHead, ...]
    sha256: str
    signature: str = "unchecked"
    signed_by: tuple[str, ...] = ()

    def chain(self, repository: str | None, environment: str | None) -> ChainHead | None:
        """The head this catalogue knows for the chain of ``repository`` / ``environment``."""
        return next((c for c in self.chains if c.key == (repository, environment)), None)

    @property
    def by_key(self) -> dict[Key, ChainHead]:
        return {c.key: c for c in self.chains}


def _newer(record: Mapping[str, Any], known: ChainHead | None) -> bool:
    if known is None:
        return True
    seq = record.get("sequence")
    return isinstance(seq, int) and seq > (known.sequence or 0)


def head_of(record: Mapping[str, Any]) -> ChainHead:
    """The chain head an index record makes."""
    seq = record.get("sequence")
    return ChainHead(record.get("repository"), record.get("environment"), seq if isinstance(seq, int) else None,
                     str(record["sha256"]), str(record["id"]))


def behind(catalogue: Catalogue | None, records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The index records ``catalogue`` does not cover yet (newer than the head it knows of their chain)."""
    known = catalogue.by_key if catalogue is not None else {}
    return [r for r in records if _newer(r, known.get((r.get("repository"), r.get("environment"))))]


def build(previous: Catalogue | None, records: Iterable[Mapping[str, Any]], *, recorded_at: str,
          signing_key: SigningKey | None) -> bytes:
    """The bytes of the catalogue after ``previous`` with each chain of ``records`` moved forward.

    A chain only ever moves forward: a record older than the head the previous catalogue knows
    (a concurrent writer's, folded in already) changes nothing.
    """
    chains = dict(previous.by_key) if previous is not None else {}
    for r in records:
        key = (r.get("repository"), r.get("environment"))
        if _newer(r, chains.get(key)):
            chains[key] = head_of(r)
    ordered = sorted(chains.values(), key=lambda c: (c.repository or "", c.repository is None,
                                                     c.environment or "", c.environment is None))
    predicate = {
        "schema_version": CATALOGUE_SCHEMA_VERSION,
        "sequence": previous.sequence + 1 if previous is not None else 1,
        "previous_sha256": previous.sha256 if previous is not None else None,
        "recorded_at": recorded_at,
        "chains": [{"repository": c.repository, "environment": c.environment, "sequence": c.sequence,
                    "sha256": c.sha256, "id": c.id} for c in ordered],
    }
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": json.dumps([c.repository, c.environment]), "digest": {"sha256": c.sha256}}
                    for c in ordered],
        "predicateType": CATALOGUE_PREDICATE_TYPE,
        "predicate": predicate,
    }
    return (json.dumps(envelope(statement, signing_key), sort_keys=True) + "\n").encode("utf-8")


def parse(data: bytes, public_key: tuple[Any, str] | None = None) -> Catalogue:
    """Read one catalogue; raise ValueError saying what is wrong (``bundle.NEWER_VERSION`` when it
    was made by a newer version). Its signature is checked against ``public_key`` when given."""
    sha256 = hashlib.sha256(data).hexdigest()
    try:  # the version first: a newer catalogue may not even be an envelope this version reads
        version = json.loads(base64.b64decode(json.loads(data)["payload"]))["predicate"]["schema_version"]
    except (ValueError, TypeError, AttributeError, KeyError):
        version = None
    if type(version) is int and version > max(READABLE_SCHEMA_VERSIONS):
        raise ValueError(newer_version_message("the catalogue", version))
    opened = open_envelope(data, public_key, predicate_types=(CATALOGUE_PREDICATE_TYPE,))
    if opened.statement is None:
        raise ValueError(opened.problem or "the envelope cannot be read")
    doc = opened.statement.get("predicate")
    if not isinstance(doc, dict):
        raise ValueError("the statement has no predicate object")
    if type(doc.get("schema_version")) is not int or doc["schema_version"] < CATALOGUE_SCHEMA_VERSION:
        raise ValueError(f"schema_version {doc.get('schema_version')!r} is not a catalogue version")
    seq, previous, recorded = doc.get("sequence"), doc.get("previous_sha256"), doc.get("recorded_at")
    if type(seq) is not int or seq < 1:
        raise ValueError("'sequence' must be a positive integer")
    if not (previous is None or (isinstance(previous, str) and _SHA256_RE.match(previous))):
        raise ValueError("'previous_sha256' must be a SHA-256 hex digest or null")
    if not isinstance(recorded, str):
        raise ValueError("'recorded_at' must be a string")
    chains: list[ChainHead] = []
    entries = doc.get("chains")
    if not isinstance(entries, list):
        raise ValueError("'chains' must be a list")
    for entry in entries:
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), (str, type(None)))
                                                for k in ("repository", "environment"))
                and (entry.get("sequence") is None or type(entry.get("sequence")) is int)
                and isinstance(entry.get("sha256"), str) and _SHA256_RE.match(entry["sha256"])
                and isinstance(entry.get("id"), str)):
            raise ValueError(f"chain entry {entry!r} is not {{repository, environment, sequence, sha256, id}}")
        chains.append(ChainHead(entry["repository"], entry["environment"], entry.get("sequence"), entry["sha256"],
                                entry["id"]))
    if len({c.key for c in chains}) != len(chains):
        raise ValueError("a chain is listed twice")
    return Catalogue(sequence=seq, previous_sha256=previous, recorded_at=recorded, chains=tuple(chains),
                     sha256=sha256, signature=opened.signature, signed_by=opened.keyids)


def read_series(files: Sequence[tuple[str, bytes]], public_key: tuple[Any, str] | None,
                ) -> tuple[list[Catalogue], list[VerifyProblem]]:
    """Parse a store's catalogue files (``(name, bytes)``, in name order) and check the series.

    Each must be readable, carry the sequence its name says, name the digest of the one before
    it, and (with ``public_key``) carry a valid signature by it. No chain a catalogue knows may
    vanish from, or move back in, the next one. Returns the catalogues read and every problem.
    """
    catalogues: list[Catalogue] = []
    problems: list[VerifyProblem] = []

    def problem(check: str, message: str) -> None:
        problems.append(VerifyProblem("", None, check, message))

    for name, data in files:
        try:
            cat = parse(data, public_key)
        except ValueError as exc:
            problem("version" if NEWER_VERSION in str(exc) else "catalogue", f"catalogue {name}: {exc}")
            continue
        if sequence_of_name(name) != cat.sequence:
            problem("catalogue", f"catalogue {name} says it is catalogue #{cat.sequence}: a catalogue was copied "
                                 "or replayed under another name")
        if public_key is not None and cat.signature != "valid":
            why = "it carries no signature" if cat.signature == "unsigned" else "it is not signed by the given key"
            problem("catalogue", f"catalogue {name}: {why} ({cat.signature}): a catalogue is signed with the key "
                                 "that signs the bundles")
        if catalogues:
            before = catalogues[-1]
            if cat.previous_sha256 != before.sha256 or cat.sequence != before.sequence + 1:
                problem("catalogue", f"catalogue {name} (#{cat.sequence}) names {cat.previous_sha256} as the "
                                     f"catalogue before it, but the one before it is #{before.sequence} with sha256 "
                                     f"{before.sha256}: catalogues were deleted, replaced or replayed")
            now = cat.by_key
            for key, head in before.by_key.items():
                later = now.get(key)
                if later is None:
                    problem("catalogue", f"catalogue {name} (#{cat.sequence}) drops the chain of {_name(key)} that "
                                         f"catalogue #{before.sequence} knew (#{head.sequence}): a chain was hidden")
                elif (later.sequence or 0) < (head.sequence or 0):
                    problem("catalogue", f"catalogue {name} (#{cat.sequence}) moves the chain of {_name(key)} back "
                                         f"from #{head.sequence} to #{later.sequence}")
        elif cat.previous_sha256 is not None and cat.sequence == 1:
            problem("catalogue", f"catalogue {name} is the first but names a catalogue before it")
        catalogues.append(cat)
    return catalogues, problems


def chain_problems(catalogue: Catalogue, records: Sequence[Mapping[str, Any]], *, what: str
                   ) -> list[VerifyProblem]:
    """A ``missing chain`` problem for each chain ``catalogue`` knows that the index lacks, or holds
    shorter, or whose head bundle (by SHA-256) it no longer records. ``what`` names the catalogue."""
    by_key: dict[Key, list[Mapping[str, Any]]] = {}
    for r in records:
        by_key.setdefault((r.get("repository"), r.get("environment")), []).append(r)
    problems = []
    for head in catalogue.chains:
        mine = by_key.get(head.key, [])
        longest = max((r["sequence"] for r in mine if isinstance(r.get("sequence"), int)), default=0)
        if not mine:
            message = (f"{what} knows the chain of {_name(head.key)} (#{head.sequence}, newest bundle {head.id}), "
                       "but the store holds none of it: the chain was deleted")
        elif longest < (head.sequence or 0) or not any(r["sha256"] == head.sha256 for r in mine):
            message = (f"{what} knows the chain of {_name(head.key)} up to #{head.sequence} (bundle {head.id}, "
                       f"sha256 {head.sha256}), but the store holds it only up to #{longest}"
                       + ("" if longest < (head.sequence or 0) else " without that bundle")
                       + ": its newest bundles were deleted")
        else:
            continue
        problems.append(VerifyProblem(head.id, None, "missing-chain", message))
    return problems


def lag_warnings(catalogue: Catalogue | None, records: Sequence[Mapping[str, Any]]) -> list[VerifyProblem]:
    """A warning for each chain whose newest record the newest catalogue does not cover yet (a writer
    stopped between its bundle and the catalogue: the next write records it)."""
    if catalogue is None:
        return []
    last: dict[Key, Mapping[str, Any]] = {}
    for r in behind(catalogue, records):
        key = (r.get("repository"), r.get("environment"))
        if key not in last or (r.get("sequence") or 0) > (last[key].get("sequence") or 0):
            last[key] = r
    return [VerifyProblem(r["id"], None, "catalogue",
                          f"the catalogue (#{catalogue.sequence}) is behind: bundle {r['id']} (#{r.get('sequence')} of "
                          f"the chain of {_name(key)}) was written after it (its writer stopped before updating the "
                          "catalogue); the next write records it")
            for key, r in last.items()]


def newest_head(files: Sequence[tuple[str, bytes]]) -> str | None:
    """The store head of a store's catalogue files (``EvidenceStore.catalogue_files``): the SHA-256
    of the highest-numbered catalogue, or None when the store keeps none."""
    numbered = [(n, data) for n, data in ((sequence_of_name(name), data) for name, data in files) if n is not None]
    if not numbered:
        return None
    return hashlib.sha256(max(numbered, key=lambda x: x[0])[1]).hexdigest()

