"""Delta Lake's jars for a local Spark session, fetched once by the machine's Maven client into a cache folder.

A session that Databricks (or any cluster with Delta) gives callmart needs none of this. Spark's own resolution
(`spark.jars.packages`) is not used: it needs Ivy's network access from inside the JVM at every session start,
where Maven's client and its local repository are what the machine already trusts and configures (mirrors, proxies).

Which artifact: delta-spark's Python package pins the pyspark it works with and names the Delta line to use; the
jar is `io.delta:delta-spark_<spark major.minor>_2.13` (Spark 4 is built for Scala 2.13 only; Delta publishes one
jar per Spark minor from 4.1 on, and `delta-spark_2.13` for 4.0), with its runtime dependencies (delta-storage,
and from 4.3 on the Delta kernel and Unity Catalog client), less those the pyspark install already ships. callmart
calls no Python API of delta-spark, only Spark's SQL and DataFrame APIs, so the jar must match Spark, not the
Python package: a Python release with no jar of its own (a patch published to PyPI alone) takes the newest jar of
its line up to its version, which Maven picks from a version range."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from importlib import metadata, util
from pathlib import Path

from ..._errors import ConfigError

__all__ = ["CACHE_SETTING", "DELTA_GROUP", "SCALA", "delta_artifact", "delta_jars", "jars_folder", "version_range"]

CACHE_SETTING = "CALLMART_SPARK_JARS_DIR"
"""The folder holding the fetched jars, one subfolder per Delta and Spark version (default
~/.cache/callmart/spark-jars)."""
DELTA_GROUP = "io.delta"
SCALA = "2.13"
MAVEN_TIMEOUT_SECONDS = 900
MANIFEST = "jars.txt"
"""Written last, naming the jars in classpath order: a folder without it is an interrupted fetch."""
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)([A-Za-z0-9.\-]*)")
_JAR = re.compile(r"(?P<artifact>.+?)-(?P<version>\d[A-Za-z0-9.\-]*)\.jar")


def delta_artifact(delta_version: str, spark_version: str) -> str:
    """The artifactId of Delta's Spark jar for these versions of delta-spark and pyspark."""
    delta, spark = _parts(delta_version, "delta-spark"), _parts(spark_version, "pyspark")
    if delta < (4, 0):
        raise ConfigError(f"delta-spark {delta_version} is for Spark 3; install callmart[spark] (delta-spark 4)")
    if delta < (4, 1):
        return f"delta-spark_{SCALA}"
    return f"delta-spark_{spark[0]}.{spark[1]}_{SCALA}"


def version_range(delta_version: str) -> str:
    """The Maven versions that serve this delta-spark: its own, else the newest of its minor line below it."""
    major, minor = _parts(delta_version, "delta-spark")
    return f"[{major}.{minor}.0,{delta_version}]"


def jars_folder(delta_version: str, spark_version: str, cache: Path | None = None) -> Path:
    """Where the jars for these versions are kept."""
    major, minor = _parts(spark_version, "pyspark")
    return _cache_root(cache) / f"{delta_version}-spark{major}.{minor}"


