"""Live events for the desk page as Server-Sent Events.

The events table stays the source of truth (order, replay after `Last-Event-ID`);
what differs per database is how a stream learns that there is something new:

- PostgreSQL (several desk replicas): `events.publish` runs `pg_notify` in the
  publishing transaction, so the notification goes out on commit only. One
  LISTEN thread per desk process wakes every stream of the process, which then
  reads the table. A slow poll (`PARLEY_DESK_SAFETY_POLL_SECONDS`, 2 s) stays as
  a safety net for notifications lost while the listener reconnects.
- SQLite (one machine): a short poll of the table.

A stream lives no longer than its session: it checks the session before sending
each batch of events, every `PARLEY_DESK_STREAM_CHECK_SECONDS` (15 s: idle and
absolute expiry), and at once when sessions end (logout, a user disabled, an
admin ending a user's sessions: `sessions_changed()` in this process, and a
`pg_notify` with the payload `agents.SESSIONS_NOTICE` from any process). Each
session may hold MAX_STREAMS_PER_SESSION streams open in a desk process; the next
one gets 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sanic import Blueprint, Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.exc import DBAPIError

from parley.bot import agents, events, storage
from parley.bot.desk.auth import requires_session
from parley.bot.desk.errors import row_id_text
from parley.bot.storage import off_loop

EVENT_POLL_SECONDS = 0.1  # SQLite: no notifications, so poll
SAFETY_POLL_ENV = "PARLEY_DESK_SAFETY_POLL_SECONDS"
SAFETY_POLL_SECONDS = 2.0  # PostgreSQL: only for a notification lost on reconnect
KEEPALIVE_SECONDS = 15.0
DB_RETRY_SECONDS = 1.0  # a stream's next read after the database failed
BATCH = 200
LISTEN_TICK_SECONDS = 5.0  # an idle listener pings its connection this often
STALE_AFTER_SECONDS = 3 * LISTEN_TICK_SECONDS
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
LISTENER_NAME = "parley-desk-listener"  # application_name, plus ":<pid>"
SESSION_CHECK_ENV = "PARLEY_DESK_STREAM_CHECK_SECONDS"
SESSION_CHECK_SECONDS = 15.0
MAX_STREAMS_PER_SESSION = 3  # a few tabs; more is a leak or an attack

logger = logging.getLogger(__name__)
bp = Blueprint("desk_live")


class _Waker:
    """Wakes every stream of one event loop at once.

    A stream takes `current` *before* reading the table, so a notification that
    arrives during the read still wakes its next wait instead of being missed.
    """

    def __init__(self) -> None:
        self.current = asyncio.Event()

    def wake(self) -> None:  # runs in the waker's own loop
        self.current.set()
        self.current = asyncio.Event()


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = \
    weakref.WeakKeyDictionary()
_lock = threading.Lock()
_sessions_generation = 0  # bumped when sessions end: every stream checks its own
_open_streams: dict[str, int] = {}  # session token hash -> streams open in this process


def _waker() -> _Waker:
    loop = asyncio.get_running_loop()
    with _lock:
        return _wakers.setdefault(loop, _Waker())


def _wake_all() -> None:
    """From any thread: wake the streams of every loop in this process."""
    with _lock:
        targets = list(_wakers.items())
    for loop, waker in targets:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(waker.wake)


def sessions_changed() -> None:
    """From any thread: sessions have ended; every stream checks its own now."""
    global _sessions_generation
    with _lock:
        _sessions_generation += 1
    _wake_all()


def _seconds_setting(name: str, default: float) -> float:
    raw = os.environ.get(name, str(default))
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"{name} must be more than 0, got {raw!r}")
    return seconds


def _safety_poll_seconds() -> float:
    return _seconds_setting(SAFETY_POLL_ENV, SAFETY_POLL_SECONDS)


def _session_check_seconds() -> float:
    return _seconds_setting(SESSION_CHECK_ENV, SESSION_CHECK_SECONDS)


class _Listener(threading.Thread):
    """LISTEN on its own connection (not a pooled one) and wake the streams.

    A thread blocked in `select` rather than the event loop, so a slow or dead
    database never stalls request handling. Reconnects with backoff forever;
    after every (re)connect it wakes the streams once, so events committed while
    it was away are read without waiting for the safety-net poll.
    """

    def __init__(self, connect_args: tuple[list[Any], dict[str, Any]], where: str,
                 poll_seconds: float) -> None:
        super().__init__(name=LISTENER_NAME, daemon=True)
        self._cargs, self._cparams = connect_args
        self.where = where  # for logs: the URL without its password
        self.poll_seconds = poll_seconds
        self.connected = False
        self.started = time.time()
        self.last_ok: float | None = None  # time.time() of the last good round
        self.failures = 0
        self.last_error: str | None = None
        self._stop_event = threading.Event()
        self._interrupt_r, self._interrupt_w = socket.socketpair()  # ends a `select` on stop

    def stop(self) -> None:
        self._stop_event.set()
        with contextlib.suppress(OSError):
            self._interrupt_w.send(b"x")

    def run(self) -> None:
        try:
            self._run()
        finally:
            self._interrupt_r.close()
            self._interrupt_w.close()

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while not self._stop_event.is_set():
            try:
                self._listen()
                return  # asked to stop
            except Exception as exc:  # any failure: log, back off, reconnect
                self.connected = False
                self.failures += 1
                first_line = (str(exc).strip().splitlines() or [""])[0]
                self.last_error = f"{type(exc).__name__}: {first_line}"
                logger.warning("desk event listener on %s lost (%s); retrying in %.1f s",
                               self.where, self.last_error, backoff)
            if self._stop_event.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _listen(self) -> None:
        import psycopg2
        import psycopg2.extensions

        params = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                  "keepalives_interval": 5, "keepalives_count": 3, **self._cparams,
                  "application_name": f"{LISTENER_NAME}:{os.getpid()}"}
        conn = psycopg2.connect(*self._cargs, **params)
        try:
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {events.NOTIFY_CHANNEL}")
            if self.last_error is not None:
                logger.warning("desk event listener on %s reconnected", self.where)
            self.connected, self.last_ok, self.last_error = True, time.time(), None
            _wake_all()  # catch up on whatever was committed while not listening
            while not self._stop_event.is_set():
                ready, _, _ = select.select([conn, self._interrupt_r], [], [],
                                            LISTEN_TICK_SECONDS)
                if self._stop_event.is_set():
                    break
                if ready:
                    conn.poll()
                else:  # idle: prove the connection is still alive
                    with conn.cursor() as cursor:
                        cursor.execute("SELECT 1")
                if conn.notifies:
                    ended = any(n.payload == agents.SESSIONS_NOTICE for n in conn.notifies)
                    conn.notifies.clear()
                    if ended:
                        sessions_changed()
                    else:
                        _wake_all()
                self.last_ok = time.time()
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                conn.close()


_listeners: dict[str, _Listener] = {}


def ensure_listener(database_url: str | None = None) -> _Listener | None:
    """The process's listener for this database, started on first use.

    None when the database cannot notify (SQLite, or a driver other than
    psycopg2): streams then poll every EVENT_POLL_SECONDS.
    """
    engine = storage.get_engine(database_url)
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg2":
        return None
    key = str(engine.url)
    with _lock:
        listener = _listeners.get(key)
        if listener is None or not listener.is_alive():
            listener = _Listener(engine.dialect.create_connect_args(engine.url),
                                 engine.url.render_as_string(hide_password=True),
                                 _safety_poll_seconds())
            _listeners[key] = listener
            listener.start()
        return listener


def stop_listeners(timeout: float = 2.0) -> None:
    with _lock:
        stopping = list(_listeners.values())
        _listeners.clear()
    for listener in stopping:
        listener.stop()
    for listener in stopping:
        listener.join(timeout)


@dataclass(frozen=True)
class ListenerHealth:
    """What a health report needs: `mode` is "listen" (PostgreSQL) or "poll"."""

    mode: str
    connected: bool
    last_ok: datetime | None  # last time the listener's connection answered
    seconds_since_ok: float  # since last_ok, or since the listener started
    failures: int  # connection losses and failed connects since start
    last_error: str | None

    def ok(self, stale_after: float = STALE_AFTER_SECONDS) -> bool:
        """Polling has nothing to go stale; a listener must have answered lately."""
        return self.mode == "poll" or (self.connected and self.seconds_since_ok <= stale_after)

    def as_json(self, stale_after: float = STALE_AFTER_SECONDS) -> dict[str, Any]:
        """Shaped like an entry of `supervision.report()["loops"]`, plus mode/connected."""
        return {"mode": self.mode, "connected": self.connected,
                "last_ok": self.last_ok.isoformat() if self.last_ok else None,
                "seconds_since_ok": round(self.seconds_since_ok, 3),
                "failures": self.failures, "last_error": self.last_error,
                "ok": self.ok(stale_after)}


def listener_health() -> ListenerHealth:
    """The state of this process's listener (one per desk process).

    An idle listener still pings its connection every LISTEN_TICK_SECONDS, so a
    `last_ok` older than STALE_AFTER_SECONDS means it is stuck or reconnecting;
    streams then rely on the safety-net poll.
    """
    with _lock:
        listeners = list(_listeners.values())
    if not listeners:
        return ListenerHealth("poll", False, None, 0.0, 0, None)
    listener = listeners[0]
    last_ok = listener.last_ok
    return ListenerHealth(
        "listen", listener.connected,
        datetime.fromtimestamp(last_ok, timezone.utc) if last_ok is not None else None,
        time.time() - (last_ok if last_ok is not None else listener.started),
        listener.failures, listener.last_error)


@bp.listener("after_server_start")
async def _start_listener(app: Sanic, _loop: Any) -> None:
    """Listen before the first stream opens, so health is known from the start."""
    app.ctx.live_stopping = False
    _session_check_seconds()  # a bad setting stops the desk at start
    _waker()
    ensure_listener(app.ctx.database_url)


@bp.listener("before_server_stop")
async def _stop_listener(app: Sanic, _loop: Any) -> None:
    """Let open streams end now rather than hold shutdown for a whole poll."""
    app.ctx.live_stopping = True
    _waker().wake()
    await off_loop(stop_listeners)


async def _session_alive(token: str, database_url: str | None) -> bool:
    """Checked without touching it: an open stream is not a person at the desk, so
    it never keeps a session from going idle."""
    return await off_loop(agents.session_for, token, database_url, False) is not None


@bp.get("/events")
@requires_session()
async def stream(request: Request) -> HTTPResponse:
    """Resumes after `Last-Event-ID` when the browser reconnects, so nothing is missed;
    ends when its session does (the browser's reconnect then gets 401)."""
    token = request.ctx.session.token
    key = agents.token_hash(token)
    if _open_streams.get(key, 0) >= MAX_STREAMS_PER_SESSION:
        return response.json({"error": f"this session already has {MAX_STREAMS_PER_SESSION} "
                              "live streams open; close a desk tab"}, status=429)
    _open_streams[key] = _open_streams.get(key, 0) + 1
    try:
        return await _stream(request, token)
    finally:
        _open_streams[key] -= 1
        if not _open_streams[key]:
            del _open_streams[key]


async def _stream(request: Request, token: str) -> HTTPResponse:
    database_url = request.app.ctx.database_url
    # An id we could have sent (ASCII digits, in range); anything else: start from now.
    last = row_id_text(request.headers.get("last-event-id")) or \
        await off_loop(events.last_event_id, database_url)
    listener = ensure_listener(database_url)
    poll = listener.poll_seconds if listener is not None else EVENT_POLL_SECONDS
    check_every = _session_check_seconds()
    waker = _waker()
    resp = await request.respond(content_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
    await resp.send("retry: 1000\n\n")
    keepalive_due = time.monotonic() + KEEPALIVE_SECONDS
    check_due = time.monotonic() + check_every
    generation = _sessions_generation
    while (request.transport is not None and not request.transport.is_closing()
           and not getattr(request.app.ctx, "live_stopping", False)):
        woken = waker.current  # before the read: see _Waker
        wait = poll
        try:
            batch = await off_loop(events.events_after, last, BATCH, database_url)
            if batch or generation != _sessions_generation or time.monotonic() >= check_due:
                generation = _sessions_generation
                check_due = time.monotonic() + check_every
                if not await _session_alive(token, database_url):
                    break  # logged out, expired, idle, or the user disabled
        except DBAPIError as exc:  # e.g. PostgreSQL restarting: keep the stream, retry
            logger.warning("desk events read failed: %s", type(exc.orig).__name__)
            batch, wait = [], DB_RETRY_SECONDS
        for event in batch:
            data = json.dumps(event.as_json())
            await resp.send(f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n")
            last = event.id
        if batch:
            keepalive_due = time.monotonic() + KEEPALIVE_SECONDS
            continue
        timeout = min(wait, max(0.0, keepalive_due - time.monotonic()),
                      max(0.0, check_due - time.monotonic()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout)
        if time.monotonic() >= keepalive_due:
            await resp.send(": keep-alive\n\n")
            keepalive_due = time.monotonic() + KEEPALIVE_SECONDS
    await resp.eof()
    return resp
