"""The tree keeps one way to do each thing (issue 18): these fail the build when it drifts.

- Problem+json is built only at the web edge: the kit's ``crm_kit/web``, the gateway, the
  console, and the modules that declare routes (``api.py``, ``routes.py``, ``*_routes.py``).
  Everything else raises domain errors (``crm_kit.errors``).
- Topic names come from the registry (``crm_events.topics``), never as literals.
- Fault injection lives in the chaos tooling, not in the runtime libraries.
- ``libs/`` holds runtime code: nothing there imports the development tools or pytest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for pattern in ("services/*/src/**/*.py", "libs/*/src/**/*.py") for p in ROOT.glob(pattern)
                 if "migrations" not in p.parts and not p.name.endswith("_pb2.py"))
EDGE_DIRS = ("crm_kit/web/", "crm_gateway/", "crm_console/")
EDGE_NAMES = re.compile(r"^(api|routes|\w+_routes)\.py$")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_edge(path: Path) -> bool:
    return any(d in _rel(path) for d in EDGE_DIRS) or bool(EDGE_NAMES.match(path.name))


def _offending(pattern: re.Pattern[str], paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{_rel(path)}:{number}: {line.strip()}")
    return found


def test_the_sources_are_found():
    assert len(SOURCES) > 100 and any(_is_edge(p) for p in SOURCES) and not all(_is_edge(p) for p in SOURCES)


def test_no_problem_is_built_outside_the_web_edge():
    domain = [p for p in SOURCES if not _is_edge(p)]
    assert _offending(re.compile(r"\bProblem\("), domain) == [], (
        "raise a domain error (crm_kit.errors) here; the web edge maps it to problem+json")


def test_topic_names_come_only_from_the_registry():
    literal = re.compile(r"""["']crm\.(?!events\.v1)[a-z_]+(\.[a-z_]+)?\.v1["']""")
    outside = [p for p in SOURCES if not _rel(p).endswith("crm_events/topics.py")]
    assert _offending(literal, outside) == [], "name topics through crm_events.topics (LEADS, topic_of, ...)"


@pytest.mark.parametrize("what", [r"CRM_FAULT", r"^\s*(from|import) (crm_devstack|crm_codegen|pytest)\b"])
def test_runtime_libraries_hold_no_tooling(what):
    libs = [p for p in SOURCES if _rel(p).startswith("libs/")]
    assert _offending(re.compile(what), libs) == [], f"{what}: tooling belongs in tools/, not in libs/"
