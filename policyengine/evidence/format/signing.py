"""Sign and verify bundle statements: in-toto Statement v1 inside a DSSE envelope, Ed25519 keys.

The statement names the deployed commit (and any artifact digests) as its subject and carries
our predicate (``schemas/attestation-predicate.schema.json``). The envelope signs the DSSE
pre-authentication encoding (PAE) of the payload, as the DSSE v1 specification defines it.
An unsigned bundle still carries the envelope, with an empty ``signatures`` list, so that the
statement (and with it the chain) is always there.

``cryptography`` is imported only when a key is loaded or a signature checked: it is the
optional extra ``policyengine-gate[sign]``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from msgspec import Struct

from policyengine.errors import EvidenceError, UsageError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://policyengine.dev/attestation/decision/v1"
_INSTALL_HINT = "install the signing extra: pip install 'policyengine-gate[sign]'"


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return the DSSE v1 pre-authentication encoding of ``payload``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise UsageError("signing and checking signatures need the 'cryptography' package",
                         hint=_INSTALL_HINT) from exc
    return serialization, ed25519


def _raw_public(public_key: Any) -> bytes:
    serialization, _ = _crypto()
    raw: bytes = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def key_id(public_key: Any) -> str:
    """Return the key id recorded with a signature: SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()


class SigningKey(Struct, frozen=True):
    """An Ed25519 private key and its id. ``repr`` never shows the key."""

    private_key: Any
    keyid: str

    def __repr__(self) -> str:
        return f"SigningKey(keyid={self.keyid!r})"

    def sign(self, data: bytes) -> bytes:
        sig: bytes = self.private_key.sign(data)
        return sig


_NOT_SHOWN = "the value of --signing-key is not a readable file name (not shown)"
_KEY_HINT = "give the name of a file holding the key, or env:NAME for a variable holding its PEM text"
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def load_signing_key(spec: str) -> SigningKey:
    """Load an Ed25519 private key (PEM, PKCS#8, unencrypted) from a file or ``env:VAR``.

    No error shows the value given: it may be the key itself (PEM text pasted where a file
    name belongs, or into ``POLICYENGINE_SIGNING_KEY``). A variable is named only when its
    name is a plain identifier; a file is never named, since its name is the value given.
    """
    serialization, ed25519 = _crypto()
    if spec.startswith("env:"):
        var = spec[4:]
        if not _VAR_RE.match(var):
            raise UsageError("--signing-key: what follows env: is not a variable name (not shown)", hint=_KEY_HINT)
        where = f"environment variable {var}"
        value = os.environ.get(var)
        if not value:
            raise UsageError(f"--signing-key: {where} is not set or empty",
                             hint="set it to the PEM text of an Ed25519 private key (PKCS#8)")
        data = value.encode("utf-8", errors="replace")
    else:
        where = "the file named by --signing-key"
        try:
            data = Path(spec).read_bytes()
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a file name"
            raise UsageError(f"--signing-key: cannot read a key file: {_NOT_SHOWN}: {reason}", hint=_KEY_HINT) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"--signing-key: {where} does not hold an unencrypted PEM private key",
                         hint="generate one with: openssl genpkey -algorithm ed25519 -out signing.pem") from None
    except Exception:  # noqa: BLE001 - a parser error must not carry the key's bytes into a message
        raise UsageError(f"--signing-key: {where} does not hold a readable private key",
                         hint="generate one with: openssl genpkey -algorithm ed25519 -out signing.pem") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UsageError(f"--signing-key: {where} holds a key that is not Ed25519",
                         hint="generate one with: openssl genpkey -algorithm ed25519 -out signing.pem")
    return SigningKey(key, key_id(key.public_key()))


