"""Each business rule is declared once, and its executors agree on generated calls and logins, on both engines: the
first login after a call (in the client, set-based, correlated, refreshed), the conversion aggregates, and the lift's
baselines."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from typing import NamedTuple, TypeVar

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callmart import engines
from callmart.aggregates import AGENT, CAMPAIGN, COMPUTED_AT, LOGIN_CHANNEL, TOTAL_SECONDS, Settings
from callmart.analytics import aggregates_of, rebuild_aggregates
from callmart.declare import BEGINNING, DEFAULT_MEMBER_ID
from callmart.dimension import CHANGED, NEW
from callmart.lift_analytics import lift_groups
from callmart.mart import CALLS, MART
from callmart.metric import SECONDS_TO_EVENT, FirstEventsInClient, first_event_key, first_events, refresh_after_events
from callmart.schema import Schema
from callmart.settings import apply_scd
from callmart.streamed_aggregates import StreamedAggregates

T = TypeVar("T")

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

METRIC = CALLS.metrics[0]
START = datetime(2024, 3, 4)
END = START + timedelta(days=1)
WINDOW = timedelta(hours=48)
SWITCH = START + timedelta(hours=12)
"""When customers 1, 2 and 4 change type: where their dimension keeps history, they have a version before and one
after, and a call and a login of one customer may point at different versions."""
CHANGING = (1, 2, 4)
CUSTOMERS = (1, 2, 3, 4, 5)


class Call(NamedTuple):
    """A generated call, its customer by business number (1..5, or the default member)."""

    customer: int
    at: datetime
    talk: int | None
    total: int | None = 60
    campaign: str | None = "VENTAS"
    agent: int = 1


class Login(NamedTuple):
    """A generated login, its customer by business number; `fate` says when it reaches the mart: there before the
    calls load ("kept"), landed after them ("new"), or there before at `was` and moved to `at` after ("moved")."""

    customer: int
    at: datetime
    fate: str = "kept"
    was: datetime | None = None


# A 10-minute grid from half a day before the period to two and a half days after: calls and logins often share a
# moment.
moments = st.integers(0, 4 * 24 * 6).map(lambda n: START - timedelta(hours=12) + timedelta(minutes=10 * n))
login_moments = st.tuples(moments, st.sampled_from([0, 17])).map(lambda m: m[0] + timedelta(seconds=m[1]))
EDGES = (timedelta(0), timedelta(seconds=1), WINDOW - timedelta(seconds=1), WINDOW)
"""Where a login falls from a call, at the edges of the call's window: the rule keeps the first three, not the last."""
FATES = ("kept", "kept", "new", "moved")
talks = st.one_of(st.sampled_from([0, 29, 30, 31]), st.integers(0, 90))
"""Seconds of talk, often at the threshold's edge or none at all."""
call = st.tuples(
    st.sampled_from([*CUSTOMERS, DEFAULT_MEMBER_ID]),
    moments.map(lambda t: min(max(t, START), END - timedelta(minutes=1))),
    talks,
).map(lambda t: Call(*t))
two_days = st.integers(0, 2 * 24 * 6 - 1).map(lambda n: START + timedelta(minutes=10 * n))
aggregated_call = st.tuples(
    st.sampled_from([*CUSTOMERS, DEFAULT_MEMBER_ID]),
    two_days,
    st.one_of(st.none(), talks),
    st.one_of(st.none(), st.integers(0, 200)),
    st.sampled_from(["VENTAS", "COBRO", None]),
    st.sampled_from([1, 2, DEFAULT_MEMBER_ID]),
).map(lambda t: Call(*t))


def up_to(most: int, items: st.SearchStrategy[T]) -> st.SearchStrategy[list[T]]:
    """Lists of any length up to `most`, all lengths as likely: plain lists are mostly short, and few of their calls
    would meet a login."""
    return st.integers(0, most).flatmap(lambda n: st.lists(items, min_size=n, max_size=n))


