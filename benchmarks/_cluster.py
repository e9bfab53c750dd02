"""A Spark standalone cluster on 127.0.0.1 for the benchmark: a master and workers of one core each, started from
pyspark's own launcher (bin/spark-class), as tests/test_spark_cluster.py starts its own, and stopped afterwards."""

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
from pathlib import Path

__all__ = ["LOOPBACK", "spark_environment", "standalone_cluster"]

LOOPBACK = "127.0.0.1"
STARTUP = 300
"""Seconds the master and workers may take to start on a busy machine."""


def spark_environment() -> dict[str, str]:
    """Executors run this Python (which has callmart), and everything listens on the loopback only."""
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": LOOPBACK}


@contextmanager
def standalone_cluster(folder: Path, workers: int, memory: str) -> Iterator[str]:
    """A master and `workers` workers of one core and `memory` each; yields the master's HOST:PORT. Their logs go
    to `folder`; every process started is stopped at the end, even on failure."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    master = f"{LOOPBACK}:{port}"
    started: list[subprocess.Popen[bytes]] = []
    try:
        daemon = ("org.apache.spark.deploy.master.Master", "--host", LOOPBACK, "--port", str(port))
        started.append(launch(folder, "master", *daemon, "--webui-port", "0"))
        for number in range(1, workers + 1):
            work = folder / f"worker{number}"
            worker = ("org.apache.spark.deploy.worker.Worker", f"spark://{master}", "--host", LOOPBACK)
            sized = ("--cores", "1", "--memory", memory, "--webui-port", "0")
            started.append(launch(folder, f"worker{number}", *worker, *sized, SPARK_WORKER_DIR=str(work)))
        wait_for_workers(folder / "master.log", workers, started)
        yield master
    finally:
        for process in reversed(started):
            stop(process)


def spark_home() -> Path:
    """pyspark's folder, which holds Spark's launcher and jars."""
    import pyspark

    return Path(pyspark.__file__).parent


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def launch(folder: Path, name: str, *arguments: str, **environment: str) -> subprocess.Popen[bytes]:
    """A Spark daemon in a process group of its own (its executors join it), logging to folder/name.log."""
    home = spark_home()
    with (folder / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [str(home / "bin" / "spark-class"), *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**spark_environment(), "SPARK_HOME": str(home), **environment},
        )


def wait_for_workers(log: Path, workers: int, started: list[subprocess.Popen[bytes]]) -> None:
    """Wait until the master's log says every worker registered; raise if a daemon died or time ran out."""
    deadline = time.monotonic() + STARTUP
    while log.read_text(errors="replace").count("Registering worker") < workers:
        if any(process.poll() is not None for process in started):
            raise RuntimeError(f"a Spark daemon exited while starting: see {log.parent}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not register within {STARTUP} s: see {log.parent}")
        time.sleep(1)


def stop(process: subprocess.Popen[bytes]) -> None:
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
