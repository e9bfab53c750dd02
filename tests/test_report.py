"""The conversion report: its figures on both engines, its HTML, its command, and how a real browser shows it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from datetime import date
from html import escape
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from callmart import Callmart
from callmart.analytics import Touched, create_aggregate_tables, refresh_aggregates
from callmart.analytics_cli import report
from callmart.config import sample_dir
from callmart.lift import TOO_FEW
from callmart.report import LiftData, ReportData, report_data
from callmart.report_html import CAVEATS, CHARTS, NOTHING_TO_COMPARE, render_report
from callmart.stats import newcombe
from conftest import ON_SPARK, WITH_SPARK
from marts import write_extracts
from test_analytics import AGENTS, CALLS_DRAWN, CUSTOMERS, LOGINS_DRAWN, PHONE, calls, load, logins

CHROMIUM = Path(os.environ.get("CALLMART_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WARNED = ("3/4/2024 17:00", 101, "COBRO", PHONE, "beto.diaz", "0:02:00", "0:01:00")  # talk > total: loaded
REJECTED = ("3/4/2024 18:00", 101, "COBRO", PHONE, "beto.diaz", "9:99", "0:01:00")  # unparsable: not loaded


def tiny_mart(url: str, folder: Path, *extra: tuple[object, ...]) -> None:
    """The analytics tests' two days, plus a doubtful and a rejected call."""
    write_extracts(folder, [*calls(CALLS_DRAWN), *extra], CUSTOMERS, AGENTS, logins=logins(LOGINS_DRAWN))
    load(url, folder, date(2024, 3, 4), date(2024, 3, 6))


def figures(url: str, first: date | None = None, end: date | None = None) -> ReportData:
    with Callmart(url) as mart:
        return mart.report(first, end)


def summary(group: Any) -> tuple[object, ...]:
    return (group.label, group.calls, group.contacts, group.effective, group.conversions, group.talk_seconds)


def test_figures_by_day_campaign_agent_and_channel(database_url: str, tmp_path: Path) -> None:
    tiny_mart(database_url, tmp_path / "src", WARNED, REJECTED)
    data = figures(database_url)
    assert (data.first, data.last) == (date(2024, 3, 4), date(2024, 3, 5))
    # The six calls of the analytics tests, and the doubtful one: 120 s of talk, but login 4 comes 64 h later.
    assert summary(data.total) == ("all calls", 7, 6, 5, 2, 395)
    assert data.total.rate == pytest.approx(2 / 5)
    assert data.total.hours_to_login == pytest.approx((3 + 10) / 2)
    assert [(d, g.calls, g.conversions) for d, g in data.days] == [(date(2024, 3, 4), 6, 2), (date(2024, 3, 5), 1, 0)]
    assert [summary(g) for g in data.campaigns] == [("VENTAS", 4, 4, 3, 1, 245), ("COBRO", 3, 2, 2, 1, 150)]
    assert [g.label for g in data.agents] == ["Ana López (ana.lopez)", "Beto Díaz (beto.diaz)"]
    assert [(c.label, c.conversions, c.hours_to_login) for c in data.channels] == [
        ("AppCallCore", 1, pytest.approx(10.0)),
        ("Whatsapp", 1, pytest.approx(3.0)),
    ]
    assert [(r.severity, r.table, r.reason, r.rows) for r in data.rejects] == [
        ("error", "fact_llamadas", "unparsable Tiempohablado: expected a duration H:MM:SS under 24 hours", 1),
        ("warning", "fact_llamadas", "talk time greater than total time", 1),
    ]
    calls_balance = next(b for b in data.balance if b.table == "fact_llamadas")
    assert (calls_balance.steps, calls_balance.read, calls_balance.loaded, calls_balance.rejected) == (2, 8, 7, 1)
    assert [(r.id_run, r.status) for r in data.runs] == [(1, "exitoso")]

    one_day = figures(database_url, date(2024, 3, 5), date(2024, 3, 6))
    assert (one_day.first, one_day.last, one_day.total.calls, one_day.rejects) == (
        date(2024, 3, 5),
        date(2024, 3, 5),
        1,
        (),
    )