@st.composite
def calls_and_logins(draw: st.DrawFn, calls: st.SearchStrategy[Call], most: int) -> tuple[list[Call], list[Login]]:
    """Calls, and logins of customers 1 to 4 and the default member, many of them at the edges of a call's window."""
    drawn = draw(up_to(most, calls))
    anywhere = st.tuples(st.sampled_from([1, 2, 3, 4, DEFAULT_MEMBER_ID]), login_moments)
    edges = [(c.customer, c.at + edge) for c in drawn for edge in EDGES]
    where = st.one_of(anywhere, st.sampled_from(edges)) if edges else anywhere
    logins = st.tuples(where, st.sampled_from(FATES), login_moments).map(lambda t: Login(*t[0], t[1], t[2]))
    return drawn, draw(up_to(25, logins))


def channel_of(login: int) -> int:
    """The channel key the test gives a login."""
    return 10 + login % 3


def logins_before(logins: Sequence[Login]) -> dict[int, tuple[int, datetime]]:
    """The logins by id (place in the list, from 1) as the mart holds them when the calls load."""
    held = {}
    for i, (who, at, fate, was) in enumerate(logins, 1):
        if fate == "kept":
            held[i] = (who, at)
        elif fate == "moved" and was is not None:
            held[i] = (who, was)
    return held


def logins_after(logins: Sequence[Login]) -> dict[int, tuple[int, datetime]]:
    """The logins by id once the late ones landed and the moved ones moved."""
    return {i: (who, at) for i, (who, at, *_) in enumerate(logins, 1)}


def expected_first(calls: Sequence[Call], logins: Mapping[int, tuple[int, datetime]]) -> list[int | None]:
    """The rule, written plainly: the first login (by time, then id) of the call's customer within the window."""
    found: list[int | None] = []
    for customer, when, talk, *_ in calls:
        if talk is None or talk < 30 or customer == DEFAULT_MEMBER_ID:
            found.append(None)
            continue
        after = [(at, i) for i, (who, at) in logins.items() if who == customer and when <= at < when + WINDOW]
        found.append(min(after)[1] if after else None)
    return found


