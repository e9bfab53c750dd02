"""Deterministic synthetic source extracts in exactly the formats of the call-center exports."""

from __future__ import annotations

import math
import random
import unicodedata
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["generate"]

ENCODING = "latin-1"
CHUNK_ROWS = 250_000
TABLE_BITS = 16
TABLE_SIZE = 1 << TABLE_BITS
MINUTE, HOUR, DAY = 60, 3600, 86_400
FIRST_HOUR = 8
HOUR_WEIGHTS = (2, 10, 15, 15, 12, 10, 10, 9, 8, 4, 2.5, 1.5, 1)  # 8:00 to 20:59
SLOTS_PER_DAY = len(HOUR_WEIGHTS) * 60
BLOCK_ROWS = 24  # calls of one agent on one day come out together, as in the exports
STRAY_SHARE = 0.08  # calls of another agent slipped into a block
GHOST_AGENTS = 2  # agent logins that calls use but the agents file lacks
GHOST_SHARE = 0.005
GHOST_ROW = 199  # this row always names an unknown agent, so 200 calls have at least one
PROSPECT_SHARE = 0.20  # IDCliente -1: not a customer yet
UNKNOWN_CUSTOMER_SHARE = 0.02  # of calls to customers: a customer missing from the customers file
QUIET_CUSTOMER_SHARE = 0.10  # customers in the file who are never called
TALK_SECONDS = (
    (0.0, 0), (0.08, 0), (0.10, 1), (0.20, 4), (0.35, 6), (0.50, 9), (0.62, 17), (0.74, 30),
    (0.82, 45), (0.88, 80), (0.93, 160), (0.97, 320), (0.995, 900), (1.0, 2400),
)  # fmt: skip
EXTRA_SECONDS = ((0.0, 6), (0.1, 11), (0.5, 22), (0.9, 42), (0.99, 110), (1.0, 240))
TALK_OVER_TOTAL_SHARE = 0.003
LOGIN_THRESHOLD_SECONDS = 30
LOGIN_AFTER_LONG_CALL = 0.30
LOGIN_AFTER_SHORT_CALL = 0.02
SECOND_CHANNEL_SHARE = 0.08
NEVER_CALLED_LOGINS = 0.10  # of post-call logins
WINDOW = 48 * HOUR
LOGIN_DAYS_BEFORE = 2  # logins may precede the first call day by up to a day
# Login delay after the call: (weight, kind) with kind 0 within the window, 1 after it, 2 before the call,
# 3 at the call's minute, 4 exactly at the window's end, 5 one second before it.
LOGIN_KINDS = (80, 7, 7, 2, 2, 2)
CHANNELS = {1: "Whatsapp", 2: "AppCallCore"}
MX, PE = 0, 1
CAMPAIGNS = (
    {
        "COBRANZA_INTELIGENTE_MX": 40, "mx_adq_onboarding": 15, "mx_adq_welcome": 10,
        "mx_adq_onboarding_Recargas": 5, "COBRANZA_INTELIGENTE_IVR_MX": 2, "MX_COBRANZA1.2_Lista": 2,
        "mx_adq_Welcome_Recargas": 2, "Mx_Adq_Onboarding": 1, "MX_ADQ_WELCOME": 0.5,
        "Cobranza_Inteligente_MX": 0.5,
    },
    {
        "COBRANZA_INTELIGENTE_PE": 35, "pe_adq_onboarding": 12, "pe_adq_welcome": 11,
        "COBRANZA_INTELIGENTE_IVR_PE": 3, "PE_COBRANZA1.2_Lista": 3, "pe_adq_Welcome_Recargas": 1,
        "pe_adq_onboarding_Recargas": 1, "Pe_Adq_Welcome": 1, "PE_ADQ_ONBOARDING": 0.5,
    },
)  # fmt: skip
MX_AREA_CODES = {"55": 30, "33": 12, "81": 10, "22": 6, "44": 5, "66": 5, "99": 5, "47": 4, "72": 4, "87": 3}
GENDERS = {"F": 45, "M": 40, "NA": 15}
TYPES = {"GEM": 40, "REGULAR": 60}
LEVELS = (1, 2, 3)
LEVEL_WEIGHTS = (60, 35, 5)
FIRST_NAMES = (
    "Graciela", "Guadalupe", "Ernesto", "Manuel", "Paulina", "Juan", "Julián", "Laura", "Rodolfo", "Martín",
    "Sofía", "Inés", "José", "María", "Raúl", "Andrés", "Verónica", "Mónica", "Ramón", "Joaquín", "Germán",
    "Héctor", "Lucía", "Rocío", "Iván", "Esteban", "Carmen", "Diego", "Patricia", "Óscar",
)  # fmt: skip
LAST_NAMES = (
    "López", "Chávez", "Peña", "Muñoz", "Ibáñez", "Gómez", "Hernández", "Martínez", "Pérez", "Sánchez",
    "Ramírez", "Núñez", "Suárez", "Díaz", "Castañeda", "Ordóñez", "Zúñiga", "Cárdenas", "Beltrán", "Servin",
    "Rojas", "Torres", "Suazo", "Quispe", "Huaranga", "Ascencio", "Borrero", "Sampayo", "Mamani", "Flores",
)  # fmt: skip
CALLS_HEADER = "Fecha,IDCliente,Campania,Telefono,Agente,Tiempohablado,Tiempototal\n"
CUSTOMERS_HEADER = "CustomerID,Gender,Type\n"
AGENTS_HEADER = "idagente,agente,nivelexpertise,nombre,apellido\n"
CHANNELS_HEADER = "idcanal,desc_canal\n"


