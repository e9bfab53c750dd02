"""Dimension history: fixed, changing and historical attributes, and point-in-time keys, on both engines."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from callmart import Callmart, ConfigError
from callmart.keys import LookupCache
from callmart.mart import MART
from callmart.settings import apply_scd
from conftest import WITH_SPARK
from marts import drawn, query, write_extracts

CONFIG = """
[scd.dim_clientes]
tipo_cliente = "historical"
genero_cliente = "fixed"

[scd.dim_agentes]
nivel_expertise_agente = "historical"
"""

CALL = "0:01:00"


def day_run(
    url: str, folder: Path, config: Path, day: int, customers: list[tuple[object, ...]], **extra: object
) -> None:
    """Write the extracts as of that day's evening and load that day."""
    calls = extra.pop("calls", [(f"3/{day}/2024 10:00", 101, "CAMP", "5550000001", "ana.lopez", CALL, CALL)])
    write_extracts(folder, calls=calls, customers=customers, **extra)  # type: ignore[arg-type]
    with Callmart(url, folder, config=config) as mart:
        mart.init()
        mart.enqueue(date(2024, 3, day), date(2024, 3, day + 1))
        summary = mart.run()
    assert summary.ok, [s.error for s in summary.failed]


def versions(url: str, business_id: int) -> list[tuple[str, ...]]:
    rows = query(
        url,
        "SELECT version, tipo_cliente, genero_cliente, valid_from, valid_to, is_current FROM dim_clientes "
        "WHERE id_cliente = :id ORDER BY version",
        id=business_id,
    )
    return [
        (str(v), t, g, f"{f:%Y-%m-%d}", "" if u is None else f"{u:%Y-%m-%d}", "yes" if c else "no")
        for v, t, g, f, u, c in rows
    ]


def call_versions(url: str) -> list[tuple[str, ...]]:
    rows = query(
        url,
        "SELECT f.fecha_llamada, c.version, c.tipo_cliente FROM fact_llamadas f "
        "JOIN dim_clientes c ON c.key_cliente = f.key_cliente_llamada ORDER BY f.fecha_llamada",
    )
    return [(f"{when:%m-%d}", str(version), kind) for when, version, kind in rows]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "callmart.toml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_a_change_opens_a_version_and_facts_keep_theirs(database_url: str, tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "src"
    day_run(database_url, folder, config, 4, [(101, "F", "REGULAR")])
    day_run(database_url, folder, config, 5, [(101, "F", "GEM")])
    assert versions(database_url, 101) == drawn(
        """
        | version | tipo    | genero | valid_from | valid_to   | current |
        | 1       | REGULAR | F      | 1900-01-01 | 2024-03-06 | no      |
        | 2       | GEM     | F      | 2024-03-06 |            | yes     |
        """
    )
    # The extract of 3/5 is the state at its end: the 3/5 call still meets the REGULAR customer.
    day_run(database_url, folder, config, 6, [(101, "F", "GEM")])
    assert call_versions(database_url) == drawn(
        """
        | call  | version | tipo    |
        | 03-04 | 1       | REGULAR |
        | 03-05 | 1       | REGULAR |
        | 03-06 | 2       | GEM     |
        """
    )


