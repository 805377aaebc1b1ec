"""Re-check the CI identity a bundle keeps (``identity.json``) offline, against the auditor's keys.

The key set kept in the bundle is for information only: whoever holds the signing key could
mint a token and bundle a matching key set. ``evidence verify --oidc-jwks FILE`` (repeatable:
keys rotate) names keys the auditor fetched from the issuer themselves; each kept token must
verify against them (signature, audience ``policyengine``, the issuer it names), must have been
valid when the bundle was created (``iat`` <= ``created_at`` <= ``exp``, one minute's leeway),
and the claims the bundle states must be the token's own. Without ``--oidc-jwks`` identity
shows as "unchecked". No network: nothing here fetches anything.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from msgspec import Struct

from policyengine.errors import UsageError
from policyengine.evidence.format.bundle import IDENTITY, MANIFEST
from policyengine.providers import oidc


class IdentityFinding(Struct, frozen=True):
    """One bundle's identity: ``verified``, ``unchecked``, ``unverified`` (at check time) or ``failed``."""

    bundle_id: str
    state: str
    message: str


def load_jwks(paths: Iterable[str]) -> dict[str, Any]:
    """The auditor's key sets, merged (``--oidc-jwks FILE``, repeatable); UsageError on a bad file."""
    keys: list[Any] = []
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--oidc-jwks {path}: cannot read a JSON key set ({exc})",
                             hint="save the issuer's jwks_uri answer, e.g. "
                                  "https://token.actions.githubusercontent.com/.well-known/jwks") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise UsageError(f"--oidc-jwks {path}: not a JWK set (an object with \"keys\": [...])")
        keys += doc["keys"]
    return {"keys": keys}


def check_identity(bundle_id: str, members: Mapping[str, bytes], jwks: Mapping[str, Any] | None,
                   issuers: Sequence[str] | None = None) -> IdentityFinding | None:
    """Judge one bundle's ``identity.json`` (None: the bundle keeps none)."""
    raw = members.get(IDENTITY)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        token = oidc.from_json_serialization(doc.get("token") or {})
        manifest = json.loads(members[MANIFEST])
        created = datetime.fromisoformat(str(manifest["created_at"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, AttributeError, oidc.IdentityProblem) as exc:
        return IdentityFinding(bundle_id, "failed", f"identity.json cannot be read: {exc}")
    if doc.get("status") != "verified":
        return IdentityFinding(bundle_id, "unverified", "the gate did not verify this token at check time: "
                               f"{doc.get('problem') or 'no reason recorded'}")
    if jwks is None:
        return IdentityFinding(bundle_id, "unchecked", "identity unchecked: give --oidc-jwks FILE with the "
                               "issuer's keys to re-check its ID token")
    try:
        issuer = str(oidc.unverified_claims(token).get("iss") or "")
        claims = oidc.verify_token(token, jwks=jwks, issuers=issuers or [issuer], now=created, check_time=False)
    except oidc.IdentityProblem as exc:
        return IdentityFinding(bundle_id, "failed", f"identity: {exc.message}")
    when = created.timestamp()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)) \
            or not iat - oidc.LEEWAY_SECONDS <= when <= exp + oidc.LEEWAY_SECONDS:
        return IdentityFinding(bundle_id, "failed", f"identity: the bundle was created at {manifest['created_at']}, "
                               "outside the token's lifetime (iat..exp): a token kept from another run")
    if doc.get("claims") != oidc.normalized(claims):
        return IdentityFinding(bundle_id, "failed", "identity: the claims identity.json states are not the token's")
    n = oidc.normalized(claims)
    change = members.get("change.json")
    if change is not None:
        wrong = oidc.disagreements(claims, json.loads(change), {})
        if wrong and not doc.get("problem"):  # a token of another change, kept as if it agreed
            return IdentityFinding(bundle_id, "failed", "identity: " + "; ".join(wrong))
        if wrong:
            return IdentityFinding(bundle_id, "verified", "identity verified, and it disagrees with the change "
                                   "(the gate recorded it as an error): " + "; ".join(wrong))
    run = f"run {n['run_id']}" + (f" attempt {n['run_attempt']}" if n.get("run_attempt") else "") \
        + (f" job {n['job_id']}" if n.get("job_id") else "")
    return IdentityFinding(bundle_id, "verified", f"identity verified: {n['platform']} actor {n['actor']}, "
                           f"{n['repository']}@{n['sha']}, {run} ({n['issuer']})")


def check_store(store: Any, bundle_ids: Iterable[str], jwks: Mapping[str, Any] | None) -> list[IdentityFinding]:
    """``check_identity`` for each of ``bundle_ids`` in ``store`` (bundles whose digests verified)."""
    found: list[IdentityFinding] = []
    for bundle_id in bundle_ids:
        record = store.find(bundle_id)
        with store.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
            names = set(zf.namelist())
            if IDENTITY not in names:
                continue
            members = {n: zf.read(n) for n in (IDENTITY, MANIFEST, "change.json") if n in names}
        finding = check_identity(bundle_id, members, jwks)
        if finding is not None:
            found.append(finding)
    return found


def check_export(path: str, bundle_ids: Iterable[str], jwks: Mapping[str, Any] | None) -> list[IdentityFinding]:
    """``check_identity`` for each bundle an audit export holds (``bundles/<id>.zip``), offline:
    an auditor holding only the export checks the CI identities with the keys they fetched."""
    import io

    from policyengine.evidence.audit.export import bundle_member
    from policyengine.evidence.audit.export_verify import ExportReport, _open_files

    found: list[IdentityFinding] = []
    with _open_files(path, ExportReport(path=path)) as files:
        for bundle_id in bundle_ids:
            try:
                with zipfile.ZipFile(io.BytesIO(files.read(bundle_member(bundle_id)))) as zf:
                    names = set(zf.namelist())
                    if IDENTITY not in names:
                        continue
                    members = {n: zf.read(n) for n in (IDENTITY, MANIFEST, "change.json") if n in names}
            except (OSError, ValueError, zipfile.BadZipFile, KeyError):
                continue  # an unreadable bundle is the export verification's finding already
            finding = check_identity(bundle_id, members, jwks)
            if finding is not None:
                found.append(finding)
    return found
