"""Rasa's tracker events of given conversations: read, delete, and trim by age.

Rasa keeps its own copy of every conversation (what the customer typed, intents,
slots) in its tracker store; an export or an erasure that left it out would be a
lie. Rasa 3.6's tracker stores have no delete, so this works on the SQL tracker
store's own table (`SQLTrackerStore.SQLEvent`: one row per event, `sender_id` is
Parley's conversation id), found where Rasa finds it:

- the endpoints file Rasa runs with: `PARLEY_ENDPOINTS` (the launcher sets it for
  every process it starts, to the file it wrote for Rasa), else the project's
  endpoints.yml, whose SQLite tracker the launcher keeps in the var dir;
- `${VARS}` in its `tracker_store` section are filled from the environment, as
  Rasa fills them (a missing one is an error naming it).

No tracker store (Rasa's in-memory default) or a database Rasa has not created
yet means there is nothing stored. Another kind of store (Redis, Mongo, Dynamo)
is refused by name: an erasure that skipped it would leave the customer's words.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Table, create_engine, delete, event, func, inspect, select
from sqlalchemy.engine import URL, Engine, make_url

from parley.bot.settings import Settings, load_settings
from parley.bot.storage import POSTGRESQL_CONNECT_ARGS, postgresql_timeouts

ENDPOINTS_ENV = "PARLEY_ENDPOINTS"
SQL_TYPES = ("sql", "parley.bot.tracker_store.sqltrackerstore",
             "rasa.core.tracker_store.sqltrackerstore")
SESSION_STARTED = "session_started"
_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class TrackerStoreError(ValueError):
    """The tracker store cannot be read or changed here: the reason says why."""


@dataclass(frozen=True)
class Location:
    """Where the tracker events are: a database URL (password never shown)."""

    url: URL

    def __str__(self) -> str:
        return self.url.render_as_string(hide_password=True)


def _expanded(value: Any, where: Path) -> Any:
    if not isinstance(value, str):
        return value
    missing = [name for name in _VARIABLE.findall(value) if name not in os.environ]
    if missing:
        raise TrackerStoreError(f"{where}: tracker_store needs the environment variable "
                                f"{missing[0]}")
    return _VARIABLE.sub(lambda m: os.environ[m.group(1)], value)


def endpoints_file(settings: Settings) -> Path:
    """PARLEY_ENDPOINTS (relative to the project, as Rasa's --endpoints in its folder)."""
    return settings.project_root / os.environ.get(ENDPOINTS_ENV, "endpoints.yml")


def sqlite_path(var_dir: Path) -> Path:
    """Where `parley run` keeps an SQLite tracker store (the launcher's rule)."""
    return var_dir / "tracker.db"


def locate(settings: Settings | None = None) -> Location | None:
    """The configured tracker store's database, or None when there is none to read."""
    settings = settings or load_settings()
    path = endpoints_file(settings)
    if not path.is_file():
        if os.environ.get(ENDPOINTS_ENV):
            raise TrackerStoreError(f"{ENDPOINTS_ENV} names {path}, which does not exist")
        return None
    try:
        endpoints = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise TrackerStoreError(f"{path}: not valid YAML ({exc})") from None
    section = endpoints.get("tracker_store") if isinstance(endpoints, dict) else None
    if not section or not section.get("type"):
        return None  # Rasa's in-memory store: nothing outlives the Rasa process
    kind = str(section["type"])
    if kind.lower() not in SQL_TYPES:
        raise TrackerStoreError(f"{path}: tracker store type {kind!r} is not supported "
                                "for export and erasure (only Rasa's SQL tracker store)")
    options = {key: _expanded(value, path) for key, value in section.items()}
    dialect = str(options.get("dialect") or "sqlite")
    if dialect == "sqlite":
        db = Path(str(options.get("db") or "rasa.db"))
        if not os.environ.get(ENDPOINTS_ENV):
            db = sqlite_path(settings.var_dir)  # as the launcher runs Rasa
        elif not db.is_absolute():
            db = settings.project_root / db  # Rasa runs in the project's folder
        return Location(make_url(f"sqlite:///{db}"))
    from rasa.core.tracker_store import SQLTrackerStore

    port = options.get("port")
    url = SQLTrackerStore.get_db_url(dialect, options.get("url"), int(port) if port else None,
                                     str(options.get("db") or "rasa.db"),
                                     options.get("username"), options.get("password"),
                                     None, options.get("query"))
    return Location(make_url(url))


@cache
def _engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":  # waits for Rasa's writes, as Parley's own does
        return create_engine(url, future=True, connect_args={"timeout": 30})
    if url.get_backend_name() != "postgresql":
        return create_engine(url, future=True)
    from rasa.core.tracker_store import create_engine_kwargs

    kwargs = create_engine_kwargs(url)  # Rasa's schema option (POSTGRESQL_SCHEMA)
    kwargs["connect_args"] = {**POSTGRESQL_CONNECT_ARGS, **kwargs.get("connect_args", {})}
    engine = create_engine(url, future=True, pool_pre_ping=True, **kwargs)
    event.listen(engine, "connect", postgresql_timeouts)
    return engine


def _events(location: Location) -> tuple[Engine, Table] | None:
    """The engine and Rasa's events table; None while Rasa has not created them
    (never created here: an SQLite file would appear where no Rasa runs)."""
    from rasa.core.tracker_store import SQLTrackerStore

    if location.url.get_backend_name() == "sqlite":
        database = location.url.database or ""
        if not database or not Path(database).is_file():
            return None
    engine = _engine(location.url)
    table: Table = SQLTrackerStore.SQLEvent.__table__
    return (engine, table) if inspect(engine).has_table(table.name) else None


def events_of(location: Location | None, conversation_ids: Iterable[str]
              ) -> dict[str, list[dict[str, Any]]]:
    """Each conversation's events in order, as Rasa stored them."""
    ids = sorted(set(conversation_ids))
    found = _events(location) if location and ids else None
    if found is None:
        return {}
    engine, table = found
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(select(table).where(table.c.sender_id.in_(ids))
                                .order_by(table.c.id)):
            try:
                data = json.loads(row.data) if row.data else None
            except ValueError:
                data = row.data
            out.setdefault(row.sender_id, []).append({
                "type": row.type_name, "timestamp": row.timestamp,
                "intent": row.intent_name, "action": row.action_name, "data": data})
    return out


def delete_events(location: Location | None, conversation_ids: Iterable[str]) -> int:
    """Delete every event of these conversations, in one transaction; the count."""
    ids = sorted(set(conversation_ids))
    found = _events(location) if location and ids else None
    if found is None:
        return 0
    engine, table = found
    with engine.begin() as conn:
        return int(conn.execute(delete(table).where(table.c.sender_id.in_(ids))).rowcount)


def trim(location: Location | None, before: datetime, batch: int) -> int:
    """Delete up to `batch` events older than `before` that Rasa no longer reads.

    Rasa loads a tracker from its latest `session_started` event on, so an old event
    goes when a later session has started, or when the whole conversation is old
    (then it simply starts afresh). A live session begun before the cutoff keeps its
    events: deleting some of them would change what the bot remembers mid-talk.
    """
    found = _events(location) if location else None
    if found is None:
        return 0
    engine, table = found
    cutoff = before.timestamp()
    newer, session = table.alias("newer"), table.alias("session")
    latest_start = (select(func.max(session.c.timestamp))
                    .where(session.c.sender_id == table.c.sender_id,
                           session.c.type_name == SESSION_STARTED)
                    .scalar_subquery())
    recent = select(newer.c.id).where(newer.c.sender_id == table.c.sender_id,
                                      newer.c.timestamp >= cutoff).exists()
    with engine.begin() as conn:
        ids = conn.execute(select(table.c.id).where(
            table.c.timestamp < cutoff, (~recent) | (table.c.timestamp < latest_start))
            .order_by(table.c.id).limit(batch)).scalars().all()
        if not ids:
            return 0
        return int(conn.execute(delete(table).where(table.c.id.in_(ids))).rowcount)


def present(location: Location | None, conversation_ids: Iterable[str]) -> set[str]:
    """Which of these conversations have any event stored."""
    ids = sorted(set(conversation_ids))
    found = _events(location) if location and ids else None
    if found is None:
        return set()
    engine, table = found
    with engine.connect() as conn:
        return set(conn.execute(select(table.c.sender_id).where(table.c.sender_id.in_(ids))
                                .distinct()).scalars())
