"""The schedulers' ready-made definitions, copied where a team keeps them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .._errors import ConfigError

__all__ = ["AIRFLOW_DAG", "copy_template"]

AIRFLOW_DAG = "from callmart.scheduling.airflow import dag  # noqa: F401\n"
"""The one-line DAG file: Airflow finds the DAG `callmart_daily` in the DAGs folder through it."""


def copy_template(scheduler: str, folder: Path) -> list[Path]:
    """Write the scheduler's files into folder; return them. An existing file is an error: nothing is overwritten."""
    files = _files(scheduler)
    folder.mkdir(parents=True, exist_ok=True)
    clashes = [name for name in files if (folder / name).exists()]
    if clashes:
        raise ConfigError(f"{folder / clashes[0]} exists already: remove it or choose another folder")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def _files(scheduler: str) -> dict[str, bytes]:
    if scheduler == "airflow":
        return {"callmart_dag.py": AIRFLOW_DAG.encode()}
    root = resources.files("callmart.scheduling") / scheduler
    if not root.is_dir():
        raise ConfigError(f"no template for {scheduler!r}: choose airflow, azure, databricks or github")
    return {item.name: item.read_bytes() for item in root.iterdir() if item.is_file() and item.name != "__init__.py"}