def generate(
    out_dir: Path,
    *,
    calls: int = 2000,
    days: int = 7,
    customers: int = 600,
    agents: int = 12,
    start: date = date(2024, 3, 4),
    seed: int = 7,
    dirty_share: float = 0.0,
    tag: str = "sample",
) -> dict[str, int]:
    """Write one extract of each kind into out_dir; return rows written per file name."""
    _check(calls=calls, days=days, customers=customers, agents=agents, dirty_share=dirty_share, tag=tag)
    out_dir.mkdir(parents=True, exist_ok=True)
    draws = _Draws(random.Random(seed))
    team = _agents(draws.rng, agents + GHOST_AGENTS)
    world = _World.build(draws, team, customers, days, start)
    names = {kind: f"{kind}_{tag}.csv" for kind in ("Llamadas", "Customers", "Agentes", "CanalDigital")}
    written = {
        names["Agentes"]: _write_agents(out_dir / names["Agentes"], team[:agents]),
        names["CanalDigital"]: _write_channels(out_dir / names["CanalDigital"]),
        names["Customers"]: _write_customers(out_dir / names["Customers"], draws, world),
    }
    logins = f"logins_{tag}.json"
    with (out_dir / names["Llamadas"]).open("wb") as calls_file, (out_dir / logins).open("wb") as logins_file:
        login_writer = _LoginWriter(logins_file, world, draws.rng.randrange(500, 1000))
        calls_file.write(CALLS_HEADER.encode(ENCODING))
        for first_row in range(0, calls, CHUNK_ROWS):
            rows = min(CHUNK_ROWS, calls - first_row)
            lines, made = _call_chunk(draws, world, first_row, rows, dirty_share)
            _write_strings(calls_file, lines)
            login_writer.after_calls(draws, made)
        login_writer.never_called(draws)
        written[logins] = login_writer.close()
    written[names["Llamadas"]] = calls
    return written


def _check(*, calls: int, days: int, customers: int, agents: int, dirty_share: float, tag: str) -> None:
    """Reject arguments that cannot make a coherent set of extracts."""
    if calls < 0 or days < 1 or customers < 1 or agents < 1:
        raise ValueError("calls must be >= 0 and days, customers and agents >= 1")
    if not 0.0 <= dirty_share <= 1.0:
        raise ValueError(f"dirty_share must be between 0 and 1, not {dirty_share}")
    if not tag or not all(ch.isalnum() or ch in "-_" for ch in tag):
        raise ValueError(f"tag must be letters, digits, '-' or '_', not {tag!r}")


