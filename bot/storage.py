"""Database access shared by the action server, the connectors and the desk.

SQLAlchemy 1.4 as Rasa pins it, used in 2.0 style (`future=True`, `select()`).
Callers use the small functions of the concept modules (e.g. `bot.orders`),
never raw sessions spread through handlers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, declarative_base

from bot.settings import load_settings

Base = declarative_base()


@cache
def get_engine(url: str | None = None) -> Engine:
    """One engine (and pool) per URL and process."""
    url = url or load_settings().database_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, future=True)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error."""
    with Session(get_engine(url), future=True) as session, session.begin():
        yield session


def create_schema(url: str | None = None) -> None:
    """Create missing tables (idempotent)."""
    import bot.orders  # noqa: F401  (registers its tables on Base)

    Base.metadata.create_all(get_engine(url))
