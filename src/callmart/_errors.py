"""The exceptions callmart raises for things a user can cause and fix.

CallmartError
├── ConfigError        bad URL, option or period
├── SourceError        a missing or unreadable extract
│   └── PeriodNotCovered   the extracts do not reach a period yet (a late export)
├── MartNotReady       the database is not a callmart mart, or is of another version
├── DatabaseError      the database cannot be reached or refused a statement
└── MartBusy           another process holds the mart (DuckDB allows one writer)
"""

from __future__ import annotations

__all__ = [
    "CallmartError",
    "ConfigError",
    "CommitConflicts",
    "DatabaseError",
    "MartBusy",
    "MartNotReady",
    "PeriodNotCovered",
    "SourceError",
]


class CallmartError(Exception):
    """Base of every error a user can cause; its message is one line that says what to fix."""


class ConfigError(CallmartError):
    """A bad database URL, option or period."""


class SourceError(CallmartError):
    """A source extract that is missing or cannot be read as declared."""


class PeriodNotCovered(SourceError):
    """The extracts do not cover a period yet: the export is late, or a file is missing."""


class MartNotReady(CallmartError):
    """The database holds no mart yet, or one of another schema version."""


class DatabaseError(CallmartError):
    """The database cannot be reached, or refused a statement."""


class MartBusy(CallmartError):
    """Another process holds the mart: DuckDB lets one process write a file at a time."""


class CommitConflicts(MartBusy):
    """Concurrent runs kept changing a Delta table under a commit, retried until the tries ran out."""
