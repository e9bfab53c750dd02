"""callmart: loads a call-center star-schema data mart into DuckDB or PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import CallmartError, ConfigError, DatabaseError, MartBusy, MartNotReady, SourceError
from ._version import __version__

if TYPE_CHECKING:
    from .api import Callmart, RunSummary

__all__ = [
    "Callmart",
    "CallmartError",
    "ConfigError",
    "DatabaseError",
    "MartBusy",
    "MartNotReady",
    "RunSummary",
    "SourceError",
    "__version__",
]

_API = ("Callmart", "RunSummary")


def __getattr__(name: str) -> object:
    """The API's names, imported on first use: the `callmart` command chooses Arrow's allocator before Arrow loads."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'callmart' has no attribute {name!r}")
