"""The CI platform's signed identity: an OIDC ID token with the audience ``policyengine``.

Where the token comes from (never from a name the change controls):

* GitHub Actions (``permissions: id-token: write``): ``ACTIONS_ID_TOKEN_REQUEST_URL`` with
  ``&audience=policyengine`` and the bearer ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``, asked through the
  provider HTTP session (timeouts, the run deadline, redaction);
* GitLab CI: the variable ``POLICYENGINE_ID_TOKEN`` that the template's ``id_tokens:`` sets, read
  the way Sigstore reads it (the ``id`` package's GitLab detector: ``<AUDIENCE>_ID_TOKEN``).

Which issuers are trusted is pinned by the policy (``identity: {issuers: [...]}``), never taken
from the environment: a step before the gate could run its own issuer. The keys come from the
issuer's ``/.well-known/openid-configuration`` -> ``jwks_uri`` at check time, through the HTTP
session, and PyJWT (its JWKS client) checks the signature. Expiry and issue time are checked
against the clock the caller passes (tests inject it), never ``time.time()`` inside PyJWT.

The token is kept in evidence only as RFC 7515 JSON (``{protected, payload, signature}``) in the
bundle member ``identity.json`` with the key set seen at check time; ``secrets`` names the
values every other output must redact (the compact token and its signature). The audience is
``policyengine`` only, it lives minutes and grants no API access, so keeping it there is safe.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit
from msgspec import Struct, field

AUDIENCE = "policyengine"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.com"
DEFAULT_ISSUERS = (GITHUB_ISSUER, GITLAB_ISSUER)
GITLAB_VARIABLE = "POLICYENGINE_ID_TOKEN"
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
"""Asymmetric algorithms only: ``none`` and the HMAC family would let anyone holding the public
key (or nobody) mint a token."""
LEEWAY_SECONDS = 60
MEMBER = "identity.json"
IDENTITY_FORMAT = "policyengine/identity/v1"

# -- labels of who recorded a record (outcome, review, emergency approval) ---------------------

VERIFIED = "verified (CI actor)"
SELF_ASSERTED = "self-asserted"
LEGACY = "CI actor (unverified)"
OIDC_SOURCE = "oidc"


def recorder_label(doc: Mapping[str, Any]) -> str:
    """How a record's recorder is shown: verified by a CI token, self-asserted, or (records made
    before tokens were checked: ``by_verified`` true from a CI variable) ``CI actor (unverified)``."""
    if doc.get("by_verified") is not True:
        return SELF_ASSERTED
    source = str(doc.get("by_source") or "")
    if source.startswith(OIDC_SOURCE) or source == "gate":
        return VERIFIED
    return LEGACY


class IdentityProblem(Exception):
    """The token is missing, unreadable, forged, expired, for another audience or issuer, or its
    claims disagree with the change. ``claim`` names the claim at fault (when one is)."""

    def __init__(self, message: str, *, claim: str | None = None, mismatch: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.claim = claim
        self.mismatch = mismatch
        """True when the token verified but names another repository, sha, environment or run:
        an error whether or not identity is required."""


class IdentitySettings(Struct, frozen=True):
    """The policy's ``identity:`` section."""

    issuers: tuple[str, ...] = DEFAULT_ISSUERS
    required: bool = False