def test_no_change_no_version_and_a_change_back_is_a_third(database_url: str, tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "src"
    day_run(database_url, folder, config, 4, [(101, "F", "REGULAR")])
    day_run(database_url, folder, config, 5, [(101, "F", "REGULAR")])
    day_run(database_url, folder, config, 5, [(101, "F", "REGULAR")])
    assert len(versions(database_url, 101)) == 1
    day_run(database_url, folder, config, 6, [(101, "F", "GEM")])
    day_run(database_url, folder, config, 7, [(101, "F", "REGULAR")])
    assert versions(database_url, 101) == drawn(
        """
        | version | tipo    | genero | valid_from | valid_to   | current |
        | 1       | REGULAR | F      | 1900-01-01 | 2024-03-07 | no      |
        | 2       | GEM     | F      | 2024-03-07 | 2024-03-08 | no      |
        | 3       | REGULAR | F      | 2024-03-08 |            | yes     |
        """
    )


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_fixed_keeps_the_first_value_and_warns(database_url: str, tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "src"
    day_run(database_url, folder, config, 4, [(101, "F", "REGULAR")])
    day_run(database_url, folder, config, 5, [(101, "M", "REGULAR")])
    assert versions(database_url, 101) == drawn(
        """
        | version | tipo    | genero | valid_from | valid_to | current |
        | 1       | REGULAR | F      | 1900-01-01 |          | yes     |
        """
    )
    warnings = query(database_url, "SELECT column_name, raw_value, reason FROM dm_rejects WHERE severity = 'warning'")
    assert warnings == [("Gender", "M", "fixed genero_cliente would change; it keeps its first value")]


def test_changing_attributes_are_overwritten_in_every_version(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "callmart.toml"
    config.write_text('[scd.dim_clientes]\ntipo_cliente = "historical"\n')
    folder = tmp_path / "src"
    day_run(database_url, folder, config, 4, [(101, "F", "REGULAR")])
    day_run(database_url, folder, config, 5, [(101, "F", "GEM")])
    day_run(database_url, folder, config, 6, [(101, "M", "GEM")])
    assert [v[:3] for v in versions(database_url, 101)] == [("1", "REGULAR", "M"), ("2", "GEM", "M")]


def test_an_inferred_member_is_completed_in_place(database_url: str, tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "src"
    calls = [("3/4/2024 10:00", 500, "CAMP", "5550000001", "ana.lopez", CALL, CALL)]
    day_run(database_url, folder, config, 4, [(101, "F", "REGULAR")], calls=calls)
    key = query(database_url, "SELECT key_cliente FROM dim_clientes WHERE id_cliente = 500")
    day_run(database_url, folder, config, 5, [(101, "F", "REGULAR"), (500, "M", "GEM")], calls=[])
    assert versions(database_url, 500) == drawn(
        """
        | version | tipo | genero | valid_from | valid_to | current |
        | 1       | GEM  | M      | 1900-01-01 |          | yes     |
        """
    )
    assert query(database_url, "SELECT key_cliente, is_inferred FROM dim_clientes WHERE id_cliente = 500") == [
        (key[0][0], False)
    ]


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_reloading_an_old_period_picks_the_versions_valid_then(database_url: str, tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "src"
    calls = [
        ("3/4/2024 10:00", 101, "CAMP", "5550000001", "ana.lopez", CALL, CALL),
        ("3/8/2024 10:00", 101, "CAMP", "5550000001", "ana.lopez", CALL, CALL),
    ]
    day_run(database_url, folder, config, 4, [(101, "F", "REGULAR")], calls=calls)
    day_run(database_url, folder, config, 5, [(101, "F", "GEM")], calls=calls)
    with Callmart(database_url, folder, config=config) as mart:
        mart.enqueue(date(2024, 3, 4), date(2024, 3, 9), force=True)
        assert mart.run().ok
    assert call_versions(database_url) == [("03-04", "1", "REGULAR"), ("03-08", "2", "GEM")]


@pytest.mark.parametrize("new_database", WITH_SPARK, indirect=True)
def test_the_metric_follows_the_customer_across_versions(database_url: str, tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "src"
    calls = [("3/6/2024 23:00", 101, "CAMP", "5550000001", "ana.lopez", CALL, CALL)]
    logins = [(1, 101, "3/7/2024 9:00:00", 1)]
    day_run(database_url, folder, config, 5, [(101, "F", "REGULAR")], calls=calls)
    # The customer turns GEM from 3/7: the call meets version 1, the login version 2; it is still one customer.
    day_run(database_url, folder, config, 6, [(101, "F", "GEM")], calls=calls, logins=logins)
    rows = query(
        database_url,
        "SELECT c.version, l.id_login FROM fact_llamadas f "
        "JOIN dim_clientes c ON c.key_cliente = f.key_cliente_llamada "
        "LEFT JOIN dim_logins l ON l.key_login = f.key_login_post_llamada",
    )
    assert rows == [(1, 1)]
    login_version = query(
        database_url,
        "SELECT c.version FROM dim_logins l JOIN dim_clientes c ON c.key_cliente = l.key_cliente_login "
        "WHERE l.id_login = 1",
    )
    assert login_version == [(2,)]


def test_history_columns_are_added_to_an_existing_mart(database_url: str, tmp_path: Path, config: Path) -> None:
    folder = write_extracts(tmp_path / "src", customers=[(101, "F", "REGULAR")])
    with Callmart(database_url, folder) as mart:
        mart.init()
        assert mart.run().ok
    keys = query(database_url, "SELECT key_cliente, id_cliente FROM dim_clientes ORDER BY key_cliente")
    with Callmart(database_url, folder, config=config) as mart:
        mart.init()
    assert query(database_url, "SELECT key_cliente, id_cliente FROM dim_clientes ORDER BY key_cliente") == keys
    assert versions(database_url, 101) == [("1", "REGULAR", "F", "1900-01-01", "", "yes")]


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ({"dim_nope": {"x": "fixed"}}, "names no dimension"),
        ({"dim_clientes": {"id_cliente": "historical"}}, "is not an attribute"),
        ({"dim_clientes": {"tipo_cliente": "type2"}}, "use fixed, changing or historical"),
    ],
)
def test_bad_configuration_is_a_clear_error(choices: dict[str, dict[str, str]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_scd(MART, choices)


def test_the_default_stays_type_1_everywhere() -> None:
    assert not any(d.keeps_history for d in MART.dimensions)
    assert isinstance(datetime.now(), datetime)


def test_keys_kept_between_periods_follow_a_version_opened_meanwhile(
    database_url: str, tmp_path: Path, config: Path
) -> None:
    folder = tmp_path / "src"
    day_run(database_url, folder, config, 4, [(101, "F", "REGULAR")])
    cache = LookupCache()
    call = pa.record_batch(
        {
            "id_cliente_llamada": pa.array([101], pa.int32()),
            "agente_llamada": pa.array(["ana.lopez"]),
            "fecha_llamada": pa.array([datetime(2024, 3, 7, 10)], pa.timestamp("s")),
        }
    )

    def customer_key() -> int:
        with Callmart(database_url, folder, config=config) as mart, mart.engine.begin() as conn:
            lookups = cache.lookups_for(conn, mart.schema, mart.schema.mart.fact("fact_llamadas"))
        (found,) = [lookup.map(call) for lookup in lookups if lookup.key_column == "key_cliente_llamada"]
        return int(found[0].as_py())

    assert customer_key() == current_key(database_url, 101)
    # Another run merges a change between two periods of this one: the kept keys must not be reused.
    day_run(database_url, folder, config, 5, [(101, "F", "GEM")])
    assert customer_key() == current_key(database_url, 101)
    assert len(versions(database_url, 101)) == 2


def current_key(url: str, business_id: int) -> int:
    ((key,),) = query(url, "SELECT key_cliente FROM dim_clientes WHERE id_cliente = :id AND is_current", id=business_id)
    return int(key)  # type: ignore[call-overload]
