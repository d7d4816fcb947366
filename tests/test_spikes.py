"""Inbound spike alerts: the rule on SQLite and PostgreSQL, the signed webhook against
a real loopback receiver, and a real desk showing the banner in Chromium."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import delete, func, select

from parley.bot import agents, alert_webhook, spikes, storage
from parley.bot.conversations import Message, ensure_conversation, message_values
from parley.bot.spikes import SpikeAlert
from parley.bot.storage import session_scope, utcnow
from tests import REPO_ROOT as PROJECT_ROOT
from tests.conftest import _hours_file, desk_login, wait_until
from tests.fakes.stack import free_port

UTC = timezone.utc
NOW = datetime(2025, 3, 12, 14, 30, tzinfo=UTC)  # a Wednesday
RULE = spikes.Rule(factor=3.0, minimum=20)


def seed(url: str, times: list[datetime], author: str = "customer",
         conversation: str = "webchat:crowd") -> list[int]:
    """Messages at the given times, as the connectors store them."""
    with session_scope(url) as session:
        ensure_conversation(session, conversation)
        rows = []
        for when in times:
            values = message_values(conversation, author, "hello", delivery="none")
            values["created_at"] = when
            rows.append(Message(**values))
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def history(now: datetime, per_slot: int, weeks: tuple[int, ...] = (1, 2, 3, 4)
            ) -> list[datetime]:
    """`per_slot` messages every 10 minutes from 70 minutes before to 70 after `now`,
    k weeks back: whichever clock hour holds `now`, its hour k weeks back holds
    exactly 6 slots, so usual = per_slot."""
    return [now - timedelta(weeks=k) + timedelta(minutes=10 * j, seconds=1)
            for k in weeks for j in range(-7, 8) for _ in range(per_slot)]


def burst(now: datetime, count: int) -> list[datetime]:
    """`count` messages within the 10 minutes before `now`."""
    return [now - timedelta(seconds=5 + i * 500 // max(count, 1)) for i in range(count)]


def rows(url: str) -> list[SpikeAlert]:
    with session_scope(url) as session:
        return list(session.execute(select(SpikeAlert).order_by(SpikeAlert.id)).scalars())


# --- the rule ---------------------------------------------------------------------------


def test_a_burst_above_factor_and_minimum_starts_one_spike(any_db: str) -> None:
    seed(any_db, history(NOW, per_slot=2))
    seed(any_db, burst(NOW, 25))
    seed(any_db, burst(NOW, 30), author="bot")  # our own replies are not inbound

    first = spikes.check(RULE, webhook=True, now=NOW, database_url=any_db)
    assert (first.reading.count, first.reading.usual, first.reading.weeks) == (25, 2.0, 4)
    assert first.started is not None and first.active == first.started
    assert (first.started.count, first.started.usual, first.started.factor,
            first.started.minimum, first.started.webhook_state) == (25, 2.0, 3.0, 20, "pending")

    seed(any_db, burst(NOW + timedelta(minutes=1), 10))
    again = spikes.check(RULE, webhook=True, now=NOW + timedelta(minutes=1), database_url=any_db)
    assert again.started is None and again.active is not None
    assert again.active.id == first.started.id
    assert (again.active.count, again.active.latest_count, again.active.peak_count) == (25, 35, 35)
    assert [r.id for r in rows(any_db)] == [first.started.id]
    assert spikes.active(any_db) == again.active


@pytest.mark.parametrize(("per_slot", "count", "why"), [
    (2, 19, "under the minimum, though far above 3 × usual"),
    (10, 25, "over the minimum, but not above 3 × usual (30)"),
    (10, 30, "exactly 3 × usual is not above it"),
])
def test_no_spike_below_the_minimum_or_the_factor(any_db: str, per_slot: int, count: int,
                                                  why: str) -> None:
    seed(any_db, history(NOW, per_slot))
    seed(any_db, burst(NOW, count))
    outcome = spikes.check(RULE, now=NOW, database_url=any_db)
    assert outcome.reading.count == count and outcome.reading.usual == per_slot
    assert outcome.started is None and outcome.active is None, why
    assert rows(any_db) == []


def test_just_above_the_factor_is_a_spike(any_db: str) -> None:
    seed(any_db, history(NOW, per_slot=10))
    seed(any_db, burst(NOW, 31))
    assert spikes.check(RULE, now=NOW, database_url=any_db).started is not None


def test_no_history_no_alert(any_db: str) -> None:
    seed(any_db, burst(NOW, 200))
    outcome = spikes.check(RULE, now=NOW, database_url=any_db)
    assert outcome.reading.usual is None and outcome.reading.weeks == 0
    assert outcome.started is None and rows(any_db) == []


def test_usual_counts_quiet_weeks_but_not_weeks_before_the_first_message(any_db: str) -> None:
    # First message three weeks back; nothing at all in that hour two weeks back (a
    # quiet week, counted as zero); four weeks back the bot did not exist yet.
    seed(any_db, history(NOW, per_slot=3, weeks=(1, 3)))
    reading = spikes.check(RULE, now=NOW, database_url=any_db).reading
    assert reading.weeks == 3
    assert reading.usual == pytest.approx((18 + 0 + 18) / 18)


def test_the_hour_of_week_follows_the_local_clock_across_daylight_saving(any_db: str) -> None:
    # New York moved to summer time on Sunday 9 March 2025: 14:30 on Monday the 10th
    # is 18:30 UTC, and 14:00 local a week earlier was 19:00 UTC, not 18:00.
    zone = ZoneInfo("America/New_York")
    now = datetime(2025, 3, 10, 14, 30, tzinfo=zone)
    [(start, end), *_] = spikes.history_hours(now, zone)
    assert (start, end) == (datetime(2025, 3, 3, 19, 0, tzinfo=UTC),
                            datetime(2025, 3, 3, 20, 0, tzinfo=UTC))
    before = datetime(2025, 2, 1, tzinfo=UTC)  # the bot was live long before
    seed(any_db, [before] + [start + timedelta(minutes=5)] * 12
         + [start - timedelta(minutes=30)] * 50)  # 13:30 local: another hour
    reading = spikes.check(spikes.Rule(zone=zone), now=now, database_url=any_db).reading
    assert reading.weeks == 4 and reading.usual == pytest.approx(12 / 24)


def test_a_spike_ends_when_inbound_calms_down(any_db: str) -> None:
    seed(any_db, history(NOW, per_slot=2))
    seed(any_db, burst(NOW, 25))
    started = spikes.check(RULE, now=NOW, database_url=any_db).started
    assert started is not None

    later = NOW + timedelta(minutes=11)  # the burst is out of the 10-minute window
    calm = spikes.check(RULE, now=later, database_url=any_db)
    assert calm.ended is not None and calm.ended.id == started.id
    assert calm.ended.ended_at == later and calm.active is None
    assert spikes.active(any_db) is None
    assert spikes.check(RULE, now=later, database_url=any_db).ended is None  # once

    seed(any_db, burst(later + timedelta(minutes=5), 40))  # a new burst: a new spike
    again = spikes.check(RULE, now=later + timedelta(minutes=5), database_url=any_db)
    assert again.started is not None and again.started.id != started.id
    assert [r.ended_at is None for r in rows(any_db)] == [False, True]


def test_two_desk_replicas_checking_at_once_raise_it_once(any_db: str) -> None:
    seed(any_db, history(NOW, per_slot=2))
    seed(any_db, burst(NOW, 25))
    barrier = threading.Barrier(2)
    outcomes: list[spikes.Outcome] = []

    def replica() -> None:
        barrier.wait()
        outcomes.append(spikes.check(RULE, webhook=True, now=NOW, database_url=any_db))

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 2
    assert sum(o.started is not None for o in outcomes) == 1
    assert len(rows(any_db)) == 1
    assert {o.active.id for o in outcomes if o.active} == {rows(any_db)[0].id}

    # Ending is guarded too: each replica's check later, one of them ends it.
    ended = [spikes.check(RULE, now=NOW + timedelta(minutes=11), database_url=any_db).ended
             for _ in range(2)]
    assert sum(e is not None for e in ended) == 1


def test_one_replica_takes_each_webhook(any_db: str) -> None:
    seed(any_db, history(NOW, per_slot=2))
    seed(any_db, burst(NOW, 25))
    spike = spikes.check(RULE, webhook=True, now=NOW, database_url=any_db).started
    assert spike is not None
    lease = timedelta(minutes=1)
    taken = spikes.claim_webhooks(lease, now=NOW, database_url=any_db)
    assert [s.id for s in taken] == [spike.id] and taken[0].webhook_state == "sending"
    assert spikes.claim_webhooks(lease, now=NOW, database_url=any_db) == []
    # A process that died mid-send: once its lease runs out, another takes it.
    after = NOW + lease + timedelta(seconds=1)
    assert [s.id for s in spikes.claim_webhooks(lease, now=after, database_url=any_db)] == \
        [spike.id]


# --- the webhook ------------------------------------------------------------------------


@dataclass
class Receiver:
    """A real HTTP server on loopback answering with scripted statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0-secret-path"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            box.requests.append(({k.lower(): v for k, v in self.headers.items()}, data))
            status = box.statuses.pop(0) if box.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args: Any) -> None:
            pass

    box.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=box.server.serve_forever, daemon=True)
    thread.start()
    yield box
    box.server.shutdown()
    box.server.server_close()


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from the documented scheme (not our code)."""
    timestamp = headers["x-parley-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-parley-signature", ""), f"sha256={expected}")


def claimed_spike(url: str) -> spikes.Spike:
    seed(url, history(NOW, per_slot=2))
    seed(url, burst(NOW, 25))
    assert spikes.check(RULE, webhook=True, now=NOW, database_url=url).started is not None
    [spike] = spikes.claim_webhooks(alert_webhook.LEASE, database_url=url)
    return spike


def test_webhook_is_signed_and_retried_after_a_5xx(db_url: str, receiver: Receiver) -> None:
    spike = claimed_spike(db_url)
    receiver.statuses = [500]
    target = alert_webhook.Target(receiver.url, "s3cret", "https://desk.example/")
    assert asyncio.run(alert_webhook.deliver(spike, target, backoff=0.01,
                                             database_url=db_url)) == "sent"
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        assert signed_by("s3cret", headers, body)
        assert not signed_by("other", headers, body)
        sent = json.loads(body)
        assert (sent["event"], sent["id"], sent["count"], sent["usual"], sent["factor"],
                sent["minimum"], sent["desk_url"]) == (
            "inbound_spike", spike.id, 25, 2.0, 3.0, 20, "https://desk.example/")
        assert "25 customer messages" in sent["text"]
    [row] = rows(db_url)
    assert (row.webhook_state, row.webhook_attempts, row.webhook_error) == ("sent", 2, None)
    assert row.webhook_sent_at is not None


def test_webhook_gives_up_and_records_the_error(db_url: str, receiver: Receiver) -> None:
    spike = claimed_spike(db_url)
    receiver.statuses = [503] * 10
    target = alert_webhook.Target(receiver.url, "s3cret", "https://desk.example/")
    assert asyncio.run(alert_webhook.deliver(spike, target, backoff=0.01,
                                             database_url=db_url)) == "failed"
    assert len(receiver.requests) == alert_webhook.ATTEMPTS
    [row] = rows(db_url)
    assert (row.webhook_state, row.webhook_attempts, row.webhook_error) == (
        "failed", alert_webhook.ATTEMPTS, "HTTP 503")


def test_webhook_does_not_retry_a_4xx(db_url: str, receiver: Receiver) -> None:
    spike = claimed_spike(db_url)
    receiver.statuses = [404]
    target = alert_webhook.Target(receiver.url, "s3cret", "https://desk.example/")
    assert asyncio.run(alert_webhook.deliver(spike, target, backoff=0.01,
                                             database_url=db_url)) == "failed"
    assert len(receiver.requests) == 1
    assert rows(db_url)[0].webhook_error == "HTTP 404"


def test_webhook_network_error_is_recorded_without_the_url(db_url: str) -> None:
    spike = claimed_spike(db_url)
    url = f"http://127.0.0.1:{free_port()}/hooks/T0-secret-path"  # nobody listens
    target = alert_webhook.Target(url, None, "https://desk.example/")
    assert asyncio.run(alert_webhook.deliver(spike, target, backoff=0.01,
                                             database_url=db_url)) == "failed"
    [row] = rows(db_url)
    assert row.webhook_attempts == alert_webhook.ATTEMPTS and row.webhook_error
    assert "T0-secret-path" not in row.webhook_error


def test_a_webhook_without_a_secret_is_refused_at_start_up(tmp_path: Path) -> None:
    """The issue wants the alert signed: no secret, no start."""
    from parley.bot.settings import load_settings

    env = {"PARLEY_ALERT_WEBHOOK": "https://hooks.example/parley"}
    with pytest.raises(ValueError, match="PARLEY_ALERT_SECRET"):
        load_settings(env=env, root=tmp_path)
    signed = load_settings(env={**env, "PARLEY_ALERT_SECRET": "s"}, root=tmp_path)
    assert (signed.alert_webhook, signed.alert_secret) == ("https://hooks.example/parley", "s")


def test_without_a_secret_it_goes_unsigned(db_url: str, receiver: Receiver) -> None:
    spike = claimed_spike(db_url)
    target = alert_webhook.Target(receiver.url, None, "https://desk.example/")
    assert asyncio.run(alert_webhook.deliver(spike, target, database_url=db_url)) == "sent"
    [(headers, _body)] = receiver.requests
    assert "x-parley-signature" not in headers and "x-parley-timestamp" in headers


# --- end to end: a real desk, the webhook, the banner in Chromium ----------------------


@dataclass
class SpikeDesk:
    url: str
    db: str
    secret: str


@pytest.fixture
def spike_desk(tmp_path: Path, receiver: Receiver) -> Iterator[SpikeDesk]:
    db = f"sqlite:///{tmp_path / 'parley.db'}"
    storage.create_schema(db)
    agents.create_user("ana", "ana-password", "agent", "Ana", db)
    agents.create_user("meg", "meg-password", "manager", "Meg", db)
    hours = _hours_file(tmp_path / "hours.yml", {"mon": "09:00-17:00"})  # UTC clock
    port = free_port()
    secret = "e2e-secret"
    env = {**os.environ, "PARLEY_DATABASE_URL": db, "PARLEY_SUPPORT_HOURS": str(hours),
           "PARLEY_ALERT_WEBHOOK": receiver.url, "PARLEY_ALERT_SECRET": secret,
           "PARLEY_DESK_URL": "https://desk.example/"}
    log_path = tmp_path / "desk.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.bot.desk", "--port", str(port),
             "--spike-check-seconds", "0.3"], cwd=PROJECT_ROOT, env=env, stdout=log,
            stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        if not wait_until(up, 30):
            pytest.fail(f"desk did not start: {log_path.read_text()}")
        yield SpikeDesk(url, db, secret)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def login(desk: SpikeDesk, username: str, password: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=desk.url, timeout=10) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        resp = client.post("/login", data={"csrf": csrf, "username": username,
                                           "password": password})
        assert resp.status_code == 303, resp.text
        yield client


@pytest.mark.servers
def test_a_spike_shows_the_banner_and_calls_the_signed_webhook(
        spike_desk: SpikeDesk, receiver: Receiver, browser: Any) -> None:
    from playwright.sync_api import expect

    receiver.statuses = [500]  # the first delivery fails: it must be retried
    now = utcnow()
    seed(spike_desk.db, history(now, per_slot=2))
    with login(spike_desk, "ana", "ana-password") as ana:
        assert ana.get("/api/alerts/active").json() == {"active": None}
        assert ana.get("/api/alerts").status_code == 403  # history: managers and admins

        burst_ids = seed(spike_desk.db, burst(now, 25), conversation="telegram:42")
        assert wait_until(lambda: ana.get("/api/alerts/active").json()["active"], 15)
        active = ana.get("/api/alerts/active").json()["active"]
        assert (active["latest_count"], active["usual"], active["window_minutes"]) == \
            (25, 2.0, 10)
        assert "webhook" not in active  # agents see the numbers, not the delivery

    assert wait_until(lambda: len(receiver.requests) >= 2, 30), receiver.requests
    for headers, body in receiver.requests:
        assert signed_by(spike_desk.secret, headers, body)
        sent = json.loads(body)
        assert (sent["id"], sent["count"], sent["usual"], sent["desk_url"]) == \
            (active["id"], 25, 2.0, "https://desk.example/")
    with login(spike_desk, "meg", "meg-password") as meg:
        assert wait_until(lambda: meg.get("/api/alerts").json()["alerts"][0]["webhook"]
                          ["state"] == "sent", 15)
        [alert] = meg.get("/api/alerts").json()["alerts"]
        assert (alert["webhook"]["attempts"], alert["webhook"]["error"]) == (2, None)
        assert meg.get("/api/alerts?limit=0").status_code == 400
        assert meg.get("/api/alerts?limit=abc").status_code == 400

    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        desk_login(page, spike_desk.url, "ana", "ana-password")
        banner = page.locator("#spike-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text(
            "Inbound spike: 25 messages in the last 10 minutes, usually about 2 at this hour")
        expect(banner).to_contain_text("since ")

        banner.get_by_role("button", name="Dismiss").click()
        expect(banner).to_be_hidden()
        page.reload()
        expect(banner).to_have_attribute("data-polls", re.compile("[1-9]"))  # it has asked
        expect(banner).to_be_hidden()  # dismissed in this tab for this spike

        other = context.new_page()  # another tab still shows it
        other.set_default_timeout(15_000)
        other.goto(f"{spike_desk.url}/")
        expect(other.locator("#spike-banner")).to_be_visible()

        with session_scope(spike_desk.db) as session:  # inbound calms down
            session.execute(delete(Message).where(Message.id.in_(burst_ids)))
        assert wait_until(lambda: spikes.active(spike_desk.db) is None, 15)
        # The open tab's next poll (every 15 s) takes the banner down.
        expect(other.locator("#spike-banner")).to_be_hidden(timeout=25_000)
    finally:
        context.close()
    with session_scope(spike_desk.db) as session:
        assert session.execute(select(func.count()).select_from(SpikeAlert)).scalar() == 1
    assert len(receiver.requests) == 2  # one spike, one delivery (after one retry)
