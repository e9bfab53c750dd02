"""The user's choices that are configuration, not code: `callmart.toml`."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

from ._errors import ConfigError
from .declare import Dimension, Mart, Scd

__all__ = ["CONFIG_FILE", "apply_scd", "find_config", "load_mart"]

CONFIG_FILE = "callmart.toml"
_SCD_NAMES = {"fixed": Scd.FIXED, "changing": Scd.CHANGING, "historical": Scd.HISTORICAL}


def find_config(explicit: Path | str | None) -> Path | None:
    """The configuration file: the one given, else CALLMART_CONFIG, else ./callmart.toml if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get("CALLMART_CONFIG"):
        return Path(os.environ["CALLMART_CONFIG"])
    default = Path(CONFIG_FILE)
    return default if default.is_file() else None


def load_mart(mart: Mart, config: Path | None) -> Mart:
    """The mart with the configuration's choices applied."""
    if config is None:
        return mart
    try:
        document = tomllib.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {config} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config} is not valid TOML: {error}") from None
    return apply_scd(mart, document.get("scd", {}), config)


def apply_scd(mart: Mart, choices: dict[str, dict[str, str]], source: Path | str = CONFIG_FILE) -> Mart:
    """The mart with SCD types chosen per attribute, e.g. {"dim_clientes": {"tipo_cliente": "historical"}}."""
    names = {d.name for d in mart.dimensions}
    for table in choices:
        if table not in names:
            raise ConfigError(f"{source}: [scd.{table}] names no dimension; dimensions: {', '.join(sorted(names))}")
    return dataclasses.replace(
        mart, dimensions=tuple(_with_types(d, choices.get(d.name, {}), source) for d in mart.dimensions)
    )


def _with_types(dim: Dimension, chosen: dict[str, str], source: Path | str) -> Dimension:
    attributes = {c.name for c in dim.attributes}
    columns = list(dim.columns)
    for name, kind in chosen.items():
        if name not in attributes:
            raise ConfigError(
                f"{source}: {dim.name}.{name} is not an attribute; choose among {', '.join(sorted(attributes))}"
            )
        if kind not in _SCD_NAMES:
            raise ConfigError(f"{source}: {dim.name}.{name} = {kind!r}; use fixed, changing or historical")
        columns = [dataclasses.replace(c, scd=_SCD_NAMES[kind]) if c.name == name else c for c in columns]
    return dataclasses.replace(dim, columns=tuple(columns))
