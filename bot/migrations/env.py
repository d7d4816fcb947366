"""Alembic environment: runs migrations on the URL that parley.bot.storage configured."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

import parley.bot.models  # noqa: F401  (registers every table on Base)
from parley.bot.storage import Base

config = context.config
target_metadata = Base.metadata


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    """Only Parley's tables: a project may keep its own in the same database."""
    return type_ != "table" or name in target_metadata.tables


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata,
                          include_name=_ours)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.", poolclass=pool.NullPool, future=True,
    )
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          include_name=_ours,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