def load_public_key(path: str) -> tuple[Any, str]:
    """Load an Ed25519 public key (PEM, SubjectPublicKeyInfo); return it and its key id."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--public-key: cannot read {path}: {exc.strerror or exc}") from None
    return public_key_from_pem(data, option="--public-key", where=path)


def public_key_from_pem(data: bytes, *, option: str, where: str) -> tuple[Any, str]:
    """Parse an Ed25519 public key from PEM bytes; errors name ``option`` and ``where``, never the bytes."""
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise UsageError(f"{option}: {where} does not hold a PEM public key",
                         hint="derive it with: openssl pkey -in signing.pem -pubout -out signing.pub") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UsageError(f"{option}: {where} holds a key that is not Ed25519")
    return key, key_id(key)


def build_statement(
    *,
    decision: Mapping[str, Any],
    change: Mapping[str, Any],
    subjects: Sequence[tuple[str, str]],
    bundle_id: str,
    created_at: str,
    manifest_sha256: str,
    chain: Mapping[str, Any],
) -> dict[str, Any]:
    """Return the in-toto Statement v1 of one bundle."""
    subject: list[dict[str, Any]] = []
    repo, commit = change.get("repository"), change.get("commit")
    if isinstance(repo, str) and isinstance(commit, str):
        subject.append({"name": f"git+{repo}@{commit}", "digest": {"gitCommit": commit}})
    subject += [{"name": name, "digest": {"sha256": digest}} for name, digest in subjects]
    raw_policy, raw_rules = decision.get("policy"), decision.get("rules")
    policy: Mapping[str, Any] = raw_policy if isinstance(raw_policy, Mapping) else {}
    rules: list[Any] = raw_rules if isinstance(raw_rules, list) else []
    return {
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "bundle_id": bundle_id,
            "created_at": created_at,
            "decision": decision.get("decision"),
            "evaluated_at": decision.get("evaluated_at"),
            "advisory": bool(decision.get("advisory", False)),
            "repository": change.get("repository"),
            "environment": change.get("environment"),
            "policy": {"name": policy.get("name"), "sha256": policy.get("sha256")},
            "rules": [{"id": r.get("id"), "status": r.get("status")} for r in rules if isinstance(r, Mapping)],
            "manifest": {"sha256": manifest_sha256},
            "chain": dict(chain),
        },
    }


def envelope(statement: Mapping[str, Any], key: SigningKey | None) -> dict[str, Any]:
    """Wrap ``statement`` in a DSSE envelope, signed when ``key`` is given."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
    signatures = []
    if key is not None:
        sig = key.sign(pae(PAYLOAD_TYPE, payload))
        signatures.append({"keyid": key.keyid, "sig": base64.b64encode(sig).decode("ascii")})
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": signatures,
    }


class EnvelopeCheck(Struct, frozen=True):
    """What opening an envelope found. ``signature`` is ``valid``, ``invalid``, ``unsigned``,
    ``unchecked`` (signed, but no public key was given) or ``wrong-key``. ``keyids`` are the key
    ids the signatures name (not proof of anything without a key)."""

    statement: dict[str, Any] | None
    signature: str
    problem: str | None = None
    keyids: tuple[str, ...] = ()


def open_envelope(data: bytes, public_key: tuple[Any, str] | None,
                  predicate_types: Sequence[str] = (PREDICATE_TYPE,)) -> EnvelopeCheck:
    """Parse a DSSE envelope and check its signature against ``public_key`` (when given).

    The statement's ``predicateType`` must be one of ``predicate_types`` (a decision bundle's by
    default; a linked record's statement has its own type, ``records.RECORD_PREDICATE_TYPE``).
    """
    try:
        env = json.loads(data)
        if env.get("payloadType") != PAYLOAD_TYPE:
            return EnvelopeCheck(None, "invalid", f"payloadType is {env.get('payloadType')!r}, not {PAYLOAD_TYPE}")
        payload = base64.b64decode(env["payload"], validate=True)
        statement = json.loads(payload)
        sigs = env.get("signatures")
        if not isinstance(sigs, list) or not isinstance(statement, dict):
            raise ValueError("malformed envelope")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        return EnvelopeCheck(None, "invalid", f"the envelope cannot be read: {exc}")
    keyids = tuple(str(s.get("keyid")) for s in sigs if isinstance(s, dict) and isinstance(s.get("keyid"), str))
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") not in predicate_types:
        what = "decision" if tuple(predicate_types) == (PREDICATE_TYPE,) else "record"
        return EnvelopeCheck(None, "invalid", f"the payload is not a policyengine {what} statement "
                             f"(predicateType {statement.get('predicateType')!r})", keyids)
    if not sigs:
        return EnvelopeCheck(statement, "unsigned")
    if public_key is None:
        return EnvelopeCheck(statement, "unchecked", keyids=keyids)
    key, kid = public_key
    _, _ed = _crypto()
    from cryptography.exceptions import InvalidSignature

    message = pae(PAYLOAD_TYPE, payload)
    matching = [s for s in sigs if isinstance(s, dict) and s.get("keyid") in (kid, None, "")]
    if not matching:
        ids = ", ".join(str(s.get("keyid")) for s in sigs if isinstance(s, dict))
        return EnvelopeCheck(statement, "wrong-key", f"signed by key {ids}, not by the given public key {kid}",
                             keyids)
    for s in matching:
        try:
            key.verify(base64.b64decode(s.get("sig", ""), validate=True), message)
        except (InvalidSignature, ValueError, TypeError, binascii.Error):
            continue
        return EnvelopeCheck(statement, "valid", keyids=(kid,))
    return EnvelopeCheck(statement, "invalid", f"the signature by key {kid} does not match the statement", keyids)


__all__ = [
    "PAYLOAD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "EnvelopeCheck", "EvidenceError", "SigningKey",
    "build_statement", "envelope", "key_id", "load_public_key", "load_signing_key", "open_envelope", "pae",
]
