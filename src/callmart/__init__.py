"""callmart: loads a call-center star-schema data mart into DuckDB or PostgreSQL."""

from ._errors import CallmartError, ConfigError, DatabaseError, MartBusy, MartNotReady, SourceError
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
]
__version__ = "0.1.0"
