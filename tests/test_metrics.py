"""`/metrics` on every process: real Rasa, action server and desk processes with a fake
Telegram, scraped before and after traffic; the queue read on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from parley.bot import conversations, handoff, metrics, supervision
from parley.bot.launcher import Stack
from parley.connectors import telegram
from tests.conftest import wait_settled, wait_until
from tests.fakes.stack import free_port, start_stack
from tests.fakes.telegram_api import FakeTelegram, serve, stop

SECRET = "metrics-webhook-secret"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
_ids = itertools.count(int(time.time()))
_chats = itertools.count(7_000_000)


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(base_url: str) -> Samples:
    resp = httpx.get(f"{base_url}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(resp.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def settles(read: Callable[[], float], expected: float, timeout: float = 30.0) -> float:
    """The value once it equals `expected` (workers count after the webhook answered),
    or what it was when the wait ended, for the assertion's message."""
    wait_until(lambda: read() == expected, timeout)
    return read()


class MetricsStack:
    def __init__(self, fake: FakeTelegram, stack: Stack) -> None:
        self.fake = fake
        self.stack = stack

    def telegram(self, chat: int, text: str) -> dict:
        update = {"update_id": next(_ids), "message": {
            "message_id": next(_ids), "date": int(time.time()), "text": text,
            "chat": {"id": chat, "type": "private", "first_name": "Rui"},
            "from": {"id": chat, "is_bot": False, "first_name": "Rui"}}}
        self.post_update(update)
        return update

    def post_update(self, update: dict) -> None:
        resp = httpx.post(f"{self.stack.rasa_url}/webhooks/telegram/webhook",
                          content=json.dumps(update).encode(), timeout=60,
                          headers={"Content-Type": "application/json",
                                   "X-Telegram-Bot-Api-Secret-Token": SECRET})
        assert resp.status_code == 200, resp.text
        wait_settled(self.stack.database_url)

    def replies(self, chat: int) -> list[str]:
        return [c.params.get("text", "") for c in self.fake.sent()
                if int(c.params["chat_id"]) == chat]

    def webchat(self, sender: str, text: str) -> list[dict]:
        resp = httpx.post(f"{self.stack.webchat_url}webhook", timeout=60,
                          json={"sender": sender, "message": text})
        assert resp.status_code == 200, resp.text  # (202: answered later, not in the body)
        return resp.json()

    def rasa(self, name: str, **labels: str) -> float:
        return value(scrape(self.stack.rasa_url), name, **labels)


@pytest.fixture(scope="module")
def ms() -> Iterator[MetricsStack]:
    fake = FakeTelegram()
    server, api_url = serve(fake)
    stack = start_stack("metrics", {"parley.connectors.telegram.TelegramInput": {
        "access_token": fake.token, "webhook_secret": SECRET, "api_base_url": api_url}})
    try:
        yield MetricsStack(fake, stack)
    finally:
        stack.stop()
        stop(server)


@pytest.mark.servers
def test_every_process_serves_its_metrics(ms: MetricsStack) -> None:
    rasa = scrape(ms.stack.rasa_url)
    for loop in ("telegram inbox", "telegram outbox", "webchat inbox", "lease heartbeat"):
        assert value(rasa, "parley_loop_up", loop=loop) == 1, loop
        assert ("parley_loop_seconds_since_ok", (("loop", loop),)) in rasa
        assert ("parley_loop_failures_total", (("loop", loop),)) in rasa
    assert ("parley_messages_in_total", (("channel", "telegram"),)) in rasa  # from 0
    assert ("parley_send_failures_total", (("channel", "telegram"), ("kind", "permanent"))) \
        in rasa
    assert value(rasa, "parley_database_up") == 1
    assert ("process_cpu_seconds_total", ()) in rasa  # the client's process collector

    actions = scrape(ms.stack.action_url)  # no token needed for the numbers …
    assert ("parley_action_seconds_count", ()) in actions
    assert not any(name.startswith("parley_messages") for name, _ in actions)
    for method, path in (("POST", "/webhook"), ("GET", "/actions")):  # … but still for the rest
        assert httpx.request(method, f"{ms.stack.action_url}{path}", json={},
                             timeout=10).status_code == 401

    desk = scrape(ms.stack.desk_url)
    assert ("parley_queue_length", ()) in desk
    assert ("parley_loop_up", (("loop", "desk live listener"),)) in desk


@pytest.mark.servers
def test_messages_in_and_out_and_turns_move_per_channel(ms: MetricsStack) -> None:
    before = scrape(ms.stack.rasa_url)

    chat = next(_chats)
    update = ms.telegram(chat, "hi")
    ms.post_update(update)  # redelivered by the platform: stored once, counted once
    sent = len(ms.replies(chat))
    assert sent >= 1
    answers = ms.webchat(f"m-{next(_ids)}", "hi")
    assert answers

    def moved(name: str, **labels: str) -> Callable[[], float]:
        return lambda: ms.rasa(name, **labels) - value(before, name, **labels)

    assert settles(moved("parley_messages_in_total", channel="telegram"), 1) == 1
    assert settles(moved("parley_messages_out_total", channel="telegram"), sent) == sent
    assert settles(moved("parley_turn_seconds_count", channel="telegram"), 1) == 1
    assert settles(moved("parley_messages_in_total", channel="webchat"), 1) == 1
    assert settles(moved("parley_messages_out_total", channel="webchat"), len(answers)) \
        == len(answers)
    assert settles(moved("parley_turn_seconds_count", channel="webchat"), 1) == 1
    after = scrape(ms.stack.rasa_url)
    turn_time = value(after, "parley_turn_seconds_sum", channel="telegram") - \
        value(before, "parley_turn_seconds_sum", channel="telegram")
    assert turn_time > 0
    assert value(after, "parley_turn_seconds_bucket", channel="telegram", le="+Inf") == \
        value(after, "parley_turn_seconds_count", channel="telegram")


