"""The bench's results: one row per figure and metric, each with its baseline and the ratio,
printed as a table and written as JSON and as a PNG chart (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FIGURES = {
    "create": "1. create-lead via gateway",
    "trigger": "2. stage change -> trigger action",
    "outbox": "3. outbox commit -> Kafka",
    "list": "4. filtered sorted list page",
    "bulk": "5. bulk creation",
    "catchup": "6. catch-up after workers stopped",
    "ryw": "7. read-your-writes",
    "board": "8. console board page (500 cards)",
    "import": "9. import of leads (CSV)",
}


@dataclass(frozen=True)
class Row:
    """One measured figure next to its baseline from the same run."""

    figure: str  # a key of FIGURES
    metric: str  # e.g. "throughput", "p50", "p99", "drain time"
    unit: str  # "req/s", "ms", "s", "records/s"
    value: float
    baseline: str  # what the baseline is
    baseline_value: float
    note: str = ""

    @property
    def ratio(self) -> float:
        """value / baseline_value (for latencies: how many times slower than the baseline)."""
        return self.value / self.baseline_value if self.baseline_value else math.inf

    def as_dict(self) -> dict[str, Any]:
        # Significant digits, not decimals: a throughput ratio of 0.0288 keeps its precision.
        return {**asdict(self), "figure_title": FIGURES[self.figure], "ratio": float(f"{self.ratio:.6g}")}


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(rows: Sequence[Row]) -> str:
    """A fixed-width text table: figure, metric, value, baseline, baseline value, ratio."""
    header = ("figure", "metric", "platform", "baseline (same run)", "baseline", "ratio")
    lines = [header]
    for row in rows:
        lines.append((FIGURES[row.figure], row.metric, f"{_number(row.value)} {row.unit}", row.baseline,
                      f"{_number(row.baseline_value)} {row.unit}", f"{row.ratio:.3g}x"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [cell.ljust(w) if i in (0, 1, 3) else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths,
                                                                                                        strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  {FIGURES[r.figure]} / {r.metric}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    path.write_text(json.dumps({**meta, "rows": [r.as_dict() for r in rows]}, indent=2, default=str) + "\n")


def write_chart(path: Path, rows: Sequence[Row], title: str) -> None:
    """One horizontal bar per row: the ratio to its baseline on a log scale, labelled with both
    values, coloured by figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{FIGURES[r.figure]}: {r.metric}\nvs {r.baseline}" for r in rows]
    ratios = [max(r.ratio, 1e-3) for r in rows]
    colours = plt.get_cmap("tab10")
    figure_keys = list(FIGURES)
    fig, ax = plt.subplots(figsize=(13, 0.62 * len(rows) + 1.8))
    positions = list(range(len(rows)))[::-1]
    ax.barh(positions, ratios, color=[colours(figure_keys.index(r.figure)) for r in rows], height=0.7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(positions, labels, fontsize=7.5)
    ax.set_xlabel("platform / baseline (log scale; 1 = as fast as the baseline)")
    ax.set_title(title, fontsize=10)
    for pos, row, ratio in zip(positions, rows, ratios, strict=True):
        ax.text(ratio, pos, f"  {_number(row.value)} vs {_number(row.baseline_value)} {row.unit} "
                            f"({row.ratio:.3g}x)", va="center", fontsize=7.5)
    low, high = min(ratios), max(ratios)
    ax.set_xlim(min(low, 1.0) / 3, max(high, 1.0) * 60)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