def issuer_problem(url: str) -> str | None:
    """Why ``url`` cannot be a trusted issuer (None: it can): https, or http only to this host."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            if host == "localhost" or ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return "an http:// issuer must be this host (127.0.0.1, ::1 or localhost); use https"
    return "it is not an https:// URL"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def split_token(token: str) -> tuple[str, str, str]:
    """The three parts of a compact JWS; raise IdentityProblem unless it has exactly three."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise IdentityProblem("the ID token is not a compact JWS (three base64url parts)")
    return parts[0], parts[1], parts[2]


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of ``token``, NOT verified (to find its issuer); raise IdentityProblem."""
    _, payload, _ = split_token(token)
    try:
        claims = json.loads(_b64decode(payload))
    except (ValueError, UnicodeDecodeError):
        raise IdentityProblem("the ID token's payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise IdentityProblem("the ID token's payload is not a JSON object")
    return claims


def secrets(token: str) -> list[str]:
    """The values to redact from every output but ``identity.json``: the compact token and its signature."""
    out = [token.strip()]
    parts = token.strip().split(".")
    if len(parts) == 3 and len(parts[2]) >= 16:
        out.append(parts[2])
    return out


def token_digest(token: str) -> str:
    """SHA-256 of the compact token: how a store recognises a token it has already accepted."""
    return hashlib.sha256(token.strip().encode("ascii", errors="replace")).hexdigest()


def platform_of(claims: Mapping[str, Any]) -> str:
    """``github`` (``run_id`` claim), ``gitlab`` (``pipeline_id``) or ``other``."""
    if "run_id" in claims and "repository" in claims:
        return "github"
    if "pipeline_id" in claims and "project_path" in claims:
        return "gitlab"
    return "other"


def normalized(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims that matter, by one name whatever the platform."""
    platform = platform_of(claims)

    def s(name: str) -> str | None:
        value = claims.get(name)
        return str(value) if value is not None else None

    if platform == "gitlab":
        return {"platform": "gitlab", "issuer": s("iss"), "repository": s("project_path"), "ref": s("ref"),
                "sha": s("sha"), "workflow": s("ci_config_ref_uri"), "run_id": s("pipeline_id"),
                "run_attempt": None, "job_id": s("job_id"), "actor": s("user_login"), "triggering_actor": None,
                "environment": s("environment"), "iat": claims.get("iat"), "exp": claims.get("exp")}
    return {"platform": platform, "issuer": s("iss"), "repository": s("repository"), "ref": s("ref"),
            "sha": s("sha"), "workflow": s("workflow_ref") or s("workflow"), "run_id": s("run_id"),
            "run_attempt": s("run_attempt"), "job_id": None, "actor": s("actor"),
            "triggering_actor": s("triggering_actor"), "environment": s("environment"),
            "iat": claims.get("iat"), "exp": claims.get("exp")}


def _signing_key(token: str, jwks: Mapping[str, Any]) -> Any:
    """The key of ``jwks`` that signed ``token`` (PyJWT's JWKS client, fed the given key set)."""
    import jwt

    class _GivenKeys(jwt.PyJWKClient):
        def fetch_data(self) -> Any:  # the keys were fetched (or supplied) already: no network here
            return dict(jwks)

    try:
        client = _GivenKeys("https://keys.invalid/", cache_keys=False, cache_jwk_set=False)
        return client.get_signing_key_from_jwt(token.strip()).key
    except jwt.PyJWTError as exc:
        raise IdentityProblem(f"no key of the issuer's key set verifies the ID token ({exc})") from None


