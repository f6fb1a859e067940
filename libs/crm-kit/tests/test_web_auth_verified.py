"""A verified token is remembered by its process until it expires (the gateway and each service a
request passes would otherwise check the same signature again), and never past its expiry."""

from __future__ import annotations

import time

import jwt
import pytest

from crm_kit.web import issue_token
from crm_kit.web.auth import TokenVerifier
from crm_kit.web.problem import Problem

SECRET = "verified-token-test-secret-long-enough-for-hs256"


def test_the_same_token_is_verified_once_and_gives_the_same_identity(monkeypatch):
    verifier = TokenVerifier(SECRET)
    token = issue_token(SECRET, user_id="u1", name="User One", office_id="o1", roles=["marketing"])
    decoded: list[str] = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **kw: decoded.append("x") or real_decode(*a, **kw))
    first = verifier.verify(token)
    assert verifier.verify(token) is first and verifier.identity_from_header(f"Bearer {token}") is first
    assert decoded == ["x"]
    assert (first.user_id, first.office_id, first.roles) == ("u1", "o1", ("marketing",))
    assert first.has("leads:view") and not first.has("catalogue:admin")

    other = issue_token(SECRET, user_id="u2", name="User Two", office_id="o2", roles=["viewer"])
    assert verifier.verify(other).user_id == "u2"  # another token: verified on its own
    assert decoded == ["x", "x"]


def test_a_remembered_token_is_refused_once_it_expires():
    verifier = TokenVerifier(SECRET, leeway=0)
    now = int(time.time())
    token = issue_token(SECRET, user_id="u1", name="User One", office_id="o1", roles=["viewer"],
                        ttl_seconds=2, now=now)
    assert verifier.verify(token).user_id == "u1"
    time.sleep(max(now + 2 - time.time(), 0) + 0.05)  # the token's exp passes
    with pytest.raises(Problem) as refused:
        verifier.verify(token)
    assert refused.value.status == 401 and refused.value.detail == "The bearer token has expired."


def test_refused_tokens_are_not_remembered():
    verifier = TokenVerifier(SECRET)
    forged = issue_token("another-secret-that-is-also-long-enough-for-hs256", user_id="u1", name="U",
                         office_id="o1", roles=[])
    for _ in range(2):
        with pytest.raises(Problem) as refused:
            verifier.verify(forged)
        assert refused.value.status == 401
    assert forged not in verifier._verified
