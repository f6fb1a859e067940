"""The bench's results: one row per figure and metric, each with its baseline and the ratio, and
the goal where the figure has one (met or missed), printed as a table and written as JSON and
as a PNG chart (matplotlib, Agg backend). A CPU breakdown (figure 11: CPU per operation by part
of the platform) is printed under the table and drawn beside the chart."""

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
    "cpu": "11. CPU per create / stage change",
    "webhook": "12. commit -> webhook received",
    "webhook_rate": "13. webhook deliveries/s",
}


@dataclass(frozen=True)
class Goal:
    """A row's goal against its own baseline: ``value <= factor * baseline + plus`` (``at_most``)
    or ``value >= factor * baseline`` (a throughput). ``plus`` is in the row's unit."""

    at_most: bool
    factor: float = 1.0
    plus: float = 0.0
    source: str = ""  # where the goal comes from, e.g. "issue 19"

    def limit(self, baseline_value: float) -> float:
        return self.factor * baseline_value + self.plus

    def met(self, value: float, baseline_value: float) -> bool:
        limit = self.limit(baseline_value)
        return value <= limit if self.at_most else value >= limit

    def text(self, unit: str) -> str:
        """``<= 4x``, ``>= 0.25x``, ``<= baseline + 50 ms``, ``<= 1.2x + 180 ms``."""
        sign = "<=" if self.at_most else ">="
        if not self.plus:
            return f"{sign} {self.factor:g}x"
        scaled = "baseline" if self.factor == 1 else f"{self.factor:g}x"
        return f"{sign} {scaled} + {_number(self.plus)} {unit}"


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
    goal: Goal | None = None

    @property
    def ratio(self) -> float:
        """value / baseline_value (for latencies: how many times slower than the baseline)."""
        return self.value / self.baseline_value if self.baseline_value else math.inf

    @property
    def goal_met(self) -> bool | None:
        """Whether the goal is met (None: the row has no goal)."""
        return None if self.goal is None else self.goal.met(self.value, self.baseline_value)

    def as_dict(self) -> dict[str, Any]:
        # Significant digits, not decimals: a throughput ratio of 0.0288 keeps its precision.
        goal = None if self.goal is None else {
            **asdict(self.goal), "text": self.goal.text(self.unit),
            "limit": float(f"{self.goal.limit(self.baseline_value):.6g}"), "met": self.goal_met}
        return {**asdict(self), "figure_title": FIGURES[self.figure], "ratio": float(f"{self.ratio:.6g}"),
                "goal": goal}


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _met(row: Row) -> str:
    return "" if row.goal_met is None else "met" if row.goal_met else "MISSED"


