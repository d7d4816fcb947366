"""Waking inbox workers in other processes: an ingest process stores a message and
the Rasa processes' workers hear of it at once, not at their next idle poll.

PostgreSQL only: once the store committed, the ingest process sends
`NOTIFY parley_inbox, '<channel>'` from a thread with a connection of its own (the
2xx does not wait for it; notifications that pile up are folded into one); each
Rasa process has one thread LISTENing on its own connection, which sets the
channel's wake-up event on the workers' loop. Every process that LISTENs on the
database hears every notification (PostgreSQL's channels are per database, not per
schema): a wake-up too many costs one claim that finds nothing. A
notification is only a wake-up: the inbox rows are the truth, so one lost while the
listener reconnects costs at most an idle poll (0.5 s), and every (re)connect wakes
all workers once to catch up. On SQLite (one machine) nothing is sent and the
workers keep polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
from collections import defaultdict
from typing import Any

from parley.bot import storage

logger = logging.getLogger(__name__)
NOTIFY_CHANNEL = "parley_inbox"
LISTENER_NAME = "parley-inbox-listener"  # thread name and application_name (+ ":<pid>")
NOTIFIER_NAME = "parley-inbox-notifier"
PING_SECONDS = 5.0  # an idle listener checks its connection this often
BACKOFF_MAX_SECONDS = 30.0

_lock = threading.Lock()
_waiting: defaultdict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = \
    defaultdict(list)
_listener: _Listener | None = None
_notifiers: dict[str | None, _Notifier | bool] = {}  # by database URL; False: SQLite


def can_notify(database_url: str | None = None) -> bool:
    engine = storage.get_engine(database_url)
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"


def notify_soon(channel: str, database_url: str | None = None) -> None:
    """Tell the Rasa processes' workers that `channel` has new inbox rows; call it
    once the store committed. Returns at once, without I/O (safe on an event loop):
    a thread of its own sends the NOTIFY, folding those that pile up meanwhile into
    one per channel, so the webhook's 2xx never waits for it. A failure is logged,
    never raised: the message is stored and the workers' poll finds it."""
    with _lock:
        notifier = _notifiers.get(database_url)
        if notifier is None:
            if can_notify(database_url):
                engine = storage.get_engine(database_url)
                notifier = _Notifier(engine.dialect.create_connect_args(engine.url),
                                     engine.url.render_as_string(hide_password=True))
                notifier.start()
            else:
                notifier = False
            _notifiers[database_url] = notifier
    if notifier:
        notifier.soon(channel)


def listen(channel: str, event: asyncio.Event, database_url: str | None = None) -> bool:
    """Set `event` (on the calling loop) whenever an ingest process stored a message
    of `channel`. Starts the process's listener thread on first use; False on a
    database that cannot notify (the caller keeps polling)."""
    global _listener
    if not can_notify(database_url):
        return False
    with _lock:
        _waiting[channel].append((asyncio.get_running_loop(), event))
        if _listener is None or not _listener.is_alive():
            engine = storage.get_engine(database_url)
            _listener = _Listener(engine.dialect.create_connect_args(engine.url),
                                  engine.url.render_as_string(hide_password=True))
            _listener.start()
    return True


def _wake(channels: set[str] | None) -> None:
    """Set the events of these channels (all, for None), each on its own loop."""
    with _lock:
        targets = [w for name, ws in _waiting.items() if channels is None or name in channels
                   for w in ws]
    for loop, event in targets:
        with contextlib.suppress(RuntimeError):  # its loop has closed
            loop.call_soon_threadsafe(event.set)


class _Listener(threading.Thread):
    """LISTEN on a connection of its own, in a thread blocked in `select`, so a slow
    or dead database never holds up an event loop; reconnects with backoff."""

    def __init__(self, connect_args: tuple[list[object], dict[str, object]],
                 where: str) -> None:
        super().__init__(name=LISTENER_NAME, daemon=True)
        self._cargs, self._cparams = connect_args
        self.where = where  # for logs: the URL without its password
        self.listening = False

    def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                self._listen()
            except Exception as exc:  # any failure: log, back off, reconnect
                logger.warning("inbox listener on %s lost (%s: %s); retrying in %.1f s",
                               self.where, exc.__class__.__name__,
                               (str(exc).strip().splitlines() or [""])[0], backoff)
            backoff = 0.5 if self.listening else min(backoff * 2, BACKOFF_MAX_SECONDS)
            self.listening = False
            threading.Event().wait(backoff)

    def _listen(self) -> None:
        conn = _connect((self._cargs, self._cparams), LISTENER_NAME)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening = True
            _wake(None)  # whatever was stored while nobody listened
            while True:
                ready, _, _ = select.select([conn], [], [], PING_SECONDS)
                if ready:
                    conn.poll()
                else:  # idle: prove the connection is still alive
                    with conn.cursor() as cursor:
                        cursor.execute("SELECT 1")
                if conn.notifies:
                    channels = {n.payload for n in conn.notifies}
                    conn.notifies.clear()
                    _wake(channels)
        finally:
            with contextlib.suppress(Exception):
                conn.close()


def _connect(connect_args: tuple[list[object], dict[str, object]], role: str) -> Any:
    """A connection of its own (not the pool's), in autocommit, that notices a dead
    peer within seconds."""
    import psycopg2
    import psycopg2.extensions

    args, params = connect_args
    conn = psycopg2.connect(*args, **{
        "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
        "keepalives_interval": 5, "keepalives_count": 3, **params,
        "application_name": f"{role}:{os.getpid()}"})
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    return conn


class _Notifier(threading.Thread):
    """Sends the NOTIFYs of one process on one connection: one statement per wake-up
    and channel, no pool checkout, no transaction of its own."""

    def __init__(self, connect_args: tuple[list[object], dict[str, object]],
                 where: str) -> None:
        super().__init__(name=NOTIFIER_NAME, daemon=True)
        self._cargs = connect_args
        self.where = where
        self._pending: set[str] = set()
        self._ready = threading.Event()
        self._mutex = threading.Lock()

    def soon(self, channel: str) -> None:
        with self._mutex:
            self._pending.add(channel)
        self._ready.set()

    def run(self) -> None:
        conn: Any = None
        backoff = 0.5
        while True:
            self._ready.wait()
            self._ready.clear()
            with self._mutex:
                channels, self._pending = self._pending, set()
            try:
                if conn is None or conn.closed:
                    conn = _connect(self._cargs, NOTIFIER_NAME)
                with conn.cursor() as cursor:
                    for channel in sorted(channels):
                        cursor.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, channel))
                backoff = 0.5
            except Exception as exc:  # dropped: the workers' idle poll finds the rows
                logger.warning("inbox wake-up on %s not sent (%s); retrying the connection "
                               "in %.1f s", self.where, exc.__class__.__name__, backoff)
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                threading.Event().wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
