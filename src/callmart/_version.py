"""The version of callmart, kept apart so that any module can name it without importing the package's API."""

__version__ = "0.1.0"