def format_table(rows: Sequence[Row]) -> str:
    """A fixed-width text table: figure, metric, value, baseline, baseline value, ratio, and the
    goal with met / MISSED where the row has one; the notes under it."""
    header = ("figure", "metric", "platform", "baseline (same run)", "baseline", "ratio", "goal", "")
    lines = [header]
    for row in rows:
        lines.append((FIGURES[row.figure], row.metric, f"{_number(row.value)} {row.unit}", row.baseline,
                      f"{_number(row.baseline_value)} {row.unit}", f"{row.ratio:.3g}x",
                      row.goal.text(row.unit) if row.goal else "", _met(row)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [cell.rjust(w) if i in (2, 4, 5) else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths,
                                                                                                        strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    goals = [row for row in rows if row.goal is not None]
    if goals:
        missed = [row for row in goals if not row.goal_met]
        out += ["", f"goals: {len(goals) - len(missed)} of {len(goals)} met"
                    + (f"; missed: {', '.join(f'{FIGURES[r.figure]} {r.metric}' for r in missed)}" if missed else "")]
    notes = [f"  {FIGURES[r.figure]} / {r.metric}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def format_breakdown(breakdown: Breakdown) -> str:
    """The CPU breakdown as a fixed-width table: one line per part, a column per operation, the
    total and the baseline under it."""
    header = ("part", *(f"{op} ({breakdown.unit})" for op in breakdown.operations))
    lines = [header]
    for part, values in breakdown.parts.items():
        lines.append((part, *(_number(v) for v in values)))
    lines.append(("total", *(_number(v) for v in breakdown.totals)))
    lines.append((breakdown.baseline, *(_number(breakdown.baseline_value) for _ in breakdown.operations)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [breakdown.title, ""]
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                                   strict=True))))
        if n == 0 or n == len(lines) - 3:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


@dataclass(frozen=True)
class Breakdown:
    """What each part of the platform costs per operation (figure 11): ``parts`` maps a part's
    name to one value per operation, in the order of ``operations``."""

    title: str
    unit: str
    operations: tuple[str, ...]
    parts: dict[str, tuple[float, ...]]
    baseline: str
    baseline_value: float

    @property
    def totals(self) -> tuple[float, ...]:
        return tuple(sum(values[i] for values in self.parts.values()) for i in range(len(self.operations)))


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    path.write_text(json.dumps({**meta, "rows": [r.as_dict() for r in rows]}, indent=2, default=str) + "\n")


def write_chart(path: Path, rows: Sequence[Row], title: str, breakdown: Breakdown | None = None) -> None:
    """One horizontal bar per row: the ratio to its baseline on a log scale, labelled with both
    values and the goal (met or missed), coloured by figure; with ``breakdown``, a second panel of
    stacked bars: each operation's CPU by part, next to the baseline's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{FIGURES[r.figure]}: {r.metric}\nvs {r.baseline}" for r in rows]
    ratios = [max(r.ratio, 1e-3) for r in rows]
    colours = plt.get_cmap("tab20")
    figure_keys = list(FIGURES)
    height = 0.62 * len(rows) + 1.8
    if breakdown is None:
        fig, ax = plt.subplots(figsize=(13, height))
    else:
        fig, (ax, cpu_ax) = plt.subplots(2, 1, figsize=(13, height + 4.5),
                                         gridspec_kw={"height_ratios": [height, 4.5]})
    positions = list(range(len(rows)))[::-1]
    ax.barh(positions, ratios, color=[colours(figure_keys.index(r.figure) % 20) for r in rows], height=0.7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(positions, labels, fontsize=7.5)
    ax.set_xlabel("platform / baseline (log scale; 1 = as fast as the baseline)")
    ax.set_title(title, fontsize=10)
    for pos, row, ratio in zip(positions, rows, ratios, strict=True):
        goal = f"; goal {row.goal.text(row.unit)}: {_met(row)}" if row.goal is not None else ""
        ax.text(ratio, pos, f"  {_number(row.value)} vs {_number(row.baseline_value)} {row.unit} "
                            f"({row.ratio:.3g}x){goal}", va="center", fontsize=7.5,
                color="black" if row.goal_met is not False else "firebrick")
        if row.goal is not None and row.baseline_value:  # the goal's limit as a ratio: a tick on the bar's line
            ax.plot([row.goal.limit(row.baseline_value) / row.baseline_value], [pos], marker="|", markersize=14,
                    color="firebrick" if row.goal_met is False else "darkgreen")
    low, high = min(ratios), max(ratios)
    ax.set_xlim(min(low, 1.0) / 3, max(high, 1.0) * 200)
    if breakdown is not None:
        _draw_breakdown(cpu_ax, breakdown, plt.get_cmap("tab20"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_breakdown(ax: Any, breakdown: Breakdown, colours: Any) -> None:
    names = [*breakdown.operations, breakdown.baseline]
    positions = list(range(len(names)))[::-1]
    left = [0.0] * len(names)
    for k, (part, values) in enumerate(breakdown.parts.items()):
        widths = [*values, 0.0]
        ax.barh(positions, widths, left=left, height=0.6, color=colours(k % 20), label=part)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.barh(positions[-1], breakdown.baseline_value, height=0.6, color="grey")
    for pos, total in zip(positions, [*breakdown.totals, breakdown.baseline_value], strict=True):
        ax.text(total, pos, f"  {_number(total)} {breakdown.unit}", va="center", fontsize=8)
    ax.set_yticks(positions, names, fontsize=8)
    ax.set_xlabel(f"CPU per operation ({breakdown.unit}), by part")
    ax.set_title(breakdown.title, fontsize=10)
    ax.set_xlim(0, max([*breakdown.totals, breakdown.baseline_value, 1e-3]) * 1.25)
    ax.legend(fontsize=7, ncol=4, loc="lower right")
