"""Where the mart lives and where the extracts are: URLs, engines and the packaged sample."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from . import engines
from ._errors import ConfigError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SETTINGS",
    "check_settings",
    "create_engine",
    "sample_dir",
    "setting",
    "mask",
    "parse_url",
    "schema_setting",
    "scrub",
]

DEFAULT_DATABASE_URL = "duckdb:///callmart.duckdb"
SCHEMA_PARAMETER = "schema"
"""The URL's query parameter naming the database schema of the mart (else CALLMART_SCHEMA)."""
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


SETTINGS = (
    "CALLMART_DATABASE_URL",
    "CALLMART_SOURCE_DIR",
    "CALLMART_SCHEMA",
    "CALLMART_CONFIG",
    "CALLMART_LOG_FORMAT",
    "CALLMART_COMPLETE_THROUGH",
    "CALLMART_SPARK_JARS_DIR",
)
"""The environment variables callmart reads. A scheduler's unset secret or variable arrives as an empty string:
that is an error naming it, never a silent default."""


def setting(name: str) -> str | None:
    """The value of an environment setting; None when unset, an error when set but empty."""
    value = os.environ.get(name)
    if value is not None and not value.strip():
        raise ConfigError(f"{name} is set but empty: give it a value, or unset it")
    return value


def check_settings() -> None:
    """Fail on the first of callmart's settings that is set but empty."""
    for name in SETTINGS:
        setting(name)


def sample_dir() -> Path:
    """The sample extracts shipped with the package: made-up customers, for trying callmart out."""
    return Path(str(resources.files("callmart") / "sample"))


def parse_url(raw: str | None) -> sa.URL:
    """A SQLAlchemy URL for DuckDB or PostgreSQL (psycopg 3), from what a user typed."""
    if raw is not None and not raw.strip():
        raise ConfigError("the database URL is empty: give one, or unset CALLMART_DATABASE_URL")
    text = raw or setting("CALLMART_DATABASE_URL") or DEFAULT_DATABASE_URL
    expected = "expected duckdb:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DB"
    try:
        url = sa.make_url(text)
        url.port  # noqa: B018 - a port that is not a number raises here, not later in a driver
    except (ArgumentError, ValueError):
        # What does not parse is not echoed: a password may sit anywhere in it.
        raise ConfigError(
            f"not a database URL{_scheme_of(text)} (not shown: it may hold a password); {expected}"
        ) from None
    query = " ".join(f"{key}={value}" for key, value in url.query.items())
    if "@" in (url.host or "") or "@" in (url.database or "") or "@" in query:
        # The password (or user) held an '@', or the separators are off: part of the credentials would be shown
        # as the host or the database.
        raise ConfigError(f"ambiguous database URL ({url.get_backend_name()}://…): write an '@' in a password as %40")
    try:
        engine = engines.for_url(url)
    except ConfigError:
        raise ConfigError(f"unsupported database {url.get_backend_name()!r} in {mask(url)}; {expected}") from None
    return engine.url(url)


def schema_setting(url: sa.URL, given: str | None = None) -> tuple[sa.URL, str | None]:
    """The URL without callmart's own `schema` parameter, and the schema it names: `given`, else the URL's
    parameter, else CALLMART_SCHEMA; None when none of them is set."""
    name = given
    if name is None and SCHEMA_PARAMETER in url.query:
        name = str(url.query[SCHEMA_PARAMETER])
    url = url.difference_update_query([SCHEMA_PARAMETER])
    if name is None:
        name = setting("CALLMART_SCHEMA")
    if name is not None and not _SCHEMA_NAME.fullmatch(name):
        raise ConfigError(
            f"not a schema name: {name!r}; use lower-case letters, digits and _ (at most 63), not starting with a digit"
        )
    return url, name


def mask(url: sa.URL) -> str:
    """The URL as text with its password hidden, and without its query (it may hold a password too); as its engine
    shows it, where the URL holds secrets elsewhere (a Spark Connect token)."""
    try:
        return engines.for_url(url).shown(url)
    except ConfigError:
        return engines.Engine().shown(url)


def scrub(message: str, url: sa.URL) -> str:
    """A message with the URL's password, should a driver echo it, replaced by ***."""
    # Every query value too: a driver echoes a bad one whole, and a mistyped URL can put a password in any.
    secrets = [str(url.password or ""), *(str(v) for v in url.query.values())]
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)} if secret else ():
            message = message.replace(form, "***")
    return message


def _scheme_of(text: str) -> str:
    """' (SCHEME:…)' for a URL that does not parse and starts with a plain word as a scheme; nothing else of it."""
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]{0,30}(?=:)", text.strip())
    return f" ({scheme.group(0)}:…)" if scheme else ""


def create_engine(url: sa.URL) -> sa.Engine:
    """An engine for the URL, as its database's engine makes it (a DuckDB file is created on first connect)."""
    return engines.for_url(url).create_engine(url)
