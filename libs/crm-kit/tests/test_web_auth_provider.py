"""The identity provider's RS256 tokens next to the platform's own HS256 tokens.

``CRM_JWT_AUDIENCE`` and ``CRM_JWT_ISSUER`` apply to the provider's tokens (RS256, from
``CRM_JWT_PUBLIC_KEY`` or ``CRM_JWT_JWKS_URL``); the platform's HS256 tokens (dev sign-in,
``make token``) carry neither and stay accepted on the same platform.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from crm_kit.settings import SERVICES, load_settings
from crm_kit.web.auth import TokenVerifier, issue_token
from crm_kit.web.problem import Problem

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
AUDIENCE = "https://api.crm.example"
ISSUER = "https://idp.example"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return _rsa()


def _pem(private: rsa.RSAPrivateKey) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _provider_token(private: rsa.RSAPrivateKey, kid: str | None = None, **overrides: Any) -> str:
    claims = {"sub": "ann", "office": "office-2", "roles": ["marketing"], "name": "Ann Example",
              "aud": AUDIENCE, "iss": ISSUER, "iat": int(time.time()), "exp": int(time.time()) + 300,
              **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid} if kid else None)


def _refused(verifier: TokenVerifier, token: str) -> Problem:
    with pytest.raises(Problem) as caught:
        verifier.verify(token)
    return caught.value


def test_provider_token_with_the_configured_audience_and_issuer_is_accepted(key):
    verifier = TokenVerifier(SECRET, public_key=_pem(key), audience=AUDIENCE, issuer=ISSUER)
    identity = verifier.verify(_provider_token(key))
    assert (identity.user_id, identity.office_id, identity.roles, identity.name) == \
        ("ann", "office-2", ("marketing",), "Ann Example")
    assert identity.has("leads:create") and not identity.has("catalogue:admin")


@pytest.mark.parametrize("claims", [
    {"aud": "https://another-api.example"},
    {"aud": None},
    {"iss": "https://evil.example"},
    {"iss": None},
])
def test_provider_token_with_a_wrong_or_missing_audience_or_issuer_is_401(key, claims):
    verifier = TokenVerifier(SECRET, public_key=_pem(key), audience=AUDIENCE, issuer=ISSUER)
    problem = _refused(verifier, _provider_token(key, **claims))
    assert problem.status == 401 and problem.headers["WWW-Authenticate"].startswith("Bearer")


def test_dev_hs256_token_without_aud_or_iss_is_still_accepted_where_the_provider_is_configured(key):
    verifier = TokenVerifier(SECRET, public_key=_pem(key), audience=AUDIENCE, issuer=ISSUER)
    dev = issue_token(SECRET, user_id="dev", name="Dev", office_id="office-1", roles=["admin"])
    assert verifier.verify(dev).user_id == "dev"
    # ... and settings read from the environment make the same verifier.
    settings = load_settings("gateway", {
        "CRM_SERVICE_NAME": "gateway", "CRM_JWT_SECRET": SECRET, "CRM_JWT_PUBLIC_KEY": _pem(key),
        "CRM_JWT_AUDIENCE": AUDIENCE, "CRM_JWT_ISSUER": ISSUER,
        **{f"CRM_{s.upper()}_URL": "http://127.0.0.1:1" for s in SERVICES},
    })
    from_env = TokenVerifier.from_settings(settings)
    assert from_env.verify(dev).user_id == "dev"
    assert from_env.verify(_provider_token(key)).user_id == "ann"
    assert _refused(from_env, _provider_token(key, aud="https://another-api.example")).status == 401


def test_hs256_token_signed_with_another_secret_or_claiming_the_provider_is_refused(key):
    verifier = TokenVerifier(SECRET, public_key=_pem(key), audience=AUDIENCE, issuer=ISSUER)
    other = issue_token("another-secret-that-is-also-long-enough!!", user_id="x", name="x", office_id="o",
                        roles=["admin"])
    assert _refused(verifier, other).status == 401
    # An HS256 token is the platform's own: one minted for some other API (an aud) is not taken.
    foreign = jwt.encode({"sub": "x", "office": "o", "roles": [], "exp": int(time.time()) + 60, "aud": AUDIENCE},
                         SECRET, algorithm="HS256")
    assert _refused(verifier, foreign).status == 401


def test_rs256_token_signed_by_another_key_is_refused(key):
    verifier = TokenVerifier(SECRET, public_key=_pem(key), audience=AUDIENCE, issuer=ISSUER)
    assert _refused(verifier, _provider_token(_rsa())).status == 401


def test_without_audience_and_issuer_settings_rs256_tokens_without_them_are_accepted(key):
    verifier = TokenVerifier(SECRET, public_key=_pem(key))
    assert verifier.verify(_provider_token(key, aud=None, iss=None)).user_id == "ann"


def test_rs256_is_refused_when_no_provider_key_is_configured(key):
    assert _refused(TokenVerifier(SECRET), _provider_token(key)).status == 401


# -- the provider's JWKS (CRM_JWT_JWKS_URL) ---------------------------------------------------------

class _Jwks:
    """A JWKS endpoint on 127.0.0.1 whose keys the test changes (rotation) and counts fetches of."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, private: rsa.RSAPrivateKey, kid: str) -> None:
        jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})


