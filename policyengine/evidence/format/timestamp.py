"""An independent clock: RFC 3161 timestamps of a bundle's statement signature.

A timestamp authority (TSA) signs the SHA-256 of the DSSE envelope's signature bytes and the
time it saw them, as Sigstore stamps a signature. The reply (a DER ``TimeStampResp``) is kept
as the bundle member ``timestamp.tsr``, beside the manifest and outside it: it is made after the
statement that names the manifest is signed. Whoever holds the signing key can write any
``created_at``; only the TSA's signature, checked against a root the auditor fetched
themselves (``evidence verify --tsa-cert``), says when the bundle existed.

Writing: ``stamping(Timestamper(...))`` makes every statement signed inside it stamped
(``BundleWriter.write_tail``), so a compare-and-swap retry that signs again stamps again.
Reading: ``check_token`` checks a token offline (message imprint, TSA signature, chain to the
pinned roots); no network is used.

``rfc3161-client`` (the library sigstore-python uses) and ``cryptography`` are imported only
here, when a timestamp is asked for or checked: the optional extra ``policyengine-gate[timestamp]``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import urllib.parse
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from msgspec import Struct

from policyengine.errors import EvidenceError, UsageError

MEMBER = "timestamp.tsr"
"""The bundle member holding the TSA's reply (DER), beside the manifest."""
SCHEMA_VERSION = 3
"""Bundles that asked for a timestamp (with a token, or the reason they have none) are schema 3."""
MAX_TOKEN_DIFFERENCE_SECONDS = 5 * 60
"""A bundle whose ``created_at`` is further than this from its token's time was backdated (or forward-dated)."""
MAX_CHAIN_BACKWARDS_SECONDS = 10 * 60
"""``created_at`` may go backwards along a chain by this much: concurrent writers fix their time before retrying."""
TIMEOUT_SECONDS = 10.0
MAX_REPLY_BYTES = 1 << 20
_INSTALL_HINT = "install the timestamp extra: pip install 'policyengine-gate[timestamp]'"


def _library() -> Any:
    try:
        import rfc3161_client
    except ImportError as exc:
        raise UsageError("RFC 3161 timestamps need the 'rfc3161-client' package", hint=_INSTALL_HINT) from exc
    return rfc3161_client


def load_roots(spec: str, *, what: str, base: Path | None = None) -> tuple[Any, ...]:
    """Read the pinned TSA root certificate(s): a PEM file (one or more certificates), or PEM text
    given inline (a policy's ``evidence.timestamp.cert``). Raise UsageError naming ``what``."""
    _library()
    from cryptography import x509

    text = spec.strip()
    if text.startswith("-----BEGIN"):
        data = text.encode("utf-8")
    else:
        path = Path(text) if base is None or Path(text).is_absolute() else base / text
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{what}: cannot read the TSA certificate {text}: {exc.strerror or exc}",
                             hint="give a PEM file holding the root certificate the timestamp authority chains to"
                             ) from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise UsageError(f"{what}: {text if not text.startswith('-----') else 'the inline text'} holds no "
                             "PEM or DER certificate",
                             hint="give the TSA's root certificate as PEM (-----BEGIN CERTIFICATE-----)") from None
    return tuple(certs)


