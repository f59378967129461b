"""Server-side SVG charts: no chart library to vendor, nothing for a slow laptop to run, and
every chart carries its numbers as a table for screen readers and copy-paste."""

import math
from collections.abc import Callable, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# Colour-blind-safe (Okabe-Ito), each at least 3:1 against white.
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8a6d00", "#56b4e9", "#555555"]

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 28


def _nice_max(value: float) -> float:
    """The top of the y axis: four gridline steps of 1, 2 or 5 x 10^n, the smallest that
    holds value, so every gridline falls on a round number."""
    if value <= 0:
        return 4
    quarter = value / 4
    power = 10 ** math.floor(math.log10(quarter))
    for step in (1, 2, 5, 10):
        if quarter <= step * power:
            return 4 * step * power
    return 40 * power


def _frame(y_max: float, fmt: Callable[[float], str]) -> list[SafeString]:
    parts = []
    for i in range(5):
        value = y_max * i / 4
        y = TOP + (HEIGHT - TOP - BOTTOM) * (1 - i / 4)
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
                '<text x="{}" y="{}" class="axis" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                f"{y:.1f}",
                f"{y:.1f}",
                LEFT - 6,
                f"{y + 4:.1f}",
                fmt(value),
            )
        )
    return parts


def _x_labels(labels: Sequence[str], step: float, offset: float) -> list[SafeString]:
    every = max(1, math.ceil(len(labels) / 8))
    return [
        format_html(
            '<text x="{}" y="{}" class="axis" text-anchor="middle">{}</text>',
            f"{LEFT + offset + i * step:.1f}",
            HEIGHT - 8,
            label,
        )
        for i, label in enumerate(labels)
        if i % every == 0
    ]


def _figure(title, svg_parts, legend, table_head, table_rows) -> SafeString:
    svg = format_html(
        '<svg viewBox="0 0 {} {}" role="img" aria-label="{}">{}</svg>',
        WIDTH,
        HEIGHT,
        title,
        mark_safe("".join(svg_parts)),  # noqa: S308 - every part was built by format_html
    )
    legend_html = ""
    if len(legend) > 1:
        legend_html = format_html(
            '<ul class="legend">{}</ul>',
            format_html_join(
                "",
                '<li><span class="swatch" style="background:{}"></span>{}</li>',
                ((color, name) for name, color in legend),
            ),
        )
    table = format_html(
        '<details class="chart-data"><summary>Show the numbers</summary>'
        '<div class="table-wrap"><table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>'
        "</div></details>",
        format_html_join("", "<th scope='col'>{}</th>", ((h,) for h in table_head)),
        format_html_join(
            "",
            "<tr>{}</tr>",
            ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),) for row in table_rows),
        ),
    )
    return format_html(
        '<figure class="chart"><figcaption>{}</figcaption>{}{}{}</figure>',
        title,
        svg,
        legend_html,
        table,
    )


def stacked_bars(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    fmt: Callable[[float], str],
) -> SafeString:
    """Bars per label, one coloured segment per series (a single series: plain bars)."""
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    y_max = _nice_max(max(totals, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    bar_w = max(step * 0.7, 1)
    parts = _frame(y_max, fmt)
    for i, label in enumerate(labels):
        y = TOP + plot_h
        for s, (name, values) in enumerate(series):
            value = values[i]
            if not value:
                continue
            h = plot_h * value / y_max
            y -= h
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{}: {} {}</title></rect>",
                    f"{LEFT + i * step + (step - bar_w) / 2:.1f}",
                    f"{y:.1f}",
                    f"{bar_w:.1f}",
                    f"{h:.1f}",
                    PALETTE[s % len(PALETTE)],
                    label,
                    name,
                    fmt(value),
                )
            )
    parts += _x_labels(labels, step, step / 2)
    legend = [(name, PALETTE[s % len(PALETTE)]) for s, (name, _) in enumerate(series)]
    head = ["", *(name for name, _ in series)]
    rows = [[label, *(fmt(values[i]) for _, values in series)] for i, label in enumerate(labels)]
    return _figure(title, parts, legend, head, rows)


def line(
    *, title: str, labels: Sequence[str], values: Sequence[float], fmt: Callable[[float], str]
) -> SafeString:
    """One series as a line with a light area under it."""
    y_max = _nice_max(max(values, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(values) - 1, 1)
    points = [
        (LEFT + i * step, TOP + plot_h * (1 - value / y_max)) for i, value in enumerate(values)
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    parts = _frame(y_max, fmt)
    if points:
        area = f"{points[0][0]:.1f},{TOP + plot_h} {path} {points[-1][0]:.1f},{TOP + plot_h}"
        parts.append(format_html('<polygon points="{}" class="area"/>', area))
        parts.append(format_html('<polyline points="{}" class="line"/>', path))
    parts += _x_labels(labels, step, 0)
    rows = [[label, fmt(value)] for label, value in zip(labels, values, strict=True)]
    return _figure(title, parts, [], ["", title], rows)
