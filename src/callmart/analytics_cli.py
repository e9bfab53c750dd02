"""The `callmart report` and `callmart profile` commands, registered on the `callmart` group."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import date
from pathlib import Path

import click
from sqlalchemy.exc import DBAPIError

from ._errors import ConfigError, DatabaseError
from .api import Callmart
from .config import scrub
from .console import DAY, EXIT_ERROR, table
from .console import handle_errors as _handle_errors
from .mart import MART
from .profile import FileProfile, SourceProfile, profile_source
from .report_html import render_report

__all__ = ["describe_profile", "profile", "report"]


@click.command()
@click.option("--from", "first", type=DAY, help="First day to report (YYYY-MM-DD).")
@click.option("--to", "last", type=DAY, help="Day after the last day to report (exclusive).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="report.html",
    show_default=True,
    help="HTML file to write.",
)
@click.pass_context
@_handle_errors
def report(ctx: click.Context, first: date | None, last: date | None, out: Path) -> None:
    """Write the conversion report: one HTML file that opens offline, for managers.

    Conversion over time, by campaign, agent and digital channel; call volumes and talk time; and the data quality
    of the loads behind it (rejected and doubtful rows by reason, reconciliation, recent runs). Without dates it
    covers every day loaded.

    Example: callmart report --from 2024-03-04 --to 2024-03-11 --out march.html
    """
    obj = ctx.obj or {}
    with Callmart(obj.get("database_url"), obj.get("source_dir"), config=obj.get("config")) as mart:
        try:
            data = mart.report(first, last)
        except DBAPIError as error:
            detail = str(error.orig or error).strip().splitlines()[0]
            raise DatabaseError(scrub(f"cannot read the mart in {mart.where}: {detail}", mart.url)) from None
        html = render_report(data, mart.where)
    out.write_text(html, encoding="utf-8")
    click.echo(
        f"{out}: {data.total.calls:,} calls from {data.first:%Y-%m-%d} to {data.last:%Y-%m-%d}, "
        f"{data.total.conversions:,} conversions"
    )


@click.command()
@click.option(
    "--source-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the extracts to profile. Default: the group's --source-dir (or --sample).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON instead of tables.")
@click.pass_context
@_handle_errors
def profile(ctx: click.Context, source_dir: Path | None, as_json: bool) -> None:
    """Profile the extracts before trusting a new export: per file and column the type, distinct and missing
    values, candidate keys, and how many calls and logins point at customers, agents and channels the other
    extracts do not know.

    Example: callmart profile --source-dir /data/exports
    """
    folder = source_dir or (ctx.obj or {}).get("source_dir")
    if folder is None:
        raise ConfigError("no extracts folder: give --source-dir, set CALLMART_SOURCE_DIR, or use --sample")
    found = profile_source(folder, MART)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(found), indent=2, ensure_ascii=False))
    else:
        click.echo(describe_profile(found))
    if found.errors:
        sys.exit(EXIT_ERROR)


def _file_text(f: FileProfile) -> str:
    headers = ["column", "loads into", "type", "not of type", "missing", "distinct", "range", "most frequent"]
    rows = [
        [
            c.name,
            c.loads_into or "(ignored)",
            c.type_guess,
            c.present - c.conforming,
            c.missing,
            c.distinct,
            f"{c.minimum} … {c.maximum}" if c.minimum is not None else "",
            ", ".join(f"{v} ({n:,})" for v, n in c.top),
        ]
        for c in f.columns
    ]
    keys = "; ".join(" + ".join(k) for k in f.candidate_keys) or "none"
    lines = [
        f"{f.file} → {f.table}: {f.rows:,} rows, {f.encoding}",
        table(headers, rows),
        f"candidate keys: {keys}; exact duplicate rows: {f.duplicate_rows:,}",
        *(f"problem: {p}" for p in f.problems),
    ]
    return "\n".join(lines)


def describe_profile(found: SourceProfile) -> str:
    """The profile as plain text tables."""
    parts = [f"profile of {found.source_dir}", *(_file_text(f) for f in found.files)]
    headers = ["table", "column", "refers to", "rows", "not given", "found", "not found", "coverage", "e.g. unknown"]
    rows = [
        [
            c.table,
            c.column,
            f"{c.refers_to}.{c.by}",
            c.rows,
            c.missing,
            c.found,
            c.not_found,
            "" if c.coverage is None else f"{c.coverage:.1%}",
            ", ".join(c.examples),
        ]
        for c in found.coverage
    ]
    parts.append("foreign keys between extracts\n" + table(headers, rows))
    parts.extend(f"Error: {e}" for e in found.errors)
    return "\n\n".join(parts)
