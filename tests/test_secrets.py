"""The password of the database URL never shows, whatever is typed, and a mistyped URL is one line, no traceback."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callmart.cli import cli

CORE = "Zq7Secr3t"
"""Part of every generated password: it must appear in no output."""


@st.composite
def malformed_urls(draw: st.DrawFn) -> tuple[str, str]:
    """A database URL as people mistype them, and its password: separators missing, '@', ':' or '/' inside the
    password, bad ports, unknown schemes. Hosts are this machine's, on a port where nothing listens."""
    scheme = draw(st.sampled_from(["postgresql", "postgres", "postgresql+psycopg", "duckdb", "mysql", "pg", ""]))
    after_scheme = draw(st.sampled_from(["://", ":/", "//", ":", "", ":///"]))
    password = draw(st.sampled_from(["", "p", "a:b", "x/y", "u@v", "%", "?q", "#h"])) + CORE
    password += draw(st.sampled_from(["", "@", ":", "/", "@@", "%40", "!"]))
    # The user and the host stay apart from the password: without either separator nothing could tell the
    # password from the user's or the host's name.
    user_sep = draw(st.sampled_from([":", "::"]))
    host_sep = draw(st.sampled_from(["@", "@@", "/@"]))
    port = draw(st.sampled_from([":1", ":abc", ":", "", ":99999", ":-5", ":1:2"]))
    path = draw(st.sampled_from(["/mart", "", "/", "/mart?sslmode=disable&connect_timeout=2"]))
    query = draw(st.sampled_from(["", f"?password={password}"]))
    url = f"{scheme}{after_scheme}analyst{user_sep}{password}{host_sep}127.0.0.1{port}{path}{query}"
    return url, password


def _loopback_only(resolve: Any) -> Any:
    def loopback(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", None):
            raise socket.gaierror(socket.EAI_NONAME, "not looked up in this test")
        return resolve(host, *args, **kwargs)

    return loopback


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=malformed_urls(), command=st.sampled_from([["init"], ["status"], ["run", "--max-wait", "never"]]))
def test_no_password_shows_and_no_traceback(
    case: tuple[str, str], command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, password = case
    monkeypatch.chdir(tmp_path)
    # Whatever a mangled URL makes of its host, no name is looked up outside this machine.
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_only(socket.getaddrinfo))
    for how in (["--database-url", url], []):
        env = {"CALLMART_DATABASE_URL": url, "CALLMART_SOURCE_DIR": str(tmp_path), "PGCONNECT_TIMEOUT": "2"}
        result = CliRunner().invoke(cli, [*how, *command], env=env)
        shown = result.output + (str(result.exception) if result.exception and result.exit_code != 2 else "")
        assert CORE not in shown, (url, shown)
        assert password not in shown, (url, shown)
        assert "Traceback" not in shown
        # Anything but a clean exit is one line saying what is wrong.
        assert result.exit_code in (0, 2), (url, shown)
        if result.exit_code == 2:
            lines = shown.strip().splitlines()
            assert lines[-1].startswith("Error: ") and sum(line.startswith("Error") for line in lines) == 1, shown
