"""The migrations build exactly the schema ``store/tables.py`` describes, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from store.tables import metadata


def test_the_migrated_schema_is_the_one_the_code_queries(engine: Engine) -> None:
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    assert differences == []