def check_url(url: str, *, what: str = "--timestamp-url") -> str:
    """Refuse a timestamp URL that is not ``http(s)://host/...``: a reply is signed, so plain http is fine."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise UsageError(f"{what}: {url!r} is not an http(s) URL of a timestamp authority",
                         hint="e.g. http://timestamp.digicert.com or https://freetsa.org/tsr")
    return url


class Timestamper(Struct, frozen=True):
    """Where to ask for a timestamp (the first authority that answers is used), the roots each
    reply must chain to, and whether a bundle may go without one."""

    urls: tuple[str, ...]
    roots: tuple[Any, ...]
    required: bool = False

    def stamp(self, signature: bytes, near: datetime | None = None) -> bytes:
        """Return a checked TSA reply over ``signature``; raise EvidenceError naming every authority's failure.

        With ``near`` (the bundle's ``created_at``), a reply whose time is more than 5 minutes
        away is refused: the local clock is wrong, and verify would flag the bundle as backdated."""
        # Imported here, not at the top: HTTP and TLS cost ~10 ms of every check, stamped or not.
        import http.client
        import urllib.error
        import urllib.request

        from policyengine import deadline

        lib = _library()
        failures: list[str] = []
        for url in self.urls:
            request = (lib.TimestampRequestBuilder().data(signature).hash_algorithm(lib.HashAlgorithm.SHA256)
                       .cert_request(cert_request=True).nonce(nonce=True).build())
            try:
                timeout = deadline.limit(TIMEOUT_SECONDS, f"the timestamp authority {url}")
                query = urllib.request.Request(url, data=request.as_bytes(), method="POST",  # noqa: S310 - checked
                                              headers={"Content-Type": "application/timestamp-query",
                                                       "Accept": "application/timestamp-reply"})
                with urllib.request.urlopen(query, timeout=timeout) as answer:  # noqa: S310 - http(s) only
                    reply = answer.read(MAX_REPLY_BYTES + 1)
            except deadline.RunDeadlineError as exc:
                failures.append(f"{url}: {exc.message}")
                break
            except urllib.error.HTTPError as exc:
                failures.append(f"{url}: HTTP {exc.code}")
                continue
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
                continue
            if len(reply) > MAX_REPLY_BYTES:
                failures.append(f"{url}: the reply is larger than {MAX_REPLY_BYTES} bytes")
                continue
            try:
                response = lib.decode_timestamp_response(reply)
                verifier = lib.VerifierBuilder.from_request(request)
                for root in self.roots:
                    verifier = verifier.add_root_certificate(root)
                verifier.build().verify_message(response, signature)
                gen_time = response.tst_info.gen_time
            except Exception as exc:  # noqa: BLE001 - any parse or check failure: this reply is refused
                failures.append(f"{url}: the reply does not verify against the pinned TSA certificate ({exc})")
                continue
            if gen_time.tzinfo is None:
                gen_time = gen_time.replace(tzinfo=timezone.utc)
            if near is not None and abs((gen_time - near).total_seconds()) > MAX_TOKEN_DIFFERENCE_SECONDS:
                failures.append(f"{url}: the authority's time {gen_time.isoformat()} is more than "
                                f"{MAX_TOKEN_DIFFERENCE_SECONDS // 60} minutes from this run's clock "
                                f"{near.isoformat()}: fix the clock")
                continue
            return bytes(reply)
        raise EvidenceError("no timestamp authority gave a checked timestamp: " + "; ".join(failures),
                            hint="check the --timestamp-url (evidence.timestamp.url) and the pinned TSA certificate "
                                 "(--tsa-cert, evidence.timestamp.cert)")


_ACTIVE: contextvars.ContextVar[Timestamper | None] = contextvars.ContextVar("policyengine_timestamper", default=None)


def active() -> Timestamper | None:
    """The timestamper every statement signed now is stamped by (None: no timestamp asked for)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def stamping(timestamper: Timestamper | None) -> Iterator[None]:
    """Stamp every statement signed inside this block (a retry that signs again stamps again)."""
    token = _ACTIVE.set(timestamper)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class TokenCheck(Struct, frozen=True):
    """What checking a token found: its time (None when unreadable), the state, and the problem."""

    gen_time: datetime | None
    state: str
    """``valid`` (checked against the given roots), ``unchecked`` (no roots given: the imprint
    matched, the TSA's signature was not checked) or ``invalid``."""
    problem: str | None = None


def check_token(token: bytes, signature: bytes, roots: Sequence[Any] | None) -> TokenCheck:
    """Check a TSA reply over ``signature`` offline: its message imprint always; with ``roots``,
    the TSA's signature and its chain to them too."""
    lib = _library()
    try:
        response = lib.decode_timestamp_response(token)
        info = response.tst_info
        gen_time = info.gen_time
        imprint = info.message_imprint.message
        algorithm = info.message_imprint.hash_algorithm.dotted_string
    except Exception as exc:  # noqa: BLE001 - an unreadable token is a finding, never a crash
        return TokenCheck(None, "invalid", f"{MEMBER} is not a readable RFC 3161 reply: {exc}")
    if gen_time.tzinfo is None:
        gen_time = gen_time.replace(tzinfo=timezone.utc)
    hashes = {"2.16.840.1.101.3.4.2.1": hashlib.sha256, "2.16.840.1.101.3.4.2.2": hashlib.sha384,
              "2.16.840.1.101.3.4.2.3": hashlib.sha512}
    hasher = hashes.get(algorithm)
    if hasher is None:
        return TokenCheck(gen_time, "invalid", f"{MEMBER} uses the hash {algorithm}, not SHA-256/384/512")
    if imprint != hasher(signature).digest():
        return TokenCheck(gen_time, "invalid", f"{MEMBER} stamps other bytes than this bundle's statement "
                          "signature (its message imprint differs): a token taken from another bundle")
    if not roots:
        return TokenCheck(gen_time, "unchecked")
    try:
        verifier = lib.VerifierBuilder()
        for root in roots:
            verifier = verifier.add_root_certificate(root)
        verifier.build().verify_message(response, signature)
    except Exception as exc:  # noqa: BLE001 - any verification failure is a finding
        return TokenCheck(gen_time, "invalid", f"{MEMBER} does not verify against the given TSA certificate: {exc}")
    return TokenCheck(gen_time, "valid")


class StampCheck(Struct, frozen=True):
    """How ``evidence verify`` checks timestamps: the TSA roots the auditor fetched themselves
    (``--tsa-cert``; none: tokens are checked for their imprint and time only) and whether a
    bundle without a token fails (``--require-timestamps``)."""

    roots: tuple[Any, ...] = ()
    require: bool = False


class StampFinding(Struct, frozen=True):
    """What ``inspect_stamp`` found in one bundle: ``none``, ``valid``, ``unchecked`` or ``invalid``,
    the token's time, and each problem (member, message): every one a verification failure (check ``time``)."""

    state: str
    gen_time: datetime | None = None
    problems: tuple[tuple[str | None, str], ...] = ()


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc)


