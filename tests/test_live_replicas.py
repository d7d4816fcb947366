"""Desk live updates across replicas: a PostgreSQL NOTIFY wakes every desk process.

Two real desk processes share one PostgreSQL schema. Their safety-net poll is set
to 30 s, so an event that reaches desk B's stream within a second or so can only
have come through the LISTEN/NOTIFY wake-up, not through polling.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from parley.bot import agents, events, handoff, storage
from parley.bot.desk import live
from tests import REPO_ROOT as PROJECT_ROOT
from tests.conftest import POSTGRES_URL, wait_until
from tests.fakes.stack import free_port

SAFETY_POLL = 30.0
# Measured: 15-50 ms. The bound leaves room for a loaded CI machine and stays far below
# both SAFETY_POLL and the 15 s keep-alive round, the only other reasons to read again.
QUICK = 3.0


@dataclass
class DeskProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def login(self, username: str, password: str) -> tuple[httpx.Client, str]:
        client = httpx.Client(base_url=self.url, timeout=10)
        page = client.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        resp = client.post("/login", data={"csrf": csrf, "username": username,
                                           "password": password})
        assert resp.status_code == 303, resp.text
        return client, client.get("/api/me").json()["csrf"]


def start_desk(database_url: str, log: Path) -> DeskProcess:
    port = free_port()
    env = {**os.environ, "PARLEY_DATABASE_URL": database_url,
           live.SAFETY_POLL_ENV: str(SAFETY_POLL), "PYTHONUNBUFFERED": "1"}
    output = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.bot.desk", "--host", "127.0.0.1", "--port", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=output, stderr=output)
    output.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return DeskProcess(proc, url, log)
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    pytest.fail(f"desk did not start: {log.read_text()}")


def stop_desk(desk: DeskProcess) -> None:
    if desk.proc.poll() is None:
        desk.proc.terminate()
        try:
            desk.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            desk.proc.kill()
            desk.proc.wait()


@dataclass
class LiveStream:
    """An agent's `/events` stream read on a thread; each event with its arrival time."""

    client: httpx.Client
    received: queue.Queue[tuple[float, dict[str, Any]]] = field(default_factory=queue.Queue)
    ready: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with self.client.stream("GET", "/events", timeout=httpx.Timeout(10, read=None)) \
                    as resp:
                assert resp.status_code == 200
                for line in resp.iter_lines():
                    if line.startswith("retry:"):
                        self.ready.set()  # the stream has read its starting point
                    elif line.startswith("data: "):
                        self.received.put((time.monotonic(), json.loads(line[6:])))
        except (httpx.HTTPError, RuntimeError):
            pass  # the desk stopped or the client closed: the test is over

    def wait_for(self, kind: str, ticket_id: int, timeout: float = SAFETY_POLL) -> float:
        """Arrival time (monotonic) of the first matching event."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, event = self.received.get(timeout=left)
            except queue.Empty:
                break
            if event["kind"] == kind and event["ticket_id"] == ticket_id:
                return at
        raise AssertionError(f"no {kind} for ticket {ticket_id} within {timeout} s")


@dataclass
class Replicas:
    database_url: str
    a: DeskProcess
    b: DeskProcess
    stream_b: LiveStream


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path) -> Iterator[Replicas]:
    agents.create_user("ana", "ana-password", "agent", "Ana", pg_url)
    agents.create_user("bo", "bo-password", "agent", "Bo", pg_url)
    a = start_desk(pg_url, tmp_path / "desk-a.log")
    b = start_desk(pg_url, tmp_path / "desk-b.log")
    clients: list[httpx.Client] = []
    try:
        bo, _ = b.login("bo", "bo-password")
        clients.append(bo)
        stream = LiveStream(bo)
        reader = threading.Thread(target=stream.run, daemon=True)
        reader.start()
        assert stream.ready.wait(10), b.log.read_text()
        yield Replicas(pg_url, a, b, stream)
    finally:
        stop_desk(a)
        stop_desk(b)
        for client in clients:
            client.close()


def listener_backends(pid: int) -> set[int]:
    """The PostgreSQL backends of desk process `pid`'s listener (by application_name)."""
    engine = sa.create_engine(POSTGRES_URL, future=True)
    try:
        with engine.connect() as conn:
            return set(conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                {"n": f"{live.LISTENER_NAME}:{pid}"}).scalars())
    finally:
        engine.dispose()