@pytest.fixture
def jwks() -> Iterator[_Jwks]:
    server = _Jwks()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_jwks_url_verifies_by_kid_and_follows_a_rotation(jwks):
    first, second = _rsa(), _rsa()
    jwks.publish(first, "k1")
    verifier = TokenVerifier(SECRET, jwks_url=jwks.url, audience=AUDIENCE, issuer=ISSUER, jwks_cooldown=0)
    assert verifier.verify(_provider_token(first, kid="k1")).user_id == "ann"
    assert verifier.verify(_provider_token(first, kid="k1", sub="bob")).user_id == "bob"
    assert jwks.fetches == 1  # cached
    # The provider rotates: a token with the new kid makes the verifier fetch the keys again.
    jwks.publish(second, "k2")
    assert verifier.verify(_provider_token(second, kid="k2")).user_id == "ann"
    assert jwks.fetches == 2
    # The audience and issuer checks hold for keys from the JWKS too.
    assert _refused(verifier, _provider_token(second, kid="k2", aud="https://another-api.example")).status == 401
    # A kid the provider does not publish, a token without kid, a key it does not publish: 401.
    assert _refused(verifier, _provider_token(_rsa(), kid="unknown")).status == 401
    assert _refused(verifier, _provider_token(first)).status == 401
    assert _refused(verifier, _provider_token(_rsa(), kid="k1")).status == 401
    # HS256 dev tokens are unaffected.
    dev = issue_token(SECRET, user_id="dev", name="Dev", office_id="office-1", roles=["viewer"])
    assert verifier.verify(dev).user_id == "dev"


def test_unknown_kids_do_not_refetch_the_jwks_within_the_cooldown(jwks):
    first = _rsa()
    jwks.publish(first, "k1")
    verifier = TokenVerifier(SECRET, jwks_url=jwks.url, audience=AUDIENCE, issuer=ISSUER)  # 30 s cooldown
    assert verifier.verify(_provider_token(first, kid="k1")).user_id == "ann"
    for n in range(5):
        assert _refused(verifier, _provider_token(first, kid=f"made-up-{n}")).status == 401
    assert jwks.fetches == 1


def test_jwks_url_unreachable_is_503_not_a_crash(key):
    verifier = TokenVerifier(SECRET, jwks_url="http://127.0.0.1:9/jwks", audience=AUDIENCE, issuer=ISSUER)
    problem = _refused(verifier, _provider_token(key, kid="k1"))
    assert problem.status == 503 and problem.headers["Retry-After"]
