"""What a Spark URL names: a session with Delta that callmart starts (local or on a standalone cluster), the
session the process already has, or Spark Connect.

    spark://local[N]?warehouse=PATH   a local session of N threads, its tables and catalog kept in PATH
    spark://HOST:PORT?warehouse=PATH  a session whose executors run on the standalone cluster of master
                                      spark://HOST:PORT (HOST:PORT,HOST:PORT for standby masters); PATH is a folder
                                      the driver and every worker see at the same path (a shared mount)
    spark://                          the session the process already has (a Databricks job's or notebook's)
    sc://HOST[:PORT][/;PARAMS]        a Spark Connect server (Databricks serverless, a Connect cluster)

`local` never has a port and a standalone master always has one, so the two forms cannot be mistaken for each
other. Every form takes `database` (the database, or schema, holding the mart; default callmart) and `catalog` (a
Unity Catalog or other catalog of the session; default its current one). The sessions callmart starts also take
Spark settings by name (`spark.sql.shuffle.partitions=4`); the others are running already and keep their
settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from ..._errors import ConfigError

__all__ = ["DEFAULT_DATABASE", "Kind", "SparkUrl"]

DEFAULT_DATABASE = "callmart"
SCHEMES = frozenset({"spark", "sc"})
FORMS = (
    "spark://local[N]?warehouse=PATH, spark://HOST:PORT?warehouse=PATH (a standalone cluster), spark:// (the "
    "session the process has) or sc://HOST:PORT (Spark Connect)"
)

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>[^?#]*)(?:\?(?P<query>[^#]*))?")
_LOCAL = re.compile(r"local(\[(\d+|\*)(,\d+)?\])?")
_CONNECT_HOST = re.compile(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]")
_MASTER = re.compile(r"(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class Kind(Enum):
    """How callmart reaches the session."""

    LOCAL = "local"
    STANDALONE = "standalone"
    ACTIVE = "active"
    CONNECT = "connect"


@dataclass(frozen=True)
class SparkUrl:
    """A parsed Spark URL; its text is never shown whole, since Connect parameters may hold a token."""

    kind: Kind
    database: str = DEFAULT_DATABASE
    catalog: str | None = None
    master: str | None = None
    """The master of a session callmart starts, as Spark takes it: local[N], or spark://HOST:PORT."""
    warehouse: Path | None = None
    """Where a session callmart starts keeps its tables and its catalog."""
    remote: str | None = None
    """The Spark Connect URL as Spark takes it (sc://HOST:PORT/;PARAMS), callmart's own parameters removed."""
    conf: dict[str, str] = field(default_factory=dict)
    """Spark settings for a session callmart starts."""

    @classmethod
    def parse(cls, text: str) -> SparkUrl:
        """The URL's parts; an error naming what is wrong, never echoing the URL."""
        match = _URL.fullmatch(text.strip())
        if match is None or match.group("scheme") not in SCHEMES:
            raise ConfigError(f"not a Spark URL: use {FORMS}")
        rest = match.group("rest")
        query = match.group("query") or ""
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise ConfigError("the Spark URL's parameters do not parse: write them as ?name=value&name=value") from None
        params: dict[str, str] = {}
        for name, value in pairs:
            if name in params:
                raise ConfigError(f"the Spark URL names {name} twice")
            params[name] = value
        database = _name(params.pop("database", DEFAULT_DATABASE), "database")
        catalog = _name(params["catalog"], "catalog") if "catalog" in params else None
        params.pop("catalog", None)
        if match.group("scheme") == "sc":
            return cls._connect(rest, params, database, catalog)
        if rest.strip("/") == "":
            _no_settings(params, "spark:// uses the session the process already has")
            return cls(Kind.ACTIVE, database, catalog)
        return cls._started(rest.rstrip("/"), params, database, catalog)

    @classmethod
    def _started(cls, master: str, params: dict[str, str], database: str, catalog: str | None) -> SparkUrl:
        """A session callmart starts: local[N], or on the standalone cluster of master(s) HOST:PORT."""
        kind = Kind.LOCAL if _LOCAL.fullmatch(master) else _standalone(master)
        if kind is Kind.STANDALONE and "warehouse" not in params:
            raise ConfigError(
                "a standalone cluster's Spark URL names its warehouse: spark://HOST:PORT?warehouse=PATH, a folder "
                "the driver and every worker see at the same path"
            )
        folder = params.pop("warehouse", "spark-warehouse")
        if not folder.strip():
            raise ConfigError("the Spark URL's warehouse is empty: name the folder for the mart's tables")
        warehouse = Path(folder).expanduser().absolute()
        if ";" in str(warehouse):
            raise ConfigError("a Spark warehouse path cannot hold ';' (it names the catalog's Derby database)")
        unknown = sorted(name for name in params if not name.startswith("spark."))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) of a {kind.value} Spark URL: {', '.join(unknown)} (it takes warehouse, "
                "database, catalog and Spark settings spark.*)"
            )
        spark_master = master if kind is Kind.LOCAL else f"spark://{master}"
        return cls(kind, database, catalog, master=spark_master, warehouse=warehouse, conf=params)

    @classmethod
    def _connect(cls, rest: str, params: dict[str, str], database: str, catalog: str | None) -> SparkUrl:
        host_port, _, _ = rest.partition("/")
        host, _, port = host_port.rpartition(":") if not host_port.endswith("]") else (host_port, "", "")
        if not host:
            host, port = host_port, ""
        if not host or _CONNECT_HOST.fullmatch(host) is None or (port and not port.isdigit()):
            raise ConfigError("a Spark Connect URL names its server: sc://HOST[:PORT][/;PARAMS]")
        _no_settings(params, "a Spark Connect server runs already")
        # A URL written back by SQLAlchemy has its parameters' ';' and '=' percent-encoded.
        return cls(Kind.CONNECT, database, catalog, remote=f"sc://{unquote(rest)}")

    @property
    def shown(self) -> str:
        """The URL as messages show it: no Connect parameters (a token), no settings."""
        if self.kind is Kind.LOCAL:
            return f"spark://{self.master}?warehouse={self.warehouse}"
        if self.kind is Kind.STANDALONE:
            return f"{self.master}?warehouse={self.warehouse}"
        if self.kind is Kind.ACTIVE:
            return "spark://"
        assert self.remote is not None
        return self.remote.split("/;", 1)[0].split(";", 1)[0]


def _standalone(master: str) -> Kind:
    """Kind.STANDALONE if `master` is HOST:PORT[,HOST:PORT…]; else an error that shows none of it (it may hold a
    user and password)."""
    if "@" in master:
        raise ConfigError("a standalone master's Spark URL takes no user or password: spark://HOST:PORT")
    found = [_MASTER.fullmatch(part) for part in master.split(",")]
    if not all(found) or not all(0 < int(m.group("port")) < 65536 for m in found if m):
        raise ConfigError(
            "a Spark URL names a local session, spark://local[N], or a standalone cluster's master, "
            f"spark://HOST:PORT: use {FORMS}"
        )
    return Kind.STANDALONE


def _name(value: str, what: str) -> str:
    if _NAME.fullmatch(value) is None:
        raise ConfigError(f"not a {what} name: {value!r}; use letters, digits and _, not starting with a digit")
    return value


def _no_settings(params: dict[str, str], why: str) -> None:
    if params:
        raise ConfigError(f"{why}: the URL takes only database and catalog, not {', '.join(sorted(params))}")
