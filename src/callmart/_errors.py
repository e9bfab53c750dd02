"""The exceptions callmart raises for things a user can cause and fix.

CallmartError
├── ConfigError        bad URL, option or period
├── SourceError        a missing or unreadable extract
├── MartNotReady       the database is not a callmart mart, or is of another version
├── DatabaseError      the database cannot be reached or refused a statement
└── MartBusy           another process holds the mart (DuckDB allows one writer)
"""

from __future__ import annotations

__all__ = ["CallmartError", "ConfigError", "DatabaseError", "MartBusy", "MartNotReady", "SourceError"]


class CallmartError(Exception):
    """Base of every error a user can cause; its message is one line that says what to fix."""


class ConfigError(CallmartError):
    """A bad database URL, option or period."""


class SourceError(CallmartError):
    """A source extract that is missing or cannot be read as declared."""


class MartNotReady(CallmartError):
    """The database holds no mart yet, or one of another schema version."""


class DatabaseError(CallmartError):
    """The database cannot be reached, or refused a statement."""


class MartBusy(CallmartError):
    """Another process holds the mart: DuckDB lets one process write a file at a time."""