def delta_jars(
    cache: Path | None = None,
    delta_version: str | None = None,
    spark_version: str | None = None,
    maven: str = "mvn",
) -> list[Path]:
    """The jars a local Spark session needs for Delta (for `spark.jars`), Delta's own first; fetched with Maven's
    client only when the cache lacks them. Versions default to the installed delta-spark and pyspark."""
    delta_version = delta_version or _installed("delta-spark")
    spark_version = spark_version or _installed("pyspark")
    folder = jars_folder(delta_version, spark_version, cache)
    cached = _read_manifest(folder)
    if cached is not None:
        return cached
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.", dir=folder.parent) as scratch:
        fetched = Path(scratch) / "jars"
        _fetch(
            Path(scratch), fetched, delta_artifact(delta_version, spark_version), version_range(delta_version), maven
        )
        shipped = _artifacts_of(_pyspark_jars())
        keep = sorted(
            (jar for jar in fetched.glob("*.jar") if _artifact_of(jar) not in shipped),
            key=lambda jar: (not jar.name.startswith("delta-spark"), jar.name),
        )
        if not keep or not keep[0].name.startswith("delta-spark"):
            raise ConfigError(f"Maven fetched no Delta jar for Spark {spark_version} and delta-spark {delta_version}")
        for extra in set(fetched.glob("*.jar")) - set(keep):
            extra.unlink()
        (fetched / MANIFEST).write_text("".join(f"{jar.name}\n" for jar in keep), encoding="utf-8")
        if folder.exists() and _read_manifest(folder) is None:
            shutil.rmtree(folder)  # a fetch some jar of which went missing since
        try:
            # Another process may have fetched them meanwhile: its folder stands, this one goes with the scratch.
            fetched.rename(folder)
        except OSError:
            if _read_manifest(folder) is None:
                raise
    jars = _read_manifest(folder)
    assert jars is not None
    return jars


def _fetch(scratch: Path, into: Path, artifact: str, versions: str, maven: str) -> None:
    """Let Maven resolve the artifact and its runtime dependencies and copy their jars into `into`."""
    executable = shutil.which(maven)
    if executable is None:
        raise ConfigError(
            f"Maven's client ({maven}) is not installed: a local Spark session needs it once to fetch Delta's jars "
            f"into {scratch.parent} (on Debian: apt-get install maven)"
        )
    pom = scratch / "pom.xml"
    pom.write_text(_POM.format(group=DELTA_GROUP, artifact=artifact, versions=versions), encoding="utf-8")
    command = [
        executable,
        "--batch-mode",
        "--quiet",
        "--file",
        str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={into}",
    ]
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command line; the only input is the jar's coordinates
            command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"Maven did not fetch {DELTA_GROUP}:{artifact}:{versions} within 15 minutes") from None
    if done.returncode != 0:
        said = [line for line in (done.stdout + done.stderr).splitlines() if "[ERROR]" in line]
        detail = said[0].replace("[ERROR]", "").strip() if said else f"exit code {done.returncode}"
        raise ConfigError(f"Maven could not fetch {DELTA_GROUP}:{artifact}:{versions}: {detail}")


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>callmart</groupId>
  <artifactId>callmart-spark-jars</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{versions}</version>
    </dependency>
  </dependencies>
</project>
"""


def _read_manifest(folder: Path) -> list[Path] | None:
    """The jars of a complete fetch, or None when there is none (or a jar of it went missing)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    jars = [folder / name for name in manifest.read_text(encoding="utf-8").split()]
    return jars if jars and all(jar.is_file() for jar in jars) else None


def _pyspark_jars() -> Path | None:
    """The folder of jars the pyspark install ships (found without importing pyspark)."""
    spec = util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "jars"
    return folder if folder.is_dir() else None


def _artifacts_of(folder: Path | None) -> set[str]:
    return set() if folder is None else {_artifact_of(jar) for jar in folder.glob("*.jar")}


def _artifact_of(jar: Path) -> str:
    """The artifactId of a jar named artifactId-version.jar, as Maven and Spark's distribution name them."""
    match = _JAR.fullmatch(jar.name)
    return match.group("artifact") if match else jar.stem


def _cache_root(cache: Path | None) -> Path:
    if cache is not None:
        return cache.expanduser().absolute()
    value = os.environ.get(CACHE_SETTING)
    if value is not None and not value.strip():
        raise ConfigError(f"{CACHE_SETTING} is set but empty: give it a value, or unset it")
    return Path(value or "~/.cache/callmart/spark-jars").expanduser().absolute()


def _installed(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"{distribution} is not installed: pip install 'callmart[spark]'") from None


def _parts(version: str, what: str) -> tuple[int, int]:
    """Major and minor of a release version; an error for anything else (the version goes into a pom)."""
    match = _VERSION.fullmatch(version)
    if match is None:
        raise ConfigError(f"not a {what} release version: {version!r}")
    return int(match.group(1)), int(match.group(2))
