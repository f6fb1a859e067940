"""``make config-table``: the README's configuration table, generated from ``crm_kit.settings.SETTINGS``.

Documentation, not runtime: the services read their settings through ``crm_kit.settings``;
this renders the same declarations for the README (a test fails when the README's copy is
stale), so the two cannot drift.
"""

from __future__ import annotations

from crm_kit.settings import SETTINGS


def markdown_table() -> str:
    """The configuration table for the README, generated from ``SETTINGS``."""
    lines = ["| variable | default | required by | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = "-" if s.default in (None, "") else f"`{s.default}`"
        required = ", ".join(s.required_for) or "-"
        lines.append(f"| `{s.env}` | {default} | {required} | {s.description} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - used by `make config-table`
    print(markdown_table())
