"""The README's topic table is the one generated from the registry and the services' worker plans."""

from pathlib import Path

from crm_devstack.topics_table import markdown_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_every_topic_and_consumer_group_as_the_workers_run_them():
    text = README.read_text()
    start = text.index("<!-- topics-table:start -->") + len("<!-- topics-table:start -->")
    end = text.index("<!-- topics-table:end -->")
    assert text[start:end].strip() == markdown_table(), (
        "README.md's topic table is stale: paste the output of `make topics-table` between its markers")