def test_claim_on_desk_a_reaches_desk_b_without_polling(replicas: Replicas) -> None:
    db = replicas.database_url
    created_at = time.monotonic()
    ticket = handoff.escalate("webchat:replicas", "keyword", database_url=db).ticket
    arrived = replicas.stream_b.wait_for("ticket_created", ticket.id)
    assert arrived - created_at < QUICK  # published by another process (the action server's role)

    ana, csrf = replicas.a.login("ana", "ana-password")
    try:
        claimed_at = time.monotonic()
        resp = ana.post(f"/api/tickets/{ticket.id}/claim", json={},
                        headers={"X-CSRF-Token": csrf})
        assert resp.status_code == 200, resp.text
        arrived = replicas.stream_b.wait_for("ticket_claimed", ticket.id)
    finally:
        ana.close()
    latency = arrived - claimed_at
    assert latency < QUICK, f"desk B saw desk A's claim after {latency:.2f} s"


def test_desk_b_listener_reconnects_after_its_connection_dies(replicas: Replicas) -> None:
    pid = replicas.b.proc.pid
    assert wait_until(lambda: len(listener_backends(pid)) == 1, 10), replicas.b.log.read_text()
    (old,) = listener_backends(pid)
    engine = sa.create_engine(POSTGRES_URL, future=True)
    try:
        with engine.connect() as conn:  # what a PostgreSQL restart does to every connection
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"),
                                {"pid": old}).scalar()
    finally:
        engine.dispose()
    assert wait_until(lambda: len(listener_backends(pid) - {old}) == 1, 10), \
        replicas.b.log.read_text()
    assert replicas.b.proc.poll() is None
    assert "listener" in replicas.b.log.read_text()  # the loss and the reconnect are logged

    published_at = time.monotonic()
    ticket = handoff.escalate("webchat:after-restart", "keyword",
                              database_url=replicas.database_url).ticket
    arrived = replicas.stream_b.wait_for("ticket_created", ticket.id)
    assert arrived - published_at < QUICK  # the same stream, woken by the new LISTEN


def test_listener_wakes_streams_on_commit_and_reports_health(pg_url: str) -> None:
    def publish() -> None:
        with storage.session_scope(pg_url) as session:
            events.publish(session, "ticket_updated", ticket_id=1)

    async def scenario() -> float:
        waker = live._waker()
        listener = live.ensure_listener(pg_url)
        assert listener is not None and listener.poll_seconds > 0
        for _ in range(100):
            if listener.connected:
                break
            await asyncio.sleep(0.05)
        health = live.listener_health()
        assert (health.mode, health.connected, health.last_error) == ("listen", True, None)
        assert health.last_ok is not None and health.ok()
        assert not health.ok(stale_after=-1)
        report = health.as_json()
        assert report["last_ok"] == health.last_ok.isoformat() and report["ok"] is True
        await asyncio.sleep(0.2)  # let the wake-up every (re)connect sends land first
        woken = waker.current
        started = time.monotonic()
        await asyncio.to_thread(publish)
        await asyncio.wait_for(woken.wait(), QUICK)
        return time.monotonic() - started

    try:
        assert asyncio.run(scenario()) < QUICK
    finally:
        live.stop_listeners()
    assert live.listener_health().mode == "poll"


def test_sqlite_keeps_polling(db_url: str) -> None:
    assert live.ensure_listener(db_url) is None
    assert live.listener_health().as_json() == {
        "mode": "poll", "connected": False, "last_ok": None, "seconds_since_ok": 0.0,
        "failures": 0, "last_error": None, "ok": True}


def test_safety_poll_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(live.SAFETY_POLL_ENV, "soon")
    with pytest.raises(ValueError, match=live.SAFETY_POLL_ENV):
        live._safety_poll_seconds()
    monkeypatch.setenv(live.SAFETY_POLL_ENV, "0")
    with pytest.raises(ValueError, match="more than 0"):
        live._safety_poll_seconds()