def test_data_quality_is_that_of_the_latest_load_of_each_day(database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    tiny_mart(database_url, folder, WARNED, REJECTED)
    # The export is fixed and the day reloaded: the rejected row of the first load no longer describes the mart.
    tiny_mart(database_url, folder, WARNED)
    data = figures(database_url)
    assert [(r.severity, r.reason) for r in data.rejects] == [("warning", "talk time greater than total time")]
    assert [r.id_run for r in data.runs] == [2, 1]
    assert summary(data.total)[:2] == ("all calls", 7)


def test_the_page_is_self_contained_and_escapes_names(database_url: str, tmp_path: Path) -> None:
    odd = ("3/5/2024 10:00", 101, "<b>&co", PHONE, "ana.lopez", "0:01:00", "0:01:00")
    tiny_mart(database_url, tmp_path / "src", WARNED, REJECTED, odd)
    html = render_report(figures(database_url), "duckdb:///mart.duckdb")
    for chart in CHARTS:
        assert f'data-chart="{chart}"' in html
    for external in ("<script", "<link", "<img", "src=", "href=", "url(", "@import"):
        assert external not in html
    assert "&lt;B&gt;&amp;CO" in html and "<B>" not in html
    assert "talk time ≥ 30 s" in html and "within 48 h" in html


def test_report_command(database_url: str, tmp_path: Path) -> None:
    tiny_mart(database_url, tmp_path / "src")
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    obj = {"database_url": database_url, "source_dir": None, "config": None}
    result = CliRunner().invoke(report, ["--from", "2024-03-04", "--to", "2024-03-05", "--out", str(out)], obj=obj)
    assert result.exit_code == 0, result.output
    assert result.output == f"{out}: 5 calls from 2024-03-04 to 2024-03-04, 2 conversions\n"
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("new_database", [ON_SPARK], indirect=True)
def test_the_report_of_a_spark_mart_is_that_of_the_same_loads_on_duckdb(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    # A Spark mart hands the rows the report reads to the same queries, run in memory.
    folder = tmp_path / "src"
    write_extracts(folder, [*calls(CALLS_DRAWN), WARNED, REJECTED], CUSTOMERS, AGENTS, logins=logins(LOGINS_DRAWN))
    spark, duckdb = new_database(), f"duckdb:///{tmp_path / 'mart.duckdb'}"
    for url in (spark, duckdb):
        with Callmart(url, folder) as mart:
            mart.init()
            mart.enqueue(date(2024, 3, 4), date(2024, 3, 6))
            assert mart.run().ok
    for days in ((None, None), (date(2024, 3, 5), date(2024, 3, 6))):
        on_spark, on_duckdb = figures(spark, *days), figures(duckdb, *days)
        assert comparable(on_spark) == comparable(on_duckdb)
    assert (on_spark.total.calls, len(on_spark.runs)) == (1, 1)
    assert summary(figures(spark).total) == ("all calls", 7, 6, 5, 2, 395)
    assert len(figures(spark).rejects) == 2
    obj = {"database_url": spark, "source_dir": None, "config": None}
    out = tmp_path / "report.html"
    result = CliRunner().invoke(report, ["--from", "2024-03-04", "--to", "2024-03-05", "--out", str(out)], obj=obj)
    assert result.output == f"{out}: 6 calls from 2024-03-04 to 2024-03-04, 2 conversions\n"


def comparable(data: ReportData) -> tuple[object, ...]:
    """The report's figures but the runs' times, which differ from one load to another."""
    runs = [(r.id_run, r.status, r.steps, r.failed_steps, r.error) for r in data.runs]
    return (*(getattr(data, f.name) for f in dataclasses.fields(data) if f.name != "runs"), runs)


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_report_command_on_a_mart_without_aggregates(database_url: str, tmp_path: Path) -> None:
    with Callmart(database_url) as mart:
        mart.init()
    obj = {"database_url": database_url, "source_dir": None, "config": None}
    result = CliRunner().invoke(report, ["--out", str(tmp_path / "r.html")], obj=obj)
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def sample_report(folder: Path) -> Path:
    """The report of the sample shipped with callmart, loaded into a DuckDB file."""
    with Callmart(f"duckdb:///{folder / 'sample.duckdb'}", sample_dir()) as mart:
        mart.init()
        mart.enqueue(date(2024, 3, 4), date(2024, 3, 11))
        assert mart.run().ok
        with mart.engine.begin() as conn:
            create_aggregate_tables(conn, mart.schema)
            refresh_aggregates(conn, mart.schema, Touched())
        with mart.engine.connect() as conn:
            html = render_report(report_data(conn, mart.schema), mart.where)
    page = folder / "report.html"
    page.write_text(html, encoding="utf-8")
    return page


def browser() -> Any:
    """Playwright's sync API, or a skip (a failure when CALLMART_REQUIRE_BROWSER=1) without Chromium."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            from playwright import sync_api
        except ImportError:
            problem = "playwright is not installed (pip install playwright)"
    if problem is None:
        return sync_api
    if os.environ.get("CALLMART_REQUIRE_BROWSER") == "1":
        pytest.fail(problem)
    pytest.skip(problem)


def test_the_report_in_a_real_browser(tmp_path: Path) -> None:
    sync_api = browser()
    page_file = sample_report(tmp_path)
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        # A persistent context on a fresh folder is Chromium run with --user-data-dir=that folder.
        chromium = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=CHROMIUM, args=CHROMIUM_FLAGS, viewport={"width": 1200, "height": 900}
        )
        try:
            page = chromium.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load")
            assert page.title() == "Calls to digital channels: conversion report"
            for chart in CHARTS:
                box = page.locator(f'svg[data-chart="{chart}"]').bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 60, chart
            assert page.locator("section h2").all_inner_texts()[:2] == ["Conversion over time", "Volumes and talk time"]
            lift = page.locator("section", has=page.locator("h2", has_text="Does the call move clients?"))
            assert lift.count() == 1
            for caveat in CAVEATS:
                assert lift.get_by_text(caveat).is_visible(), caveat
            # The bands of the lift by day, and the whiskers of the ranked campaigns.
            assert lift.locator('svg[data-chart="lift-by-day"] polygon').count() == 2
            assert lift.locator('svg[data-chart="lift-by-campaign"] path').count() >= 1
            assert lift.get_by_text("too small to tell").first.is_visible()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            readme_shot = os.environ.get("CALLMART_REPORT_SCREENSHOT")
            if readme_shot:  # to refresh docs/report.png: the page down to the calls per day, as a reader sees it
                bottom = page.locator('svg[data-chart="calls-by-day"]').bounding_box()
                assert bottom is not None
                clip = {"x": 0, "y": 0, "width": 1200, "height": bottom["y"] + bottom["height"] + 10}
                page.screenshot(path=readme_shot, full_page=True, clip=clip)
        finally:
            chromium.close()
    assert problems == []
    assert requests == [page_file.as_uri()]
    assert shot.stat().st_size > 50_000


def test_a_mart_with_no_calls_for_the_dates_still_renders(database_url: str, tmp_path: Path) -> None:
    tiny_mart(database_url, tmp_path / "src")
    data = figures(database_url, date(2024, 1, 1), date(2024, 1, 8))
    html = render_report(data, "mart")
    assert data.total.calls == 0 and html.count("No data for this period") == 6
    assert html.count(NOTHING_TO_COMPARE) == 3 and data.lift.total.effective == 0
    with Callmart(database_url) as mart, mart.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM agg_conversion_diaria")).scalar_one() == 3


def test_report_command_has_help() -> None:
    result = CliRunner().invoke(report, ["--help"])
    assert result.exit_code == 0 and "Usage: " in result.output and "--to" in result.output
    assert report.help


def test_report_command_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    obj = {"database_url": "postgresql://analyst:s3cret@127.0.0.1:1/mart", "source_dir": None, "config": None}
    result = CliRunner().invoke(report, ["--out", str(tmp_path / "r.html")], obj=obj)
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot read the mart in postgresql+psycopg://analyst:***@127.0.0.1:1/mart")
    assert "s3cret" not in result.output and result.output.count("\n") == 1


def test_every_rate_is_written_one_way(tmp_path: Path) -> None:
    import re

    html = sample_report(tmp_path).read_text(encoding="utf-8")
    written = re.findall(r"(\d[\d.,]*)\s*%", re.sub(r"<style>.*?</style>|[a-z-]+=\"[^\"]*\"", "", html, flags=re.S))
    assert written and all(re.fullmatch(r"\d+\.\d", value) for value in written), sorted(set(written))


def test_lift_ranks_groups_large_enough_to_tell_and_flags_the_others(database_url: str, tmp_path: Path) -> None:
    """BIG (agent ana.lopez): 30 effective calls, 12 followed by a login, and 30 short ones, 3 followed by a login.
    SMALL (beto.diaz): 2 effective calls and 1 short: too small to tell, not ranked."""
    customers = [(i, "F", "REGULAR") for i in range(201, 261)]
    calls = [
        *((f"3/4/2024 9:{m:02d}", 201 + m, "BIG", PHONE, "ana.lopez", "0:01:00", "0:01:10") for m in range(30)),
        *((f"3/4/2024 10:{m:02d}", 231 + m, "BIG", PHONE, "ana.lopez", "0:00:10", "0:00:20") for m in range(30)),
        ("3/4/2024 12:00", 201, "SMALL", PHONE, "beto.diaz", "0:01:00", "0:01:10"),
        ("3/4/2024 12:01", 202, "SMALL", PHONE, "beto.diaz", "0:01:00", "0:01:10"),
        ("3/4/2024 12:02", 231, "SMALL", PHONE, "beto.diaz", "0:00:10", "0:00:20"),
    ]
    logins = [
        *((n, 201 + n, "3/4/2024 15:00:00", 1) for n in range(12)),
        *((100 + n, 231 + n, "3/4/2024 16:00:00", 1) for n in range(3)),
    ]
    write_extracts(tmp_path / "src", calls, customers, AGENTS, logins=logins)
    load(database_url, tmp_path / "src", date(2024, 3, 4), date(2024, 3, 5))
    lift = figures(database_url).lift
    for groups, big, small in [
        (lift.campaigns, "BIG", "SMALL"),
        (lift.agents, "Ana López (ana.lopez)", "Beto Díaz (beto.diaz)"),
    ]:
        ranked, too_small = LiftData.ranked(groups)
        assert [g.label for g in ranked] == [big] and [g.label for g in too_small] == [small]
        (g,) = ranked
        assert (g.effective, g.effective_converted, g.short, g.short_converted) == (30, 12, 30, 3)
        expected = [float(v[0]) for v in newcombe([12], [30], [3], [30])]
        assert [g.vs_short.estimate, g.vs_short.low, g.vs_short.high] == pytest.approx(expected)
        assert g.vs_short.estimate == pytest.approx(0.3) and g.vs_short.excludes_zero
        assert too_small[0].too_small and min(too_small[0].effective, too_small[0].short) < TOO_FEW
    # Every day and every group summed: 32 effective calls, 14 converted; 31 short, 4 converted (231 twice).
    total = lift.total
    assert (total.effective, total.effective_converted, total.short, total.short_converted) == (32, 14, 31, 4)
    # Nobody was called before the 4th: all 60 customers are not called; 15 of them log in that day.
    assert (total.not_called, total.not_called_converted) == (60, 15)
    html = render_report(figures(database_url), "mart")
    assert "Does the call move clients?" in html and "too small to tell" in html
    assert all(escape(caveat) in html for caveat in CAVEATS)


def test_lift_groups_come_largest_first_then_by_label_whatever_order_the_engine_groups_in(
    database_url: str, tmp_path: Path
) -> None:
    # Eight campaigns of one effective call each, and one of two: ties an engine's grouping would order at random.
    names = ["H", "G", "F", "E", "D", "C", "B", "A"]
    customers = [(i, "F", "REGULAR") for i in range(301, 310)]
    calls = [
        *(
            (f"3/4/2024 9:{n:02d}", 301 + n, name, PHONE, "ana.lopez", "0:01:00", "0:01:10")
            for n, name in enumerate(names)
        ),
        ("3/4/2024 11:00", 309, "Z", PHONE, "beto.diaz", "0:01:00", "0:01:10"),
        ("3/4/2024 11:30", 308, "Z", PHONE, "beto.diaz", "0:01:00", "0:01:10"),
    ]
    write_extracts(tmp_path / "src", calls, customers, AGENTS)
    load(database_url, tmp_path / "src", date(2024, 3, 4), date(2024, 3, 5))
    lift = figures(database_url).lift
    assert [g.label for g in lift.campaigns] == ["Z", *sorted(names)]
    assert [g.label for g in lift.agents] == ["Ana López (ana.lopez)", "Beto Díaz (beto.diaz)"]
