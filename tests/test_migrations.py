"""Alembic migrations: they build exactly the schema the models describe."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import parley.bot.models  # noqa: F401  (every table on Base)
from parley.bot import storage
from parley.bot.storage import Base


def test_migrations_match_the_models(any_db: str) -> None:
    engine = create_engine(any_db, future=True)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_upgrade_is_idempotent_and_downgrade_works(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    storage.create_schema(url)
    storage.create_schema(url)
    command.downgrade(storage.alembic_config(url), "0001")
    engine = create_engine(url, future=True)
    assert "follow_up_at" not in {c["name"] for c in inspect(engine).get_columns("tickets")}
    engine.dispose()
    storage.create_schema(url)
    engine = create_engine(url, future=True)
    assert "follow_up_at" in {c["name"] for c in inspect(engine).get_columns("tickets")}
    engine.dispose()
