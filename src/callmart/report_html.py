"""The conversion report as one self-contained HTML page: inline CSS and SVG charts, no script, no network."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from html import escape
from importlib import resources
from string import Template

from ._version import __version__
from .charts import PALETTE, Series, hbar_chart, line_chart, stacked_bar_chart
from .lift import TOO_FEW
from .report import Balance, Group, Lift, LiftData, LiftGroup, ReportData, RunLine

__all__ = ["CHARTS", "render_report"]

CHARTS = (
    "conversion-by-day",
    "calls-by-day",
    "time-by-day",
    "conversion-by-campaign",
    "conversion-by-agent",
    "lift-by-day",
    "lift-by-campaign",
    "lift-by-agent",
    "conversions-by-channel",
    "rejects-by-reason",
)
"""The data-chart id of every chart the report draws."""
TOP_AGENTS = 20
TOP_CAMPAIGNS = 20
MIN_EFFECTIVE = 10
"""Effective contacts a campaign or agent needs to be ranked by conversion rate."""
NOTHING_TO_COMPARE = "No calls to compare for this period"
CAVEATS = (
    "This is an observational comparison, not an experiment: nobody was called or left uncalled at random, so a lift "
    "is a difference between groups, not the effect of a call.",
    "Selection: who gets called (campaigns choose their customers) and who picks up is not random; the effective "
    "calls are the customers who answered and talked.",
    "Customers reached but short differ from those who talk: a short call may be short because the customer was not "
    "interested, or busy, and that difference counts as lift.",
    "The customers not called are another population: chosen by no campaign, not in touch lately. Their window "
    "starts at midnight, a call's at the call, and a customer called later that day still counts among them.",
    "Logins that would have happened anyway count in every rate: a lift says how much more often an effective call "
    "is followed by a login, not how many logins calls caused.",
    "Many days, campaigns and agents are compared at once: even where calls change nothing, about 1 interval in 20 "
    "excludes 0 by chance alone.",
)
"""What the lift does not remove, stated with the section."""


def _percent(value: float | None) -> str:
    return "–" if value is None else _points(value * 100)


def _points(value: float) -> str:
    """A percentage given in points, as every rate of the report is written: one decimal and a space."""
    return f"{value:.1f} %"


def _pp(value: float) -> str:
    """A difference of rates, in percentage points, signed."""
    return "0.0 pp" if round(value, 1) == 0 else f"{value:+.1f} pp"


def _lift(lift: Lift) -> str:
    if lift.estimate is None or lift.low is None or lift.high is None:
        return "–"
    return f"{_pp(lift.estimate * 100)} ({_pp(lift.low * 100)} to {_pp(lift.high * 100)})"


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


def _in_points(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else v * 100 for v in values]


def _lift_by_day(lift: LiftData) -> str:
    labels = [f"{d:%d %b}" for d, _ in lift.days]
    groups = [g for _, g in lift.days]
    series = [
        Series(
            f"vs {name}",
            _in_points([getattr(g, attr).estimate for g in groups]),
            color,
            low=_in_points([getattr(g, attr).low for g in groups]),
            high=_in_points([getattr(g, attr).high for g in groups]),
        )
        for name, attr, color in (
            ("calls reached but short", "vs_short", PALETTE["blue"]),
            ("customers not called", "vs_not_called", PALETTE["amber"]),
        )
    ]
    chart = line_chart("lift-by-day", "Lift by day", labels, series, "percentage points", _pp, empty=NOTHING_TO_COMPARE)
    return _figure("Lift by day: effective calls' conversion rate minus each baseline's, with its interval", chart)


def _lift_table(total: LiftGroup, threshold: int) -> str:
    rows = [
        [
            f"effective calls (talk ≥ {threshold} s) to customers",
            _count(total.effective),
            _count(total.effective_converted),
            _percent(total.rate),
            "",
        ],
        [
            f"calls reached but short (talk 1–{threshold - 1} s)",
            _count(total.short),
            _count(total.short_converted),
            _percent(total.short_rate),
            escape(_lift(total.vs_short)),
        ],
        [
            "customers not called (customer-days)",
            _count(total.not_called),
            _count(total.not_called_converted),
            _percent(total.not_called_rate),
            escape(_lift(total.vs_not_called)),
        ],
    ]
    return _table(
        ["who", "counted", "logged in within the window", "rate", "lift of effective calls over them (interval)"],
        rows,
        [False, True, True, True, True],
    )


def _lift_ranked(chart_id: str, title: str, groups: Sequence[LiftGroup], limit: int, noun: str) -> str:
    """Groups large enough to tell, ranked by lift over their own short calls, with intervals; the others flagged."""
    ranked, small = LiftData.ranked(groups)
    shown = ranked[:limit]

    def color(g: LiftGroup) -> str:
        if not g.vs_short.excludes_zero:
            return PALETTE["grey"]
        return PALETTE["green"] if (g.vs_short.estimate or 0) > 0 else PALETTE["red"]

    chart = hbar_chart(
        chart_id,
        title,
        [g.label for g in shown],
        [(g.vs_short.estimate or 0) * 100 for g in shown],
        [f"{g.effective_converted:,}/{g.effective:,} vs {g.short_converted:,}/{g.short:,}" for g in shown],
        "percentage points: effective calls' conversion rate minus that of the group's short calls",
        fmt=_pp,
        colors=[color(g) for g in shown],
        empty=NOTHING_TO_COMPARE if not groups else f"No {noun} has {TOO_FEW} effective and {TOO_FEW} short calls",
        intervals=[((g.vs_short.low or 0) * 100, (g.vs_short.high or 0) * 100) for g in shown],
    )
    rows = [
        [
            escape(g.label),
            _count(g.effective),
            _percent(g.rate),
            _count(g.short),
            _percent(g.short_rate),
            escape(_lift(g.vs_short)),
            '<span class="note">too small to tell</span>' if g.too_small else "",
        ]
        for g in [*shown, *small[:limit]]
    ]
    table = _table(
        [noun, "effective calls", "rate", "short calls", "rate", "lift over short calls (interval)", ""],
        rows,
        [False, True, True, True, True, True, False],
    )
    notes = ["Green or red: the interval lies above or below 0; grey: it holds 0, the difference may be noise."]
    if small:
        notes.append(
            f"{len(small)} {noun}(s) with fewer than {TOO_FEW} effective calls or {TOO_FEW} short calls: too small "
            "to tell, not ranked."
        )
    if len(ranked) > limit or len(small) > limit:
        notes.append(f"Only the first {limit} of each are shown.")
    note = "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    return _figure(title, chart) + note + table


def _does_the_call_move_clients(data: ReportData) -> str:
    s = data.settings
    hours = f"{s.window.total_seconds() / 3600:g} h"
    caveats = "".join(f"<li>{escape(c)}</li>" for c in CAVEATS)
    return _section(
        "Does the call move clients?",
        f"How much more often a customer logs in within {hours} after an effective call (talk ≥ {s.threshold} s) "
        "than after no effective call, measured against two baselines: calls that reached the customer but were "
        f"short (talk under {s.threshold} s), and the customers nobody called in the {hours} before a day's "
        f"midnight, who log in within {hours} after it. The lift is the difference of conversion rates, in "
        "percentage points, with its interval at 95-percent confidence (Newcombe's hybrid score method). Campaigns "
        "and agents are ranked against their own short calls: customers not called have no campaign or agent.",
        f'<div class="caveat"><h3>What this comparison cannot tell</h3><ul>{caveats}</ul></div>',
        _lift_by_day(data.lift),
        _lift_table(data.lift.total, s.threshold),
        "<h3>By campaign</h3>",
        _lift_ranked(
            "lift-by-campaign", "Lift over short calls by campaign", data.lift.campaigns, TOP_CAMPAIGNS, "campaign"
        ),
        "<h3>By agent</h3>",
        _lift_ranked("lift-by-agent", "Lift over short calls by agent", data.lift.agents, TOP_AGENTS, "agent"),
    )


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
        (
            "Short call",
            f"a call to a known customer with talk time above 0 and under {s.threshold} s; it converts when the "
            f"customer logs in at or after the call and within {s.window.total_seconds() / 3600:g} hours.",
        ),
        (
            "Customer not called",
            f"for a day, a customer with no call in the {s.window.total_seconds() / 3600:g} hours before its "
            "midnight; converted when logged in within as long after it. Counted per day: customer-days.",
        ),
        (
            "Lift",
            "the conversion rate of effective calls to known customers minus a baseline's, in percentage points, "
            f"with its interval; a group with fewer than {TOO_FEW} effective or short calls is too small to tell.",
        ),
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
        _does_the_call_move_clients(data),
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