class _Draws:
    """Bulk uniform draws from one seeded generator, as Arrow arrays."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def bits(self, n: int) -> pa.Array:
        """n uniform 32-bit unsigned integers."""
        return pa.Array.from_buffers(pa.uint32(), n, [None, pa.py_buffer(self.rng.randbytes(4 * n))])

    def unit(self, n: int) -> pa.Array:
        """n uniform floats in [0, 1)."""
        return pc.multiply(pc.cast(self.bits(n), pa.float64()), 2.0**-32)

    def below(self, bound: int | pa.Array, n: int) -> pa.Array:
        """n uniform integers in [0, bound)."""
        return pc.cast(pc.floor(pc.multiply(self.unit(n), pc.cast(bound, pa.float64()))), pa.int64())

    def chance(self, share: float | pa.Array, n: int) -> pa.Array:
        """n booleans, each true with probability share."""
        return pc.less(self.unit(n), share)

    def pick(self, table: pa.Array, n: int) -> pa.Array:
        """n values drawn from a lookup table of TABLE_SIZE entries."""
        return pc.take(table, pc.shift_right(self.bits(n), 32 - TABLE_BITS))


def _weighted_table(weights: Sequence[float]) -> pa.Array:
    """A lookup table that yields index i with probability proportional to weights[i]."""
    cumulative = list(accumulate(weights))
    step = cumulative[-1] / TABLE_SIZE
    return pa.array([bisect_right(cumulative, (j + 0.5) * step) for j in range(TABLE_SIZE)], pa.int64())


def _choice_table(weighted: Mapping[str, float]) -> pa.Array:
    """A lookup table of the keys, each as often as its weight."""
    return pc.take(pa.array(list(weighted), pa.string()), _weighted_table(list(weighted.values())))


def _quantile_table(knots: Sequence[tuple[float, int]]) -> pa.Array:
    """A lookup table of whole seconds following a piecewise-linear quantile function."""
    levels = [p for p, _ in knots]
    values = []
    for j in range(TABLE_SIZE):
        p = (j + 0.5) / TABLE_SIZE
        i = bisect_right(levels, p)
        (p0, v0), (p1, v1) = knots[i - 1], knots[i]
        values.append(int(v0 + (v1 - v0) * (p - p0) / (p1 - p0)))
    return pa.array(values, pa.int64())


@dataclass(frozen=True)
class _Agent:
    """One row of the agents file; ghosts share the shape but are never written."""

    login: str
    level: int
    first_name: str
    last_name: str
    country: int


def _agents(rng: random.Random, count: int) -> list[_Agent]:
    """Agents with distinct ASCII logins and accented Spanish names."""
    team: list[_Agent] = []
    taken: set[str] = set()
    last_names = rng.sample(LAST_NAMES, len(LAST_NAMES))
    for i in range(count):
        first, last = rng.choice(FIRST_NAMES), last_names[i % len(last_names)]
        country = rng.choice((MX, PE))
        login = base = _login(rng.random(), first, last, country)
        suffix = 1
        while login in taken:
            suffix += 1
            login = f"{base}{suffix}"
        taken.add(login)
        team.append(_Agent(login, rng.choices(LEVELS, LEVEL_WEIGHTS)[0], first, last, country))
    return team


def _login(style: float, first: str, last: str, country: int) -> str:
    """A login in one of the styles seen in the exports: juan.rojas, pe_jrojas, jrojas."""
    first, last = _ascii(first), _ascii(last)
    if style < 0.3:
        return f"{first}.{last}"
    if style < 0.8:
        return f"{('mx', 'pe')[country]}_{first[0]}{last}"
    return f"{first[0]}{last}"


def _ascii(name: str) -> str:
    """The lowercase name without accents."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()


