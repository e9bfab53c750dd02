"""Engine-independent declarations of a star-schema mart: sources, columns, references, tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

__all__ = [
    "CALLS_PER_MINUTE",
    "Case",
    "Check",
    "Column",
    "Dimension",
    "Fact",
    "FirstEventWithin",
    "Format",
    "Mart",
    "Parse",
    "Reference",
    "Scd",
    "Source",
    "Type",
    "BEGINNING",
    "DEFAULT_MEMBER_ID",
    "IS_CURRENT",
    "VALID_FROM",
    "VALID_TO",
    "VERSION",
    "UNKNOWN",
    "IS_INFERRED",
]

VALID_FROM, VALID_TO, IS_CURRENT, VERSION = "valid_from", "valid_to", "is_current", "version"
"""History columns of a dimension that keeps history."""

BEGINNING = datetime(1900, 1, 1)
"""valid_from of a member's first version: it holds for every fact before its first change."""

DEFAULT_MEMBER_ID = -999
"""Business id (and surrogate key) of every dimension's default member, used for null business ids."""

IS_INFERRED = "is_inferred"
"""Column of every dimension: whether a member was inferred from a fact (its attributes not loaded yet)."""

UNKNOWN = "unknown"
"""Value of a text attribute that is missing, or of any text attribute of a default or inferred member."""

CALLS_PER_MINUTE = 100_000
"""Room for rows sharing one minute in a fact key: key = minute number * CALLS_PER_MINUTE + the row's place."""


class Type(Enum):
    """Logical column types; each engine maps them to its own."""

    INTEGER = "integer"
    BIGINT = "bigint"
    TEXT = "text"
    TIMESTAMP = "timestamp"
    TIME = "time"
    BOOLEAN = "boolean"


class Parse(Enum):
    """How a source text value becomes a typed value."""

    TEXT = "text"
    INTEGER = "integer"
    DATETIME = "datetime"  # with Column.fmt, a strptime format
    DURATION = "duration"  # H:MM:SS; INTEGER columns get seconds, TIME columns a time of day


class Case(Enum):
    """Case folding for business values that are case-insensitive."""

    UPPER = "upper"
    LOWER = "lower"


class Scd(Enum):
    """Slowly-changing-dimension behaviour of one attribute."""

    FIXED = 0  # type 0: the first value stays; a change is recorded as a warning
    CHANGING = 1  # type 1: overwritten in place, in every version
    HISTORICAL = 2  # type 2: a change closes the current version and opens a new one


class Format(Enum):
    """File formats of the source extracts."""

    CSV = "csv"
    JSON_ARRAY = "json_array"


@dataclass(frozen=True)
class Source:
    """Where a table's rows come from: files matching a pattern in the source folder."""

    pattern: str
    format: Format = Format.CSV
    encoding: str = "latin-1"


@dataclass(frozen=True)
class Column:
    """A stored column and, when it comes from the source, how one source field is cleaned into it."""

    name: str
    type: Type
    source: str | None = None
    parse: Parse = Parse.TEXT
    fmt: str | None = None
    case: Case | None = None
    missing: tuple[str, ...] = ("",)
    required: bool = False
    default: str | int | None = None
    scd: Scd = Scd.CHANGING
    doc: str = ""
    """What the column means, for the mart's comments and data dictionary."""

    @property
    def unknown(self) -> str | None:
        """Value this column takes in a default or inferred member."""
        return UNKNOWN if self.type is Type.TEXT else None


@dataclass(frozen=True)
class Check:
    """A doubt about a loadable row: where `column` is greater than `limit` (a column or a number), the row
    loads and a warning with `reason` is recorded."""

    reason: str
    column: str
    limit: str | int


@dataclass(frozen=True)
class Reference:
    """A foreign key: `column` holds the surrogate key of `dimension`, found by matching `value` to `by`."""

    column: str
    dimension: str
    by: str
    value: Column
    as_of: str | None = None  # the referencing row's time: picks the version valid then, if the dimension keeps history
    doc: str = ""


