"""Small self-contained SVG charts (lines with optional interval bands, stacked bars, horizontal bars with optional
interval whiskers), written by hand: no plotting library."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Series", "hbar_chart", "line_chart", "nice_ticks", "signed_ticks", "stacked_bar_chart"]

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
    """A named series of values (None: no value) drawn in one colour; `low` and `high`, if given, bound an interval
    around each value, drawn as a band behind the line."""

    name: str
    values: Sequence[float | None]
    color: str = PALETTE["blue"]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None

    def bounds(self, i: int) -> tuple[float, float] | None:
        """The interval around value i, if it has one."""
        if self.low is None or self.high is None:
            return None
        low, high = self.low[i], self.high[i]
        return None if low is None or high is None else (low, high)


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


def signed_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values from at most min(low, 0) to at least max(high, 0), 0 among them."""
    if low >= 0:
        return nice_ticks(high, count)
    if high <= 0:
        return [-tick for tick in reversed(nice_ticks(-low, count))]
    rough = (high - low) / count
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    return [step * i for i in range(math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9) + 1)]


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


def _scale(ticks: list[float], start: float, length: float) -> Callable[[float], float]:
    """Where a value falls along an axis from `start` spanning `length`, its first tick at start."""
    low, high = ticks[0], ticks[-1]
    span = (high - low) or 1.0
    return lambda value: start + (value - low) / span * length


def _y_axis(frame: Frame, ticks: list[float], label: str, fmt: Format) -> list[str]:
    to_y = _scale(ticks, frame.bottom, -frame.height)
    parts = []
    for tick in ticks:
        y = to_y(tick)
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
    """Lines over labelled points (days), each over the band of its intervals if it has them; a None value breaks
    the line and the band. Values below 0 move the axis down to make room for them."""
    values = [v for s in series for v in s.values if v is not None]
    if not labels or not values:
        return _empty(chart_id, title, empty)
    bounds = [b for s in series for i in range(len(s.values)) for b in (s.bounds(i) or ())]
    frame, height = _frame(len(series))
    ticks = signed_ticks(min(values + bounds), max(values + bounds))
    inset = 24.0  # room for the first and last labels
    step = (frame.width - 2 * inset) / max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return frame.left + (inset + i * step if len(labels) > 1 else frame.width / 2)

    y = _scale(ticks, frame.bottom, -frame.height)
    body = [*_y_axis(frame, ticks, y_label, fmt), *_x_labels(frame, labels, x)]
    if len(series) > 1:
        body += _legend(series, 14)
    for s in series:
        body += _bands(s, labels, x, y, fmt)
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


def _bands(
    s: Series, labels: Sequence[str], x: Callable[[int], float], y: Callable[[float], float], fmt: Format
) -> list[str]:
    """The series' intervals as a translucent band over each run of points that have one; a lone point's as a
    whisker."""
    runs: list[list[int]] = [[]]
    for i in range(len(s.values)):
        if s.values[i] is None or s.bounds(i) is None:
            runs.append([])
        else:
            runs[-1].append(i)
    parts = []
    for run in (r for r in runs if r):
        bounds = [b for b in (s.bounds(i) for i in run) if b is not None]
        what = escape(f"{s.name}: interval from {labels[run[0]]} to {labels[run[-1]]}")
        if len(run) == 1:
            (low, high), i = bounds[0], run[0]
            parts.append(
                f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" stroke="{s.color}" '
                f'stroke-opacity="0.45" stroke-width="6"><title>{escape(f"{labels[i]}: {s.name} interval")} '
                f"{escape(fmt(low))} – {escape(fmt(high))}</title></line>"
            )
            continue
        upper = [f"{x(i):.1f},{y(high):.1f}" for i, (_, high) in zip(run, bounds, strict=True)]
        lower = [f"{x(i):.1f},{y(low):.1f}" for i, (low, _) in zip(run, bounds, strict=True)]
        parts.append(
            f'<polygon points="{" ".join(upper + lower[::-1])}" fill="{s.color}" fill-opacity="0.15" stroke="none">'
            f"<title>{what}</title></polygon>"
        )
    return parts


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
    intervals: Sequence[tuple[float, float]] | None = None,
) -> str:
    """One horizontal bar per label, in the order given, each with its value and a note at its end. `intervals`, if
    given, bound each value, drawn as a whisker across its bar; values below 0 extend left of a zero line."""
    if not labels:
        return _empty(chart_id, title, empty)
    row, label_width, note_width = 24, 260, 190
    left = label_width + 10
    frame = Frame(left=left, top=8, width=WIDTH - left - note_width, height=row * len(labels))
    reach = [*values, *(b for bounds in intervals or () for b in bounds)]
    high, low = max(max(reach), 0), min(min(reach), 0)
    ticks = signed_ticks(low, high) if high or low else [0.0, 1.0]
    to_x = _scale(ticks, frame.left, frame.width)
    zero = to_x(0)
    body = []
    for tick in ticks:
        x = to_x(tick)
        stroke = "#94a3b8" if tick == 0 and low < 0 else "#e2e8f0"
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top:.1f}" y2="{frame.bottom:.1f}" stroke="{stroke}"/>')
        body.append(_text(x, frame.bottom + 16, fmt(tick)))
    for i, (label, value, note) in enumerate(zip(labels, values, notes, strict=True)):
        y = frame.top + i * row
        end = to_x(value)
        color = colors[i] if colors else PALETTE["blue"]
        short = label if len(label) <= 42 else label[:40] + "…"
        body.append(_text(label_width, y + row * 0.65, short, anchor="end"))
        described = f"{label}: {fmt(value)} ({note})"
        reaches = end
        if intervals is not None:
            low_end, high_end = (to_x(b) for b in intervals[i])
            described = f"{label}: {fmt(value)}, interval {fmt(intervals[i][0])} – {fmt(intervals[i][1])} ({note})"
            reaches = max(end, high_end)
        body.append(
            f'<rect x="{min(zero, end):.1f}" y="{y + 4:.1f}" width="{abs(end - zero):.1f}" height="{row - 8}" rx="2" '
            f'fill="{color}"><title>{escape(described)}</title></rect>'
        )
        if intervals is not None:
            middle = y + row / 2
            body.append(
                f'<path d="M{low_end:.1f},{middle - 5:.1f}v10M{low_end:.1f},{middle:.1f}H{high_end:.1f}'
                f'M{high_end:.1f},{middle - 5:.1f}v10" stroke="#0f172a" stroke-width="1.5" fill="none">'
                f"<title>{escape(described)}</title></path>"
            )
        body.append(_text(max(reaches, zero) + 6, y + row * 0.65, f"{fmt(value)} · {note}", anchor="start", size=10))
    body.append(_text(frame.left + frame.width / 2, frame.bottom + 34, x_label))
    return _svg(chart_id, title, frame.bottom + 44, body)
