"""The previous deploy to an environment, as the evidence store proves it.

Providers ask for it through the small ``providers.PreviousDeploys`` interface; the gate
passes them a ``VerifiedHistory``, so providers never open a store themselves.

What counts as the previous deploy (the start of the change range) is the latest *allowed*
evaluation for the same repository and environment recorded in the configured evidence store
(``--evidence-store`` / ``--evidence-dir``) by a bundle whose statement is signed by the
trusted key (``check --trust-key``). An index line is never trusted on its own: the action's
default archive sits inside the checked-out workspace, so a commit can plant any line in
``index.jsonl``. For every candidate the bundle itself is opened and checked:

* its bytes match the digest the index records, and every member matches the manifest;
* its DSSE envelope carries a valid signature by the trusted key over the statement, and the
  statement names this manifest, bundle id, chain and decision;
* the statement's ``repository``, ``environment`` and ``decision`` (``allow``), and its subject
  ``git+<repository>@<commit>``, are those asked for and those the index line claims.

Latest means the highest chain sequence, then ``created_at``, *as the verified manifest
records them* (the index line's own claims only choose which bundles to open first: the
``MAX_CANDIDATES`` newest claimed). Without a trusted key there is no trusted history: the
gate passes no history and the change range is unknown (``cover_range`` fails closed, and
rules with ``when.paths`` apply).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

from policyengine.errors import EvidenceError, UsageError
from policyengine.errors import HistoryUnavailable

MAX_CANDIDATES = 100
"""Allowed bundles (newest claimed first) opened and verified when looking for the previous deploy."""

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


def load_trust_key(spec: str, env: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """Load the Ed25519 public key (PEM) of ``--trust-key FILE|env:VAR``; return it and its key id.

    Errors name the file or variable, never the key material.
    """
    from pathlib import Path

    from policyengine.evidence.format.signing import public_key_from_pem

    source = os.environ if env is None else env
    if spec.startswith("env:"):
        var = spec[4:]
        where = f"environment variable {var}"
        value = source.get(var)
        if not value:
            raise UsageError(f"--trust-key: {where} is not set or empty",
                             hint="set it to the PEM text of the Ed25519 public key that signs the evidence")
        data = value.encode("utf-8")
    else:
        where = f"file {spec}"
        try:
            data = Path(spec).read_bytes()
        except OSError as exc:
            raise UsageError(f"--trust-key: cannot read {where}: {exc.strerror or exc}") from None
    return public_key_from_pem(data, option="--trust-key", where=where)


class VerifiedHistory:
    """Previous deploys proven by signed bundles of an evidence store."""

    def __init__(self, store_url: str, public_key: tuple[Any, str]) -> None:
        self.store_url = store_url
        self.public_key = public_key
        self.rejected: list[str] = []  # why candidate bundles did not count (for notes and tests)
        self._found: dict[tuple[str, str], dict[str, Any] | None] = {}  # each chain is verified once a run

    def latest(self, repository: str, environment: str) -> dict[str, Any] | None:
        """The newest verified allowed deploy of ``repository`` to ``environment``, or None.

        Raises ``HistoryUnavailable`` when the store cannot be read at all. The answer is kept: the
        gate asks once for the policy's ref and the provider again for the change range.
        """
        key = (repository, environment.casefold())
        if key not in self._found:
            self._found[key] = self._latest(repository, environment)
        found = self._found[key]
        return dict(found) if found is not None else None

    def _latest(self, repository: str, environment: str) -> dict[str, Any] | None:
        from policyengine.evidence.stores.factory import is_folder_url, open_store

        # A folder that holds no index yet records no deploy (the first run). Every other store
        # (S3, git) answers that itself: an empty bucket prefix or a ref not created yet.
        if is_folder_url(self.store_url):
            from pathlib import Path

            # (index.jsonl, or the monthly shards of index/ once `evidence migrate` has run)
            if not (Path(self.store_url) / "index.jsonl").is_file() and not (Path(self.store_url) / "index").is_dir():
                return None
        try:
            store = open_store(self.store_url)
            records, _problems = store.read_index()
        except (EvidenceError, OSError, ValueError) as exc:
            raise HistoryUnavailable(f"the evidence store {self.store_url} could not be read: "
                                     f"{getattr(exc, 'message', None) or exc}") from None
        # One definition everywhere (records.latest_deploy): an evaluation the population counts
        # as a deployment (allowed, or advisory), not simulated, whose latest outcome is not
        # not_deployed, failed or rolled_back. An outcome line can only move the start earlier
        # (a longer range, judged more strictly), so outcomes need no signature here; the
        # candidate evaluation itself must verify below.
        from policyengine.evidence.format.records import deploy_candidates

        candidates = deploy_candidates(records, repository, environment)
        candidates.sort(key=lambda r: (r.get("sequence") if isinstance(r.get("sequence"), int) else 0,
                                       str(r.get("created_at"))), reverse=True)
        best: tuple[tuple[int, str], dict[str, Any]] | None = None
        for record in candidates[:MAX_CANDIDATES]:
            found = self._verify(store, record, repository, environment)
            if found is None:
                continue
            order = (found.pop("_sequence"), str(found.get("created_at")))
            if best is None or order > best[0]:
                best = (order, found)
        return best[1] if best else None

    def _reject(self, record: Mapping[str, Any], why: str) -> None:
        self.rejected.append(f"{record.get('id')}: {why}")

    def _verify(self, store: Any, record: Mapping[str, Any], repository: str,
                environment: str) -> dict[str, Any] | None:
        """The deploy a candidate record proves, or None (the reason kept in ``rejected``)."""
        from policyengine.evidence.format.bundle import ATTESTATION, inspect_bundle
        from policyengine.evidence.format.records import BASELINE, inspect_record, kind_of
        from policyengine.evidence.format.signing import open_envelope
        from policyengine.evidence.stores.base import sha256_stream

        bundle_id = str(record.get("id"))
        commit = str(record.get("commit")).lower()
        if not _COMMIT_RE.match(commit):
            self._reject(record, "the recorded commit is not a full SHA")
            return None
        try:
            with store.open_bundle(record) as fh:
                if sha256_stream(fh) != record.get("sha256"):
                    self._reject(record, "the bundle does not match the digest its index line records")
                    return None
                fh.seek(0)
                baseline = kind_of(record) == BASELINE
                with zipfile.ZipFile(fh) as zf:
                    inspect = inspect_record if baseline else inspect_bundle
                    inspection = inspect(zf, bundle_id, self.public_key)
                    envelope = zf.read(ATTESTATION) if inspection.signature == "valid" else None
        except (FileNotFoundError, zipfile.BadZipFile, EOFError, KeyError, OSError, ValueError) as exc:
            self._reject(record, f"the bundle cannot be read ({type(exc).__name__})")
            return None
        if inspection.problems:
            self._reject(record, inspection.problems[0].message)
            return None
        if inspection.signature != "valid" or envelope is None:
            self._reject(record, f"the bundle is not signed by the trusted key ({inspection.signature})")
            return None
        from policyengine.evidence.format.records import RECORD_PREDICATE_TYPE
        from policyengine.evidence.format.signing import PREDICATE_TYPE

        types = (RECORD_PREDICATE_TYPE,) if baseline else (PREDICATE_TYPE,)
        statement = open_envelope(envelope, self.public_key, types).statement or {}
        raw_predicate, raw_subjects = statement.get("predicate"), statement.get("subject")
        predicate: dict[str, Any] = raw_predicate if isinstance(raw_predicate, dict) else {}
        subjects: list[Any] = raw_subjects if isinstance(raw_subjects, list) else []
        named = {(s.get("name"), (s.get("digest") or {}).get("gitCommit")) for s in subjects
                 if isinstance(s, dict) and isinstance(s.get("digest"), dict)}
        if baseline:
            return self._baseline(record, inspection, predicate, named, repository, environment, commit)
        env_stated = predicate.get("environment")
        checks = [
            (predicate.get("repository") == repository, "the signed statement names another repository"),
            (isinstance(env_stated, str) and env_stated.casefold() == environment.casefold(),
             "the signed statement names another environment"),
            (predicate.get("decision") == "allow" or (predicate.get("decision") == "deny"
                                                       and predicate.get("advisory") is True),
             "the signed decision is neither allow nor an advisory deny (not a deployment)"),
            (predicate.get("simulated") is not True, "the signed evaluation was a simulation, not a deploy"),
            (predicate.get("bundle_id") == bundle_id, "the signed statement names another bundle"),
            ((f"git+{repository}@{commit}", commit) in named, "the signed statement names another commit"),
        ]
        for ok, why in checks:
            if not ok:
                self._reject(record, why)
                return None
        chain = inspection.chain or {}
        sequence = chain.get("sequence") if isinstance(chain.get("sequence"), int) else 0
        return {"sha": commit, "id": bundle_id, "url": None, "created_at": inspection.created_at,
                "source": "evidence-archive", "_sequence": sequence}

    def _baseline(self, record: Mapping[str, Any], inspection: Any, predicate: Mapping[str, Any],
                  named: set[tuple[Any, Any]], repository: str, environment: str,
                  commit: str) -> dict[str, Any] | None:
        """The deploy a baseline proves: signed by the trusted key (checked by the caller), naming
        this repository, environment and commit, and the first record of its chain."""
        from policyengine.evidence.format.records import BASELINE

        doc = inspection.record or {}
        chain = inspection.chain or {}
        env_stated = doc.get("environment")
        checks = [
            (predicate.get("kind") == BASELINE and doc.get("kind") == BASELINE, "the signed record is no baseline"),
            (doc.get("repository") == repository, "the signed baseline names another repository"),
            (isinstance(env_stated, str) and env_stated.casefold() == environment.casefold(),
             "the signed baseline names another environment"),
            (predicate.get("bundle_id") == record.get("id"), "the signed statement names another bundle"),
            (doc.get("commit") == commit and (f"git+{repository}@{commit}", commit) in named,
             "the signed baseline names another commit"),
            (chain.get("sequence") == 1 and chain.get("previous_sha256") is None,
             "the baseline is not the first record of its chain"),
        ]
        for ok, why in checks:
            if not ok:
                self._reject(record, why)
                return None
        return {"sha": commit, "id": str(record.get("id")), "url": None, "created_at": inspection.created_at,
                "source": "evidence-archive", "_sequence": 1}
