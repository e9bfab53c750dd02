"""callmart: loads a call-center star-schema data mart into DuckDB or PostgreSQL."""

from ._errors import CallmartError, ConfigError, DatabaseError, MartBusy, MartNotReady, SourceError
from ._version import __version__
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
