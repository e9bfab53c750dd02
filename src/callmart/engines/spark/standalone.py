"""A Spark standalone cluster on the loopback, started from pyspark's own launcher (bin/spark-class): a master and
workers of one core each, so that a session's executors run in JVMs of their own on one machine. For trying the
Spark engine as a cluster runs it (the tests and the benchmark start theirs here); a team's cluster is its own."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOOPBACK", "StandaloneCluster", "loopback_environment", "standalone_cluster"]

LOOPBACK = "127.0.0.1"
STARTUP = 300
"""Seconds the master and workers may take to start on a busy machine."""


@dataclass(frozen=True)
class StandaloneCluster:
    """A running master (`master`: its HOST:PORT) and its workers' processes and work folders."""

    master: str
    workers: tuple[subprocess.Popen[bytes], ...]
    worker_folders: tuple[Path, ...]


def loopback_environment() -> dict[str, str]:
    """This process's environment for Spark's processes: executors run this Python (which has callmart), and
    everything listens on the loopback only."""
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": LOOPBACK}


@contextmanager
def standalone_cluster(folder: Path, workers: int, memory: str) -> Iterator[StandaloneCluster]:
    """A master and `workers` workers of one core and `memory` each, all registered; their logs go to `folder`.
    Every process started is stopped at the end, even on failure."""
    folder.mkdir(parents=True, exist_ok=True)
    master = f"{LOOPBACK}:{_free_port()}"
    started: list[subprocess.Popen[bytes]] = []
    try:
        host, port = master.split(":")
        started.append(
            _launch(folder, "master", "org.apache.spark.deploy.master.Master", "--host", host, "--port", port)
        )
        folders = tuple(folder / f"worker{number}" for number in range(1, workers + 1))
        for number, work in enumerate(folders, 1):
            worker = ("org.apache.spark.deploy.worker.Worker", f"spark://{master}", "--host", LOOPBACK)
            sized = ("--cores", "1", "--memory", memory)
            started.append(_launch(folder, f"worker{number}", *worker, *sized, SPARK_WORKER_DIR=str(work)))
        _wait_for_workers(folder / "master.log", workers, started)
        yield StandaloneCluster(master, tuple(started[1:]), folders)
    finally:
        for process in reversed(started):
            _stop(process)


def _spark_home() -> Path:
    """pyspark's folder, which holds Spark's launcher and jars."""
    import pyspark

    return Path(pyspark.__file__).parent


def _free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _launch(folder: Path, name: str, *arguments: str, **environment: str) -> subprocess.Popen[bytes]:
    """A Spark daemon in a process group of its own (its executors join it), logging to folder/name.log, its web
    UI on a free port."""
    home = _spark_home()
    with (folder / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [str(home / "bin" / "spark-class"), *arguments, "--webui-port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**loopback_environment(), "SPARK_HOME": str(home), **environment},
        )


def _wait_for_workers(log: Path, workers: int, started: list[subprocess.Popen[bytes]]) -> None:
    """Wait until the master's log says every worker registered; raise if a daemon died or time ran out."""
    deadline = time.monotonic() + STARTUP
    while log.read_text(errors="replace").count("Registering worker") < workers:
        if any(process.poll() is not None for process in started):
            raise RuntimeError(f"a Spark daemon exited while starting: see {log.parent}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not register within {STARTUP} s: see {log.parent}")
        time.sleep(1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a daemon and the processes of its group (a worker's executors): politely, then for good."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=20)
