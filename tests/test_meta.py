"""Messenger, Instagram and WhatsApp through the real Rasa server, against a fake
Graph API on loopback that speaks Meta's wire format."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from parley.bot import agents, conversations, handoff, launcher
from parley.bot.conversations import Conversation
from parley.bot.storage import session_scope, utcnow
from parley.connectors import messenger, whatsapp
from parley.connectors.meta import generate_signature, window
from parley.connectors.requests import RejectedRequest
from tests.conftest import wait_settled, wait_until
from tests.fakes.graph_api import FakeGraph, serve
from tests.fakes.stack import start_stack
from tests.fakes.telegram_api import stop

APP_SECRET = "app-secret-1"
VERIFY = "verify-me"
APP_ID = "4242"
_ids = itertools.count(int(time.time()))
pytestmark = pytest.mark.servers


def messenger_event(kind: str, user: str, text: str, mid: str | None = None) -> dict:
    mid = mid or f"m_{next(_ids)}"
    obj = "page" if kind == "messenger" else "instagram"
    return {"object": obj, "entry": [{"id": "PAGE", "time": 1, "messaging": [{
        "sender": {"id": user}, "recipient": {"id": "PAGE"}, "timestamp": 1,
        "message": {"mid": mid, "text": text}}]}]}


def whatsapp_event(user: str, text: str, mid: str | None = None) -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PNID"},
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": user}],
            "messages": [{"from": user, "id": mid or f"wamid.{next(_ids)}",
                          "timestamp": "1", "type": "text", "text": {"body": text}}]}}]}]}


def event(kind: str, user: str, text: str, mid: str | None = None) -> dict:
    return whatsapp_event(user, text, mid) if kind == "whatsapp" else \
        messenger_event(kind, user, text, mid)


def reply_text(body: dict[str, Any]) -> str:
    if "message" in body:
        return body["message"].get("text", "")
    if body.get("type") == "text":
        return body["text"]["body"]
    if body.get("type") == "interactive":
        return body["interactive"]["body"]["text"]
    return ""


class MetaStack:
    def __init__(self, fake: FakeGraph, stack: launcher.Stack, graph_url: str) -> None:
        self.fake, self.stack, self.graph_url = fake, stack, graph_url

    def url(self, kind: str) -> str:
        return f"{self.stack.rasa_url}/webhooks/{kind}/webhook"

    def post(self, kind: str, payload: dict | bytes, secret: str | None = APP_SECRET
             ) -> httpx.Response:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Hub-Signature-256"] = generate_signature(raw, secret)
        resp = httpx.post(self.url(kind), content=raw, headers=headers, timeout=60)
        if resp.status_code == 200:
            wait_settled(self.stack.database_url)
        return resp

    def replies(self, user: str) -> list[str]:
        return [reply_text(b) for b in self.fake.sent_to(user)]


@pytest.fixture(scope="module")
def meta() -> Iterator[MetaStack]:
    fake = FakeGraph()
    server, graph_url = serve(fake)
    common = {"app_secret": APP_SECRET, "verify_token": VERIFY, "graph_base_url": graph_url}
    stack = start_stack("meta", {
        "parley.connectors.messenger.MessengerInput": {
            "page_access_token": fake.token, "app_id": APP_ID, **common},
        "parley.connectors.messenger.InstagramInput": {
            "page_access_token": fake.token, "app_id": APP_ID, **common},
        "parley.connectors.whatsapp.WhatsAppInput": {
            "access_token": fake.token, "phone_number_id": "PNID", **common},
    })
    try:
        yield MetaStack(fake, stack, graph_url)
    finally:
        stack.stop()
        stop(server)


PLATFORMS = ["messenger", "instagram", "whatsapp"]


def user_for(kind: str) -> str:
    return str(next(_ids)) if kind == "whatsapp" else f"PSID{next(_ids)}"


@pytest.mark.parametrize("kind", PLATFORMS)
def test_a_full_conversation(meta: MetaStack, kind: str) -> None:
    user = user_for(kind)
    assert meta.post(kind, event(kind, user, "hi")).status_code == 200
    assert "AGENT" in meta.replies(user)[-1]
    meta.post(kind, event(kind, user, "where is my order?"))
    # the question, then the reminder never to send card numbers (utter_privacy_reminder)
    assert any("order number" in r for r in meta.replies(user)[-2:])
    meta.post(kind, event(kind, user, "10234"))
    assert "DHL" in meta.replies(user)[-1]
    assert all(b.get("messaging_type", "RESPONSE") == "RESPONSE" and "tag" not in b
               for b in meta.fake.sent_to(user))  # bot replies never carry a tag
    lines = conversations.transcript(f"{kind}:{user}", meta.stack.database_url)
    turns = [author for author, _ in itertools.groupby(m.author for m in lines)]
    assert turns == ["customer", "bot"] * 3  # a turn may have several bot messages


@pytest.mark.parametrize("kind", PLATFORMS)
@pytest.mark.parametrize("secret", [None, "wrong-secret"])
def test_forged_or_missing_signature_is_401(meta: MetaStack, kind: str,
                                            secret: str | None) -> None:
    user = user_for(kind)
    assert meta.post(kind, event(kind, user, "hi"), secret=secret).status_code == 401
    assert meta.replies(user) == []
    assert conversations.transcript(f"{kind}:{user}", meta.stack.database_url) == []


@pytest.mark.parametrize("kind", PLATFORMS)
def test_subscription_challenge(meta: MetaStack, kind: str) -> None:
    ok = httpx.get(meta.url(kind), params={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                           "hub.challenge": "12345"})
    assert ok.status_code == 200 and ok.text == "12345"
    bad = httpx.get(meta.url(kind), params={"hub.mode": "subscribe",
                                            "hub.verify_token": "guess", "hub.challenge": "1"})
    assert bad.status_code == 403


@pytest.mark.parametrize("kind", PLATFORMS)
def test_redelivery_gets_no_second_reply(meta: MetaStack, kind: str) -> None:
    user = user_for(kind)
    payload = event(kind, user, "what are your opening hours")
    for _ in range(3):
        assert meta.post(kind, payload).status_code == 200
    assert len(meta.replies(user)) == 1


@pytest.mark.parametrize("kind", PLATFORMS)
@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{nope", 400, "not valid JSON"),
    (b'{"object": "page", "entry": {}}', 400, "entry: must be a list"),
    (b'{"object": "user", "entry": []}', 400, "object: must be"),
    (b'{"x": "' + b"y" * 70000 + b'"}', 413, "limit"),
])
def test_bad_bodies_get_a_clear_4xx(meta: MetaStack, kind: str, body: bytes, status: int,
                                    reason: str) -> None:
    if kind != "messenger" and b'"page"' in body:
        body = body.replace(b'"page"', b'"instagram"' if kind == "instagram"
                            else b'"whatsapp_business_account"')
    resp = meta.post(kind, body)
    assert resp.status_code == status and reason in resp.json()["error"]


def test_receipts_reads_and_statuses_are_ignored(meta: MetaStack) -> None:
    user = user_for("messenger")
    read = {"object": "page", "entry": [{"id": "PAGE", "time": 1, "messaging": [
        {"sender": {"id": user}, "recipient": {"id": "PAGE"}, "read": {"watermark": 1}},
        {"sender": {"id": user}, "recipient": {"id": "PAGE"}, "delivery": {"mids": ["m"]}}]}]}
    assert meta.post("messenger", read).status_code == 200
    wa_user = user_for("whatsapp")
    status = {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{
        "field": "messages", "value": {"statuses": [{"id": "wamid.x", "status": "read",
                                                     "recipient_id": wa_user}]}}]}]}
    assert meta.post("whatsapp", status).status_code == 200
    assert meta.replies(user) == [] and meta.replies(wa_user) == []


def test_every_event_in_a_batch_is_handled(meta: MetaStack) -> None:
    a, b = user_for("messenger"), user_for("messenger")
    batch = messenger_event("messenger", a, "hi")
    batch["entry"][0]["messaging"] += messenger_event("messenger", b, "hello")["entry"][0][
        "messaging"]
    batch["entry"].append(messenger_event("messenger", b, "do you take paypal")["entry"][0])
    assert meta.post("messenger", batch).status_code == 200
    assert len(meta.replies(a)) == 1 and len(meta.replies(b)) == 2


@pytest.mark.parametrize("kind", PLATFORMS)
def test_a_rate_limit_storm_is_survived_in_order(meta: MetaStack, kind: str) -> None:
    user = user_for(kind)
    meta.fake.fail_next(3, status=429)
    meta.fake.fail_next(1, status=500, code=2, message="Service temporarily unavailable")
    start = time.monotonic()
    meta.post(kind, event(kind, user, "hi"))
    meta.post(kind, event(kind, user, "how long does shipping take"))
    replies = meta.replies(user)
    assert len(replies) == 2 and "AGENT" in replies[0] and "Standard shipping" in replies[1]
    assert time.monotonic() - start >= 3.0  # Retry-After: 1 honoured three times
    assert meta.fake.failures == []


def test_messenger_quick_replies_round_trip(meta: MetaStack) -> None:
    user = user_for("messenger")
    meta.post("messenger", messenger_event("messenger", user, "xqzvk blorptangle frumious"))
    quick = meta.fake.sent_to(user)[-1]["message"]["quick_replies"]
    assert len(quick) == 2 and all(q["payload"].startswith("/") for q in quick)
    press = messenger_event("messenger", user, quick[0]["title"])
    press["entry"][0]["messaging"][0]["message"]["quick_reply"] = {"payload": "/shipping_times"}
    meta.post("messenger", press)
    assert "Standard shipping" in meta.replies(user)[-1]
    postback = {"object": "page", "entry": [{"id": "PAGE", "time": 1, "messaging": [{
        "sender": {"id": user}, "recipient": {"id": "PAGE"}, "timestamp": 2,
        "postback": {"title": "Returns", "payload": "/return_policy", "mid": f"m_{next(_ids)}"}}]}]}
    meta.post("messenger", postback)
    assert "30 days" in meta.replies(user)[-1]


def test_whatsapp_reply_buttons_round_trip(meta: MetaStack) -> None:
    user = user_for("whatsapp")
    meta.post("whatsapp", whatsapp_event(user, "xqzvk blorptangle frumious"))
    interactive = meta.fake.sent_to(user)[-1]["interactive"]
    assert interactive["type"] == "button" and len(interactive["action"]["buttons"]) == 2
    payload = interactive["action"]["buttons"][0]["reply"]["id"]
    press = whatsapp_event(user, "")
    press["entry"][0]["changes"][0]["value"]["messages"][0].update(
        {"type": "interactive", "interactive": {"type": "button_reply",
                                                "button_reply": {"id": "/shipping_times",
                                                                 "title": "Shipping"}}})
    del press["entry"][0]["changes"][0]["value"]["messages"][0]["text"]
    meta.post("whatsapp", press)
    assert payload.startswith("/")
    assert "Standard shipping" in meta.replies(user)[-1]


def test_whatsapp_more_than_three_buttons_become_a_list() -> None:
    buttons = [{"title": f"Option {i}", "payload": f"/o{i}"} for i in range(12)]
    [body] = whatsapp.payloads("155", {"text": "Pick one", "buttons": buttons})
    assert body["interactive"]["type"] == "list"
    rows = body["interactive"]["action"]["sections"][0]["rows"]
    assert len(rows) == 10 and all(len(r["title"]) <= 24 for r in rows)
    [three] = whatsapp.payloads("155", {"text": "Pick", "buttons": buttons[:3]})
    assert three["interactive"]["type"] == "button"
    long_title = whatsapp.payloads("1", {"text": "x", "buttons": [
        {"title": "A very long button title indeed", "payload": "/x"}]})
    assert len(long_title[0]["interactive"]["action"]["buttons"][0]["reply"]["title"]) <= 20


def test_echo_from_metas_inbox_makes_the_bot_quiet(meta: MetaStack) -> None:
    user = user_for("messenger")
    meta.post("messenger", messenger_event("messenger", user, "hi"))
    echo = {"object": "page", "entry": [{"id": "PAGE", "time": 1, "messaging": [{
        "sender": {"id": "PAGE"}, "recipient": {"id": user}, "timestamp": 3,
        "message": {"mid": f"m_{next(_ids)}", "is_echo": True, "text": "Hi, Sam from the shop"}}]}]}
    own_echo = json.loads(json.dumps(echo))
    own_echo["entry"][0]["messaging"][0]["message"].update(
        {"app_id": int(APP_ID), "text": "bot text", "mid": f"m_{next(_ids)}"})
    meta.post("messenger", own_echo)  # our own message coming back: ignored
    assert handoff.owner(f"messenger:{user}", meta.stack.database_url)[0] == "bot"
    meta.post("messenger", echo)
    assert handoff.owner(f"messenger:{user}", meta.stack.database_url)[0] == "assigned"
    before = len(meta.replies(user))
    meta.post("messenger", messenger_event("messenger", user, "where is my order?"))
    assert len(meta.replies(user)) == before  # the bot stays quiet
    lines = [(m.author, m.text) for m in conversations.transcript(f"messenger:{user}",
                                                                  meta.stack.database_url)]
    assert ("agent", "Hi, Sam from the shop") in lines
    assert ("customer", "where is my order?") in lines


def test_standby_messages_are_human_owned(meta: MetaStack) -> None:
    user = user_for("messenger")
    standby = messenger_event("messenger", user, "hello?")
    standby["entry"][0]["standby"] = standby["entry"][0].pop("messaging")
    meta.post("messenger", standby)
    assert meta.replies(user) == []
    assert handoff.owner(f"messenger:{user}", meta.stack.database_url)[0] == "assigned"


def held(meta: MetaStack, kind: str, user: str, hours_ago: float) -> tuple[int, int, str]:
    conv = f"{kind}:{user}"
    meta.post(kind, event(kind, user, "AGENT"))
    agent = agents.create_user(f"a{next(_ids)}", "agent-password",
                               database_url=meta.stack.database_url)
    ticket = handoff.owner(conv, meta.stack.database_url)[1]
    handoff.claim_ticket(ticket.id, agent.id, meta.stack.database_url)
    with session_scope(meta.stack.database_url) as s:
        s.execute(update(Conversation).where(Conversation.id == conv).values(
            last_customer_at=utcnow() - timedelta(hours=hours_ago)))
    return ticket.id, agent.id, conv


def delivery_error(meta: MetaStack, conv: str, message_id: int) -> str | None:
    lines = conversations.transcript(conv, meta.stack.database_url)
    return next((m.delivery_error for m in lines if m.id == message_id), None)


def test_messenger_late_human_reply_uses_the_human_agent_tag(meta: MetaStack) -> None:
    user = user_for("messenger")
    ticket, agent, _conv = held(meta, "messenger", user, hours_ago=30)
    handoff.agent_reply(ticket, agent, "Sorry for the wait!", meta.stack.database_url)
    assert wait_until(lambda: "Sorry for the wait!" in meta.replies(user))
    sent = next(b for b in meta.fake.sent_to(user) if reply_text(b) == "Sorry for the wait!")
    assert sent["messaging_type"] == "MESSAGE_TAG" and sent["tag"] == "HUMAN_AGENT"


def test_messenger_human_reply_after_seven_days_is_refused(meta: MetaStack) -> None:
    user = user_for("messenger")
    ticket, agent, conv = held(meta, "messenger", user, hours_ago=24 * 8)
    mid = handoff.agent_reply(ticket, agent, "Still there?", meta.stack.database_url).id
    assert wait_until(lambda: delivery_error(meta, conv, mid) is not None)
    assert "7 days" in delivery_error(meta, conv, mid)
    assert "Still there?" not in meta.replies(user)


def test_whatsapp_outside_the_window_needs_a_template(meta: MetaStack) -> None:
    user = user_for("whatsapp")
    ticket, agent, conv = held(meta, "whatsapp", user, hours_ago=25)
    mid = handoff.agent_reply(ticket, agent, "Hello again", meta.stack.database_url).id
    assert wait_until(lambda: delivery_error(meta, conv, mid) is not None)
    assert "template" in delivery_error(meta, conv, mid)
    inside_user = user_for("whatsapp")
    ticket2, agent2, _ = held(meta, "whatsapp", inside_user, hours_ago=2)
    handoff.agent_reply(ticket2, agent2, "Hi from the team", meta.stack.database_url)
    assert wait_until(lambda: "Hi from the team" in meta.replies(inside_user))


def test_the_token_never_reaches_the_logs(meta: MetaStack) -> None:
    log = (meta.stack.log_dir / "rasa.log").read_text(errors="replace")
    assert "Rasa server is up and running" in log
    assert meta.fake.token not in log


def test_window_rules() -> None:
    now = utcnow()
    assert window(now - timedelta(hours=23), now, human=False, human_agent_tag=True).allowed
    bot_late = window(now - timedelta(hours=25), now, human=False, human_agent_tag=True)
    assert not bot_late.allowed and bot_late.tag is None
    assert window(now - timedelta(days=6), now, True, True).tag == "HUMAN_AGENT"
    assert not window(now - timedelta(hours=25), now, True, human_agent_tag=False).allowed
    assert not window(None, now, True, True).allowed


def test_parse_units() -> None:
    with pytest.raises(RejectedRequest):
        messenger.parse({"object": "page", "entry": [{"messaging": [{"message": {}}]}]},
                        messenger.Platform)
    with pytest.raises(RejectedRequest):
        whatsapp.parse({"object": "whatsapp_business_account", "entry": [{"changes": [{
            "field": "messages", "value": {"messages": [{"type": "text"}]}}]}]})
    [item] = whatsapp.parse(whatsapp_event("351910000000", "olá"))
    assert item.conversation_id == "whatsapp:351910000000" and item.display_name == "Kerry"


def test_credentials_are_required() -> None:
    with pytest.raises(ValueError, match="app_secret"):
        messenger.MessengerInput.from_credentials({"page_access_token": "x",
                                                   "verify_token": "y"})
    with pytest.raises(ValueError, match="phone_number_id"):
        whatsapp.WhatsAppInput.from_credentials({"access_token": "x", "app_secret": "s",
                                                 "verify_token": "v"})


def test_images_become_media_messages() -> None:
    meta = messenger.Meta(messenger.Platform, "token")
    bodies = meta.payloads("PSID1", {"text": "Here it is", "image": "https://x.example/a.png"},
                           tag=None)
    assert bodies[0]["message"] == {"text": "Here it is"}
    assert bodies[1]["message"]["attachment"] == {
        "type": "image", "payload": {"url": "https://x.example/a.png", "is_reusable": True}}
    wa = whatsapp.payloads("155", {"text": "Here", "image": "https://x.example/a.png"})
    assert wa[-1] == {"messaging_product": "whatsapp", "recipient_type": "individual",
                      "to": "155", "type": "image", "image": {"link": "https://x.example/a.png"}}


def test_messenger_splits_at_2000_and_instagram_at_1000() -> None:
    text = "word " * 900
    fb = messenger.Meta(messenger.Platform, "t").payloads("P", {"text": text}, None)
    ig = messenger.Meta(messenger.InstagramPlatform, "t").payloads("P", {"text": text}, None)
    assert all(len(b["message"]["text"]) <= 2000 for b in fb) and len(fb) == 3
    assert all(len(b["message"]["text"]) <= 1000 for b in ig) and len(ig) == 5
