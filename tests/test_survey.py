"""The satisfaction survey: unit flows on SQLite and PostgreSQL through the gate's
path (stored, claimed, routed, the bot's replies recorded), the desk's view of it,
and end to end over Telegram and WhatsApp (and a Messenger quick reply) through the
real Rasa server and the fake platforms, buttons pressed as the platforms send them."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select, update

from parley.bot import agents, conversations, handoff, inbox, storage, support_hours, survey
from parley.bot.conversations import Conversation, Message
from parley.bot.storage import session_scope, utcnow
from parley.bot.survey import Survey, SurveyAnswer
from parley.connectors import gate, whatsapp
from parley.connectors.base import DeliveryFailed
from tests import REPO_ROOT as PROJECT_ROOT
from tests.conftest import wait_settled, wait_until
from tests.fakes.graph_api import FakeGraph
from tests.fakes.graph_api import serve as serve_graph
from tests.fakes.stack import free_port, start_stack
from tests.fakes.telegram_api import FakeTelegram, stop
from tests.fakes.telegram_api import serve as serve_telegram

OWNER = "survey-test-worker"
_ids = itertools.count(int(time.time()))


@pytest.fixture(autouse=True)
def open_hours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hours.yml"
    path.write_text(yaml.safe_dump({"timezone": "UTC", "weekly": dict.fromkeys(
        support_hours.DAYS, "00:00-24:00")}))
    monkeypatch.setenv("PARLEY_SUPPORT_HOURS", str(path))


def accept(conv: str, text: str, url: str, turn: bool = True
           ) -> tuple[str, list[dict], inbox.Pending]:
    """Store, claim, begin and route one message, as a channel worker does:
    (route, what the gate answered, the message). A message for the bot gets a
    turn that answers nothing, unless `turn` is False (the caller answers)."""
    message_id = inbox.store(conv, text, platform_message_id=f"p{next(_ids)}",
                             display_name="Maria Lopes", database_url=url)
    assert message_id is not None
    assert conv in inbox.claim(conv.split(":")[0], OWNER, 30, 100, url)
    pending = inbox.begin(conv, OWNER, 30, url)
    assert pending is not None and pending.id == message_id
    decision = gate.route(pending, OWNER, "sync", url)
    if decision.route == "bot" and turn:
        assert gate.finish_bot(pending, OWNER, [], "sync", url)
    if decision.route != "bot" or turn:
        inbox.release(conv, OWNER, url)
    return decision.route, inbox.replies_to(message_id, url), pending


def bot_turn(conv: str, text: str, replies: list[dict], url: str) -> list[dict]:
    """A customer message the bot answers with `replies`; returns what the gate
    added after them (a survey's first question)."""
    route, _said, pending = accept(conv, text, url, turn=False)
    assert route == "bot"
    assert gate.finish_bot(pending, OWNER, replies, "sync", url)
    inbox.release(conv, OWNER, url)
    return inbox.replies_to(pending.id, url)[len(replies):]


def resolved(conv: str, url: str, name: str = "Ana") -> tuple[int, int]:
    """A ticket a person held and resolved from the desk: (ticket, agent)."""
    agent = agents.create_user(f"a{next(_ids)}", "agent-password", display_name=name,
                               database_url=url)
    ticket = handoff.escalate(conv, "keyword", database_url=url).ticket
    handoff.claim_ticket(ticket.id, agent.id, url)
    handoff.resolve(ticket.id, agent.id, url, agent_name=name)
    return ticket.id, agent.id


def surveys(url: str, conv: str) -> list[Survey]:
    with session_scope(url) as s:
        rows = s.execute(select(Survey).where(Survey.conversation_id == conv)
                         .order_by(Survey.id)).scalars().all()
        s.expunge_all()
        return list(rows)


def answers(url: str, survey_id: int) -> dict[str, int | str | None]:
    with session_scope(url) as s:
        rows = s.execute(select(SurveyAnswer).where(SurveyAnswer.survey_id == survey_id)
                         .order_by(SurveyAnswer.id)).scalars().all()
        return {a.question: a.score if a.score is not None else a.text for a in rows}


def pushed(conv: str, url: str) -> list[conversations.TranscriptLine]:
    return [m for m in conversations.transcript(conv, url) if m.author == "system"
            and m.text and not m.text.startswith("Handed to the queue")]


def payloads(reply: dict) -> list[str]:
    return [b["payload"] for b in reply.get("buttons") or []]


# -- the flow, on SQLite and PostgreSQL ----------------------------------------------------


def test_a_person_handled_survey_asks_every_question_in_order(any_db: str) -> None:
    conv = f"telegram:{next(_ids)}"
    ticket_id, agent_id = resolved(conv, any_db)
    notice, first = pushed(conv, any_db)  # queued together when the agent resolved
    assert "Ana has handed you back" in notice.text
    assert first.text.startswith("How happy are you with the answer")
    assert payloads(first.payload) == ["1", "2", "3", "4", "5"]
    assert first.payload["buttons"][4]["title"] == "😀 5 Excellent"

    route, said, pending = accept(conv, "4", any_db)
    assert route == "handled" and "the time it took" in said[0]["text"]
    assert inbox.state_of(pending.id, any_db) == "answered"
    route, said, _ = accept(conv, " 5/5 ", any_db)
    assert route == "handled" and said[0]["text"].startswith("How well did Ana help you?")
    route, said, _ = accept(conv, "3", any_db)
    assert route == "handled" and "What should we improve?" in said[0]["text"]
    assert payloads(said[0]) == ["skip"]
    route, said, _ = accept(conv, "Answer faster on weekends, please.", any_db)
    assert route == "handled" and "Thank you for your feedback" in said[0]["text"]

    [done] = surveys(any_db, conv)
    assert (done.state, done.ticket_id, done.agent_id, done.position) == (
        "done", ticket_id, agent_id, 4)
    assert done.questions == ["answer", "time", "agent", "improve"]
    assert done.finished_at is not None and done.window_until is None  # Telegram: no window
    assert answers(any_db, done.id) == {"answer": 4, "time": 5, "agent": 3,
                                        "improve": "Answer faster on weekends, please."}
    # The answers sit on the ticket, and the survey is over: the bot has the next message.
    with session_scope(any_db) as s:
        tickets = s.execute(select(Message.ticket_id).where(
            Message.conversation_id == conv, Message.author == "customer")).scalars().all()
    assert set(tickets) == {ticket_id}
    assert accept(conv, "4", any_db)[0] == "bot"
    [view] = survey.for_ticket(ticket_id, any_db)
    assert view["state"] == "done" and [a["question"] for a in view["answers"]] == [
        "answer", "time", "agent", "improve"]


def test_a_bot_only_survey_follows_the_goodbye_once_a_day(any_db: str) -> None:
    conv = f"telegram:{next(_ids)}"
    assert bot_turn(conv, "bye", [{"text": "Bye!", "utter_action": "utter_goodbye"}],
                    any_db) == []  # one message is no conversation to rate
    assert bot_turn(conv, "do you take paypal", [
        {"text": "We accept PayPal", "utter_action": "utter_payment_methods"}], any_db) == []
    [question] = bot_turn(conv, "thanks, bye", [{"text": "Bye!",
                                                 "utter_action": "utter_goodbye"}], any_db)
    assert question["text"].startswith("How happy are you with the answer")
    route, said, _ = accept(conv, "5", any_db)
    assert route == "handled" and "the time it took" in said[0]["text"]
    route, said, _ = accept(conv, "2 out of 5", any_db)
    # No agent question: nobody but the bot took part.
    assert route == "handled" and "What should we improve?" in said[0]["text"]
    route, said, _ = accept(conv, "skip", any_db)  # the skip button's payload
    assert route == "handled" and "Thank you" in said[0]["text"]
    [done] = surveys(any_db, conv)
    assert (done.state, done.ticket_id, done.agent_id) == ("done", None, None)
    assert done.questions == ["answer", "time", "improve"]
    assert answers(any_db, done.id) == {"answer": 5, "time": 2}
    # At most one a day: another goodbye asks nothing.
    assert bot_turn(conv, "bye again", [{"text": "Bye!", "utter_action": "utter_goodbye"}],
                    any_db) == []
    assert len(surveys(any_db, conv)) == 1


def test_no_bot_only_survey_after_a_recent_handoff(any_db: str) -> None:
    conv = f"webchat:{next(_ids)}"
    ticket = handoff.escalate(conv, "keyword", database_url=any_db).ticket
    handoff.abandon(conv, "customer typed BOT", database_url=any_db)
    assert handoff.get_ticket(ticket.id, any_db).status == "abandoned"
    bot_turn(conv, "what are your hours", [{"text": "9 to 6"}], any_db)
    assert bot_turn(conv, "bye", [{"text": "Bye!", "utter_action": "utter_goodbye"}],
                    any_db) == []
    assert surveys(any_db, conv) == []


def test_other_text_stops_the_survey_and_goes_to_the_bot(any_db: str) -> None:
    conv = f"telegram:{next(_ids)}"
    resolved(conv, any_db)
    route, said, _ = accept(conv, "skip", any_db)  # a scored question skipped: the next one
    assert route == "handled" and "the time it took" in said[0]["text"]
    route, said, _ = accept(conv, "where is my order 10234?", any_db)
    assert (route, said) == ("bot", [])
    [stopped] = surveys(any_db, conv)
    assert stopped.state == "stopped" and stopped.finished_at is not None
    assert answers(any_db, stopped.id) == {}
    assert accept(conv, "4", any_db)[0] == "bot"  # nothing is asking any more


def test_agent_on_the_free_text_question_is_a_request_not_feedback(any_db: str) -> None:
    conv = f"telegram:{next(_ids)}"
    resolved(conv, any_db)
    for score in ("1", "2", "3"):
        assert accept(conv, score, any_db)[0] == "handled"
    assert accept(conv, "AGENT", any_db)[0] == "bot"  # the bot hands off as always
    [stopped] = surveys(any_db, conv)
    assert stopped.state == "stopped" and "improve" not in answers(any_db, stopped.id)


def test_a_new_handoff_stops_the_survey(any_db: str) -> None:
    conv = f"telegram:{next(_ids)}"
    resolved(conv, any_db)
    handoff.escalate(conv, "external", database_url=any_db)  # e.g. someone in Meta's inbox
    route, _said, _ = accept(conv, "4", any_db)
    assert route == "queue"  # the score is a message for the people now
    [stopped] = surveys(any_db, conv)
    assert stopped.state == "stopped" and answers(any_db, stopped.id) == {}


def test_the_survey_is_configured_per_deployment(any_db: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def project(questions: object) -> None:
        root = tmp_path / f"project-{next(_ids)}"
        root.mkdir()
        (root / "parley.yml").write_text(yaml.safe_dump({
            "survey": questions, "replies": str(PROJECT_ROOT / "data" / "responses.yml")}))
        monkeypatch.setenv("PARLEY_PROJECT", str(root))

    project("off")
    conv = f"telegram:{next(_ids)}"
    resolved(conv, any_db)
    assert [m.text for m in pushed(conv, any_db)] == [
        "Ana has handed you back to me, the bot. Ask me anything, or type AGENT for a person "
        "again."]
    bot_turn(conv, "hi", [{"text": "Hi"}], any_db)
    assert bot_turn(conv, "bye", [{"text": "Bye", "utter_action": "utter_goodbye"}],
                    any_db) == []
    assert surveys(any_db, conv) == [] and accept(conv, "5", any_db)[0] == "bot"

    project(["improve", "agent"])  # a deployment's own choice and order
    other = f"telegram:{next(_ids)}"
    resolved(other, any_db, name="Rui")
    assert "What should we improve?" in pushed(other, any_db)[-1].text
    route, said, _ = accept(other, "Nothing, all good", any_db)
    assert route == "handled" and said[0]["text"].startswith("How well did Rui help you?")
    route, said, _ = accept(other, "5", any_db)
    assert "Thank you" in said[0]["text"]
    [done] = surveys(any_db, other)
    assert answers(any_db, done.id) == {"improve": "Nothing, all good", "agent": 5}
    # A bot-only conversation there is asked what is left without the agent question.
    third = f"telegram:{next(_ids)}"
    bot_turn(third, "hi", [{"text": "Hi"}], any_db)
    bot_turn(third, "bye", [{"text": "Bye", "utter_action": "utter_goodbye"}], any_db)
    assert [s.questions for s in surveys(any_db, third)] == [["improve"]]


def test_the_survey_speaks_the_conversations_language(any_db: str) -> None:
    conv = f"telegram:{next(_ids)}"
    accept(conv, "olá", any_db)
    with session_scope(any_db) as s:
        s.execute(update(Conversation).where(Conversation.id == conv).values(
            language="pt", language_source="agent"))
    resolved(conv, any_db)
    question = pushed(conv, any_db)[-1]
    assert question.text.startswith("Qual a sua satisfação com a resposta")
    assert question.payload["buttons"][0]["title"] == "😞 1 Muito mau"
    assert surveys(any_db, conv)[0].language == "pt"


def test_no_question_once_the_window_has_closed(any_db: str) -> None:
    """WhatsApp: 24 hours after the customer's last message a survey is expired, not
    sent; inside the window an answer after it closed is not taken."""
    late = f"whatsapp:{next(_ids)}"
    accept(late, "AGENT", any_db)
    with session_scope(any_db) as s:
        s.execute(update(Conversation).where(Conversation.id == late).values(
            last_customer_at=utcnow() - timedelta(hours=25)))
    resolved(late, any_db)
    [expired] = surveys(any_db, late)
    assert expired.state == "expired" and expired.finished_at is not None
    assert [m.text for m in pushed(late, any_db)] == [
        "Ana has handed you back to me, the bot. Ask me anything, or type AGENT for a person "
        "again."]  # no question queued

    inside = f"whatsapp:{next(_ids)}"
    accept(inside, "AGENT", any_db)
    resolved(inside, any_db)
    [asking] = surveys(any_db, inside)
    assert asking.state == "asking" and asking.window_until is not None
    assert pushed(inside, any_db)[-1].text.startswith("How happy are you with the answer")
    with session_scope(any_db) as s:  # as if the score came a day later
        s.execute(update(Survey).where(Survey.id == asking.id).values(
            window_until=utcnow() - timedelta(minutes=1)))
    assert accept(inside, "5", any_db)[0] == "bot"
    [late_answer] = surveys(any_db, inside)
    assert late_answer.state == "expired" and answers(any_db, late_answer.id) == {}


def test_a_send_refused_for_the_window_expires_the_survey(db_url: str) -> None:
    """The connector's own window check (the send time, not the queue time) ends the
    survey too: its later questions could not go out either."""
    conv = f"whatsapp:{next(_ids)}"
    accept(conv, "AGENT", db_url)
    resolved(conv, db_url)
    with session_scope(db_url) as s:
        s.execute(update(Conversation).where(Conversation.id == conv).values(
            last_customer_at=utcnow() - timedelta(hours=30)))
    question = pushed(conv, db_url)[-1]
    client = whatsapp.WhatsApp("token", "PNID", "http://127.0.0.1:9")  # never reached

    async def send() -> None:
        await client.deliver(conv, {"text": question.text, **question.payload})

    with pytest.raises(DeliveryFailed, match="template"):
        asyncio.run(send())
    assert surveys(db_url, conv)[0].state == "expired"


@pytest.mark.parametrize(("text", "score"), [
    ("4", 4), ("4/5", 4), (" 4 / 5 ", 4), ("5 out of 5", 5), ("3 de 5", 3), ("2 stars", 2),
    ("1.", 1), ("5!", 5), ("45", None), ("0", None), ("6", None), ("4 please call me", None),
    ("four", None), ("/survey", None)])
def test_scores_typed_or_pressed(text: str, score: int | None) -> None:
    found = survey.SCORE.fullmatch(text)
    assert (int(found.group(1)) if found else None) == score


@pytest.mark.parametrize(("text", "skip"), [
    ("skip", True), ("Skip!", True), ("no thanks", True), ("Saltar", True), ("não", True),
    ("nothing", True), ("no, the delivery was late", False), ("skip the queue", False)])
def test_skip_words(text: str, skip: bool) -> None:
    assert bool(survey.SKIP.fullmatch(text)) is skip


# -- the desk ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    state = tmp_path_factory.mktemp("survey-desk")
    db = f"sqlite:///{state / 'parley.db'}"
    storage.create_schema(db)
    agents.create_user("ana", "ana-password", "agent", "Ana", db)
    agents.create_user("wes", "wes-password", "writer", "Wes", db)
    port = free_port()
    with (state / "desk.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "parley.bot.desk", "--port", str(port)],
                                cwd=PROJECT_ROOT, env={**os.environ, "PARLEY_DATABASE_URL": db},
                                stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(up, 30), (state / "desk.log").read_text()
        yield url, db
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def login(url: str, username: str, password: str) -> Iterator[httpx.Client]:
    """A desk client logged in through the login form."""
    with httpx.Client(base_url=url, timeout=10) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        assert client.post("/login", data={"csrf": csrf, "username": username,
                                           "password": password}).status_code == 303
        yield client


def test_the_desk_shows_the_tickets_survey(desk: tuple[str, str]) -> None:
    url, db = desk
    conv = f"telegram:{next(_ids)}"
    ticket_id, agent_id = resolved(conv, db)
    for text in ("5", "4", "2", "The wait was long"):
        assert accept(conv, text, db)[0] == "handled"
    with login(url, "ana", "ana-password") as ana:
        body = ana.get(f"/api/tickets/{ticket_id}/survey").json()
        assert body["ticket_id"] == ticket_id
        [shown] = body["surveys"]
        assert (shown["state"], shown["agent_id"]) == ("done", agent_id)
        assert [(a["question"], a["score"], a["text"]) for a in shown["answers"]] == [
            ("answer", 5, None), ("time", 4, None), ("agent", 2, None),
            ("improve", None, "The wait was long")]
        assert ana.get("/api/tickets/999999/survey").status_code == 404
        unresolved = handoff.escalate(f"telegram:{next(_ids)}", "keyword", database_url=db)
        assert ana.get(f"/api/tickets/{unresolved.ticket.id}/survey").json()["surveys"] == []
    with login(url, "wes", "wes-password") as wes:  # writers do not see tickets
        assert wes.get(f"/api/tickets/{ticket_id}/survey").status_code == 403
    assert httpx.get(f"{url}/api/tickets/{ticket_id}/survey").status_code == 401


# -- end to end: Telegram ------------------------------------------------------------------

SECRET = "survey-secret"


class Telegram:
    def __init__(self) -> None:
        self.fake = FakeTelegram()
        self.server, api_url = serve_telegram(self.fake)
        self.stack = start_stack("survey-tg", {"parley.connectors.telegram.TelegramInput": {
            "access_token": self.fake.token, "webhook_secret": SECRET, "api_base_url": api_url}})
        self.url = f"{self.stack.rasa_url}/webhooks/telegram/webhook"

    def post(self, update: dict) -> None:
        resp = httpx.post(self.url, json=update, timeout=60,
                          headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
        assert resp.status_code == 200, resp.text
        wait_settled(self.stack.database_url)

    def say(self, chat: int, text: str) -> None:
        update_id = next(_ids)
        self.post({"update_id": update_id, "message": {
            "message_id": update_id % 2**31, "date": int(time.time()), "text": text,
            "chat": {"id": chat, "type": "private", "first_name": "Maria"},
            "from": {"id": chat, "is_bot": False, "first_name": "Maria"}}})

    def press(self, chat: int, title: str) -> None:
        self.post(self.fake.press(chat, title, next(_ids)))

    def texts(self, chat: int) -> list[str]:
        return [c.params.get("text", "") for c in self.fake.sent()
                if int(c.params["chat_id"]) == chat]


@pytest.fixture(scope="module")
def tg() -> Iterator[Telegram]:
    platform = Telegram()
    try:
        yield platform
    finally:
        platform.stack.stop()
        stop(platform.server)


@pytest.mark.servers
def test_telegram_survey_with_inline_buttons(tg: Telegram) -> None:
    chat = next(_ids) % 10**9
    conv = f"telegram:{chat}"
    db = tg.stack.database_url
    tg.say(chat, "AGENT")
    assert "in the queue" in tg.texts(chat)[-1]
    agent = agents.create_user(f"t{chat}", "agent-password", display_name="Ana", database_url=db)
    ticket = handoff.owner(conv, db)[1]
    handoff.claim_ticket(ticket.id, agent.id, db)
    handoff.resolve(ticket.id, agent.id, db, agent_name="Ana")
    wait_settled(db)
    assert "Ana has handed you back" in tg.texts(chat)[-2]
    call, buttons = tg.fake.keyboard(chat)
    assert call.params["text"].startswith("How happy are you with the answer")
    assert [b["callback_data"] for b in buttons] == ["1", "2", "3", "4", "5"]

    acks = len(tg.fake.sent("answerCallbackQuery"))
    tg.press(chat, "4 Good")
    assert "the time it took" in tg.texts(chat)[-1]
    tg.press(chat, "5 Excellent")
    assert tg.texts(chat)[-1].startswith("How well did Ana help you?")
    tg.press(chat, "3 OK")
    assert "What should we improve?" in tg.texts(chat)[-1]
    assert [b["text"] for b in tg.fake.keyboard(chat)[1]] == ["Skip"]
    tg.say(chat, "Tell me the refund date up front")
    assert "Thank you for your feedback" in tg.texts(chat)[-1]
    # Every press was answered (Telegram's spinner stops), though the bot saw none of them.
    assert wait_until(lambda: len(tg.fake.sent("answerCallbackQuery")) == acks + 3)

    [done] = surveys(db, conv)
    assert (done.state, done.ticket_id, done.agent_id) == ("done", ticket.id, agent.id)
    assert answers(db, done.id) == {"answer": 4, "time": 5, "agent": 3,
                                    "improve": "Tell me the refund date up front"}
    lines = [(m.author, m.text) for m in conversations.transcript(conv, db)]
    assert ("customer", "4") in lines and ("customer", "5") in lines


@pytest.mark.servers
def test_telegram_bot_only_survey_after_goodbye(tg: Telegram) -> None:
    chat = next(_ids) % 10**9
    conv = f"telegram:{chat}"
    tg.say(chat, "do you take paypal")
    assert "PayPal" in tg.texts(chat)[-1]
    tg.say(chat, "bye")
    texts = tg.texts(chat)
    assert "Bye" in texts[-2] and texts[-1].startswith("How happy are you with the answer")
    tg.press(chat, "2 Poor")
    tg.press(chat, "1 Very poor")
    assert "What should we improve?" in tg.texts(chat)[-1]
    tg.press(chat, "Skip")
    assert "Thank you for your feedback" in tg.texts(chat)[-1]
    [done] = surveys(tg.stack.database_url, conv)
    assert (done.state, done.ticket_id) == ("done", None)
    assert answers(tg.stack.database_url, done.id) == {"answer": 2, "time": 1}


# -- end to end: WhatsApp and Messenger ------------------------------------------------------

APP_SECRET = "survey-app-secret"


class Meta:
    def __init__(self) -> None:
        self.fake = FakeGraph()
        self.server, graph_url = serve_graph(self.fake)
        common = {"app_secret": APP_SECRET, "verify_token": "v", "graph_base_url": graph_url}
        self.stack = start_stack("survey-meta", {
            "parley.connectors.whatsapp.WhatsAppInput": {
                "access_token": self.fake.token, "phone_number_id": "PNID", **common},
            "parley.connectors.messenger.MessengerInput": {
                "page_access_token": self.fake.token, "app_id": "4242", **common}})

    def post(self, kind: str, payload: dict) -> None:
        from parley.connectors.meta import generate_signature

        raw = json.dumps(payload).encode()
        resp = httpx.post(f"{self.stack.rasa_url}/webhooks/{kind}/webhook", content=raw,
                          headers={"Content-Type": "application/json",
                                   "X-Hub-Signature-256": generate_signature(raw, APP_SECRET)},
                          timeout=60)
        assert resp.status_code == 200, resp.text
        wait_settled(self.stack.database_url)

    def whatsapp_says(self, user: str, text: str) -> None:
        self.post("whatsapp", {"object": "whatsapp_business_account", "entry": [{
            "id": "WABA", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PNID"},
                "contacts": [{"profile": {"name": "Kerry"}, "wa_id": user}],
                "messages": [{"from": user, "id": f"wamid.{next(_ids)}", "timestamp": "1",
                              "type": "text", "text": {"body": text}}]}}]}]})

    def messenger_says(self, user: str, text: str) -> None:
        self.post("messenger", {"object": "page", "entry": [{"id": "PAGE", "time": 1,
                                                             "messaging": [{
            "sender": {"id": user}, "recipient": {"id": "PAGE"}, "timestamp": 1,
            "message": {"mid": f"m_{next(_ids)}", "text": text}}]}]})

    def sent(self, user: str) -> list[dict]:
        return self.fake.sent_to(user)

    def held_then_resolved(self, conv: str) -> tuple[int, int]:
        db = self.stack.database_url
        agent = agents.create_user(f"m{next(_ids)}", "agent-password", display_name="Ana",
                                   database_url=db)
        ticket = handoff.owner(conv, db)[1]
        handoff.claim_ticket(ticket.id, agent.id, db)
        return ticket.id, agent.id


def text_of(body: dict) -> str:
    if body.get("type") == "interactive":
        return body["interactive"]["body"]["text"]
    if body.get("type") == "text":
        return body["text"]["body"]
    return (body.get("message") or {}).get("text", "")


@pytest.fixture(scope="module")
def meta() -> Iterator[Meta]:
    platform = Meta()
    try:
        yield platform
    finally:
        platform.stack.stop()
        stop(platform.server)


@pytest.mark.servers
def test_whatsapp_survey_with_a_list_and_a_reply_button(meta: Meta) -> None:
    user = str(next(_ids))
    conv = f"whatsapp:{user}"
    db = meta.stack.database_url
    meta.whatsapp_says(user, "AGENT")
    ticket_id, agent_id = meta.held_then_resolved(conv)
    handoff.resolve(ticket_id, agent_id, db, agent_name="Ana")
    wait_settled(db)
    first = meta.sent(user)[-1]
    assert text_of(meta.sent(user)[-2]).startswith("Ana has handed you back")
    # Five options are more than WhatsApp's three reply buttons: a list of five rows.
    assert first["type"] == "interactive" and first["interactive"]["type"] == "list"
    rows = first["interactive"]["action"]["sections"][0]["rows"]
    assert [r["id"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert text_of(first).startswith("How happy are you with the answer")

    meta.post("whatsapp", meta.fake.whatsapp_choice(user, "5 Excellent", f"wamid.{next(_ids)}"))
    assert "the time it took" in text_of(meta.sent(user)[-1])
    meta.post("whatsapp", meta.fake.whatsapp_choice(user, "4 Good", f"wamid.{next(_ids)}"))
    assert text_of(meta.sent(user)[-1]).startswith("How well did Ana help you?")
    meta.post("whatsapp", meta.fake.whatsapp_choice(user, "5 Excellent", f"wamid.{next(_ids)}"))
    improve = meta.sent(user)[-1]
    assert improve["interactive"]["type"] == "button"  # one Skip button
    assert [b["reply"]["title"] for b in improve["interactive"]["action"]["buttons"]] == ["Skip"]
    meta.post("whatsapp", meta.fake.whatsapp_choice(user, "Skip", f"wamid.{next(_ids)}"))
    assert "Thank you for your feedback" in text_of(meta.sent(user)[-1])

    [done] = surveys(db, conv)
    assert (done.state, done.ticket_id, done.agent_id) == ("done", ticket_id, agent_id)
    assert done.window_until is not None
    assert answers(db, done.id) == {"answer": 5, "time": 4, "agent": 5}


@pytest.mark.servers
def test_whatsapp_survey_is_not_sent_after_the_window(meta: Meta) -> None:
    user = str(next(_ids))
    conv = f"whatsapp:{user}"
    db = meta.stack.database_url
    meta.whatsapp_says(user, "AGENT")
    ticket_id, agent_id = meta.held_then_resolved(conv)
    with session_scope(db) as s:  # the customer last wrote 25 hours ago
        s.execute(update(Conversation).where(Conversation.id == conv).values(
            last_customer_at=utcnow() - timedelta(hours=25)))
    before = len(meta.sent(user))
    handoff.resolve(ticket_id, agent_id, db, agent_name="Ana")
    wait_settled(db)
    assert len(meta.sent(user)) == before  # not even the notice: a template would be needed
    [expired] = surveys(db, conv)
    assert expired.state == "expired"
    assert not [m for m in pushed(conv, db) if "How happy" in m.text]  # never queued


@pytest.mark.servers
def test_messenger_survey_quick_reply(meta: Meta) -> None:
    user = f"PSID{next(_ids)}"
    conv = f"messenger:{user}"
    db = meta.stack.database_url
    meta.messenger_says(user, "AGENT")
    ticket_id, agent_id = meta.held_then_resolved(conv)
    handoff.resolve(ticket_id, agent_id, db, agent_name="Ana")
    wait_settled(db)
    quick = meta.sent(user)[-1]["message"]["quick_replies"]
    assert [q["payload"] for q in quick] == ["1", "2", "3", "4", "5"]
    meta.post("messenger", meta.fake.messenger_choice(user, "2 Poor", f"m_{next(_ids)}"))
    assert "the time it took" in text_of(meta.sent(user)[-1])
    [asking] = surveys(db, conv)
    assert asking.state == "asking" and answers(db, asking.id) == {"answer": 2}
