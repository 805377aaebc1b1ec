"""A local OIDC issuer on loopback: discovery document, JWKS and GitHub's token endpoint.

Keys are generated with ``cryptography`` and tokens signed with PyJWT, as a real issuer signs
them; nothing of the library under test is mocked. ``mint`` makes a token with GitHub's (or
GitLab's) claims; ``serve_token`` sets what the GitHub token endpoint answers to a bearer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REQUEST_TOKEN = "ghs-request-" + "R" * 30
"""What GitHub puts in ACTIONS_ID_TOKEN_REQUEST_TOKEN: the bearer for the token endpoint."""


def new_rsa() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


def jwk_of(key: Any, kid: str) -> dict[str, Any]:
    """The public JWK of ``key``, as an issuer publishes it."""
    if isinstance(key, rsa.RSAPrivateKey):
        doc = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        doc.update({"alg": "RS256"})
    else:
        doc = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        doc.update({"alg": "ES256"})
    doc.update({"kid": kid, "use": "sig"})
    return doc


def github_claims(issuer: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer, "aud": "policyengine", "iat": now - 5, "nbf": now - 5, "exp": now + 300,
              "jti": f"jti-{now}-{id(over)}", "sub": "repo:acme/payments:environment:production",
              "repository": "acme/payments", "repository_owner": "acme", "ref": "refs/heads/main",
              "sha": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6",
              "workflow_ref": "acme/payments/.github/workflows/deploy.yml@refs/heads/main",
              "run_id": "1658821493", "run_attempt": "1", "actor": "dana", "environment": "production",
              "event_name": "push"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def gitlab_claims(issuer: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer, "aud": "policyengine", "iat": now - 5, "nbf": now - 5, "exp": now + 300,
              "jti": f"gl-{now}-{id(over)}", "sub": "project_path:acme/payments:ref_type:branch:ref:main",
              "project_path": "acme/payments", "namespace_path": "acme", "ref": "main",
              "sha": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "pipeline_id": "61", "job_id": "7",
              "user_login": "dana", "environment": "production",
              "ci_config_ref_uri": "gitlab.example.com/acme/payments//.gitlab-ci.yml@refs/heads/main"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


class Issuer:
    """One issuer: its URL, signing key (``kid`` ``k1``), the JWKS it publishes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key = new_rsa()
        self.kid = "k1"
        self.token_answer: str | None = None
        self.token_requests: list[dict[str, Any]] = []

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk_of(self.key, self.kid)]}

    def mint(self, claims: dict[str, Any], *, key: Any = None, kid: str | None = None,
             algorithm: str = "RS256") -> str:
        return jwt.encode(claims, key or self.key, algorithm=algorithm, headers={"kid": kid or self.kid})

    def github(self, **over: Any) -> str:
        return self.mint(github_claims(self.url, **over))

    def gitlab(self, **over: Any) -> str:
        return self.mint(gitlab_claims(self.url, **over))

    def github_env(self, token: str, **extra: str) -> dict[str, str]:
        """The variables GitHub Actions sets for a job with ``id-token: write``; the endpoint answers ``token``."""
        self.token_answer = token
        env = {"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/payments",
               "GITHUB_SHA": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "GITHUB_RUN_ID": "1658821493",
               "GITHUB_RUN_ATTEMPT": "1", "GITHUB_ACTOR": "dana", "GITHUB_SERVER_URL": "https://github.com",
               "ACTIONS_ID_TOKEN_REQUEST_URL": f"{self.url}/token?api-version=2.0",
               "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN}
        env.update(extra)
        return env


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    """Serve an issuer on 127.0.0.1 (a free port) for the duration of the block."""
    issuer: Issuer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parts = urlsplit(self.path)
            if parts.path == "/.well-known/openid-configuration":
                self._json(200, {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                                 "id_token_signing_alg_values_supported": ["RS256"]})
            elif parts.path == "/jwks":
                self._json(200, issuer.jwks)
            elif parts.path == "/token":
                query = parse_qs(parts.query)
                issuer.token_requests.append({"audience": query.get("audience"),
                                              "authorization": self.headers.get("Authorization")})
                if self.headers.get("Authorization", "").lower() != f"bearer {REQUEST_TOKEN}".lower():
                    self._json(401, {"message": "bad bearer"})
                elif query.get("audience") != ["policyengine"]:
                    self._json(400, {"message": "audience"})
                else:
                    self._json(200, {"value": issuer.token_answer})
            else:
                self._json(404, {"message": "not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer = Issuer(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()


def verified_ci(monkeypatch: Any, issuer: Issuer, actor: str) -> None:
    """Make this process a GitHub Actions job whose ID token (from ``issuer``, trusted as if it
    were GitHub's) names ``actor``: a record made now is **verified (CI actor)**."""
    from policyengine.providers import oidc

    issuer.token_answer = issuer.github(actor=actor)
    for name, value in {"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": actor,
                        "ACTIONS_ID_TOKEN_REQUEST_URL": f"{issuer.url}/token?api-version=2.0",
                        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(oidc, "DEFAULT_ISSUERS", (*oidc.DEFAULT_ISSUERS, issuer.url))
