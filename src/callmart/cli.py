"""The `callmart` command: a thin layer over the library API."""

from __future__ import annotations

import json
import signal
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import click

from . import allocator, dictionary
from ._errors import ConfigError
from .analytics_cli import profile, report
from .api import Callmart, RunSummary
from .config import DEFAULT_DATABASE_URL, check_settings, sample_dir
from .console import (
    DAY,
    EXIT_BUSY,
    EXIT_ERROR,
    EXIT_FAILED_PERIODS,
    EXIT_NOTHING_READY,
    EXIT_OK,
    ConsoleReporter,
    Id,
    JsonReporter,
    step_name,
    table,
)
from .console import handle_errors as _handle_errors
from .progress import StepResult
from .scheduling.templates import copy_template, package_azure
from .status import PERIOD_STATUSES, Status
from .stopping import RunStopped, StopRequest, on_signals

LONGEST_RANGE_YEARS = 10
"""Longer ranges are queued only with --yes: a typo in a year can queue a century of days."""

__all__ = ["EXIT_BUSY", "EXIT_ERROR", "EXIT_FAILED_PERIODS", "EXIT_NOTHING_READY", "EXIT_OK", "main"]


class _OptionsAnywhere(click.Group):
    """A group whose own options may also be typed after the subcommand: `callmart init --database-url …`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {
            name: not option.is_flag
            for option in self.params
            if isinstance(option, click.Option)
            for name in option.opts
        }
        before, after, command = [], [], None
        tokens = iter(args)
        for token in tokens:
            if token == "--":
                after.extend([token, *tokens])
                break
            name = token.split("=", 1)[0]
            own = command is not None and name in _option_names(self.commands.get(command))
            if name in takes_value and not own:
                before.append(token)
                if takes_value[name] and "=" not in token:
                    before.append(next(tokens, ""))
            elif command is None and not token.startswith("-"):
                command = token
                after.append(token)
            else:
                after.append(token)
        return super().parse_args(ctx, before + after)


def _option_names(command: click.Command | None) -> set[str]:
    return {name for param in (command.params if command else []) for name in getattr(param, "opts", [])}


@click.group(cls=_OptionsAnywhere, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--database-url",
    envvar="CALLMART_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="The mart's database: duckdb:///FILE or postgresql://USER:PASSWORD@HOST/DB. Env: CALLMART_DATABASE_URL.",
)
@click.option(
    "--source-dir",
    envvar="CALLMART_SOURCE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the extracts (Llamadas*.csv, Customers*.csv, Agentes*.csv, CanalDigital*.csv, "
    "logins*.json). Env: CALLMART_SOURCE_DIR.",
)
@click.option(
    "--sample",
    is_flag=True,
    help="Load the sample extracts shipped with callmart (made-up customers) instead of --source-dir: to try it out.",
)
@click.option(
    "--config",
    envvar="CALLMART_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file (SCD type per attribute). Default: ./callmart.toml if present. Env: CALLMART_CONFIG.",
)
@click.option(
    "--log-format",
    envvar="CALLMART_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="How `run` reports its steps on standard error: text, or JSON lines for log collectors.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(
    ctx: click.Context,
    database_url: str,
    source_dir: Path | None,
    sample: bool,
    config: Path | None,
    log_format: str,
    debug: bool,
) -> None:
    """Load the call-center data mart from the call center's extracts.

    \b
    A first load of the packaged sample on the embedded database:
      callmart init
      callmart enqueue --from 2024-03-04 --to 2024-03-10
      callmart --sample run
      callmart status

    \b
    Every day, from a scheduler (catches up on missed days by itself):
      callmart run --daily

    \b
    Exit codes: 0 success, 1 some periods failed (the others loaded),
    2 usage, configuration or input error, 3 another process holds the mart,
    4 nothing loaded: the extracts do not reach the pending periods yet,
    130/143 stopped by SIGINT/SIGTERM.
    """
    _check_settings(debug)
    if sample and source_dir is not None:
        raise click.UsageError("--sample and --source-dir (or CALLMART_SOURCE_DIR) name two folders: choose one")
    if sample:
        source_dir = sample_dir()
    ctx.obj = {"database_url": database_url, "source_dir": source_dir, "config": config, "log_format": log_format}


def _check_settings(debug: bool) -> None:
    """An empty setting (a scheduler's unset secret) is an error naming it, before click falls back to a default."""
    try:
        check_settings()
    except ConfigError as error:
        if debug:
            raise
        click.echo(click.style("Error: ", fg="red", bold=True) + str(error), err=True)
        sys.exit(EXIT_ERROR)


def _mart(ctx: click.Context, reporter: ConsoleReporter | JsonReporter | None = None) -> Callmart:
    return Callmart(ctx.obj["database_url"], ctx.obj["source_dir"], reporter=reporter, config=ctx.obj["config"])


@cli.command()
@click.pass_context
@_handle_errors
def init(ctx: click.Context) -> None:
    """Create the mart's tables and default members; running it again changes nothing.

    Example: callmart --database-url postgresql://postgres@localhost/mart init
    """
    with _mart(ctx) as mart:
        mart.init()
        click.echo(f"mart ready in {mart.where}")
        exposed = mart.exposed_schema
        if exposed:
            click.echo(
                f"Note: the mart is in schema {exposed}, which Supabase's Data API serves to anyone holding the "
                "project's public key (its tables are closed by row level security); move it to a schema of its "
                "own with `callmart move-schema`",
                err=True,
            )


@cli.command("grant-read")
@click.argument("role")
@click.pass_context
@_handle_errors
def grant_read(ctx: click.Context, role: str) -> None:
    """Let a database role read every table of the mart, and change none (PostgreSQL).

    It gets USAGE on the mart's schema, SELECT on each table and a read policy (the tables have row level
    security). callmart never grants anything to anon, authenticated or PUBLIC.

    Example: callmart grant-read analysts
    """
    with _mart(ctx) as mart:
        mart.grant_read(role)
        click.echo(f"{role} may read {mart.where}")


@cli.command("revoke-read")
@click.argument("role")
@click.pass_context
@_handle_errors
def revoke_read(ctx: click.Context, role: str) -> None:
    """Take back what grant-read gave a role.

    Example: callmart revoke-read analysts
    """
    with _mart(ctx) as mart:
        mart.revoke_read(role)
        click.echo(f"{role} may no longer read {mart.where}")


@cli.command("move-schema")
@click.option("--to", "target", help="The schema to move the mart to. Default: callmart.")
@click.pass_context
@_handle_errors
def move_schema(ctx: click.Context, target: str | None) -> None:
    """Move a PostgreSQL mart, with its day partitions and sequences, to a schema of its own.

    For a mart an earlier callmart made in `public`, which Supabase's Data API serves. Stop the scheduler first;
    afterwards every command finds the mart in its new schema.

    Example: callmart move-schema
    """
    with _mart(ctx) as mart:
        before = mart.where
        mart.move_schema(target)
        click.echo(f"moved {before} to {mart.where}")


@cli.command()
@click.option("--from", "first", type=DAY, help="First day to load (YYYY-MM-DD).")
@click.option(
    "--to",
    "last",
    type=DAY,
    help="Day after the last day to load (exclusive). Default: the day after --from.",
)
@click.option("--force", is_flag=True, help="Queue periods again even if already loaded (to reprocess them).")
@click.option("--failed", is_flag=True, help="Queue every failed period again (no dates needed).")
@click.option("--yes", is_flag=True, help=f"Queue a range longer than {LONGEST_RANGE_YEARS} years without asking.")
@click.pass_context
@_handle_errors
def enqueue(ctx: click.Context, first: date | None, last: date | None, force: bool, failed: bool, yes: bool) -> None:
    """Queue one pending fact_llamadas period per day in [--from, --to); without dates, yesterday.

    \b
    Examples:
      callmart enqueue --from 2023-06-01 --to 2023-09-01
      callmart enqueue --from 2023-06-27 --force     # reprocess one day
      callmart enqueue --failed                      # retry what failed
    """
    if failed and (first or last):
        raise click.UsageError("--failed queues every failed period: give it no dates")
    if last is not None and first is None:
        raise click.UsageError("--to needs --from: give the first day too (without dates, yesterday is queued)")
    if first is not None and last is not None and (last - first).days > LONGEST_RANGE_YEARS * 366 and not yes:
        raise click.UsageError(
            f"--from {first} --to {last} is {(last - first).days} daily periods, more than {LONGEST_RANGE_YEARS} "
            "years: add --yes if that is what you mean"
        )
    with _mart(ctx) as mart:
        if failed:
            click.echo(f"{mart.requeue_failed()} failed period(s) queued again")
            return
        counts = mart.enqueue(first, last, force=force)
    click.echo(
        f"{counts['added']} period(s) added, {counts['requeued']} queued again, "
        f"{counts['skipped']} already pending or done"
    )


@cli.command()
@click.option("--daily", is_flag=True, help="First queue every day since the last loaded period up to yesterday.")
@click.option(
    "--as-of",
    type=DAY,
    help="With --daily: the day taken as today (to replay a schedule). Default: today.",
)
@click.option(
    "--reload-dimensions",
    is_flag=True,
    help="Merge every dimension again, even one whose source files are unchanged since its last merge.",
)
@click.option(
    "--max-wait",
    default="3d",
    show_default=True,
    help="How long after its end a period may wait for its extract (a late export) before it fails: "
    "a number with d, h or m, or 'never'.",
)
@click.option(
    "--complete-through",
    type=DAY,
    envvar="CALLMART_COMPLETE_THROUGH",
    help="The extracts hold every call up to the end of this day (a final, historical export): "
    "the periods up to then load even where their last days have no call. Env: CALLMART_COMPLETE_THROUGH.",
)
@click.pass_context
@_handle_errors
def run(
    ctx: click.Context,
    daily: bool,
    as_of: date | None,
    reload_dimensions: bool,
    max_wait: str,
    complete_through: date | None,
) -> None:
    """Load the dimensions, then every pending period, oldest first, and print a summary.

    A period is loaded once its extract covers it: the calls extract holds a call at or after the period's end,
    or each of its days has a file of its own (Llamadas_20240305.csv). Until then it waits (esperando).

    Exit code 0 when every period loaded (or waits), 1 when some failed (the rest still load), 2 on an error, 3
    when another process holds the mart, 4 when nothing was loaded because no period's extract was there yet (the
    periods wait, and the next run tries again), 130 or 143 when stopped by SIGINT (Ctrl-C) or SIGTERM: the
    period being loaded rolls back and is queued again, and the run is recorded as interrumpido.
    """
    if as_of is not None and not daily:
        raise click.UsageError("--as-of goes with --daily: it is the day a daily run takes as today")
    live = sys.stderr.isatty()
    reporter = JsonReporter() if ctx.obj["log_format"] == "json" else ConsoleReporter(live=live)
    wait = _duration(max_wait)
    stop = StopRequest()
    with _mart(ctx, reporter) as mart, on_signals(stop):
        if daily:
            counts = mart.catch_up(as_of)
            _say(ctx, f"{counts['added'] + counts['requeued']} period(s) queued to catch up")
        _say(ctx, f"loading {mart.where} from {mart.source_dir}")
        try:
            # The process is the command's own: its allocators may hand a run's memory back to the system.
            with allocator.returning_memory():
                summary = mart.run(
                    reload_dimensions=reload_dimensions, stop=stop, max_wait=wait, complete_through=complete_through
                )
        except RunStopped as stopped:
            click.echo(
                click.style("Stopped: ", fg="yellow", bold=True)
                + f"{stopped.reason}; the period being loaded rolled back and is queued again",
                err=True,
            )
            sys.exit(128 + (stopped.signal_number or signal.SIGINT))
        if summary.abandoned:
            _say(ctx, f"{summary.abandoned} run(s) that stopped without finishing were marked {Status.ABANDONED}")
        if summary.freed:
            _say(ctx, f"{summary.freed} period(s) left running by a stopped run were queued again and loaded")
    click.echo(_summary_table(summary))
    if not summary.ok:
        click.echo(click.style(f"{len(summary.failed)} period(s) failed; see `callmart status`", fg="red"), err=True)
        sys.exit(EXIT_FAILED_PERIODS)
    if summary.waiting:
        click.echo(
            f"{len(summary.waiting)} period(s) wait for their extracts (a late export?); the next run tries again",
            err=True,
        )
        if not summary.loaded:
            sys.exit(EXIT_NOTHING_READY)


def _duration(text: str) -> timedelta | None:
    """A duration typed as 3d, 12h or 90m; None for 'never'."""
    if text.strip().lower() == "never":
        return None
    units = {"d": "days", "h": "hours", "m": "minutes"}
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in units or not number.isdigit():
        raise ConfigError(f"--max-wait {text!r}: give a number with d, h or m (3d, 12h, 90m), or 'never'")
    return timedelta(**{units[unit]: int(number)})


def _say(ctx: click.Context, message: str) -> None:
    """A progress note on standard error, unless the log is JSON lines."""
    if ctx.obj["log_format"] == "text":
        click.echo(message, err=True)


def _summary_row(s: StepResult) -> list[object]:
    return [
        step_name(s),
        s.read,
        s.loaded,
        s.rejected,
        s.warned,
        s.inserted,
        s.updated,
        s.inferred,
        s.seconds,
        s.status,
    ]


def _summary_table(summary: RunSummary) -> str:
    headers = ["step", "read", "loaded", "rejected", "warned", "inserted", "updated", "inferred", "seconds", "status"]
    rows: list[list[object]] = []
    empty: list[StepResult] = []

    def fold() -> None:
        # Consecutive days that held no row: one line, however many.
        if len(empty) > 1 and empty[0].period and empty[-1].period:
            first, last = empty[0].period[0], empty[-1].period[1]
            name = f"{empty[0].table} [{first:%Y-%m-%d}, {last:%Y-%m-%d}): {len(empty)} empty days"
            rows.append([name, 0, 0, 0, 0, 0, 0, 0, sum(s.seconds for s in empty), Status.DONE])
        else:
            rows.extend(_summary_row(s) for s in empty)
        empty.clear()

    for step in summary.steps:
        if step.period is not None and step.status == Status.DONE and step.read == 0 and not step.rejected:
            if empty and empty[-1].table != step.table:
                fold()
            empty.append(step)
            continue
        fold()
        rows.append(_summary_row(step))
    fold()
    periods = [s for s in summary.steps if s.period is not None]
    total = (
        f"run {summary.id_run}: {len(periods)} period(s), {sum(s.inserted for s in periods):,} rows loaded, "
        f"{sum(s.rejected for s in summary.steps):,} rejected, {sum(s.warned for s in summary.steps):,} warnings, "
        f"{sum(s.inferred for s in summary.steps):,} inferred members, {summary.seconds:.1f} s, "
        f"{len(summary.failed)} failed" + (f", {len(summary.waiting)} waiting" if summary.waiting else "")
    )
    hint = (
        "\nsee the rows in dm_rejects, or `callmart rejects`"
        if any(s.rejected or s.warned for s in summary.steps)
        else ""
    )
    return table(headers, rows) + "\n\n" + total + hint


@cli.command()
@click.option("--all", "every", is_flag=True, help="Every period, not just those needing attention and the latest.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([period_status.value for period_status in PERIOD_STATUSES]),
    help="Only periods of this status (may be given more than once).",
)
@click.option("--since", type=DAY, help="Only periods starting on or after this day.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=10, show_default=True, help="At most this many rows a list."
)
@click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output."
)
@click.pass_context
@_handle_errors
def status(
    ctx: click.Context, every: bool, statuses: tuple[str, ...], since: date | None, limit: int, output: str
) -> None:
    """Show how the periods stand: how many of each status, those needing attention (failed, waiting for their
    extract, running), the latest ones, and the latest run's reconciliation (rows read = loaded + rejected).

    \b
    Examples:
      callmart status
      callmart status --status fallido --since 2024-01-01
      callmart status --all --format json
    """
    with _mart(ctx) as mart:
        counts = mart.status_counts()
        if every or statuses:
            lists = {"periods": mart.status(statuses, since, None if every else limit)}
        else:
            attention = [Status.FAILED, Status.WAITING, Status.RUNNING]
            lists = {
                "needing attention": mart.status(attention, since, limit),
                "latest": mart.status([Status.DONE, Status.PENDING], since, limit),
            }
        steps = mart.last_run()
    if output == "json":
        document = {"counts": counts, **{name.replace(" ", "_"): rows for name, rows in lists.items()}}
        click.echo(json.dumps({**document, "latest_run": steps}, default=_json_value, indent=2, ensure_ascii=False))
        return
    if not counts:
        click.echo("no periods queued; add some with `callmart enqueue`")
    else:
        click.echo("periods: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    headers = ["id", "fact_table", "start", "end", "status", "run", "rows", "error or reason"]
    keys = ["id_process", "fact_table", "start_date", "end_date", "status", "id_run", "rows_loaded", "error_message"]
    for name, rows in lists.items():
        if rows:
            click.echo(f"\n{name}:")
            click.echo(
                table(headers, [[Id.of(r[k]) if k in ("id_process", "id_run") else r[k] for k in keys] for r in rows])
            )
    if steps:
        click.echo(f"\nlatest run {steps[0]['id_run']}:")
        headers = ["step", "table", "period", "read", "loaded", "rejected", "warned", "balanced", "status", "error"]
        table_rows = [
            [
                Id.of(s["step"]),
                s["table_name"],
                s["period_start"],
                s["rows_read"],
                s["rows_loaded"],
                s["rows_rejected"],
                s["rows_warned"],
                "yes" if s["rows_read"] == s["rows_loaded"] + s["rows_rejected"] else "NO",  # type: ignore[operator]
                s["status"],
                s["error_message"],
            ]
            for s in _folded_steps(steps)
        ]
        click.echo(table(headers, table_rows))


def _json_value(value: object) -> object:
    """Dates and times as ISO text in JSON output."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def _folded_steps(steps: list[dict[str, object]]) -> list[dict[str, object]]:
    """The run log's steps with consecutive empty, loaded days as one row."""
    folded: list[dict[str, object]] = []
    for step in steps:
        empty = step["period_start"] is not None and step["rows_read"] == 0 and step["status"] == Status.DONE
        last = folded[-1] if folded else None
        if empty and last is not None and last.get("empty_days") and last["table_name"] == step["table_name"]:
            last["empty_days"] = int(last["empty_days"]) + 1  # type: ignore[call-overload]
            last["error_message"] = f"{last['empty_days']} empty days, to {step['period_end']:%Y-%m-%d}"
            continue
        folded.append({**step, "empty_days": 1 if empty else 0})
    return folded


@cli.command()
@click.option("--run", "id_run", type=int, help="Run id (default: the latest run).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many rows.")
@click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output."
)
@click.pass_context
@_handle_errors
def rejects(ctx: click.Context, id_run: int | None, limit: int, output: str) -> None:
    """Show the source rows a run rejected (errors) or loaded with a doubt (warnings), with file, line and reason.

    Example: callmart rejects --limit 20
    """
    with _mart(ctx) as mart:
        rows = mart.rejects(id_run, limit)
    if output == "json":
        click.echo(json.dumps(rows, default=_json_value, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no rejected or doubtful rows")
        return
    headers = ["severity", "table", "file", "line", "column", "value", "reason"]
    keys = ["severity", "table_name", "source_file", "line_number", "column_name", "raw_value", "reason"]
    click.echo(table(headers, [[Id.of(r[k]) if k == "line_number" else r[k] for k in keys] for r in rows]))


@cli.command()
@click.option("--calls", default=2000, show_default=True, help="Number of calls.")
@click.option("--days", default=7, show_default=True, help="Days the calls spread over.")
@click.option("--customers", default=600, show_default=True, help="Number of customers.")
@click.option("--start", type=DAY, default="2024-03-04", show_default=True, help="First day of calls.")
@click.option("--seed", default=7, show_default=True, help="Random seed: the same seed gives the same files.")
@click.option("--dirty-share", default=0.0, show_default=True, help="Share of call rows made dirty (0 to 1).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write.")
@_handle_errors
def generate(calls: int, days: int, customers: int, start: date, seed: int, dirty_share: float, out: Path) -> None:
    """Write realistic, deterministic extracts in the call center's formats.

    Example: callmart generate --calls 1000000 --days 30 --out /tmp/extracts
    """
    from .mart.sample import generate as write_extracts

    written = write_extracts(
        out, calls=calls, days=days, customers=customers, start=start, seed=seed, dirty_share=dirty_share
    )
    for name, rows in written.items():
        click.echo(f"{out / name}: {rows:,} rows")


@cli.command()
@click.option(
    "--format",
    "output",
    type=click.Choice(["markdown", "dbt"]),
    default="markdown",
    show_default=True,
    help="markdown: the data dictionary; dbt: a sources.yml with the same descriptions and data tests.",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: print it).")
@click.pass_context
@_handle_errors
def docs(ctx: click.Context, output: str, out: Path | None) -> None:
    """Print the mart's data dictionary: every table and column and what it means (the same text as the comments
    on the tables), or a dbt sources.yml for analysts who build on the mart with dbt.

    \b
    Examples:
      callmart docs > mart.md
      callmart --database-url postgresql://... docs --format dbt --out models/callmart_sources.yml
    """
    with _mart(ctx) as mart:
        if output == "markdown":
            text = dictionary.markdown(mart.schema)
        else:
            text = dictionary.dbt_sources(mart.schema, mart.schema_name)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"{out}: the data dictionary ({output})")


TEMPLATES = ("airflow", "azure", "azure-pipelines", "databricks", "github")


@cli.command()
@click.argument("scheduler", type=click.Choice(TEMPLATES))
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--package",
    is_flag=True,
    help="azure: the Function App folder ready to deploy, with callmart's own wheel and a requirements.txt for it.",
)
@click.option("--vendor", is_flag=True, help="With --package: every dependency's wheel too (installs with no index).")
@click.option(
    "--project",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="With --package: callmart's source folder (default: the checkout callmart runs from).",
)
@_handle_errors
def templates(scheduler: str, folder: Path, package: bool, vendor: bool, project: Path | None) -> None:
    """Copy a scheduler's ready-made definition to FOLDER (made if missing; files there are not overwritten).

    \b
    Examples:
      callmart templates airflow "$AIRFLOW_HOME/dags"
      callmart templates azure build/func --package     # what the deploy workflows publish
      mkdir -p .github/workflows && callmart templates github .github/workflows
    """
    if (package or vendor or project) and scheduler != "azure":
        raise click.UsageError("--package, --vendor and --project go with the azure template")
    written = package_azure(folder, project, vendor) if package else copy_template(scheduler, folder)
    for path in written:
        click.echo(str(path))


cli.add_command(report)
cli.add_command(profile)


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="callmart")
