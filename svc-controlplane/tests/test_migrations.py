"""The Alembic migration builds exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from tether.controlplane.db import Base, migrate, sync_url


def test_migration_creates_the_models_schema_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'cp.db'}"
    migrate(url)
    migrate(url)  # a second start finds the DB at head and changes nothing
    assert (tmp_path / "nested" / "cp.db").exists()
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert set(Base.metadata.tables) <= tables
            assert "alembic_version" in tables
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], diff
    finally:
        engine.dispose()


def test_sync_url_swaps_async_drivers() -> None:
    assert str(sync_url("sqlite+aiosqlite:///x.db")) == "sqlite:///x.db"
    assert sync_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+psycopg"
    assert sync_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
