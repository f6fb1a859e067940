"""Horizontal bar charts as inline SVG, drawn on the server (one job: numbers in, markup out).

Why server-side SVG and not a charting library: the reports are a handful of bars per stage,
the console's CSP forbids inline scripts and ``style=""`` (SVG presentation attributes such as
``fill`` and ``font-size`` are allowed), and the page budget for our own JS and CSS is small.
An inline ``<svg>`` needs no script, no lock file and no extra request, prints, and works
without JavaScript. Its text alternative is part of it: ``role="img"`` named by its
``<title>`` and described by a ``<desc>`` that says every number in words; the page puts the
same numbers in a table right below.

A chart is sections (e.g. stage groups) of bars (e.g. stages); each bar has one value per
series (e.g. amount and weighted amount), drawn side by side on one scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 720
LABEL_WIDTH = 220  # the bars' labels, left of the bars
VALUE_WIDTH = 110  # the value written after the longest bar
BAR_HEIGHT = 14
BAR_GAP = 2
ROW_GAP = 8
SECTION_HEIGHT = 24
LEGEND_HEIGHT = 24
TEXT = "#1b1f24"
MUTED = "#4f5863"
LINE = "#c9d0d8"
# Series colours (fill attributes): distinguishable, and each at least 3:1 against white.
COLOURS = ("#0b57d0", "#b3261e", "#1e7c45", "#7a4fb5")


@dataclass(frozen=True)
class Bar:
    label: str
    values: Sequence[float]  # one per series, drawn to scale
    texts: Sequence[str]  # the same values as written (formatted), one per series


@dataclass(frozen=True)
class Section:
    label: str  # "" for a chart without sections
    bars: Sequence[Bar]


def _clip(text: str, length: int = 30) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def describe(sections: Sequence[Section], series: Sequence[str]) -> str:
    """Every number of the chart in words (the ``<desc>``): "Open: Prospecting: count 3; ..."."""
    parts = []
    for section in sections:
        bars = []
        for bar in section.bars:
            values = ", ".join(f"{name} {text}" if len(series) > 1 else text
                               for name, text in zip(series, bar.texts, strict=True))
            bars.append(f"{bar.label}: {values}")
        if bars:
            parts.append((f"{section.label}: " if section.label else "") + "; ".join(bars))
    return ". ".join(parts) + ("." if parts else "")


def bar_chart(chart_id: str, title: str, sections: Sequence[Section], series: Sequence[str],
              empty: str = "") -> Markup:
    """An inline ``<svg role="img">`` of horizontal bars, named by ``title`` and described by
    every value (``describe``); ``series`` names the values of each bar (a legend when > 1)."""
    peak = max((v for s in sections for b in s.bars for v in b.values), default=0.0) or 1.0
    span = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    legend = len(series) > 1
    out: list[str] = []
    y = 4
    if legend:
        x = LABEL_WIDTH
        for i, name in enumerate(series):
            out.append(f'<rect x="{x}" y="{y + 3}" width="12" height="12" fill="{COLOURS[i % len(COLOURS)]}"/>'
                       f'<text x="{x + 16}" y="{y + 13}" font-size="12" fill="{TEXT}">{escape(name)}</text>')
            x += 24 + 8 * len(name)
        y += LEGEND_HEIGHT
    row = len(series) * (BAR_HEIGHT + BAR_GAP) - BAR_GAP
    for section in sections:
        if section.label:
            out.append(f'<text x="0" y="{y + 16}" font-size="13" font-weight="bold" fill="{TEXT}">'
                       f'{escape(_clip(section.label, 60))}</text>'
                       f'<line x1="0" x2="{WIDTH}" y1="{y + 21}" y2="{y + 21}" stroke="{LINE}"/>')
            y += SECTION_HEIGHT + 4
        for bar in section.bars:
            out.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + row / 2 + 4:.0f}" font-size="12" text-anchor="end" '
                       f'fill="{TEXT}">{escape(_clip(bar.label))}</text>')
            for i, (value, text) in enumerate(zip(bar.values, bar.texts, strict=True)):
                top = y + i * (BAR_HEIGHT + BAR_GAP)
                length = max(value, 0.0) / peak * span
                if length > 0:
                    out.append(f'<rect x="{LABEL_WIDTH}" y="{top}" width="{max(length, 1):.1f}" height="{BAR_HEIGHT}" '
                               f'fill="{COLOURS[i % len(COLOURS)]}"/>')
                out.append(f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{top + BAR_HEIGHT - 3}" font-size="11" '
                           f'fill="{MUTED}">{escape(text)}</text>')
            y += row + ROW_GAP
    if not any(s.bars for s in sections):
        out.append(f'<text x="0" y="{y + 16}" font-size="13" fill="{MUTED}">{escape(empty)}</text>')
        y += SECTION_HEIGHT
    height = y + 4
    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    description = describe(sections, series) or empty
    return Markup(  # noqa: S704 - every text in it went through escape()
        f'<svg id="{escape(chart_id)}" class="chart" role="img" aria-labelledby="{title_id} {desc_id}" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" focusable="false" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{title_id}">{escape(title)}</title><desc id="{desc_id}">{escape(description)}</desc>'
        + "".join(out) + "</svg>")
