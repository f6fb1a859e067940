"""The README's configuration table is the one generated from the settings declarations."""

from pathlib import Path

from crm_devstack.config_table import markdown_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_every_setting_as_declared():
    text = README.read_text()
    start = text.index("<!-- config-table:start -->") + len("<!-- config-table:start -->")
    end = text.index("<!-- config-table:end -->")
    assert text[start:end].strip() == markdown_table(), (
        "README.md's configuration table is stale: paste the output of `make config-table` between its markers")
