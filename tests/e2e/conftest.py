"""Order of the end-to-end tests on the shared ``platform``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``runs_last`` go after every other test of the session.

    The API fuzzing run changes the shared platform's configuration in ways no test can
    predict (it creates, edits and deletes stages, tables and templates with an admin token),
    so it runs once every test that relies on the starter configuration has run.
    """
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)
