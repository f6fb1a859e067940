"""The README's generated tables are the ones their sources give now: the configuration table
(from the settings declarations) and the topic table (from the registry and the worker plans)."""

from pathlib import Path

import pytest

from crm_devstack import config_table, topics_table

README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.mark.parametrize(("marker", "render", "target"), [
    ("config-table", config_table.markdown_table, "config-table"),
    ("topics-table", topics_table.markdown_table, "topics-table"),
])
def test_readme_tables_are_as_generated(marker, render, target):
    text = README.read_text()
    start = text.index(f"<!-- {marker}:start -->") + len(f"<!-- {marker}:start -->")
    end = text.index(f"<!-- {marker}:end -->")
    assert text[start:end].strip() == render(), (
        f"README.md's {marker} is stale: paste the output of `make {target}` between its markers")
