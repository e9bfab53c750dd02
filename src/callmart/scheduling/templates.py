"""The schedulers' ready-made definitions, copied where a team keeps them."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

from .._errors import ConfigError

__all__ = ["AIRFLOW_DAG", "copy_template", "package_azure"]

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
    scheduler = scheduler.replace("-", "_")
    root = resources.files("callmart.scheduling") / scheduler
    if not root.is_dir():
        raise ConfigError(f"no template for {scheduler!r}: choose airflow, azure, databricks or github")
    return {item.name: item.read_bytes() for item in root.iterdir() if item.is_file() and item.name != "__init__.py"}


def package_azure(folder: Path, project: Path | None = None, vendor: bool = False) -> list[Path]:
    """The Azure Function App folder, ready to deploy: the template, callmart's own wheel in wheels/ (it is on no
    package index), and a requirements.txt that installs it with the rest from the index. `vendor`: every other
    dependency's wheel too (for this machine's platform), so that the folder installs with no index at all.

    `project`: callmart's source (the folder of its pyproject.toml); by default the checkout callmart runs from."""
    source = project or _checkout()
    written = copy_template("azure", folder)
    wheels = folder / WHEELS
    wheels.mkdir(exist_ok=True)
    _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(source))
    (own,) = sorted(wheels.glob("callmart-*.whl"))
    lines = [
        "# Installed by Azure Functions when the app is deployed (remote build), or by pip -r requirements.txt.",
        f"--find-links {WHEELS}",
        "azure-functions>=1.20",
        f"{WHEELS}/{own.name}",
    ]
    (folder / REQUIREMENTS).write_text("\n".join(lines) + "\n")
    if vendor:
        _pip("download", "--dest", str(wheels), "--only-binary", ":all:", "azure-functions>=1.20", str(own))
    return [*written, *sorted(wheels.iterdir())]


WHEELS, REQUIREMENTS = "wheels", "requirements.txt"


def _checkout() -> Path:
    """callmart's source: the working folder if it is a checkout (as in a deploy pipeline), else the checkout this
    callmart runs from (an editable install); an error otherwise."""
    here = Path(__file__).resolve()
    for folder in (Path.cwd(), *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "src" / "callmart" / "__init__.py").is_file():
            return folder
    raise ConfigError("--package builds callmart's wheel from its source: run it from a checkout, or give --project")


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ConfigError(f"pip {args[0]} failed: {detail}")