@dataclass(frozen=True)
class Dimension:
    """A dimension table: surrogate key, business key, attributes and references, loaded from one source."""

    name: str
    key: str
    business_key: str
    source: Source
    columns: tuple[Column, ...]
    references: tuple[Reference, ...] = ()
    doc: str = ""
    # Naming a member changes nothing loaded: left out of the repr that a dimension's fingerprint digests.
    label: tuple[str, ...] = field(default=(), repr=False)
    """The attributes that name a member to people, joined by spaces (e.g. first and last name)."""

    @property
    def staging(self) -> str:
        """Name of the staging table."""
        return "stg_" + self.name

    @property
    def attributes(self) -> tuple[Column, ...]:
        """Columns other than the business key."""
        return tuple(c for c in self.columns if c.name != self.business_key)

    @property
    def keeps_history(self) -> bool:
        """Whether any attribute is historical (type 2): then members have versions."""
        return any(c.scd is Scd.HISTORICAL for c in self.columns)

    def column(self, name: str) -> Column:
        """The declared column called name."""
        return next(c for c in self.columns if c.name == name)

    def default_member(self) -> dict[str, object]:
        """The row of the default member, by column: its key and business id DEFAULT_MEMBER_ID, each attribute's
        `unknown`, references to the default members, not inferred; where the dimension keeps history, one version
        valid from BEGINNING on."""
        row: dict[str, object] = {self.key: DEFAULT_MEMBER_ID, self.business_key: DEFAULT_MEMBER_ID}
        row.update({c.name: c.unknown for c in self.attributes})
        row.update({r.column: DEFAULT_MEMBER_ID for r in self.references})
        row[IS_INFERRED] = False
        if self.keeps_history:
            row.update({VALID_FROM: BEGINNING, VALID_TO: None, IS_CURRENT: True, VERSION: 1})
        return row


@dataclass(frozen=True)
class FirstEventWithin:
    """Metric: key of the first event of the same entity at or after the fact's time and within a window."""

    column: str
    events: str
    event_time: str
    event_entity: str
    fact_time: str
    fact_entity: str
    window: timedelta
    threshold_column: str
    threshold: int

    def describe(self) -> str:
        """The metric's exact definition, in words."""
        hours = self.window.total_seconds() / 3600
        return (
            f"Key of the first {self.events} row of the same customer (by its business id: {self.event_entity}'s "
            f"and {self.fact_entity}'s) "
            f"with {self.event_time} at or after {self.fact_time} and less than {hours:g} hours later (ties: the "
            f"lowest id), for a row with {self.threshold_column} of at least {self.threshold} seconds "
            f"(talk time >= {self.threshold} s) to a known customer; NULL otherwise. A call followed by a login "
            f"within {hours:g} h but with less than {self.threshold} s of talk is not counted: count rows where this "
            "column is set, not logins near calls."
        )


@dataclass(frozen=True)
class Fact:
    """A fact table loaded per period of its time column, replacing the period's rows."""

    name: str
    key: str
    time_column: str
    source: Source
    columns: tuple[Column, ...]
    references: tuple[Reference, ...] = ()
    metrics: tuple[FirstEventWithin, ...] = ()
    checks: tuple[Check, ...] = ()
    warn_duplicate_rows: bool = False
    doc: str = ""

    @property
    def staging(self) -> str:
        """Name of the staging table."""
        return "stg_" + self.name


@dataclass(frozen=True)
class Mart:
    """The whole mart: dimensions in load order, then facts."""

    dimensions: tuple[Dimension, ...]
    facts: tuple[Fact, ...]
    missing: tuple[str, ...] = ("",)
    """Texts, upper case, that the extracts write for a value not given (the profile counts them as missing)."""
    _by_name: dict[str, Dimension | Fact] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        every: tuple[Dimension | Fact, ...] = (*self.dimensions, *self.facts)
        tables = {t.name: t for t in every}
        object.__setattr__(self, "_by_name", tables)
        loaded: set[str] = set()
        for dim in self.dimensions:
            for ref in dim.references:
                if ref.dimension not in loaded:
                    raise ValueError(f"{dim.name} references {ref.dimension}, which must be declared before it")
            loaded.add(dim.name)

    def references_to(self, dimension: str) -> list[Reference]:
        """Every reference, of any table, to the named dimension."""
        return [r for t in self._by_name.values() for r in t.references if r.dimension == dimension]

    def reference(self, table: str, column: str) -> Reference:
        """The named table's reference held in column."""
        return next(r for r in self._by_name[table].references if r.column == column)

    def dimension(self, name: str) -> Dimension:
        """The dimension called name."""
        table = self._by_name[name]
        if not isinstance(table, Dimension):
            raise KeyError(name)
        return table

    def fact(self, name: str) -> Fact:
        """The fact table called name."""
        table = self._by_name[name]
        if not isinstance(table, Fact):
            raise KeyError(name)
        return table