@pytest.mark.servers
def test_a_handoff_shows_in_the_queue_and_the_action_server(ms: MetricsStack) -> None:
    desk_before, actions_before = scrape(ms.stack.desk_url), scrape(ms.stack.action_url)
    waiting = value(desk_before, "parley_queue_length")
    turns = ms.rasa("parley_turn_seconds_count", channel="telegram")

    chat = next(_chats)
    ms.telegram(chat, "AGENT")
    assert "in the queue" in ms.replies(chat)[-1]

    def desk(name: str) -> float:
        return value(scrape(ms.stack.desk_url), name)

    assert settles(lambda: desk("parley_queue_length"), waiting + 1) == waiting + 1
    assert desk("parley_queue_oldest_waiting_seconds") > 0
    assert value(scrape(ms.stack.rasa_url), "parley_queue_length") == waiting + 1  # same db
    handoffs = value(scrape(ms.stack.action_url), "parley_action_runs_total",
                     action="action_handoff", status="200")
    assert handoffs == value(actions_before, "parley_action_runs_total",
                             action="action_handoff", status="200") + 1

    ms.telegram(chat, "are you there?")  # in the queue: the gate answers, no Rasa turn
    assert "You're number" in ms.replies(chat)[-1]
    assert ms.rasa("parley_turn_seconds_count", channel="telegram") == turns + 1

    ms.telegram(chat, "bot")  # back to the bot: off the queue
    assert settles(lambda: desk("parley_queue_length"), waiting) == waiting


@pytest.mark.servers
def test_send_failures_and_retries_are_counted(ms: MetricsStack) -> None:
    def sends(name: str, **labels: str) -> float:
        return ms.rasa(name, channel="telegram", **labels)

    permanent = sends("parley_send_failures_total", kind="permanent")
    retryable = sends("parley_send_failures_total", kind="retryable")
    retries = sends("parley_send_retries_total")
    out = sends("parley_messages_out_total")

    blocked = next(_chats)
    ms.fake.blocked_chats.add(blocked)
    ms.telegram(blocked, "hi")  # 403: the customer blocked the bot
    refused = [m for m in conversations.transcript(f"telegram:{blocked}",
                                                   ms.stack.database_url)
               if m.author == "bot" and m.delivery_error]
    assert refused and "blocked" in (refused[0].delivery_error or "")
    assert settles(lambda: sends("parley_send_failures_total", kind="permanent"),
                   permanent + len(refused)) == permanent + len(refused)

    # Telegram says 429 to every quick retry of the platform module: the outbox
    # puts the send back, and it goes out on the next try.
    chat = next(_chats)
    ms.fake.fail_next("sendMessage", telegram.LIMITS.max_attempts, status=429, retry_after=1)
    ms.telegram(chat, "what are your opening hours")
    assert wait_until(lambda: len(ms.replies(chat)) == 1, 60)
    assert settles(lambda: sends("parley_send_failures_total", kind="retryable"),
                   retryable + 1) == retryable + 1
    assert sends("parley_send_retries_total") == retries + 1
    assert sends("parley_send_failures_total", kind="permanent") == permanent + len(refused)
    assert settles(lambda: sends("parley_messages_out_total"), out + 1) == out + 1


# -- without servers: the queue on both databases, the loops, a database that is down ---
def test_the_queue_is_read_from_the_tickets(any_db: str) -> None:
    assert metrics.read_queue(any_db) == metrics.QueueState(0, 0.0, 0)
    first = handoff.escalate("webchat:q1", "keyword", database_url=any_db).ticket
    handoff.escalate("webchat:q2", "keyword", database_url=any_db)
    state = metrics.read_queue(any_db)
    assert (state.waiting, state.assigned) == (2, 0)
    assert 0 < state.oldest_waiting_seconds < 3600
    from parley.bot import agents

    agent = agents.create_user("qa", "qa-password-1", database_url=any_db)
    handoff.claim_ticket(first.id, agent.id, any_db)
    later = metrics.read_queue(any_db)
    assert (later.waiting, later.assigned) == (1, 1)


def test_a_database_that_is_down_is_reported_not_raised() -> None:
    reader = metrics.QueueReader(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    state = asyncio.run(reader.state())
    assert state is None
    samples = parse(generate_latest(metrics.Scrape("desk", state)).decode())
    assert value(samples, "parley_database_up") == 0
    assert ("parley_queue_length", ()) not in samples


def test_loops_report_failures_and_recovery() -> None:
    calls: list[int] = []

    async def tick() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first tick fails")
        return False

    async def run() -> None:
        task = asyncio.get_running_loop().create_task(
            supervision.supervise("metrics test loop", tick, idle=0.05))
        try:
            while len(calls) < 3:
                await asyncio.sleep(0.05)
        finally:
            task.cancel()

    asyncio.run(run())
    samples = parse(generate_latest(metrics.Scrape("rasa", None)).decode())
    loop = {"loop": "metrics test loop"}
    assert value(samples, "parley_loop_failures_total", **loop) == 1
    assert value(samples, "parley_loop_up", **loop) == 1
    assert 0 <= value(samples, "parley_loop_seconds_since_ok", **loop) < 60

