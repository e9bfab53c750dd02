"""The mart explains itself: every table and column carries its comment in the database's own catalog."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from callmart import Callmart

CATALOG = {
    "duckdb": (
        "SELECT table_name, NULL, comment FROM duckdb_tables() WHERE schema_name = 'main' AND NOT internal "
        "UNION ALL SELECT c.table_name, c.column_name, c.comment FROM duckdb_columns() c "
        "JOIN duckdb_tables() t USING (database_name, schema_name, table_name) "
        "WHERE t.schema_name = 'main' AND NOT t.internal"
    ),
    "postgresql": (
        "SELECT c.relname, a.attname, col_description(c.oid, a.attnum) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE n.nspname = 'callmart' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
        "AND c.relname NOT LIKE 'fact\\_llamadas\\_%' "
        "UNION ALL SELECT c.relname, NULL, obj_description(c.oid, 'pg_class') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'callmart' AND c.relkind IN ('r', 'p') "
        "AND c.relname NOT LIKE 'fact\\_llamadas\\_%'"
    ),
}


def test_every_table_and_column_has_its_comment(database_url: str, tmp_path: Path) -> None:
    with Callmart(database_url) as mart:
        mart.init()
        # A table an earlier callmart made without comments gets them on the next init.
        with mart.engine.begin() as conn:
            conn.execute(sa.text(f"COMMENT ON TABLE {'callmart.' if mart.schema.name else ''}dim_agentes IS NULL"))
        mart.init()
        engine = "postgresql" if mart.schema.name else "duckdb"
        with mart.engine.connect() as conn:
            found = conn.execute(sa.text(CATALOG[engine])).all()
        expected = {(t.name, c.name) for t in mart.schema.tables.values() for c in t.columns}
        expected |= {(t.name, None) for t in mart.schema.tables.values()}
    comments = {(table, column): comment for table, column, comment in found}
    assert set(comments) == expected
    assert all(comments.values()), [key for key, comment in comments.items() if not comment]
    metric = comments[("fact_llamadas", "key_login_post_llamada")]
    assert "at least 30 seconds" in metric and "48 hours" in metric and "not counted" in metric
    assert "inferred member" in comments[("dim_clientes", "is_inferred")]
    assert "-999" in comments[("dim_clientes", "key_cliente")]
