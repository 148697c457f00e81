"""A line chart drawn with text characters, for `backprop metrics --plot` in a terminal."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

MARKERS = "•×+o*#"
LABEL_WIDTH = 10


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
    *,
    width: int = 64,
    height: int = 15,
    log_y: bool = False,
    x_label: str = "step",
) -> str:
    """Each series' (x, y) points as a line of its own marker on one pair of axes.

    Args:
        series: name → (xs ascending, ys); None or non-finite ys are left out.
        width, height: the plotting area in characters.
        log_y: a log10 y axis (when every value is positive).
    Returns:
        The chart's lines (axes, y labels, x range and a legend), joined by newlines.
    """
    curves = {name: _finite(xs, ys) for name, (xs, ys) in series.items()}
    curves = {name: points for name, points in curves.items() if points}
    if not curves:
        return "(no points to plot)"
    values = [y for points in curves.values() for _, y in points]
    log_y = log_y and min(values) > 0
    scale = math.log10 if log_y else float
    ys = [scale(y) for y in values]
    xs = [x for points in curves.values() for x, _ in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5

    def column(x: float) -> int:
        return round((x - x_low) / (x_high - x_low) * (width - 1)) if x_high > x_low else 0

    def row(y: float) -> int:
        return round((scale(y) - y_low) / (y_high - y_low) * (height - 1))

    grid = [[" "] * width for _ in range(height)]
    for marker, points in zip(MARKERS * len(curves), curves.values(), strict=False):
        cells = [(column(x), row(y)) for x, y in points]
        for c, r in _line_cells(cells):
            grid[height - 1 - r][c] = marker

    def y_label(row: int) -> str:
        value = y_low + (y_high - y_low) * (height - 1 - row) / (height - 1)
        return f"{10**value if log_y else value:.4g}"

    lines = []
    for line_number, characters in enumerate(grid):
        labelled = line_number in (0, height // 2, height - 1)
        label = y_label(line_number) if labelled else ""
        lines.append(f"{label:>{LABEL_WIDTH}} ┤{''.join(characters)}")
    lines.append(" " * LABEL_WIDTH + " └" + "─" * width)
    left, right = f"{x_low:g}", f"{x_high:g}"
    lines.append(" " * (LABEL_WIDTH + 2) + left + right.rjust(width - len(left)))
    legend = "   ".join(
        f"{marker} {name}" for marker, name in zip(MARKERS * len(curves), curves, strict=False)
    )
    scale_note = ", log scale" if log_y else ""
    lines.append(" " * (LABEL_WIDTH + 2) + f"{legend}   (x: {x_label}{scale_note})")
    return "\n".join(lines)


def _finite(xs: Sequence[float], ys: Sequence[float | None]) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in zip(xs, ys, strict=True)
        if y is not None and math.isfinite(y)
    ]


def _line_cells(cells: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (column, row) cells of the line through `cells`: every point, every column
    between neighbours, and the rows between adjacent columns, so steep drops stay joined."""
    drawn = cells[:1]
    for (c0, r0), (c1, r1) in itertools.pairwise(cells):
        previous = r0
        for c in range(c0, c1 + 1):
            r = r1 if c1 == c0 else round(r0 + (r1 - r0) * (c - c0) / (c1 - c0))
            low, high = sorted((previous, r))
            drawn.extend((c, filled) for filled in range(low, high + 1))
            previous = r
    return drawn
