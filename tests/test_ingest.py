"""The ingest process (scale-out): webhooks verified, stored and acknowledged in a
process that runs no Rasa turn, answered by a real Rasa process's worker, woken
across processes by PostgreSQL LISTEN/NOTIFY.

A real ingest process and a real Rasa stack share one PostgreSQL schema; updates
are posted to the ingest process only, so every reply is the Rasa process's work.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from parley.bot import conversations, inbox_wake, launcher
from parley.connectors import ingest
from parley.connectors.telegram import TelegramInput
from tests.conftest import postgres_schema, wait_settled, wait_until
from tests.fakes.stack import free_port, start_stack
from tests.fakes.telegram_api import FakeTelegram, serve, stop
from tests.test_telegram import SECRET, text_update

_chat_ids = itertools.count(7_000_000)


@dataclass
class IngestStack:
    fake: FakeTelegram
    stack: launcher.Stack
    ingest: subprocess.Popen[bytes]
    ingest_url: str

    def post(self, payload: dict, secret: str | None = SECRET) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        return httpx.post(f"{self.ingest_url}/webhooks/telegram/webhook",
                          content=json.dumps(payload).encode(), headers=headers, timeout=60)

    def replies(self, chat: int) -> list[str]:
        return [c.params.get("text", "") for c in self.fake.sent()
                if int(c.params["chat_id"]) == chat]


def start_ingest(stack: launcher.Stack, port: int) -> subprocess.Popen[bytes]:
    """The ingest process with the stack's environment and channels."""
    log = (stack.log_dir / "ingest.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.connectors.ingest", "--host", stack.host,
         "--port", str(port), "--credentials", str(stack.runtime_credentials())],
        cwd=stack.root, env=stack._environment(), stdout=log, stderr=log)
    log.close()
    return proc


@pytest.fixture(scope="module")
def ing() -> Iterator[IngestStack]:
    fake = FakeTelegram()
    server, api_url = serve(fake)
    with postgres_schema() as url:
        stack = start_stack("ingest", {"parley.connectors.telegram.TelegramInput": {
            "access_token": fake.token, "webhook_secret": SECRET, "api_base_url": api_url}},
            database_url=url)
        port = free_port()
        proc = start_ingest(stack, port)
        ingest_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{ingest_url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None  # died: stop waiting, fail below

        try:
            assert wait_until(healthy, 60) and proc.poll() is None, \
                (stack.log_dir / "ingest.log").read_text()
            yield IngestStack(fake, stack, proc, ingest_url)
        finally:
            proc.terminate()
            proc.wait(10)
            stack.stop()
            stop(server)


pytestmark = pytest.mark.servers


def test_an_update_to_ingest_is_stored_acknowledged_and_answered_once(
        ing: IngestStack) -> None:
    chat = next(_chat_ids)
    resp = ing.post(text_update(chat, "what are your opening hours"))
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    # Stored before the 2xx: the row is there the moment the ingest process answered.
    [stored] = conversations.transcript(f"telegram:{chat}", ing.stack.database_url)
    assert stored.author == "customer" and stored.text == "what are your opening hours"
    assert wait_until(lambda: ing.replies(chat), 30)  # the Rasa process's worker
    wait_settled(ing.stack.database_url)
    time.sleep(1.0)  # room for a second reply, which must not come
    assert len(ing.replies(chat)) == 1
    lines = conversations.transcript(f"telegram:{chat}", ing.stack.database_url)
    assert [line.author for line in lines] == ["customer", "bot"]


def test_a_forged_secret_is_refused_and_nothing_stored(ing: IngestStack) -> None:
    chat = next(_chat_ids)
    for secret in (None, "wrong-secret", SECRET + "x"):
        assert ing.post(text_update(chat, "hi"), secret=secret).status_code == 403
    wait_settled(ing.stack.database_url)
    assert conversations.transcript(f"telegram:{chat}", ing.stack.database_url) == []
    assert ing.replies(chat) == []


def test_a_redelivered_update_is_not_doubled(ing: IngestStack) -> None:
    chat = next(_chat_ids)
    update = text_update(chat, "what are your opening hours")
    assert ing.post(update).status_code == 200
    assert ing.post(update).status_code == 200
    with ThreadPoolExecutor(4) as pool:  # and concurrent redeliveries
        assert {r.status_code for r in pool.map(lambda _: ing.post(update), range(4))} == {200}
    assert wait_until(lambda: ing.replies(chat), 30)
    wait_settled(ing.stack.database_url)
    time.sleep(1.0)
    assert len(ing.replies(chat)) == 1
    lines = conversations.transcript(f"telegram:{chat}", ing.stack.database_url)
    assert [line.author for line in lines] == ["customer", "bot"]


def test_bad_bodies_get_the_same_4xx_as_on_the_rasa_server(ing: IngestStack) -> None:
    resp = httpx.post(f"{ing.ingest_url}/webhooks/telegram/webhook", content=b"{nope",
                      headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=10)
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]
    big = b'{"update_id": 1, "x": "' + b"y" * 70000 + b'"}'
    resp = httpx.post(f"{ing.ingest_url}/webhooks/telegram/webhook", content=big,
                      headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=10)
    assert resp.status_code == 413


def test_the_ingest_process_reports_health_and_metrics(ing: IngestStack) -> None:
    health = httpx.get(f"{ing.ingest_url}/health", timeout=10).json()
    assert health["status"] == "ok" and "telegram" in health["channels"]
    metrics = httpx.get(f"{ing.ingest_url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert 'parley_messages_in_total{channel="telegram"}' in metrics.text


def test_the_web_chat_through_ingest_gets_the_bot_s_answer(ing: IngestStack) -> None:
    """The web chat answers in its response: the ingest process waits for the Rasa
    process's worker to finish the message."""
    resp = httpx.post(f"{ing.ingest_url}/webhooks/webchat/webhook", timeout=60,
                      json={"sender": f"ingest{next(_chat_ids)}",
                            "message": "what are your opening hours"})
    assert resp.status_code == 200
    assert [r["recipient_id"].split(":")[0] for r in resp.json()] == ["webchat"]


def test_a_store_wakes_a_worker_in_another_process_at_once() -> None:
    """The NOTIFY sent after a store sets the listening channel's event (and only
    that channel's), well within the workers' 0.5 s idle poll (the first one also
    opens the notifier's connection)."""
    with postgres_schema() as url:
        async def run() -> tuple[float, bool]:
            telegram, webchat = asyncio.Event(), asyncio.Event()
            assert inbox_wake.listen("telegram", telegram, url)
            assert inbox_wake.listen("webchat", webchat, url)
            await asyncio.sleep(1.0)  # the listener connects (and wakes everyone once)
            telegram.clear()
            webchat.clear()
            started = time.monotonic()
            inbox_wake.notify_soon("telegram", url)  # returns at once; a thread sends it
            await asyncio.wait_for(telegram.wait(), 5)
            return time.monotonic() - started, webchat.is_set()

        took, other_woken = asyncio.run(run())
        assert took < 0.5 and not other_woken


def test_sqlite_sends_no_wake_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    assert not inbox_wake.can_notify(url)
    inbox_wake.notify_soon("telegram", url)  # a no-op, never an error


def test_only_parley_channels_are_served(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.yml"
    credentials.write_text("rest:\n")
    with pytest.raises(ValueError, match="not a Parley channel"):
        ingest.channels_from(credentials)
    credentials.write_text("parley.connectors.telegram.TelegramInput:\n"
                           "  access_token: t\n  webhook_secret: s\n")
    [channel] = ingest.channels_from(credentials)
    assert isinstance(channel, TelegramInput)