def verify_token(token: str, *, jwks: Mapping[str, Any], issuers: Sequence[str], now: datetime,
                 check_time: bool = True) -> dict[str, Any]:
    """Verify ``token``'s signature against ``jwks``, its audience and its issuer (one of
    ``issuers``) and, when ``check_time``, that ``now`` lies between ``iat`` and ``exp``.
    Return its claims; raise IdentityProblem naming what is wrong (expired, forged, wrong audience)."""
    import jwt

    key = _signing_key(token, jwks)
    try:
        claims = jwt.decode(token.strip(), key, algorithms=list(ALGORITHMS), audience=AUDIENCE,
                            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                     "verify_iss": False, "require": ["iss", "aud", "exp", "iat"]})
    except jwt.InvalidAudienceError:
        aud = unverified_claims(token).get("aud")
        raise IdentityProblem(f"the ID token's audience is {aud!r}, not {AUDIENCE!r}", claim="aud") from None
    except jwt.InvalidSignatureError:
        raise IdentityProblem("the ID token's signature does not verify with the issuer's keys (forged)",
                              claim="signature") from None
    except jwt.PyJWTError as exc:
        raise IdentityProblem(f"the ID token does not verify: {exc}") from None
    issuer = str(claims.get("iss") or "")
    if issuer.rstrip("/") not in {i.rstrip("/") for i in issuers}:
        raise IdentityProblem(f"the ID token's issuer {issuer!r} is not one the policy trusts "
                              f"({', '.join(issuers)})", claim="iss")
    if check_time:
        when = now.timestamp()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
            raise IdentityProblem("the ID token's exp and iat are not numbers")
        if when > exp + LEEWAY_SECONDS:
            raise IdentityProblem(f"the ID token expired at {_iso(exp)} (now {_iso(when)})", claim="exp")
        if iat > when + LEEWAY_SECONDS:
            raise IdentityProblem(f"the ID token was issued at {_iso(iat)}, after now ({_iso(when)})", claim="iat")
    return claims


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def disagreements(claims: Mapping[str, Any], change: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """What the verified claims say against the change and the job presenting the token: the
    repository, the sha deployed, the environment, and the run (GitHub run id and attempt,
    GitLab pipeline and job). Each names the claim and both values."""
    n = normalized(claims)
    out: list[str] = []

    def differ(claim: str, token_value: Any, other: Any, what: str) -> None:
        if other is None or other == "":
            return
        if token_value is None or str(token_value).casefold() != str(other).casefold():
            out.append(f"claim {claim} is {token_value!r}, but {what} is {other!r}")

    differ("repository" if n["platform"] != "gitlab" else "project_path", n["repository"],
           change.get("repository"), "the change's repository")
    differ("sha", n["sha"], change.get("commit"), "the commit deployed")
    if n["environment"] is not None:
        differ("environment", n["environment"], change.get("environment"), "the environment deployed to")
    if n["platform"] == "github":
        differ("run_id", n["run_id"], env.get("GITHUB_RUN_ID"), "this job's GITHUB_RUN_ID")
        differ("run_attempt", n["run_attempt"], env.get("GITHUB_RUN_ATTEMPT"), "this job's GITHUB_RUN_ATTEMPT")
    elif n["platform"] == "gitlab":
        differ("pipeline_id", n["run_id"], env.get("CI_PIPELINE_ID"), "this job's CI_PIPELINE_ID")
        differ("job_id", n["job_id"], env.get("CI_JOB_ID"), "this job's CI_JOB_ID")
        started = _epoch(env.get("CI_JOB_STARTED_AT"))
        iat = n.get("iat")
        # GitLab mints id_tokens when the job starts: one issued before it belongs to another job.
        if started is not None and isinstance(iat, (int, float)) and iat < started - LEEWAY_SECONDS:
            out.append(f"claim iat is {_iso(iat)}, but this job started at {_iso(started)} (CI_JOB_STARTED_AT)")
    return out


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


# -- fetching (I/O) ---------------------------------------------------------------------------


def ambient_token(env: Mapping[str, str]) -> str | None:
    """The CI's ID token for the audience ``policyengine``, or None outside a CI that offers one.

    Raise IdentityProblem when the CI offers one but it cannot be had (the GitHub request fails)."""
    if (env.get("GITHUB_ACTIONS") or "").strip().lower() == "true":
        url, bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        if not url or not bearer:
            return None  # the workflow did not grant `permissions: id-token: write`
        return _github_token(url, bearer, env)
    if (env.get("GITLAB_CI") or "").strip().lower() == "true":
        return _gitlab_token(env)
    return None


def _gitlab_token(env: Mapping[str, str]) -> str | None:
    """``POLICYENGINE_ID_TOKEN``, found as Sigstore finds it: the ``id`` package's GitLab detector
    (``<AUDIENCE>_ID_TOKEN``). It reads the process environment, which ``env`` is in every real
    run; a mapping given instead (the Python API) is read directly.

    Only the GitLab detector is used, not ``id.detect_credential``: that tries Google Cloud's
    metadata server before GitLab, and GitLab.com's runners are Google Cloud machines, so it
    could answer with the runner's own identity instead of the job's."""
    import os

    if env is os.environ:
        from id import AmbientCredentialError
        from id._internal.oidc.ambient import detect_gitlab

        try:
            found = detect_gitlab(AUDIENCE)
        except AmbientCredentialError:  # GitLab CI without the variable: no id_tokens: entry
            return None
        return found.strip() if found and found.strip() else None
    return (env.get(GITLAB_VARIABLE) or "").strip() or None


def _session(base_url: str, env: Mapping[str, str], *, bearer: str | None = None) -> Any:
    from policyengine.providers.http import HttpSession, HttpSettings, TokenInfo
    from policyengine.redact import Redactor, secret_values

    token = TokenInfo("Authorization" if bearer else "", f"bearer {bearer}" if bearer else "",
                      "ACTIONS_ID_TOKEN_REQUEST_TOKEN" if bearer else "none")
    return HttpSession(base_url, token=token, provider="oidc", settings=HttpSettings.from_env(env),
                       redactor=Redactor([*secret_values(env), *([bearer] if bearer else [])]),
                       block_on_401=True)


def _github_token(url: str, bearer: str, env: Mapping[str, str]) -> str:
    from policyengine.providers.http import ApiError

    parts = urlsplit(url)
    session = _session(f"{parts.scheme}://{parts.netloc}", env, bearer=bearer)
    try:
        body = session.get_json(url + ("&" if "?" in url else "?") + f"audience={AUDIENCE}")
    except ApiError as exc:
        raise IdentityProblem(f"the GitHub ID token request failed: {exc}") from None
    finally:
        session.close()
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise IdentityProblem("the GitHub ID token request answered without a token (no \"value\")")
    return value


def fetch_jwks(issuer: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The issuer's key set: ``/.well-known/openid-configuration`` -> ``jwks_uri``, on the
    issuer's own origin (or https), through the HTTP session. Raise IdentityProblem."""
    from policyengine.providers.http import ApiError

    problem = issuer_problem(issuer)
    if problem:
        raise IdentityProblem(f"issuer {issuer}: {problem}")
    session = _session(issuer, env)
    try:
        discovery = session.get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        if not isinstance(discovery, dict) or not isinstance(discovery.get("jwks_uri"), str):
            raise IdentityProblem(f"issuer {issuer}: its openid-configuration names no jwks_uri")
        if str(discovery.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
            raise IdentityProblem(f"issuer {issuer}: its openid-configuration names issuer "
                                  f"{discovery.get('issuer')!r}")
        jwks_uri = discovery["jwks_uri"]
        if issuer_problem(jwks_uri):
            raise IdentityProblem(f"issuer {issuer}: jwks_uri {jwks_uri}: {issuer_problem(jwks_uri)}")
        keys_session = session if session._same_origin(jwks_uri) else _session(jwks_uri, env)  # noqa: SLF001
        try:
            jwks = keys_session.get_json(jwks_uri)
        finally:
            if keys_session is not session:
                keys_session.close()
    except ApiError as exc:
        raise IdentityProblem(f"issuer {issuer}: its keys cannot be fetched: {exc}") from None
    finally:
        session.close()
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise IdentityProblem(f"issuer {issuer}: its jwks_uri answered no key set")
    return jwks


def to_json_serialization(token: str) -> dict[str, str]:
    """The token as RFC 7515 flattened JSON: ``{protected, payload, signature}``."""
    protected, payload, signature = split_token(token)
    return {"protected": protected, "payload": payload, "signature": signature}


def from_json_serialization(doc: Mapping[str, Any]) -> str:
    """The compact token of RFC 7515 flattened JSON; raise IdentityProblem."""
    parts = [doc.get(k) for k in ("protected", "payload", "signature")]
    if not all(isinstance(p, str) and p for p in parts):
        raise IdentityProblem("identity.json: token is not {protected, payload, signature}")
    return ".".join(parts)  # type: ignore[arg-type]


class Identity(Struct):
    """What a run learned of its CI identity: verified claims, or why there are none."""

    status: str  # "verified" | "unverified" | "absent"
    claims: dict[str, Any] = field(default_factory=dict)
    problem: IdentityProblem | None = None
    token: str | None = None
    jwks: dict[str, Any] | None = None

    @property
    def actor(self) -> str | None:
        return normalized(self.claims).get("actor") if self.status == "verified" else None

    def member(self) -> bytes | None:
        """``identity.json``: the token as RFC 7515 JSON, the key set seen, the verified claims."""
        if self.token is None:
            return None
        try:
            jws = to_json_serialization(self.token)
        except IdentityProblem:
            return None
        doc = {"format": IDENTITY_FORMAT, "status": self.status, "token": jws, "jwks": self.jwks,
               "claims": normalized(self.claims) if self.status == "verified" else None,
               "problem": self.problem.message if self.problem else None}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def summary(self) -> dict[str, Any]:
        """What the decision says of the identity (never the token)."""
        out: dict[str, Any] = {"status": self.status}
        if self.status == "verified":
            out["claims"] = normalized(self.claims)
            out["token_sha256"] = token_digest(self.token or "")
        if self.problem:
            out["problem"] = self.problem.message
        return out


def establish(env: Mapping[str, str], settings: IdentitySettings, now: datetime,
              change: Mapping[str, Any] | None = None) -> Identity:
    """Fetch and verify the CI's ID token; check its claims against ``change`` (when given).

    Never raises IdentityProblem: the returned Identity says ``verified`` (``problem`` set when
    its claims disagree with the change: ``problem.mismatch``), ``unverified`` (a token that did
    not verify: ``problem``) or ``absent`` (no token offered)."""
    try:
        token = ambient_token(env)
    except IdentityProblem as exc:
        return Identity("unverified", problem=exc)
    if token is None:
        return Identity("absent")
    try:
        issuer = str(unverified_claims(token).get("iss") or "")
        if issuer.rstrip("/") not in {i.rstrip("/") for i in settings.issuers}:
            raise IdentityProblem(f"the ID token's issuer {issuer!r} is not one the policy trusts "
                                  f"({', '.join(settings.issuers)})", claim="iss")
        jwks = fetch_jwks(issuer, env)
    except IdentityProblem as exc:
        return Identity("unverified", problem=exc, token=token)
    try:
        claims = verify_token(token, jwks=jwks, issuers=settings.issuers, now=now)
    except IdentityProblem as exc:
        return Identity("unverified", problem=exc, token=token, jwks=jwks)
    found = Identity("verified", claims=claims, token=token, jwks=jwks)
    if change is not None:
        wrong = disagreements(claims, change, env)
        if wrong:
            found.problem = IdentityProblem("the CI's ID token disagrees with the change: " + "; ".join(wrong),
                                            mismatch=True)
    return found
