"""Deploying the Azure Function from the repository: the package one command assembles installs with no package
index and runs the timer; the deploy definitions validate against their published schemas and run that command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEDULING = REPO / "src" / "callmart" / "scheduling"
WORKFLOW = SCHEDULING / "github" / "callmart-deploy.yml"
PIPELINE = SCHEDULING / "azure_pipelines" / "azure-pipelines.yml"
PACKAGE_COMMAND = "callmart templates azure {folder} --package"

RUN_THE_TIMER = """
import json, os, sys
from datetime import date
from pathlib import Path
sys.path.insert(0, os.getcwd())
import function_app
from azure.functions.timer import TimerRequest
from callmart.config import sample_dir
import shutil
extracts = Path(sys.argv[1])
shutil.copytree(sample_dir(), extracts)
os.environ["CALLMART_SOURCE_DIR"] = str(extracts)
functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
for today, past_due in [(date(2024, 3, 6), True), (date(2024, 3, 8), False)]:
    function_app.today = lambda today=today: today
    functions["callmart_daily"](TimerRequest(past_due=past_due))
import duckdb
with duckdb.connect(os.environ["CALLMART_DATABASE_URL"].removeprefix("duckdb:///"), read_only=True) as conn:
    rows = conn.execute("SELECT CAST(start_date AS DATE)::VARCHAR, status, rows_loaded FROM dm_processes ORDER BY 1")
    print(json.dumps(rows.fetchall()))
"""


def check_schema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", schema, str(path)]
    if schema == "vendor.azure-pipelines":
        command[1:1] = ["--regex-variant", "python"]  # the schema's patterns are Python's, not ECMAScript's
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("vendor.github-workflows", WORKFLOW),
        ("vendor.github-workflows", SCHEDULING / "github" / "callmart-daily.yml"),
        ("vendor.azure-pipelines", PIPELINE),
    ],
)
def test_the_definitions_validate_against_their_schemas(schema: str, path: Path, tmp_path: Path) -> None:
    done = check_schema(schema, path)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check can fail: the same file with a step broken does not validate.
    broken = yaml.safe_load(path.read_text())
    if schema == "vendor.azure-pipelines":
        broken["stages"][0]["jobs"][0]["steps"] = 5
    else:
        next(iter(broken["jobs"].values()))["steps"] = 5
    (tmp_path / path.name).write_text(yaml.safe_dump(broken))
    assert check_schema(schema, tmp_path / path.name).returncode != 0


def test_the_deploy_definitions_assemble_the_package_with_the_tested_command() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["deploy"]["steps"]
    assert PACKAGE_COMMAND.format(folder="build/func") in [step.get("run") for step in steps]
    deploy = next(step for step in steps if str(step.get("uses", "")).startswith("Azure/functions-action"))
    assert deploy["with"]["package"] == "build/func"
    assert any(str(step.get("uses", "")).startswith("azure/login") for step in steps)
    assert workflow["permissions"]["id-token"] == "write"  # OpenID Connect: no stored credential
    assert "secrets." not in WORKFLOW.read_text()
    pipeline = yaml.safe_load(PIPELINE.read_text())
    scripts = [step.get("script") for step in pipeline["stages"][0]["jobs"][0]["steps"]]
    assert PACKAGE_COMMAND.format(folder="$(Build.ArtifactStagingDirectory)/func") in scripts


def test_the_package_installs_with_no_index_and_its_timer_loads_a_mart(tmp_path: Path) -> None:
    built = tmp_path / "build" / "func"
    # As the deploy definitions run it, from the repository's root; --vendor adds the dependencies' wheels.
    command = [*PACKAGE_COMMAND.format(folder=built).split()[1:], "--vendor"]
    done = subprocess.run(
        [sys.executable, "-m", "callmart", *command], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in built.iterdir()) == ["function_app.py", "host.json", "requirements.txt", "wheels"]
    assert [p.name for p in (built / "wheels").glob("callmart-*.whl")]

    # Copied to an empty folder, installed into a fresh virtual environment from what the package holds.
    app = tmp_path / "deployed"
    shutil.copytree(built, app)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "-r", "requirements.txt"],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLMART_")}
    env.update(CALLMART_DATABASE_URL=f"duckdb:///{tmp_path / 'mart.duckdb'}", CALLMART_SCHEDULE="0 30 5 * * *")
    ran = subprocess.run(
        [str(python), "-c", RUN_THE_TIMER, str(tmp_path / "extracts")],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    periods = yaml.safe_load(ran.stdout.strip().splitlines()[-1])
    # The past-due timer on 3/6 loads 3/5; the next one, on 3/8, catches up 3/6 and 3/7.
    assert [(day, status) for day, status, _ in periods] == [
        ("2024-03-05", "exitoso"),
        ("2024-03-06", "exitoso"),
        ("2024-03-07", "exitoso"),
    ]
    assert all(rows > 0 for _, _, rows in periods)