def seconds(duration: int | None) -> time | None:
    """A duration as the fact table's time-of-day columns hold it."""
    return None if duration is None else time(duration // 3600, duration // 60 % 60, duration % 60)


class MartOnEngine:
    """An empty mart with customers and no calls or logins; each example works in a transaction it rolls back."""

    def __init__(self, engine: sa.Engine, schema: Schema, scratch: sa.Table) -> None:
        self.engine = engine
        self.schema = schema
        # Where a period's calls wait before they replace the period's rows of the fact table.
        self.scratch = scratch

    def __repr__(self) -> str:
        history = "with customer history" if self.keeps_history else "as declared"
        return f"MartOnEngine({self.engine.dialect.name}, {history})"

    @property
    def fact(self) -> sa.Table:
        """The calls' fact table."""
        return self.schema[CALLS.name]

    @property
    def keeps_history(self) -> bool:
        """Whether the customers' dimension keeps versions."""
        return self.schema.mart.dimension("dim_clientes").keeps_history

    def customer_key(self, customer: int, at: datetime) -> int:
        """The key of the customer's version valid at `at`, as a load finds it."""
        if self.keeps_history and customer in CHANGING and at >= SWITCH:
            return customer + 10
        return customer

    @contextmanager
    def example(self) -> Iterator[sa.Connection]:
        """A connection in a transaction that is rolled back: each example starts from the empty mart."""
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                yield conn
            finally:
                transaction.rollback()

    def logins(self, conn: sa.Connection, logins: Mapping[int, tuple[int, datetime]]) -> None:
        """Insert logins given by id into the logins' dimension."""
        if logins:
            conn.execute(
                sa.insert(self.schema["dim_logins"]),
                [
                    {
                        "key_login": i,
                        "id_login": i,
                        "fecha_login": at,
                        "key_cliente_login": self.customer_key(who, at),
                        "key_canal_digital_login": channel_of(i),
                    }
                    for i, (who, at) in logins.items()
                ],
            )

    def land(self, conn: sa.Connection, logins: Sequence[Login]) -> None:
        """The late logins land and the moved ones move, merged into the dimension and marked in its staging table
        as a dimension load leaves them."""
        table, staged = self.schema["dim_logins"], self.schema["stg_dim_logins"]
        after = logins_after(logins)
        self.logins(conn, {i: after[i] for i, login in enumerate(logins, 1) if login.fate == "new"})
        for i, login in enumerate(logins, 1):
            if login.fate == "moved":
                key = self.customer_key(login.customer, login.at)
                conn.execute(
                    sa.update(table).where(table.c.key_login == i).values(fecha_login=login.at, key_cliente_login=key)
                )
        marks = {"kept": None, "new": NEW, "moved": CHANGED}
        rows = [
            {
                "key_login": i,
                "id_login": i,
                "fecha_login": login.at,
                "id_cliente_login": DEFAULT_MEMBER_ID if login.customer == DEFAULT_MEMBER_ID else 100 + login.customer,
                "key_cliente_login": self.customer_key(login.customer, login.at),
                "id_canal_digital_login": channel_of(i),
                "key_canal_digital_login": channel_of(i),
                "change": marks[login.fate],
            }
            for i, login in enumerate(logins, 1)
        ]
        if rows:
            conn.execute(sa.insert(staged), rows)

    def rows(self, calls: Sequence[Call], metric: pa.Array | None = None) -> pa.RecordBatch:
        """The calls as fact rows (keys 1, 2, ... in order), named and ordered as the fact table's columns."""
        n = len(calls)
        columns = {
            CALLS.key: pa.array(range(1, n + 1), pa.int64()),
            METRIC.fact_time: pa.array([c.at for c in calls], pa.timestamp("s")),
            CAMPAIGN: pa.array([c.campaign for c in calls], pa.string()),
            "telefono_llamada": pa.array([None] * n, pa.string()),
            "tiempo_hablado_llamada": pa.array([seconds(c.talk) for c in calls], pa.time32("s")),
            "tiempo_total_llamada": pa.array([seconds(c.total) for c in calls], pa.time32("s")),
            METRIC.threshold_column: pa.array([c.talk for c in calls], pa.int32()),
            TOTAL_SECONDS: pa.array([c.total for c in calls], pa.int32()),
            METRIC.fact_entity: pa.array([self.customer_key(c.customer, c.at) for c in calls], pa.int32()),
            AGENT: pa.array([c.agent for c in calls], pa.int32()),
            METRIC.column: pa.nulls(n, pa.int32()) if metric is None else metric,
        }
        return pa.RecordBatch.from_pydict({c.name: columns[c.name] for c in self.fact.columns})

    def load(self, conn: sa.Connection, rows: pa.RecordBatch, start: datetime, end: datetime) -> None:
        """Replace the fact rows of [start, end) with `rows`, the way the engine replaces a period."""
        if rows.num_rows:
            conn.execute(sa.insert(self.scratch), rows.to_pylist())
        when = self.scratch.c[CALLS.time_column]
        engines.of(conn).period_replace(conn, self.fact, start, end).finish(
            lambda lower, upper: sa.select(*self.scratch.c).where(when >= lower, when < upper)
        )

    def firsts_in_sql(self, conn: sa.Connection, n: int) -> dict[str, list[int | None]]:
        """Each call's first login by the two SQL executors, over the fact table's calls 1..n."""
        fact = self.fact
        set_based = first_events(self.schema, METRIC, fact, CALLS.key, START, END)
        found = dict(conn.execute(sa.select(set_based.c.fact_key, set_based.c.event_key)).all())
        correlated = first_event_key(self.schema, METRIC, fact)
        looked_up = dict(conn.execute(sa.select(fact.c[CALLS.key], correlated)).all())
        assert set(looked_up) == set(range(1, n + 1))
        return {
            "first_events": [found.get(k) for k in range(1, n + 1)],
            "first_event_key": [looked_up[k] for k in range(1, n + 1)],
        }

    def stored(self, conn: sa.Connection) -> list[int | None]:
        """The metric column of the fact table's calls, in key order."""
        fact = self.fact
        return list(conn.execute(sa.select(fact.c[METRIC.column]).order_by(fact.c[CALLS.key])).scalars())

    def aggregates(self, conn: sa.Connection) -> dict[str, list[dict[str, object]]]:
        """Every aggregate table's rows but their computation time, sorted."""
        return {
            table.name: sorted(
                (dict(r) for r in conn.execute(sa.select(*(c for c in table.c if c.name != COMPUTED_AT))).mappings()),
                key=repr,
            )
            for table in aggregates_of(self.schema)
        }


HISTORY = apply_scd(MART, {"dim_clientes": {"tipo_cliente": "historical"}})
"""The mart with customers that keep history (type 2), as a callmart.toml may choose."""


@pytest.fixture(params=["as declared"])
def mart(request: pytest.FixtureRequest, engine: sa.Engine) -> MartOnEngine:
    """The mart (by default as declared; "with customer history" parametrized indirectly), created on the engine."""
    history = request.param == "with customer history"
    schema = Schema(HISTORY if history else MART)
    fact = schema[CALLS.name]
    scratch = sa.Table("scratch_calls", sa.MetaData(), *(sa.Column(c.name, c.type) for c in fact.columns))
    with engine.begin() as conn:
        schema.create(conn)
        scratch.create(conn)
        customers = [{"key_cliente": k, "id_cliente": 100 + k, "version": 1, "tipo_cliente": "A"} for k in CUSTOMERS]
        if history:
            for row in customers:
                changes = row["key_cliente"] in CHANGING
                row.update(valid_from=BEGINNING, valid_to=SWITCH if changes else None, is_current=not changes)
            customers += [
                {
                    "key_cliente": k + 10,
                    "id_cliente": 100 + k,
                    "version": 2,
                    "tipo_cliente": "B",
                    "valid_from": SWITCH,
                    "valid_to": None,
                    "is_current": True,
                }
                for k in CHANGING
            ]
        else:
            for row in customers:
                del row["version"]
        conn.execute(sa.insert(schema["dim_clientes"]), [{"genero_cliente": "F", **row} for row in customers])
    return MartOnEngine(engine, schema, scratch)


@FAST
@pytest.mark.parametrize("mart", ["as declared", "with customer history"], indirect=True)
@given(case=calls_and_logins(call, 25))
# The edges of the rule: a login at the call's very second, two logins at one time (the lower id wins), one exactly
# 48 h after its call (outside), talk of 29 and 30 s, and a customer who changed between call and login.
@example(
    case=(
        [
            Call(1, START + timedelta(hours=1), 30),
            Call(1, START + timedelta(hours=1), 29),
            Call(1, START + timedelta(hours=2), 31),
            Call(3, START + timedelta(hours=2, minutes=10), 60),
            Call(2, START + timedelta(hours=11), 60),
            Call(DEFAULT_MEMBER_ID, START, 60),
        ],
        [
            Login(1, START + timedelta(hours=1)),
            Login(1, START + timedelta(hours=3)),
            Login(1, START + timedelta(hours=3), "new"),
            Login(3, START + timedelta(hours=2, minutes=10) + WINDOW),
            Login(2, START + timedelta(hours=13), "moved", START + timedelta(hours=11)),
        ],
    )
)
def test_every_executor_of_the_first_login_follows_the_rule(
    mart: MartOnEngine, case: tuple[list[Call], list[Login]]
) -> None:
    """The client's, the set-based, the correlated and the refreshed first login are the rule's, before and after
    late logins land and others move."""
    calls, logins = case
    before, after = logins_before(logins), logins_after(logins)
    with mart.example() as conn:
        mart.logins(conn, before)
        expected = expected_first(calls, before)
        # The calls load with the metric found in the client, as PostgreSQL's load makes it.
        events = FirstEventsInClient(conn, mart.schema, METRIC, START, END, [LOGIN_CHANNEL])
        in_client = events.keys(mart.rows(calls))
        assert in_client.to_pylist() == expected, "FirstEventsInClient"
        mart.load(conn, mart.rows(calls, in_client), START, END)
        assert mart.stored(conn) == expected, "loaded"
        for executor, found in mart.firsts_in_sql(conn, len(calls)).items():
            assert found == expected, executor

        # With each first login, the seconds from the call to it and the login's channel.
        firsts = events.firsts(mart.rows(calls)).to_pydict()
        assert firsts[SECONDS_TO_EVENT] == [
            None if k is None else int((before[k][1] - c.at).total_seconds())
            for k, c in zip(expected, calls, strict=True)
        ]
        assert firsts[LOGIN_CHANNEL] == [None if k is None else channel_of(k) for k in expected]

        # Late logins land, moved ones move: the refresh after the logins' load sets the metric of the calls they
        # reach, and every executor now sees them.
        mart.land(conn, logins)
        refresh_after_events(conn, mart.schema, CALLS, METRIC)
        expected = expected_first(calls, after)
        assert mart.stored(conn) == expected, "refresh_after_events"
        for executor, found in mart.firsts_in_sql(conn, len(calls)).items():
            assert found == expected, executor
        in_client = FirstEventsInClient(conn, mart.schema, METRIC, START, END).keys(mart.rows(calls))
        assert in_client.to_pylist() == expected, "FirstEventsInClient"


@FAST
@given(case=calls_and_logins(aggregated_call, 30), cuts=st.lists(st.integers(0, 30), max_size=3))
def test_aggregates_summed_as_rows_stream_are_the_databases(
    mart: MartOnEngine, monkeypatch: pytest.MonkeyPatch, case: tuple[list[Call], list[Login]], cuts: list[int]
) -> None:
    """The conversion aggregates of two days summed in the client from the loaded rows as they stream by, in
    batches, are the ones the database computes from the same rows."""
    calls, logins = case
    # Grouped every few calls and the groups summed as they pile up, as a day of a million calls is.
    monkeypatch.setattr("callmart.streamed_aggregates.GROUP_EVERY", 4)
    monkeypatch.setattr("callmart.streamed_aggregates.COMPACT_AFTER", 2)
    # Written a day at a time, as a year's days are written a few weeks at a time.
    monkeypatch.setattr("callmart.streamed_aggregates.DAYS_PER_WRITE", 1)
    start, end = START, START + timedelta(days=2)
    with mart.example() as conn:
        mart.logins(conn, logins_after(logins))
        streamed = StreamedAggregates(mart.schema, CALLS)
        events = FirstEventsInClient(conn, mart.schema, METRIC, start, end, streamed.event_columns(METRIC))
        # The rows and each row's first login as PostgreSQL's load hands them over, batch by batch.
        rows = mart.rows(calls)
        firsts = events.firsts(rows)
        rows = rows.set_column(rows.schema.get_field_index(METRIC.column), METRIC.column, firsts[METRIC.column])
        mart.load(conn, rows, start, end)
        streamed.begin()
        bounds = [0, *sorted(min(c, rows.num_rows) for c in cuts), rows.num_rows]
        for lower, upper in zip(bounds, bounds[1:], strict=False):
            streamed.watch(rows.slice(lower, upper - lower), {METRIC.column: firsts.slice(lower, upper - lower)})
        assert streamed.write(conn, start, end).aggregates == [start.date(), start.date() + timedelta(days=1)]
        summed = mart.aggregates(conn)

        for table in aggregates_of(mart.schema):
            conn.execute(sa.delete(table))
        rebuild_aggregates(conn, mart.schema, first=start.date(), last=start.date() + timedelta(days=1))
        computed = mart.aggregates(conn)

    assert summed == computed
    # Not two empty tables: every call is counted once, and every call with a first login converts, by its channel.
    daily, by_channel = computed.values()
    converted = sum(k is not None for k in firsts[METRIC.column].to_pylist())
    assert sum(row["llamadas"] for row in daily) == len(calls)
    assert sum(row["conversiones"] for row in daily) == converted
    assert sum(row["conversiones"] for row in by_channel) == converted


def expected_lift(
    calls: Sequence[Call], logins: Mapping[int, tuple[int, datetime]], window: timedelta
) -> dict[date, tuple[int, ...]]:
    """The lift's counts per day with calls, written plainly: effective calls and their conversions, short calls and
    theirs, and the customers with no call in the window before the day's midnight and those of them who log in
    within the window after it."""

    def logs_in(customer: int, start: datetime) -> bool:
        return any(who == customer and start <= at < start + window for who, at in logins.values())

    found = {}
    for day in sorted({c.at.date() for c in calls}):
        mine = [c for c in calls if c.at.date() == day and c.customer != DEFAULT_MEMBER_ID and c.talk is not None]
        effective = [c for c in mine if c.talk is not None and c.talk >= 30]
        short = [c for c in mine if c.talk is not None and 0 < c.talk < 30]
        midnight = datetime.combine(day, time())
        called = {c.customer for c in calls if midnight - window <= c.at < midnight}
        not_called = [who for who in CUSTOMERS if who not in called]
        found[day] = (
            len(effective),
            sum(logs_in(c.customer, c.at) for c in effective),
            len(short),
            sum(logs_in(c.customer, c.at) for c in short),
            len(not_called),
            sum(logs_in(who, midnight) for who in not_called),
        )
    return found


@FAST
@pytest.mark.parametrize("mart", ["as declared", "with customer history"], indirect=True)
@given(
    case=calls_and_logins(aggregated_call, 30),
    window=st.sampled_from([timedelta(hours=24), timedelta(hours=36), WINDOW, timedelta(hours=49, minutes=10)]),
)
def test_the_lift_counts_follow_the_rule(
    mart: MartOnEngine, case: tuple[list[Call], list[Login]], window: timedelta
) -> None:
    """The lift's counts by the database, per day, for windows of whole and partial days: a call counts among the
    called of the days whose midnight falls within the window after it, a login in the days whose window it falls in;
    customers by business id (with history, a call and a login may meet different versions of one)."""
    calls, logins = case
    start, end = START, START + timedelta(days=2)
    metric = dataclasses.replace(METRIC, window=window)
    with mart.example() as conn:
        mart.logins(conn, logins_after(logins))
        rows = mart.rows(calls)
        rows = rows.set_column(
            rows.schema.get_field_index(METRIC.column),
            METRIC.column,
            FirstEventsInClient(conn, mart.schema, metric, start, end).keys(rows),
        )
        mart.load(conn, rows, start, end)
        groups = lift_groups(conn, mart.schema, Settings(30, window), start.date(), end.date()).to_pylist()
    counted: dict[date, list[int]] = {}
    for group in groups:
        day = counted.setdefault(group["dia"], [0] * 6)
        for i, name in enumerate(("llamadas_efectivas", "conversiones_efectivas", "llamadas_cortas")):
            day[i] += group[name]
        day[3] += group["conversiones_cortas"]
        day[4:] = [group["clientes_sin_llamada"], group["conversiones_sin_llamada"]]
        assert group["clientes"] == len(CUSTOMERS)
    assert {d: tuple(v) for d, v in counted.items()} == expected_lift(calls, logins_after(logins), window)
