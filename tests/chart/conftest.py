"""Fixtures of the chart checks (tests/chart): a pinned Helm, the chart rendered for every values
file, the facts of the code the rendered manifests are compared with.

Helm comes from the Go module proxy (``go install``) when no Helm of the pinned version is on PATH
or in ~/go/bin. It is never skipped: when it cannot be had, the tests fail and say why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chartkit import INSTALL_TIMEOUT, Renderer, ServiceFacts, find_or_install_helm, installed_services


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The first chart test may build Helm: give the chart tests room beyond the suite's timeout."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.timeout(INSTALL_TIMEOUT + 300))


@pytest.fixture(scope="session")
def helm() -> Path:
    return find_or_install_helm()


@pytest.fixture(scope="session")
def render(helm: Path) -> Renderer:
    return Renderer(helm)


@pytest.fixture(scope="session")
def services() -> dict[str, ServiceFacts]:
    return installed_services()
