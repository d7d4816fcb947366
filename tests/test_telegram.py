"""Telegram through the real Rasa server, against a fake Bot API server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from parley.bot import conversations, launcher
from parley.connectors import telegram
from parley.connectors.requests import RejectedRequest
from tests.conftest import wait_settled, wait_until
from tests.fakes.stack import start_stack
from tests.fakes.telegram_api import FakeTelegram, serve, stop

SECRET = "webhook-secret-1"
_update_ids = itertools.count(int(time.time()))
_chat_ids = itertools.count(5_000_000)


def text_update(chat: int, text: str, update_id: int | None = None) -> dict:
    return {"update_id": update_id or next(_update_ids), "message": {
        "message_id": next(_update_ids), "date": int(time.time()), "text": text,
        "chat": {"id": chat, "type": "private", "first_name": "Maria"},
        "from": {"id": chat, "is_bot": False, "first_name": "Maria", "last_name": "Lopes"}}}


def button_update(chat: int, data: str) -> dict:
    return {"update_id": next(_update_ids), "callback_query": {
        "id": f"cb{next(_update_ids)}", "chat_instance": "1", "data": data,
        "from": {"id": chat, "is_bot": False, "first_name": "Maria"},
        "message": {"message_id": 1, "date": int(time.time()), "text": "pick one",
                    "chat": {"id": chat, "type": "private"}}}}


class TelegramStack:
    def __init__(self, fake: FakeTelegram, stack: launcher.Stack, fake_url: str) -> None:
        self.fake = fake
        self.fake_url = fake_url
        self.stack = stack
        self.url = f"{stack.rasa_url}/webhooks/telegram/webhook"

    def post(self, payload: dict | bytes, secret: str | None = SECRET) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        resp = httpx.post(self.url, content=body, headers=headers, timeout=60)
        if resp.status_code == 200:
            wait_settled(self.stack.database_url)
        return resp

    def replies(self, chat: int) -> list[str]:
        return [c.params.get("text", "") for c in self.fake.sent()
                if int(c.params["chat_id"]) == chat]


@pytest.fixture(scope="module")
def tg() -> Iterator[TelegramStack]:
    fake = FakeTelegram()
    server, api_url = serve(fake)
    stack = start_stack("tg", {"parley.connectors.telegram.TelegramInput": {
        "access_token": fake.token, "webhook_secret": SECRET, "api_base_url": api_url}})
    try:
        yield TelegramStack(fake, stack, api_url)
    finally:
        stack.stop()
        stop(server)


pytestmark = pytest.mark.servers


def test_a_full_conversation(tg: TelegramStack) -> None:
    chat = next(_chat_ids)
    assert tg.post(text_update(chat, "hi")).status_code == 200
    assert "AGENT" in tg.replies(chat)[-1]
    tg.post(text_update(chat, "where is my order?"))
    # the question, then the reminder never to send card numbers (utter_privacy_reminder)
    assert any("order number" in r for r in tg.replies(chat)[-2:])
    tg.post(text_update(chat, "10234"))
    assert "DHL" in tg.replies(chat)[-1]
    lines = conversations.transcript(f"telegram:{chat}", tg.stack.database_url)
    turns = [author for author, _ in itertools.groupby(m.author for m in lines)]
    assert turns == ["customer", "bot"] * 3  # a turn may have several bot messages
    assert conversations.display_names([f"telegram:{chat}"], tg.stack.database_url) == {
        f"telegram:{chat}": "Maria Lopes"}


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", SECRET + "x"])
def test_forged_or_missing_secret_is_refused(tg: TelegramStack, secret: str | None) -> None:
    chat = next(_chat_ids)
    resp = tg.post(text_update(chat, "hi"), secret=secret)
    assert resp.status_code == 403
    assert tg.replies(chat) == []
    assert conversations.transcript(f"telegram:{chat}", tg.stack.database_url) == []


def test_a_redelivered_update_gets_no_second_reply(tg: TelegramStack) -> None:
    chat = next(_chat_ids)
    update = text_update(chat, "what are your opening hours")
    assert tg.post(update).status_code == 200
    assert tg.post(update).status_code == 200
    with ThreadPoolExecutor(4) as pool:  # and concurrent redeliveries
        list(pool.map(lambda _: tg.post(update), range(4)))
    assert len(tg.replies(chat)) == 1


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{nope", 400, "not valid JSON"),
    (b'{"message": {}}', 400, "update_id"),
    (b'{"update_id": 5, "message": {"chat": 1}}', 400, "message"),
    (b'{"update_id": 1, "x": "' + b"y" * 70000 + b'"}', 413, "limit"),
])
def test_bad_bodies_get_a_clear_4xx(tg: TelegramStack, body: bytes, status: int,
                                    reason: str) -> None:
    resp = tg.post(body)
    assert resp.status_code == status and reason in resp.json()["error"]


def test_updates_without_customer_text_are_ignored(tg: TelegramStack) -> None:
    chat = next(_chat_ids)
    edited = {"update_id": next(_update_ids), "edited_message": text_update(chat, "x")["message"]}
    sticker = text_update(chat, "")
    assert tg.post(edited).status_code == 200
    assert tg.post(sticker).status_code == 200
    assert tg.replies(chat) == []


def test_buttons_round_trip(tg: TelegramStack) -> None:
    chat = next(_chat_ids)
    tg.post(text_update(chat, "xqzvk blorptangle frumious"))
    last = [c for c in tg.fake.sent() if int(c.params["chat_id"]) == chat][-1]
    keyboard = last.params["reply_markup"]["inline_keyboard"]
    payloads = [row[0]["callback_data"] for row in keyboard]
    assert len(payloads) == 2 and all(p.startswith("/") for p in payloads)
    acks_before = len(tg.fake.sent("answerCallbackQuery"))
    tg.post(button_update(chat, "/shipping_times"))
    assert "Standard shipping" in tg.replies(chat)[-1]
    assert len(tg.fake.sent("answerCallbackQuery")) == acks_before + 1


def test_handoff_and_queue_updates_over_telegram(tg: TelegramStack) -> None:
    chat = next(_chat_ids)
    tg.post(text_update(chat, "AGENT"))
    assert "in the queue" in tg.replies(chat)[-1]
    tg.post(text_update(chat, "hello?"))
    assert "You're number" in tg.replies(chat)[-1]
    tg.post(text_update(chat, "bot"))
    assert "back with the bot" in tg.replies(chat)[-1]


def test_a_429_storm_is_survived_in_order(tg: TelegramStack) -> None:
    chats = [next(_chat_ids) for _ in range(3)]
    tg.fake.fail_next("sendMessage", 4, status=429, retry_after=1)
    tg.fake.fail_next("sendMessage", 2, status=502)
    start = time.monotonic()

    def conversation(chat: int) -> None:
        tg.post(text_update(chat, "hi"))
        tg.post(text_update(chat, "how long does shipping take"))

    threads = [threading.Thread(target=conversation, args=(c,)) for c in chats]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for chat in chats:
        replies = tg.replies(chat)
        assert len(replies) == 2, replies
        assert "AGENT" in replies[0] and "Standard shipping" in replies[1]
    assert time.monotonic() - start >= 1.0  # retry_after was honoured
    assert tg.fake.failures == []  # the whole storm was met and survived
    sends = [c for c in tg.fake.sent() if int(c.params["chat_id"]) in chats]
    for chat in chats:  # never faster than the per-chat limit allows (burst of 3, then 1/s)
        stamps = [c.at for c in sends if int(c.params["chat_id"]) == chat]
        assert len(stamps) == 2


def test_long_replies_are_split_on_word_boundaries() -> None:
    fake = FakeTelegram()
    server, api_url = serve(fake)
    try:
        text = "word " * 2000

        async def send() -> None:
            client = telegram.Telegram(fake.token, api_url)
            await client.deliver("telegram:77", {"text": text, "buttons": [
                {"title": "Yes", "payload": "/affirm"}]})
            await client.shutdown()

        asyncio.run(send())
        sent = fake.sent()
        assert [len(c.params["text"]) <= 4096 for c in sent] == [True] * len(sent)
        assert len(sent) == 3
        assert " ".join(c.params["text"] for c in sent).split() == text.split()
        assert "reply_markup" in sent[-1].params and "reply_markup" not in sent[0].params
    finally:
        stop(server)


@pytest.mark.parametrize("paid", [False, True])
def test_the_bot_wide_send_rate_is_telegrams(paid: bool) -> None:
    """~30 messages/s per bot (PTB's limiter: a burst of 30, then 30/s), unless the
    bot pays for broadcasts: then every send says so, as Telegram requires."""
    fake = FakeTelegram()
    server, api_url = serve(fake)
    started: list[float] = []
    try:
        async def send() -> None:
            client = telegram.Telegram(fake.token, api_url, paid_broadcast=paid)
            await client.deliver("telegram:899", {"text": "warm-up"})  # getMe, a connection
            started.append(time.monotonic())
            await asyncio.gather(*(client.deliver(f"telegram:{900 + i}", {"text": f"n{i}"})
                                   for i in range(45)))
            await client.shutdown()

        asyncio.run(send())
        sent = [c for c in fake.sent() if c.params["chat_id"] != "899"]
        assert len(sent) == 45
        assert {c.params.get("allow_paid_broadcast") for c in sent} == (
            {"true"} if paid else {None})
        if not paid:  # 47 through the limiter: the last 17 waited their turn at 30/s
            assert max(c.at for c in sent) - started[0] >= 0.4
    finally:
        stop(server)


def test_parse_unit() -> None:
    [item] = telegram.parse(text_update(42, "hello", update_id=7))
    assert (item.conversation_id, item.text, item.platform_message_id) == (
        "telegram:42", "hello", "7")
    group = text_update(-100, "hi all")
    group["message"]["chat"]["type"] = "group"
    assert telegram.parse(group) == []
    with pytest.raises(RejectedRequest):
        telegram.parse({"update_id": "x"})


def test_secret_comparison() -> None:
    assert telegram.verify({"x-telegram-bot-api-secret-token": "abc"}, "abc")
    assert not telegram.verify({"x-telegram-bot-api-secret-token": "abd"}, "abc")
    assert not telegram.verify({}, "")


def test_credentials_are_required() -> None:
    with pytest.raises(ValueError, match="access_token"):
        telegram.TelegramInput.from_credentials({"webhook_secret": "x"})
    with pytest.raises(ValueError, match="webhook_secret"):
        telegram.TelegramInput.from_credentials({"access_token": "1:x"})
    with pytest.raises(ValueError, match="paid_broadcast"):
        telegram.TelegramInput.from_credentials({"access_token": "1:x", "webhook_secret": "s",
                                                 "paid_broadcast": "yes"})


def test_long_polling_feeds_the_same_webhook(tg: TelegramStack) -> None:
    chat = next(_chat_ids)
    tg.fake.pending_updates.append(text_update(chat, "do you take paypal"))
    forwarded = asyncio.run(telegram.poll(tg.fake.token, SECRET, tg.url,
                                          api_base_url=tg.fake_url, rounds=2, timeout=0))
    assert forwarded == 1
    wait_settled(tg.stack.database_url)
    assert "PayPal" in tg.replies(chat)[-1]
    assert tg.fake.sent("deleteWebhook")


def test_webhook_registration_sends_the_secret(tg: TelegramStack) -> None:
    asyncio.run(telegram.register_webhook(tg.fake.token, "https://bot.example/webhooks/telegram/"
                                          "webhook", SECRET, tg.fake_url))
    call = tg.fake.sent("setWebhook")[-1]
    assert call.params["secret_token"] == SECRET
    assert call.params["url"].startswith("https://bot.example/")


def held_by_an_agent(tg: TelegramStack) -> tuple[int, str, int, int]:
    """A Telegram customer who typed AGENT, claimed: (chat, conversation, ticket, agent)."""
    from parley.bot import agents, handoff

    chat = next(_chat_ids)
    conv = f"telegram:{chat}"
    tg.post(text_update(chat, "AGENT"))
    agent = agents.create_user(f"tg{chat}", "agent-password", database_url=tg.stack.database_url)
    ticket = handoff.owner(conv, tg.stack.database_url)[1]
    handoff.claim_ticket(ticket.id, agent.id, tg.stack.database_url)
    return chat, conv, ticket.id, agent.id


def test_agent_replies_reach_the_customer_on_telegram(tg: TelegramStack) -> None:
    from parley.bot import handoff

    chat, _conv, ticket_id, agent_id = held_by_an_agent(tg)
    for i in range(3):
        handoff.agent_reply(ticket_id, agent_id, f"Agent reply {i}", tg.stack.database_url)
    assert wait_until(lambda: sum("Agent reply" in r for r in tg.replies(chat)) == 3)
    assert [r for r in tg.replies(chat) if "Agent reply" in r] == [
        "Agent reply 0", "Agent reply 1", "Agent reply 2"]
    # while the agent holds it, customer messages get no bot reply
    before = len(tg.replies(chat))
    tg.post(text_update(chat, "thanks, and my refund?"))
    time.sleep(0.5)
    assert len(tg.replies(chat)) == before


def test_a_trainees_reply_reaches_telegram_only_once_approved(tg: TelegramStack) -> None:
    """Held, then edited and approved by a supervisor: the customer gets the edit,
    once, and the approval-to-delivery time is on record."""
    from parley.bot import agents, handoff
    from parley.bot.handoff import approvals

    chat, conv, ticket_id, agent_id = held_by_an_agent(tg)
    db = tg.stack.database_url
    agents.set_trainee(agent_id, True, db)
    sup = agents.create_user(f"sup{chat}", "super-password", "supervisor", "Sue", db)
    written = handoff.agent_reply(ticket_id, agent_id, "Your refund is on it's way", db)
    assert written.held
    time.sleep(1.0)  # the outbox ticks every 0.5 s at most: it would have sent by now
    assert not any("refund is on" in r for r in tg.replies(chat))
    approvals.approve(written.id, sup.id, "Your refund is on its way", db)
    assert wait_until(lambda: "Your refund is on its way" in tg.replies(chat))
    time.sleep(0.5)
    assert [r for r in tg.replies(chat) if "refund is on" in r] == ["Your refund is on its way"]
    line = next(m for m in conversations.transcript(conv, db) if m.author == "agent")
    assert (line.agent_id, line.approved_by) == (agent_id, sup.id)
    timings = approvals.timings(db)
    assert timings.delivered >= 1 and timings.delivery_p50 is not None
    assert 0 <= timings.delivery_p50 < 30


def test_a_failed_agent_reply_is_marked_for_the_agent(tg: TelegramStack) -> None:
    from parley.bot import handoff

    chat, conv, ticket_id, agent_id = held_by_an_agent(tg)
    tg.fake.blocked_chats.add(chat)
    message_id = handoff.agent_reply(ticket_id, agent_id, "Are you there?",
                                     tg.stack.database_url).id

    def failed() -> str | None:
        lines = conversations.transcript(conv, tg.stack.database_url)
        return next((m.delivery_error for m in lines if m.id == message_id), None)

    assert wait_until(lambda: failed() is not None)
    assert "blocked by the user" in failed()
    assert tg.fake.token not in failed()


def test_the_token_never_reaches_the_logs(tg: TelegramStack) -> None:
    """Runs after the conversations above: the Rasa server's whole log is clean."""
    log = (tg.stack.log_dir / "rasa.log").read_text(errors="replace")
    assert "Rasa server is up and running" in log  # the log is the right one
    assert tg.fake.token not in log
    assert tg.fake.token.split(":")[1] not in log


def test_redaction_patterns() -> None:
    from parley.connectors.redact import redact

    assert redact("POST https://api.telegram.org/bot123:AbC-_x/sendMessage") == \
        "POST https://api.telegram.org/bot<redacted>/sendMessage"
    assert redact("GET /v19.0/me?access_token=EAAB123&x=1") == \
        "GET /v19.0/me?access_token=<redacted>&x=1"


def test_images_are_sent_as_photos() -> None:
    fake = FakeTelegram()
    server, api_url = serve(fake)
    try:
        async def send() -> None:
            client = telegram.Telegram(fake.token, api_url)
            await client.deliver("telegram:78", {"text": "Your parcel:",
                                                 "image": "https://x.example/p.jpg"})
            await client.shutdown()

        asyncio.run(send())
        assert [c.params["text"] for c in fake.sent()] == ["Your parcel:"]
        assert [c.params["photo"] for c in fake.sent("sendPhoto")] == ["https://x.example/p.jpg"]
    finally:
        stop(server)


def test_an_oversized_body_is_refused_before_it_is_read(tg: TelegramStack) -> None:
    """413 from the Content-Length alone: the server does not wait for 50 MB."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(tg.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall((f"POST {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 50000000\r\n"
                      f"X-Telegram-Bot-Api-Secret-Token: {SECRET}\r\n\r\n").encode())
        head = sock.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413")
    assert "the limit is" in head
    assert tg.post(text_update(next(_chat_ids), "hi")).status_code == 200  # still serving