@dataclass(frozen=True)
class _World:
    """Everything calls and logins are drawn from: lookup tables, the customer pool and the agents."""

    days: int
    start: date
    call_day: pa.Array  # table of day indices, fewer at weekends
    call_slot: pa.Array  # table of minute slots in the working day
    call_time_text: pa.Array  # M/D/YYYY H:MM per day and slot
    agent_load: pa.Array  # table of agent indices, a few agents doing most calls
    agent_text: pa.Array  # logins, ghosts last
    agent_country: pa.Array
    agents: int
    campaign: pa.Array  # MX table followed by PE table
    mx_area: pa.Array
    talk: pa.Array
    extra: pa.Array
    duration_text: pa.Array
    customer_text: pa.Array  # called customers, quiet customers, then customers missing from the file
    customer_phone: pa.Array
    known_customers: int
    called_customers: int

    @classmethod
    def build(cls, draws: _Draws, team: Sequence[_Agent], customers: int, days: int, start: date) -> _World:
        """Draw the customer pool and prepare every lookup table."""
        unknown = max(1, customers // 20)
        pool = draws.rng.sample(range(500, max(1_250_000, 3 * (customers + unknown))), customers + unknown)
        mx_area = _choice_table(MX_AREA_CODES)
        agents = len(team) - GHOST_AGENTS
        ranks = draws.rng.sample(range(1, agents + 1), agents)
        talk, extra = _quantile_table(TALK_SECONDS), _quantile_table(EXTRA_SECONDS)
        longest = pc.max(talk).as_py() + pc.max(extra).as_py()
        return cls(
            days=days,
            start=start,
            call_day=_weighted_table([_day_weight(start + timedelta(d)) for d in range(days)]),
            call_slot=_weighted_table([weight for weight in HOUR_WEIGHTS for _ in range(60)]),
            call_time_text=pa.array(
                [_call_time(start + timedelta(d), slot) for d in range(days) for slot in range(SLOTS_PER_DAY)]
            ),
            agent_load=_weighted_table([rank**-1.3 for rank in ranks]),
            agent_text=pa.array([agent.login for agent in team], pa.string()),
            agent_country=pa.array([agent.country for agent in team], pa.int64()),
            agents=agents,
            campaign=pa.concat_arrays([_choice_table(campaigns) for campaigns in CAMPAIGNS]),
            mx_area=mx_area,
            talk=talk,
            extra=extra,
            duration_text=pa.array([_duration(seconds) for seconds in range(longest + 1)], pa.string()),
            customer_text=pa.array([str(number) for number in pool], pa.string()),
            customer_phone=_phones(draws, mx_area, _country_of(len(pool))),
            known_customers=customers,
            called_customers=customers - int(customers * QUIET_CUSTOMER_SHARE),
        )


def _day_weight(day: date) -> float:
    """Saturdays are quieter and Sundays quieter still."""
    return {5: 0.6, 6: 0.3}.get(day.weekday(), 1.0)


def _call_time(day: date, slot: int) -> str:
    """US date and time without zero padding, as in the calls export."""
    return f"{day.month}/{day.day}/{day.year} {FIRST_HOUR + slot // 60}:{slot % 60:02d}"


def _duration(seconds: int) -> str:
    """H:MM:SS."""
    return f"{seconds // HOUR}:{seconds % HOUR // MINUTE:02d}:{seconds % MINUTE:02d}"


def _country_of(size: int) -> pa.Array:
    """The country of each customer in the pool: even positions are Mexican, odd ones Peruvian."""
    return pc.bit_wise_and(pa.array(range(size), pa.int64()), 1)


def _phones(draws: _Draws, mx_area: pa.Array, country: pa.Array) -> pa.Array:
    """Mexican 10-digit or Peruvian 9-digit mobile numbers, by each row's country."""
    n = len(country)
    prefix = pc.if_else(pc.equal(country, PE), "9", draws.pick(mx_area, n))
    subscriber = pc.utf8_lpad(pc.cast(draws.below(10**8, n), pa.string()), 8, "0")
    return pc.binary_join_element_wise(prefix, subscriber, "")


@dataclass(frozen=True)
class _Calls:
    """What logins need of calls: customer pool index (null for prospects), second from start, talk."""

    customer: pa.Array
    second: pa.Array
    talk: pa.Array


def _call_chunk(draws: _Draws, world: _World, first_row: int, n: int, dirty_share: float) -> tuple[pa.Array, _Calls]:
    """The CSV lines of n calls, and what the logins need to know about them."""
    blocks = max(1, n // BLOCK_ROWS)
    unsorted = draws.below(blocks, n)
    block = pc.take(unsorted, pc.sort_indices(unsorted))
    day = pc.take(draws.pick(world.call_day, blocks), block)
    agent = _call_agents(draws, world, pc.take(draws.pick(world.agent_load, blocks), block), first_row)
    country = pc.take(world.agent_country, agent)
    slot = draws.pick(world.call_slot, n)
    time_index = pc.add(pc.multiply(day, SLOTS_PER_DAY), slot)
    customer = _call_customers(draws, world, country)
    talk = draws.pick(world.talk, n)
    total = _total_seconds(draws, world, talk)
    phone = _phones(draws, world.mx_area, country)  # for prospects, who have no known number
    campaign = pc.add(pc.multiply(country, TABLE_SIZE), pc.shift_right(draws.bits(n), 32 - TABLE_BITS))
    fields = {
        "Fecha": pc.take(world.call_time_text, time_index),
        "IDCliente": pc.fill_null(pc.take(world.customer_text, customer), "-1"),
        "Campania": pc.take(world.campaign, campaign),
        "Telefono": pc.fill_null(pc.take(world.customer_phone, customer), phone),
        "Agente": pc.take(world.agent_text, agent),
        "Tiempohablado": pc.take(world.duration_text, talk),
        "Tiempototal": pc.take(world.duration_text, total),
    }
    lines = _soiled_lines(draws, fields, dirty_share) if dirty_share > 0 else _lines(fields)
    second = pc.add(pc.multiply(day, DAY), pc.add(pc.multiply(slot, MINUTE), FIRST_HOUR * HOUR))
    return lines, _Calls(customer, second, talk)


def _bad_dates(when: pa.Array, iso: pa.Array) -> pa.Array:
    """The dates either in ISO form (where iso) or with an impossible month and day: unparsable both."""
    as_iso = pc.strftime(pc.strptime(when, format="%m/%d/%Y %H:%M", unit="s"), format="%Y-%m-%d %H:%M")
    impossible = pc.replace_substring_regex(when, pattern=r"^\d+/\d+/", replacement="13/45/")
    return pc.if_else(iso, as_iso, impossible)


def _lines(fields: Mapping[str, pa.Array]) -> pa.Array:
    """Comma-separated fields, each line ending in a newline."""
    return pc.binary_join_element_wise(pc.binary_join_element_wise(*fields.values(), ","), "\n", "")


def _call_agents(draws: _Draws, world: _World, agent: pa.Array, first_row: int) -> pa.Array:
    """Block agents, with a few strays from other blocks and a few logins missing from the agents file."""
    n = len(agent)
    agent = pc.if_else(draws.chance(STRAY_SHARE, n), draws.pick(world.agent_load, n), agent)
    ghost = draws.chance(GHOST_SHARE, n)
    if first_row <= GHOST_ROW < first_row + n:
        at = GHOST_ROW - first_row
        ghost = pa.concat_arrays([ghost[:at], pa.array([True]), ghost[at + 1 :]])
    return pc.if_else(ghost, pc.add(draws.below(GHOST_AGENTS, n), world.agents), agent)


def _call_customers(draws: _Draws, world: _World, country: pa.Array) -> pa.Array:
    """Pool indices of the called customers, in the agent's country; null for prospects (IDCliente -1)."""
    n = len(country)
    unknown = len(world.customer_text) - world.known_customers
    member = pc.if_else(
        draws.chance(UNKNOWN_CUSTOMER_SHARE, n),
        pc.add(_member(draws, unknown, country), world.known_customers),
        _member(draws, world.called_customers, country),
    )
    return pc.if_else(draws.chance(PROSPECT_SHARE, n), pa.scalar(None, pa.int64()), member)


def _member(draws: _Draws, size: int, country: pa.Array) -> pa.Array:
    """Positions in [0, size) of each row's country, or the last position when the country has none."""
    count = pc.if_else(pc.equal(country, PE), size // 2, (size + 1) // 2)
    position = pc.add(pc.multiply(draws.below(count, len(country)), 2), country)
    return pc.min_element_wise(position, size - 1)


def _total_seconds(draws: _Draws, world: _World, talk: pa.Array) -> pa.Array:
    """Talk plus ringing and wrap-up, except for a few calls whose total is under the talk time."""
    n = len(talk)
    odd = pc.and_(draws.chance(TALK_OVER_TOTAL_SHARE, n), pc.greater_equal(talk, 3))
    short = pc.subtract(talk, pc.add(draws.below(3, n), 1))
    return pc.if_else(odd, short, pc.add(talk, draws.pick(world.extra, n)))


def _soiled_lines(draws: _Draws, clean: Mapping[str, pa.Array], share: float) -> pa.Array:
    """Lines with a share spoiled as real exports go wrong, one fault per spoiled line."""
    n = len(clean["Fecha"])
    dirty, fault = draws.chance(share, n), draws.below(5, n)
    first, second = draws.chance(0.5, n), draws.chance(0.5, n)

    def spoiled(which: int, variant: pa.Array | bool = True) -> pa.Array:
        """Rows spoiled with fault `which`, and of the given variant."""
        return pc.and_(pc.and_(dirty, pc.equal(fault, which)), variant)

    fields = dict(clean)
    bad_date, when = spoiled(0), fields["Fecha"]
    as_bad = _bad_dates(pc.filter(when, bad_date), pc.filter(first, bad_date))
    fields["Fecha"] = pc.replace_with_mask(when, bad_date, as_bad)
    bad_duration = pc.if_else(second, "abc", "0:75:00")
    for name, variant in (("Tiempohablado", first), ("Tiempototal", pc.invert(first))):
        fields[name] = pc.if_else(spoiled(1, variant), bad_duration, fields[name])
    fields["IDCliente"] = pc.if_else(spoiled(2), "", fields["IDCliente"])
    padding = pc.if_else(second, " ", "  ")
    for name, variant in (("Campania", first), ("Agente", pc.invert(first))):
        padded = pc.binary_join_element_wise(fields[name], padding, "")
        fields[name] = pc.if_else(spoiled(3, variant), padded, fields[name])
    lines = _lines(fields)
    previous = pc.max_element_wise(pc.subtract(pa.array(range(n), pa.int64()), 1), 0)
    return pc.if_else(spoiled(4), pc.take(lines, previous), lines)


class _LoginWriter:
    """Draws logins and streams them into a JSON array laid out like the exports (two-space indent)."""

    def __init__(self, handle: BinaryIO, world: _World, first_id: int) -> None:
        first_day = world.start - timedelta(LOGIN_DAYS_BEFORE)
        self.handle, self.world, self.next_id = handle, world, first_id
        self.written = self.after_call = 0
        # Logins land from a day before the first call to five days after the last.
        self.dates = pa.array([_us_date(first_day + timedelta(d)) for d in range(world.days + 8)])
        self.hours = pa.array([f" {hour}:" for hour in range(24)], pa.string())
        self.minutes = pa.array([f"{s // MINUTE:02d}:{s % MINUTE:02d}" for s in range(HOUR)], pa.string())
        self.kinds = _weighted_table(LOGIN_KINDS)
        handle.write(b"[")

    def after_calls(self, draws: _Draws, calls: _Calls) -> None:
        """Logins following some calls of known customers, a few on both channels."""
        n = len(calls.talk)
        long_call = pc.greater_equal(calls.talk, LOGIN_THRESHOLD_SECONDS)
        share = pc.if_else(long_call, LOGIN_AFTER_LONG_CALL, LOGIN_AFTER_SHORT_CALL)
        chosen = pc.and_(draws.chance(share, n), pc.is_valid(calls.customer))
        customer = pc.filter(calls.customer, chosen)
        m = len(customer)
        second = pc.add(pc.filter(calls.second, chosen), self._delay(draws, m))
        channel = pc.add(draws.below(2, m), 1)
        twin = draws.chance(SECOND_CHANNEL_SHARE, m)
        jitter = pc.subtract(draws.below(20 * MINUTE, m), 10 * MINUTE)
        twin_second = pc.filter(pc.add(second, jitter), twin)
        order = pc.multiply(pa.array(range(m), pa.int64()), 2)
        rows = pc.sort_indices(pa.concat_arrays([order, pc.add(pc.filter(order, twin), 1)]))
        self.after_call += len(rows)
        self._write(
            draws,
            pc.take(pa.concat_arrays([customer, pc.filter(customer, twin)]), rows),
            pc.take(pa.concat_arrays([second, twin_second]), rows),
            pc.take(pa.concat_arrays([channel, pc.subtract(3, pc.filter(channel, twin))]), rows),
        )

    def _delay(self, draws: _Draws, m: int) -> pa.Array:
        """Seconds from call to login: mostly within 48 hours, some later or earlier, some on the edges."""
        spread = pc.multiply(draws.unit(m), math.log((WINDOW - HOUR) / MINUTE))
        within = pc.exp(pc.add(spread, math.log(MINUTE)))  # a minute to 47 hours, the short ones likelier
        later = pc.add(draws.below(WINDOW, m), WINDOW + MINUTE)
        earlier = pc.negate(pc.add(draws.below(DAY, m), MINUTE))
        edges = [pa.scalar(seconds, pa.int64()) for seconds in (0, WINDOW, WINDOW - 1)]
        within_seconds = pc.cast(pc.floor(within), pa.int64())
        return pc.choose(draws.pick(self.kinds, m), within_seconds, later, earlier, *edges)

    def never_called(self, draws: _Draws) -> None:
        """Logins of customers in the customers file who were never called."""
        quiet = self.world.known_customers - self.world.called_customers
        if quiet == 0:
            return
        m = max(1, round(self.after_call * NEVER_CALLED_LOGINS))
        day = pc.multiply(draws.below(self.world.days, m), DAY)
        second = pc.add(day, pc.add(draws.below(16 * HOUR, m), 7 * HOUR))
        customer = pc.add(draws.below(quiet, m), self.world.called_customers)
        self._write(draws, customer, second, pc.add(draws.below(2, m), 1))

    def _write(self, draws: _Draws, customer: pa.Array, second: pa.Array, channel: pa.Array) -> None:
        """Append logins given customer pool index, seconds from the start and channel."""
        m = len(customer)
        if m == 0:
            return
        gaps = pc.add(pc.cast(pc.shift_right(draws.bits(m), 30), pa.int64()), 1)
        callid = pc.add(pc.cumulative_sum(gaps), self.next_id - 1)
        self.next_id = callid[-1].as_py() + 1
        objects = pc.binary_join_element_wise(
            ',\n  {\n    "callid": ', pc.cast(callid, pa.string()),
            ',\n    "customerid": ', pc.take(self.world.customer_text, customer),
            ',\n    "logindate": "', self._login_time(second),
            '",\n    "channel": ', pc.cast(channel, pa.string()),
            "\n  }", "",
        )  # fmt: skip
        data = _string_bytes(objects)
        self.handle.write(data[1:] if self.written == 0 else data)
        self.written += m

    def _login_time(self, second: pa.Array) -> pa.Array:
        """M/D/YYYY H:MM:SS text of seconds from the start."""
        shifted = pc.add(second, LOGIN_DAYS_BEFORE * DAY)
        day = pc.divide(shifted, DAY)
        rest = pc.subtract(shifted, pc.multiply(day, DAY))
        hour = pc.divide(rest, HOUR)
        return pc.binary_join_element_wise(
            pc.take(self.dates, day), pc.take(self.hours, hour),
            pc.take(self.minutes, pc.subtract(rest, pc.multiply(hour, HOUR))), "",
        )  # fmt: skip

    def close(self) -> int:
        """End the array; return the number of logins written."""
        self.handle.write(b"\n]" if self.written else b"]")
        return self.written


def _us_date(day: date) -> str:
    """M/D/YYYY without zero padding."""
    return f"{day.month}/{day.day}/{day.year}"


def _string_bytes(strings: pa.Array) -> memoryview:
    """The concatenated UTF-8 bytes of a string array, without making Python strings."""
    offsets = memoryview(strings.buffers()[1]).cast("i")
    start, end = offsets[strings.offset], offsets[strings.offset + len(strings)]
    return memoryview(strings.buffers()[2])[start:end]


def _write_strings(handle: BinaryIO, strings: pa.Array) -> None:
    """Write an array of ASCII lines as they are."""
    if len(strings):
        handle.write(_string_bytes(strings))


def _write_customers(path: Path, draws: _Draws, world: _World) -> int:
    """The customers file: every known customer with gender (NA for some) and type."""
    n = world.known_customers
    fields = {
        "CustomerID": world.customer_text[:n],
        "Gender": draws.pick(_choice_table(GENDERS), n),
        "Type": draws.pick(_choice_table(TYPES), n),
    }
    with path.open("wb") as handle:
        handle.write(CUSTOMERS_HEADER.encode(ENCODING))
        _write_strings(handle, _lines(fields))
    return n


def _write_agents(path: Path, team: Sequence[_Agent]) -> int:
    """The agents file, names with their accents in latin-1."""
    rows = [f"{i},{a.login},{a.level},{a.first_name},{a.last_name}\n" for i, a in enumerate(team, start=1)]
    path.write_bytes((AGENTS_HEADER + "".join(rows)).encode(ENCODING))
    return len(rows)


def _write_channels(path: Path) -> int:
    """The digital channels file, sorted by name."""
    rows = [f"{number},{name}\n" for number, name in sorted(CHANNELS.items(), key=lambda item: item[1])]
    path.write_bytes((CHANNELS_HEADER + "".join(rows)).encode(ENCODING))
    return len(rows)
