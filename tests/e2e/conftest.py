"""Order of the end-to-end tests on the shared ``platform``, and the OpenID provider its console trusts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from crm_devstack.ports import free_port

_E2E_DIR = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects: `make test-fast` leaves every e2e test out
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/e2e is an ``e2e`` test (the console's in Chromium too), and tests
    marked ``runs_last`` go after every other test of the session.

    The API fuzzing run changes the shared platform's configuration in ways no test can
    predict (it creates, edits and deletes stages, tables and templates with an admin token),
    so it runs once every test that relies on the starter configuration has run.
    """
    for item in items:
        if _E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)


# -- a real OpenID provider for the console's single sign-on (tests/e2e/console/oidc) ------------


OIDC_DIR = Path(__file__).resolve().parent / "console" / "oidc"
OIDC_INSTALL_HINT = ("run `make install` (it installs tests/e2e/console/oidc from its package-lock.json with "
                     "npm ci)")


@dataclass(frozen=True)
class OidcSettings:
    """The test identity provider as the platform is told about it before either starts."""

    port: int
    private_key: rsa.RSAPrivateKey
    kid: str = "crm-e2e-1"
    client_id: str = "crm-console"
    client_secret: str = field(default_factory=lambda: os.urandom(24).hex())
    resource: str = "https://crm.example/api"  # the API's resource indicator: the access tokens' aud
    scope: str = "openid profile crm"
    # Who may sign in at the provider: login -> the API contract's claims.
    accounts: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "ann": {"name": "Ann Marketing", "office": "office-2", "roles": ["marketing"]},
    })

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_pem(self) -> str:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def private_jwk(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key))
        jwk.pop("key_ops", None)
        return {**jwk, "kid": self.kid}


@dataclass(frozen=True)
class OidcProvider:
    settings: OidcSettings
    discovery: dict[str, Any]
    log: Path

    @property
    def issuer(self) -> str:
        return self.settings.issuer


@pytest.fixture(scope="session")
def oidc_settings() -> OidcSettings:
    """A fresh signing key and a reserved port for the provider (it starts with ``oidc_provider``)."""
    return OidcSettings(port=free_port(), private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def platform_env(oidc_settings: OidcSettings) -> dict[str, str]:
    """Every platform process trusts the test provider's tokens (RS256, its aud and iss) next to
    the suite's HS256 tokens (which carry neither), and the console offers single sign-on."""
    return {
        "CRM_JWT_PUBLIC_KEY": oidc_settings.public_pem,
        "CRM_JWT_AUDIENCE": oidc_settings.resource,
        "CRM_JWT_ISSUER": oidc_settings.issuer,
        "CRM_CONSOLE_OIDC_ISSUER": oidc_settings.issuer,
        "CRM_CONSOLE_OIDC_CLIENT_ID": oidc_settings.client_id,
        "CRM_CONSOLE_OIDC_CLIENT_SECRET": oidc_settings.client_secret,
        "CRM_CONSOLE_OIDC_SCOPE": oidc_settings.scope,
        "CRM_CONSOLE_OIDC_RESOURCE": oidc_settings.resource,
    }


@pytest.fixture(scope="session")
def oidc_provider(oidc_settings: OidcSettings, platform: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """panva's oidc-provider (``tests/e2e/console/oidc/provider.mjs``) on the reserved port, with the
    console's callback (through the gateway and direct) as the client's redirect URIs."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed, so the OpenID provider cannot run: install Node.js 20+ and npm, then "
                    f"{OIDC_INSTALL_HINT}", pytrace=False)
    if not (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        pytest.fail(f"{OIDC_DIR / 'node_modules' / 'oidc-provider'} is missing: {OIDC_INSTALL_HINT}", pytrace=False)
    s = oidc_settings
    callbacks = {f"{platform.console_url}/signin/callback", f"{platform.api_url('console')}/signin/callback"}
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "OIDC_PORT": str(s.port),
        "OIDC_CLIENT_ID": s.client_id,
        "OIDC_CLIENT_SECRET": s.client_secret,
        "OIDC_REDIRECT_URIS": ",".join(sorted(callbacks)),
        "OIDC_JWK": json.dumps(s.private_jwk),
        "OIDC_RESOURCE": s.resource,
        "OIDC_ACCOUNTS": json.dumps(s.accounts),
    }
    log = tmp_path_factory.mktemp("oidc") / "provider.log"
    with log.open("wb") as out:
        process = subprocess.Popen([node, "provider.mjs", str(s.port)], cwd=OIDC_DIR, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        discovery = _wait_for_discovery(s.issuer, process, log)
        yield OidcProvider(settings=s, discovery=discovery, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for_discovery(issuer: str, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    url = f"{issuer}/.well-known/openid-configuration"
    while True:
        if process.poll() is not None:
            pytest.fail(f"the OpenID provider exited ({process.returncode}) before it served {url}:\n"
                        f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200 and r.json().get("issuer") == issuer:
                return r.json()
        except (requests.RequestException, ValueError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the OpenID provider did not serve {url} within 30 s:\n"
                        f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)
        time.sleep(0.1)
