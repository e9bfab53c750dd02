"""The conversion report as one self-contained HTML page: inline CSS and SVG charts, no script, no network."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from html import escape
from importlib import resources
from string import Template

from ._version import __version__
from .charts import PALETTE, Series, hbar_chart, line_chart, stacked_bar_chart
from .report import Balance, Group, ReportData, RunLine

__all__ = ["CHARTS", "render_report"]

CHARTS = (
    "conversion-by-day",
    "calls-by-day",
    "time-by-day",
    "conversion-by-campaign",
    "conversion-by-agent",
    "conversions-by-channel",
    "rejects-by-reason",
)
"""The data-chart id of every chart the report draws."""
TOP_AGENTS = 20
TOP_CAMPAIGNS = 20
MIN_EFFECTIVE = 10
"""Effective contacts a campaign or agent needs to be ranked by conversion rate."""


def _percent(value: float | None) -> str:
    return "–" if value is None else _points(value * 100)


def _points(value: float) -> str:
    """A percentage given in points, as every rate of the report is written: one decimal and a space."""
    return f"{value:.1f} %"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _hours(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} h"


def _day(value: date) -> str:
    return f"{value:%a %d %b %Y}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if n else f"<th>{escape(h)}</th>"
        for h, n in zip(headers, numeric, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if n else f"<td>{c}</td>" for c, n in zip(row, numeric, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>"


def _section(title: str, lead: str, *parts: str) -> str:
    return f'<section><h2>{escape(title)}</h2><p class="lead">{escape(lead)}</p>{"".join(parts)}</section>'


def _tiles(data: ReportData) -> str:
    t = data.total
    tiles = [
        (_count(t.calls), "calls"),
        (_count(t.effective), f"effective contacts (talk ≥ {data.settings.threshold} s)"),
        (_count(t.conversions), "conversions to a digital channel"),
        (_percent(t.rate), "conversion rate (of effective contacts)"),
        (_seconds(t.average_talk), "average talk time per call"),
        (_hours(t.hours_to_login), "average time from call to login"),
    ]
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><div class="value">{escape(v)}</div><div class="label">{escape(label)}</div></div>'
            for v, label in tiles
        )
        + "</div>"
    )


def _over_time(data: ReportData) -> str:
    labels = [f"{d:%d %b}" for d, _ in data.days]
    groups = [g for _, g in data.days]
    rate = Series("conversion rate", [None if g.rate is None else g.rate * 100 for g in groups], PALETTE["blue"])
    chart = line_chart(
        "conversion-by-day", "Conversion rate by day", labels, [rate], "% of effective contacts", _points
    )
    return _section(
        "Conversion over time",
        f"Share of effective contacts (talk time ≥ {data.settings.threshold} s) followed by a login to a digital "
        f"channel within {data.settings.window.total_seconds() / 3600:g} h, per day of the call.",
        _figure("Conversion rate by day (%)", chart),
    )


def _volumes(data: ReportData) -> str:
    labels = [f"{d:%d %b}" for d, _ in data.days]
    groups = [g for _, g in data.days]
    stacked = [
        Series("effective contacts", [g.effective for g in groups], PALETTE["green"]),
        Series(
            f"contacts under {data.settings.threshold} s", [g.contacts - g.effective for g in groups], PALETTE["amber"]
        ),
        Series("no contact (0 s talk)", [g.calls - g.contacts for g in groups], PALETTE["grey"]),
    ]
    times = [
        Series("average talk time", [g.average_talk for g in groups], PALETTE["blue"]),
        Series("average total time", [g.average_total for g in groups], PALETTE["violet"]),
    ]
    return _section(
        "Volumes and talk time",
        "Calls per day by outcome, and the average talk and total time of a call (seconds).",
        _figure("Calls per day", stacked_bar_chart("calls-by-day", "Calls per day", labels, stacked, "calls")),
        _figure(
            "Average call time per day (seconds)",
            line_chart("time-by-day", "Average call time per day", labels, times, "seconds"),
        ),
    )


def _ranked(chart_id: str, title: str, groups: Sequence[Group], limit: int, noun: str) -> str:
    """The busiest groups in a table, and in a chart by conversion rate those with enough effective contacts."""
    # A rate needs MIN_EFFECTIVE effective contacts to mean something (1 when no group has that many).
    enough = MIN_EFFECTIVE if any(g.effective >= MIN_EFFECTIVE for g in groups) else 1
    ranked = [g for g in groups if g.effective >= enough]
    shown = sorted(ranked[:limit], key=lambda g: (-(g.rate or 0), -g.effective, g.label))
    chart = hbar_chart(
        chart_id,
        title,
        [g.label for g in shown],
        [(g.rate or 0) * 100 for g in shown],
        [f"{g.conversions:,} of {g.effective:,} converted" for g in shown],
        "% of effective contacts converted",
        fmt=_points,
    )
    rows = [
        [escape(g.label), _count(g.calls), _count(g.effective), _count(g.conversions), _percent(g.rate)]
        + [_seconds(g.average_talk)]
        for g in groups[:limit]
    ]
    table = _table([noun, "calls", "effective contacts", "conversions", "rate", "avg talk"], rows, [False, *[True] * 5])
    notes = []
    unranked = len(groups) - len(ranked)
    if unranked:
        notes.append(f"{unranked} {noun}(s) with fewer than {enough} effective contacts are left out of the chart.")
    if len(groups) > limit:
        notes.append(f"{len(groups) - limit} more {noun}(s) with fewer calls are not shown.")
    note = "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    return _figure(title, chart) + note + table


def _by_channel(data: ReportData) -> str:
    total = sum(c.conversions for c in data.channels) or 1
    chart = hbar_chart(
        "conversions-by-channel",
        "Conversions by digital channel",
        [c.label for c in data.channels],
        [c.conversions for c in data.channels],
        [
            f"{_percent(c.conversions / total)} of conversions · {_hours(c.hours_to_login)} to login"
            for c in data.channels
        ],
        "conversions",
        colors=[PALETTE["teal"]] * len(data.channels),
    )
    return _section(
        "By digital channel",
        "Where converted customers logged in first, and how long after the call.",
        _figure("Conversions by digital channel", chart),
    )


def _quality(data: ReportData) -> str:
    colors = [PALETTE["red"] if r.severity == "error" else PALETTE["amber"] for r in data.rejects]
    chart = hbar_chart(
        "rejects-by-reason",
        "Rejected and doubtful rows by reason",
        [r.reason for r in data.rejects],
        [r.rows for r in data.rejects],
        [f"{'rejected' if r.severity == 'error' else 'loaded with a warning'} · {r.source}" for r in data.rejects],
        "source rows",
        colors=colors,
        empty="No rejected or doubtful rows",
    )
    balance = _table(
        ["table", "extract", "loads", "rows read", "loaded", "rejected", "warnings", "inferred members", "balanced"],
        [_balance_row(b) for b in data.balance],
        [False, False, *[True] * 7],
    )
    runs = _table(
        ["run", "started", "finished", "status", "steps", "failed steps", "error"],
        [_run_row(r) for r in data.runs],
        [True, False, False, False, True, True, False],
    )
    return _section(
        "Data quality",
        "Rows of the source extracts behind these days, as loaded by the latest successful load of each day and "
        "dimension: rejected rows are not in the mart; rows with a warning are. See `callmart rejects` for the rows.",
        _figure("Rejected and doubtful rows by reason", chart),
        "<h3>Reconciliation</h3>",
        balance,
        "<h3>Recent runs</h3>",
        runs,
    )


def _flag(count: int) -> str:
    return f'<span class="bad">{count:,}</span>' if count else "0"


def _balance_row(b: Balance) -> list[str]:
    balanced = '<span class="ok">yes</span>' if b.read == b.loaded + b.rejected else '<span class="bad">NO</span>'
    counts = [_count(b.steps), _count(b.read), _count(b.loaded), _flag(b.rejected), _count(b.warned)]
    return [escape(b.table), escape(b.source), *counts, _count(b.inferred), balanced]


def _run_row(r: RunLine) -> list[str]:
    finished = f"{r.finished:%Y-%m-%d %H:%M}" if r.finished else "–"
    status = escape(r.status)
    return [
        str(r.id_run),
        f"{r.started:%Y-%m-%d %H:%M}",
        finished,
        status,
        str(r.steps),
        _flag(r.failed_steps),
        escape(r.error or ""),
    ]


def _definitions(data: ReportData) -> str:
    s = data.settings
    terms = [
        ("Call", "a row of the calls extract (Llamadas), by the day it started."),
        ("Contact", "a call with talk time above 0 seconds."),
        ("Effective contact", f"a call with at least {s.threshold} seconds of talk time."),
        (
            "Conversion",
            f"a call to a known customer with at least {s.threshold} s of talk, followed by that customer's login to "
            f"a digital channel within {s.window.total_seconds() / 3600:g} hours (the first such login counts).",
        ),
        ("Conversion rate", "conversions divided by effective contacts (calls to non-customers included)."),
        ("Time to login", "hours from the start of a converted call to its first login, averaged."),
    ]
    items = "".join(f"<dt>{escape(t)}</dt><dd>{escape(d)}</dd>" for t, d in terms)
    return _section("Definitions", "How each figure is counted.", f"<dl>{items}</dl>")


def render_report(data: ReportData, mart: str, generated: datetime | None = None) -> str:
    """The whole report as one HTML document."""
    generated = generated or datetime.now().replace(microsecond=0)
    body = [
        _tiles(data),
        _over_time(data),
        _volumes(data),
        _section(
            "By campaign",
            f"Campaigns by conversion rate (chart, those with at least {MIN_EFFECTIVE} effective contacts) and by "
            "number of calls (table).",
            _ranked("conversion-by-campaign", "Conversion rate by campaign", data.campaigns, TOP_CAMPAIGNS, "campaign"),
        ),
        _section(
            "By agent",
            f"Agents by conversion rate (chart, those with at least {MIN_EFFECTIVE} effective contacts) and by number "
            f"of calls (table, the {TOP_AGENTS} busiest).",
            _ranked("conversion-by-agent", "Conversion rate by agent", data.agents, TOP_AGENTS, "agent"),
        ),
        _by_channel(data),
        _quality(data),
        _definitions(data),
    ]
    template = Template(resources.files("callmart").joinpath("templates/report.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=escape("Calls to digital channels: conversion report"),
        subtitle=escape(f"{_day(data.first)} – {_day(data.last)}"),
        parameters=escape(
            f"Effective contact: talk time ≥ {data.settings.threshold} s · conversion: login within "
            f"{data.settings.window.total_seconds() / 3600:g} h of the call"
        ),
        body="\n".join(body),
        footer=escape(f"Generated {generated:%Y-%m-%d %H:%M} by callmart {__version__} from {mart}."),
    )
