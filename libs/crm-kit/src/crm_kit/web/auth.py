"""Identity from a bearer JWT, verified in every process that serves a request.

Two kinds of token are accepted:

* HS256, signed with ``CRM_JWT_SECRET``: the platform's own tokens (``make token``, the
  console's development sign-in, internal callers). Whoever holds the secret is the issuer,
  so no ``aud`` or ``iss`` is checked (and, as before, a token that carries an ``aud`` is
  refused: these tokens are not meant for anyone else's API).
* RS256, the identity provider's tokens, when ``CRM_JWT_PUBLIC_KEY`` (a PEM) or
  ``CRM_JWT_JWKS_URL`` (the provider's JWKS, keys picked by ``kid``, so they may rotate) is
  set. ``CRM_JWT_AUDIENCE`` and ``CRM_JWT_ISSUER`` apply to these: when set, the token must
  carry that ``aud`` (e.g. the API's resource indicator) and ``iss``.

So one platform accepts both the dev tokens and the provider's. The token's ``roles`` map to
permissions through ``CRM_ROLE_PERMISSIONS`` (or the defaults below, which are the roles the
API contract ships).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from crm_kit.identity import Identity
from crm_kit.web.input import text_error
from crm_kit.web.limits import REF_LENGTH
from crm_kit.web.problem import Problem

_ACTIONS = ("view", "create", "edit", "delete")
ALL_PERMISSIONS: tuple[str, ...] = (
    *(f"leads:{a}" for a in _ACTIONS),
    *(f"opportunities:{a}" for a in _ACTIONS),
    "catalogue:admin",
    "triggers:admin",
    "webhooks:admin",
    "files:view",
    "files:edit",
)

DEFAULT_ROLE_PERMISSIONS: dict[str, list[str]] = {
    "admin": list(ALL_PERMISSIONS),
    "marketing": [*(f"leads:{a}" for a in _ACTIONS), "opportunities:view", "files:view", "files:edit"],
    "account_manager": [*(f"opportunities:{a}" for a in _ACTIONS), "leads:view", "files:view", "files:edit"],
    "viewer": [p for p in ALL_PERMISSIONS if p.endswith(":view")],
}


_VERIFIED_KEPT = 4096  # tokens remembered per process (see TokenVerifier.verify)


def _unauthenticated(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="crm"'})


def _contract_claims(claims: Mapping[str, Any]) -> tuple[str, str, list[str]]:
    """``sub``, ``office`` and ``roles`` as the contract requires them, or a 401.

    ``sub`` and ``office`` are non-empty strings (not blank, at most ``REF_LENGTH``: the records
    store them as who created and changed what), ``roles`` a list of strings (it
    may be empty: a token without roles may still read the catalogue). ``exp`` is required
    by the decoder itself.
    """
    for claim in ("sub", "office"):
        value = claims.get(claim)
        if (not isinstance(value, str) or not value.strip() or len(value) > REF_LENGTH
                or text_error(value, multiline=False)):
            raise _unauthenticated(f"The token's {claim} claim must be a non-empty string (one line of text, "
                                   f"at most {REF_LENGTH} characters).")
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise _unauthenticated("The token's roles claim must be a list of strings.")
    return claims["sub"], claims["office"], roles


class TokenVerifier:
    """Checks signatures, expiry and claims; maps roles to permissions."""

    def __init__(
        self,
        secret: str,
        *,
        public_key: str = "",
        jwks_url: str = "",
        audience: str = "",
        issuer: str = "",
        role_permissions: Mapping[str, Iterable[str]] | None = None,
        leeway: int = 30,
        jwks_cooldown: float = 30,
    ) -> None:
        if not secret:
            raise ValueError("a JWT secret is required")
        self._secret = secret
        self._public_key = public_key
        # Fetched at the first RS256 token, cached for 5 minutes; a kid it does not know (a rotated
        # key) fetches the set again, at most once every ``jwks_cooldown`` seconds (so tokens with
        # made-up kids cannot make every request fetch it).
        self._jwks = (jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5,
                                      cooldown_duration=jwks_cooldown) if jwks_url else None)
        self._audience = audience or None
        self._issuer = issuer or None
        self._leeway = leeway
        self._verified: dict[str, tuple[Identity, float]] = {}  # token -> its identity, valid until
        roles = role_permissions or DEFAULT_ROLE_PERMISSIONS
        self.role_permissions = {role: frozenset(perms) for role, perms in roles.items()}

    @classmethod
    def from_settings(cls, settings: Any) -> TokenVerifier:
        return cls(
            settings["CRM_JWT_SECRET"],
            public_key=settings.get("CRM_JWT_PUBLIC_KEY") or "",
            jwks_url=settings.get("CRM_JWT_JWKS_URL") or "",
            audience=settings.get("CRM_JWT_AUDIENCE") or "",
            issuer=settings.get("CRM_JWT_ISSUER") or "",
            role_permissions=settings.get("CRM_ROLE_PERMISSIONS") or None,
        )

    def permissions_for(self, roles: Iterable[str]) -> frozenset[str]:
        perms: set[str] = set()
        for role in roles:
            perms |= self.role_permissions.get(role, frozenset())
        return frozenset(perms)

    def verify(self, token: str) -> Identity:
        """Return the identity in ``token`` or raise a 401 Problem saying why not.

        A token verified with a key that cannot change while the process runs (the secret, the
        configured PEM) is remembered until it expires (``exp`` plus the leeway, as the decoder
        counts it): a request passes through the gateway and one or more services, each of which
        would otherwise check the same signature and claims again. Tokens whose key comes from
        the provider's JWKS (which may rotate) are checked every time."""
        known = self._verified.get(token)
        if known is not None and time.time() < known[1]:
            return known[0]
        identity, valid_until = self._verify(token)
        if valid_until is not None:
            if len(self._verified) >= _VERIFIED_KEPT:
                self._verified.clear()  # many callers at once: start again rather than grow
            self._verified[token] = (identity, valid_until)
        return identity

    def _verify(self, token: str) -> tuple[Identity, float | None]:
        """The identity, and until when it may be remembered (None: not at all)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated("The bearer token is malformed.") from None
        alg = header.get("alg")
        audience = issuer = None
        if alg == "HS256":
            key: Any = self._secret
            constant_key = True
        elif alg == "RS256" and (self._public_key or self._jwks is not None):
            key = self._provider_key(token)
            audience, issuer = self._audience, self._issuer
            constant_key = self._jwks is None
        else:
            raise _unauthenticated(f"Tokens signed with {alg!r} are not accepted.")
        options: Any = {"require": ["exp", "sub"]}  # and office, roles: _contract_claims
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer,
                leeway=self._leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("The bearer token has expired.") from None
        except jwt.PyJWTError:
            raise _unauthenticated("The bearer token is not valid.") from None
        sub, office, roles = _contract_claims(claims)
        name = claims.get("name")
        identity = Identity(
            user_id=sub,
            name=name.strip() if isinstance(name, str) and name.strip() else sub,
            office_id=office,
            roles=tuple(roles),
            permissions=self.permissions_for(roles),
            token=token,
        )
        # The decoder refuses a token once exp <= now - leeway: it holds while now < exp + leeway.
        return identity, (int(claims["exp"]) + self._leeway) if constant_key else None

    def _provider_key(self, token: str) -> Any:
        """The key that verifies the provider's ``token``: from the JWKS by ``kid``, else the PEM."""
        if self._jwks is None:
            return self._public_key
        try:
            return self._jwks.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError:
            raise Problem(503, "The identity provider's signing keys cannot be fetched right now; try again.",
                          headers={"Retry-After": "5"}) from None
        except jwt.PyJWTError:  # no kid, or a kid the provider does not publish
            if self._public_key:
                return self._public_key
            raise _unauthenticated("The bearer token is not signed by a key of the identity provider.") from None

    def identity_from_header(self, authorization: str | None) -> Identity:
        """Verify an ``Authorization`` header value; 401 when absent or not a bearer token."""
        if not authorization:
            raise _unauthenticated("This endpoint needs a bearer token (Authorization: Bearer <token>).")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("The Authorization header must be 'Bearer <token>'.")
        return self.verify(token.strip())


def issue_token(
    secret: str,
    *,
    user_id: str,
    name: str,
    office_id: str,
    roles: Iterable[str],
    ttl_seconds: int = 3600,
    now: int | None = None,
) -> str:
    """Sign an HS256 token with the contract's claims (dev tooling and tests)."""
    import time

    issued = int(time.time()) if now is None else now
    claims = {
        "sub": user_id,
        "name": name,
        "office": office_id,
        "roles": list(roles),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def require_permission(identity: Identity, permission: str | None) -> None:
    """403 unless ``identity`` holds ``permission`` (None: any valid token will do)."""
    if permission and not identity.has(permission):
        raise Problem(403, f"This action needs the permission {permission!r}.")