def inspect_stamp(zf: Any, names: Sequence[str], manifest: dict[str, Any], check: StampCheck, *,
                  envelope_member: str) -> StampFinding:
    """Check a bundle's timestamp offline: a token only in a schema 3 bundle, over this bundle's
    statement signature, signed by a TSA that chains to ``check.roots`` (when given), at a time
    within 5 minutes of ``created_at``; a token the manifest says was taken must be there; with
    ``check.require``, a bundle without a token fails, with the reason it recorded.
    ``envelope_member``: the statement envelope whose signature the token stamps."""
    import base64
    import binascii
    import json
    import zipfile
    import zlib

    read_errors = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)

    problems: list[tuple[str | None, str]] = []
    said = manifest.get("timestamp")
    said = said if isinstance(said, dict) else {}
    if MEMBER not in names:
        if said.get("token") == MEMBER:
            problems.append((MEMBER, f"the manifest says a timestamp was taken, but {MEMBER} is missing: "
                                     "the token was removed"))
        elif check.require:
            reason = said.get("reason")
            why = f" (it records why: {reason})" if isinstance(reason, str) else ""
            problems.append((MEMBER, f"the bundle carries no timestamp token{why}, and --require-timestamps "
                                     "asks for one: its time rests on the writer's word"))
        return StampFinding("none", None, tuple(problems))
    version = manifest.get("schema_version")
    if type(version) is int and version < SCHEMA_VERSION:
        problems.append((MEMBER, f"the bundle claims schema_version {version} but carries {MEMBER}, which only "
                                 f"schema {SCHEMA_VERSION} bundles hold"))
    try:
        token = zf.read(MEMBER)
        envelope = json.loads(zf.read(envelope_member))
        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
    except (*read_errors, KeyError, IndexError, TypeError, ValueError, binascii.Error) as exc:
        problems.append((MEMBER, f"{MEMBER} cannot be checked: the token or the signature it stamps cannot be "
                                 f"read ({exc})"))
        return StampFinding("invalid", None, tuple(problems))
    found = check_token(token, signature, check.roots)
    if found.problem:
        problems.append((MEMBER, found.problem))
    created = _instant(manifest.get("created_at"))
    if found.gen_time is not None and created is not None:
        delta = (created - found.gen_time).total_seconds()
        if abs(delta) > MAX_TOKEN_DIFFERENCE_SECONDS:
            way = "before" if delta < 0 else "after"
            problems.append((MEMBER, f"created_at {manifest.get('created_at')} is {_span(abs(delta))} {way} the "
                                     f"timestamp authority's time {found.gen_time.strftime('%Y-%m-%dT%H:%M:%SZ')} "
                                     f"(more than {MAX_TOKEN_DIFFERENCE_SECONDS // 60} minutes): the bundle was "
                                     f"{'backdated' if delta < 0 else 'forward-dated'}"))
    state = "invalid" if problems else found.state
    return StampFinding(state, found.gen_time, tuple(problems))


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} days"
    if seconds >= 2 * 3600:
        return f"{int(seconds // 3600)} hours"
    return f"{int(seconds // 60)} minutes"


def backwards_problems(chain: Sequence[tuple[str, Any]], report_ids: Sequence[str]) -> list[tuple[str, str]]:
    """``(bundle id, message)`` for each bundle of one chain (oldest first, ``(id, created_at)``)
    whose ``created_at`` is more than 10 minutes before the latest one before it: time only moves forward.
    Only bundles in ``report_ids`` are reported."""
    out: list[tuple[str, str]] = []
    latest: tuple[datetime, str, str] | None = None
    wanted = set(report_ids)
    for bundle_id, created_at in chain:
        moment = _instant(created_at)
        if moment is None:
            continue
        if latest is not None and (latest[0] - moment).total_seconds() > MAX_CHAIN_BACKWARDS_SECONDS:
            if bundle_id in wanted:
                out.append((bundle_id, f"bundle {bundle_id} was created at {created_at}, "
                                       f"{_span((latest[0] - moment).total_seconds())} before bundle {latest[1]} "
                                       f"({latest[2]}) that precedes it in its chain (more than "
                                       f"{MAX_CHAIN_BACKWARDS_SECONDS // 60} minutes): time went backwards, "
                                       "the bundle was backdated"))
            continue  # a backdated bundle does not lower the bar for those after it
        if latest is None or moment > latest[0]:
            latest = (moment, bundle_id, str(created_at))
    return out
