"""Small self-contained SVG charts (line, stacked bars, horizontal bars), written by hand: no plotting library."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Series", "hbar_chart", "line_chart", "nice_ticks", "stacked_bar_chart"]

PALETTE = {
    "blue": "#2563eb",
    "green": "#16a34a",
    "amber": "#d97706",
    "grey": "#94a3b8",
    "red": "#dc2626",
    "teal": "#0d9488",
    "violet": "#7c3aed",
}
WIDTH = 760
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif\""
MAX_X_LABELS = 12
NO_DATA = "No data for this period"

Format = Callable[[float], str]


@dataclass(frozen=True)
class Series:
    """A named series of values (None: no value) drawn in one colour."""

    name: str
    values: Sequence[float | None]
    color: str = PALETTE["blue"]


@dataclass(frozen=True)
class Frame:
    """The plotting area inside a chart's margins."""

    left: float
    top: float
    width: float
    height: float

    @property
    def bottom(self) -> float:
        """The y of the x axis."""
        return self.top + self.height


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least high: steps of 1, 2 or 5 times a power of ten."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    rough = high / count
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    return [step * i for i in range(math.ceil(high / step - 1e-9) + 1)]


def _text(x: float, y: float, text: str, anchor: str = "middle", size: int = 11, extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="#334155"{extra}>'
        f"{escape(text)}</text>"
    )


def _svg(chart_id: str, title: str, height: float, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-label="{escape(title)}" data-chart="{escape(chart_id)}" class="chart" {FONT}>'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _empty(chart_id: str, title: str, message: str) -> str:
    return _svg(chart_id, title, 80, [_text(WIDTH / 2, 45, message, size=13)])


def _legend(series: Sequence[Series], y: float) -> list[str]:
    parts, x = [], 70.0
    for s in series:
        parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" rx="2" fill="{s.color}"/>')
        parts.append(_text(x + 17, y + 1, s.name, anchor="start"))
        x += 30 + 7 * len(s.name)
    return parts


def _y_axis(frame: Frame, ticks: list[float], label: str, fmt: Format) -> list[str]:
    top = ticks[-1] or 1.0
    parts = []
    for tick in ticks:
        y = frame.bottom - tick / top * frame.height
        parts.append(
            f'<line x1="{frame.left:.1f}" x2="{frame.left + frame.width:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{"#94a3b8" if tick == 0 else "#e2e8f0"}"/>'
        )
        parts.append(_text(frame.left - 6, y + 4, fmt(tick), anchor="end"))
    middle = frame.top + frame.height / 2
    parts.append(_text(14, middle, label, extra=f' transform="rotate(-90 14 {middle:.1f})"'))
    return parts


def _x_labels(frame: Frame, labels: Sequence[str], centre: Callable[[int], float]) -> list[str]:
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    return [_text(centre(i), frame.bottom + 16, label) for i, label in enumerate(labels) if i % every == 0]


def _frame(series_count: int) -> tuple[Frame, float]:
    legend = 24 if series_count > 1 else 0
    frame = Frame(left=70, top=16 + legend, width=WIDTH - 90, height=220)
    return frame, frame.bottom + 30


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    fmt: Format = _number,
    empty: str = NO_DATA,
) -> str:
    """Lines over labelled points (days); a None value breaks the line."""
    values = [v for s in series for v in s.values if v is not None]
    if not labels or not values:
        return _empty(chart_id, title, empty)
    frame, height = _frame(len(series))
    ticks = nice_ticks(max(values))
    inset = 24.0  # room for the first and last labels
    step = (frame.width - 2 * inset) / max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return frame.left + (inset + i * step if len(labels) > 1 else frame.width / 2)

    def y(v: float) -> float:
        return frame.bottom - v / (ticks[-1] or 1.0) * frame.height

    body = [*_y_axis(frame, ticks, y_label, fmt), *_x_labels(frame, labels, x)]
    if len(series) > 1:
        body += _legend(series, 14)
    for s in series:
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
                continue
            runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
            body.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{s.color}">'
                f"<title>{escape(f'{labels[i]}: {s.name} {fmt(v)}')}</title></circle>"
            )
        body += [
            f'<polyline fill="none" stroke="{s.color}" stroke-width="2" points="{" ".join(run)}"/>'
            for run in runs
            if len(run) > 1
        ]
    return _svg(chart_id, title, height, body)


def stacked_bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    fmt: Format = _number,
    empty: str = NO_DATA,
) -> str:
    """Vertical bars, one per label, stacking the series from the bottom up."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(chart_id, title, empty)
    frame, height = _frame(len(series))
    ticks = nice_ticks(max(totals))
    slot = frame.width / len(labels)
    bar = max(min(slot * 0.7, 48), 1)

    def centre(i: int) -> float:
        return frame.left + slot * (i + 0.5)

    body = [*_y_axis(frame, ticks, y_label, fmt), *_x_labels(frame, labels, centre)]
    if len(series) > 1:
        body += _legend(series, 14)
    for i, label in enumerate(labels):
        base = 0.0
        for s in series:
            value = s.values[i] or 0
            if not value:
                continue
            top_y = frame.bottom - (base + value) / ticks[-1] * frame.height
            h = value / ticks[-1] * frame.height
            body.append(
                f'<rect x="{centre(i) - bar / 2:.1f}" y="{top_y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{s.color}"><title>{escape(f"{label}: {s.name} {fmt(value)}")}</title></rect>'
            )
            base += value
    return _svg(chart_id, title, height, body)


def hbar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    notes: Sequence[str],
    x_label: str,
    fmt: Format = _number,
    colors: Sequence[str] | None = None,
    empty: str = NO_DATA,
) -> str:
    """One horizontal bar per label, in the order given, each with its value and a note at its end."""
    if not labels:
        return _empty(chart_id, title, empty)
    row, label_width, note_width = 24, 260, 190
    left = label_width + 10
    frame = Frame(left=left, top=8, width=WIDTH - left - note_width, height=row * len(labels))
    high = max(max(values), 0)
    ticks = nice_ticks(high) if high else [0.0, 1.0]
    body = []
    for tick in ticks:
        x = frame.left + tick / ticks[-1] * frame.width
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top:.1f}" y2="{frame.bottom:.1f}" stroke="#e2e8f0"/>')
        body.append(_text(x, frame.bottom + 16, fmt(tick)))
    for i, (label, value, note) in enumerate(zip(labels, values, notes, strict=True)):
        y = frame.top + i * row
        width = max(value, 0) / ticks[-1] * frame.width
        color = colors[i] if colors else PALETTE["blue"]
        short = label if len(label) <= 42 else label[:40] + "…"
        body.append(_text(label_width, y + row * 0.65, short, anchor="end"))
        body.append(
            f'<rect x="{frame.left:.1f}" y="{y + 4:.1f}" width="{width:.1f}" height="{row - 8}" rx="2" '
            f'fill="{color}"><title>{escape(f"{label}: {fmt(value)} ({note})")}</title></rect>'
        )
        body.append(_text(frame.left + width + 6, y + row * 0.65, f"{fmt(value)} · {note}", anchor="start", size=10))
    body.append(_text(frame.left + frame.width / 2, frame.bottom + 34, x_label))
    return _svg(chart_id, title, frame.bottom + 44, body)
