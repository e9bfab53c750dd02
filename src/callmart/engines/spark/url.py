"""What a Spark URL names: a local session with Delta, the session the process already has, or Spark Connect.

    spark://local[N]?warehouse=PATH   a local session of N threads, its tables and catalog kept in PATH
    spark://                          the session the process already has (a Databricks job's or notebook's)
    sc://HOST[:PORT][/;PARAMS]        a Spark Connect server (Databricks serverless, a Connect cluster)

Every form takes `database` (the database, or schema, holding the mart; default callmart) and `catalog` (a Unity
Catalog or other catalog of the session; default its current one). A local session also takes Spark settings by
name (`spark.sql.shuffle.partitions=4`); the others are running already and keep their settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import parse_qsl

from ..._errors import ConfigError

__all__ = ["DEFAULT_DATABASE", "Kind", "SparkUrl"]

DEFAULT_DATABASE = "callmart"
SCHEMES = frozenset({"spark", "sc"})
FORMS = "spark://local[N]?warehouse=PATH, spark:// (the session the process has) or sc://HOST:PORT (Spark Connect)"

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>[^?#]*)(?:\?(?P<query>[^#]*))?")
_LOCAL = re.compile(r"local(\[(\d+|\*)(,\d+)?\])?")
_CONNECT_HOST = re.compile(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class Kind(Enum):
    """How callmart reaches the session."""

    LOCAL = "local"
    ACTIVE = "active"
    CONNECT = "connect"


@dataclass(frozen=True)
class SparkUrl:
    """A parsed Spark URL; its text is never shown whole, since Connect parameters may hold a token."""

    kind: Kind
    database: str = DEFAULT_DATABASE
    catalog: str | None = None
    master: str | None = None
    """The local master, local[N]."""
    warehouse: Path | None = None
    """Where a local session keeps its tables and its catalog."""
    remote: str | None = None
    """The Spark Connect URL as Spark takes it (sc://HOST:PORT/;PARAMS), callmart's own parameters removed."""
    conf: dict[str, str] = field(default_factory=dict)
    """Spark settings for a local session."""

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
        master = rest.rstrip("/")
        if _LOCAL.fullmatch(master) is None:
            raise ConfigError(f"a Spark URL names a local session, spark://local[N], not a cluster: use {FORMS}")
        folder = params.pop("warehouse", "spark-warehouse")
        if not folder.strip():
            raise ConfigError("the Spark URL's warehouse is empty: name the folder for the mart's tables")
        warehouse = Path(folder).expanduser().absolute()
        if ";" in str(warehouse):
            raise ConfigError("a local Spark warehouse path cannot hold ';' (it names the catalog's Derby database)")
        unknown = sorted(name for name in params if not name.startswith("spark."))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) of a local Spark URL: {', '.join(unknown)} (it takes warehouse, database, "
                "catalog and Spark settings spark.*)"
            )
        return cls(Kind.LOCAL, database, catalog, master=master, warehouse=warehouse, conf=params)

    @classmethod
    def _connect(cls, rest: str, params: dict[str, str], database: str, catalog: str | None) -> SparkUrl:
        host_port, _, _ = rest.partition("/")
        host, _, port = host_port.rpartition(":") if not host_port.endswith("]") else (host_port, "", "")
        if not host:
            host, port = host_port, ""
        if not host or _CONNECT_HOST.fullmatch(host) is None or (port and not port.isdigit()):
            raise ConfigError("a Spark Connect URL names its server: sc://HOST[:PORT][/;PARAMS]")
        _no_settings(params, "a Spark Connect server runs already")
        return cls(Kind.CONNECT, database, catalog, remote=f"sc://{rest}")

    @property
    def shown(self) -> str:
        """The URL as messages show it: no Connect parameters (a token), no settings."""
        if self.kind is Kind.LOCAL:
            return f"spark://{self.master}?warehouse={self.warehouse}"
        if self.kind is Kind.ACTIVE:
            return "spark://"
        assert self.remote is not None
        return self.remote.split("/;", 1)[0].split(";", 1)[0]


def _name(value: str, what: str) -> str:
    if _NAME.fullmatch(value) is None:
        raise ConfigError(f"not a {what} name: {value!r}; use letters, digits and _, not starting with a digit")
    return value


def _no_settings(params: dict[str, str], why: str) -> None:
    if params:
        raise ConfigError(f"{why}: the URL takes only database and catalog, not {', '.join(sorted(params))}")
