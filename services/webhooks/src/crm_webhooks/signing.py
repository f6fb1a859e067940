"""Endpoint secrets: made, kept encrypted at rest, and used to sign deliveries.

A secret is ``whsec_`` + base64 of 32 random bytes (the Standard Webhooks form); the service
stores it encrypted with Fernet (``CRM_WEBHOOK_SECRETS_KEY``: several keys may be given, the
first encrypts and all decrypt, so the key itself can rotate) and shows it once. Signatures are
the Standard Webhooks ones, made by the ``standardwebhooks`` package: ``v1,<base64 HMAC-SHA256
of "id.timestamp.body">``; while a rotated secret's overlap lasts, a delivery carries a
signature by each secret (space-separated), so receivers can switch at their own pace.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets as random
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"
ROTATION_OVERLAP = dt.timedelta(hours=24)


class SecretsKeyError(RuntimeError):
    """The service has no usable key to keep secrets with (a configuration problem)."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(random.token_bytes(32)).decode()


def hint(secret: str) -> str:
    """What may be shown of a secret later: its last four characters."""
    return secret[-4:]


class Vault:
    """Encrypts and decrypts secrets with the configured Fernet keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretsKeyError("CRM_WEBHOOK_SECRETS_KEY is required by the webhooks service: one or more Fernet "
                                  "keys, comma-separated (make one with `python -c \"from cryptography.fernet "
                                  "import Fernet; print(Fernet.generate_key().decode())\"`).")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as exc:
            raise SecretsKeyError(f"CRM_WEBHOOK_SECRETS_KEY holds a key that is no Fernet key: {exc}") from None

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretsKeyError("A stored webhook secret cannot be decrypted with CRM_WEBHOOK_SECRETS_KEY "
                                  "(was a key removed before its secrets were re-encrypted?).") from None


def signature(secrets: Sequence[str], msg_id: str, at: dt.datetime, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,...`` per secret, space-separated."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


def headers(secrets: Sequence[str], msg_id: str, at: dt.datetime, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's, in seconds)."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature(secrets, msg_id, at, body), "content-type": "application/json"}
