"""The ownership gate, on a real database: who answers each customer message."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from parley.bot import agents, conversations, events, handoff, support_hours
from parley.bot.storage import session_scope
from parley.connectors import gate
from parley.connectors.gate import Inbound

ALWAYS = {"timezone": "UTC", "weekly": {d: "00:00-24:00" for d in support_hours.DAYS},
          "channels": {"email": "help@example.com", "phone": "+1 555 0100",
                       "webchat": "example.com/chat"}}
NEVER = {**ALWAYS, "weekly": {}}


@pytest.fixture
def hours_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def use(config: dict) -> None:
        path = tmp_path / f"hours-{len(config['weekly'])}.yml"
        path.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("PARLEY_SUPPORT_HOURS", str(path))

    use(ALWAYS)
    return use


def customer_lines(conv: str, url: str) -> list[str]:
    return [m.text for m in conversations.transcript(conv, url) if m.author == "customer"]


def test_new_conversation_goes_to_the_bot_and_is_stored(db_url: str, hours_file) -> None:
    decision = gate.accept(Inbound("webchat:n1", "hello", display_name="Nia"), db_url)
    assert decision.route == "bot" and decision.replies == []
    assert customer_lines("webchat:n1", db_url) == ["hello"]


def test_redelivered_platform_message_is_dropped(db_url: str, hours_file) -> None:
    first = gate.accept(Inbound("telegram:42", "hi", platform_message_id="m1"), db_url)
    again = gate.accept(Inbound("telegram:42", "hi", platform_message_id="m1"), db_url)
    other = gate.accept(Inbound("telegram:43", "hi", platform_message_id="m1"), db_url)
    assert (first.route, again.route, other.route) == ("bot", "duplicate", "bot")
    assert customer_lines("telegram:42", db_url) == ["hi"]


def test_the_bots_fast_path_on_sqlite_and_postgresql(any_db: str) -> None:
    """Store, rename, dedupe and record in plain SQL; first messages racing both land."""
    assert gate.accept(Inbound("telegram:7", "hi", "u1", "Ana Silva"), any_db).route == "bot"
    assert gate.accept(Inbound("telegram:7", "hey", "u2", "Ana S."), any_db).route == "bot"
    assert gate.accept(Inbound("telegram:7", "hey", "u2", "Ana S."), any_db).route == \
        "duplicate"
    assert gate.after_bot("telegram:7", [{"text": "Hello", "buttons": [
        {"title": "Go", "payload": "/go"}], "recipient_id": "telegram:7"}], any_db) == []
    lines = conversations.transcript("telegram:7", any_db)
    assert [(line.author, line.text) for line in lines] == [
        ("customer", "hi"), ("customer", "hey"), ("bot", "Hello")]
    assert lines[2].payload == {"buttons": [{"title": "Go", "payload": "/go"}]}
    # written on the driver's cursor, read back through the ORM as if it had written them
    assert all(line.created_at.tzinfo is not None for line in lines)
    assert [line.created_at for line in lines] == sorted(line.created_at for line in lines)
    with session_scope(any_db) as session:
        seen = session.get(conversations.Conversation, "telegram:7")
        assert seen is not None and seen.channel == "telegram" and seen.rating_state == "none"
        assert seen.last_customer_at is not None and seen.last_customer_at.tzinfo is not None
        assert abs((seen.last_customer_at - lines[1].created_at).total_seconds()) < 5
    assert conversations.display_names(["telegram:7"], any_db) == {"telegram:7": "Ana S."}
    with ThreadPoolExecutor(8) as pool:
        routes = list(pool.map(lambda i: gate.accept(
            Inbound("telegram:8", f"m{i}", f"r{i}"), any_db).route, range(8)))
    assert routes == ["bot"] * 8
    assert sorted(x.text for x in conversations.transcript("telegram:8", any_db)) == [
        f"m{i}" for i in range(8)]


def test_the_fast_path_hands_queued_conversations_to_the_full_path(any_db: str,
                                                                    hours_file) -> None:
    """With a ticket open, nothing is written on the driver's cursor: the ORM path
    stores the message on the ticket and answers with the queue position; bot
    replies recorded meanwhile carry the ticket too."""
    assert gate.accept(Inbound("telegram:9", "AGENT", "q1"), any_db).route == "bot"
    ticket_id = handoff.escalate("telegram:9", "keyword", database_url=any_db).ticket.id
    assert gate.after_bot("telegram:9", [{"text": "Connecting you"}], any_db) == []
    decision = gate.accept(Inbound("telegram:9", "still there?", "q2"), any_db)
    assert (decision.route, decision.ticket_id) == ("queue", ticket_id)
    assert gate.accept(Inbound("telegram:9", "still there?", "q2"), any_db).route == \
        "duplicate"
    with session_scope(any_db) as session:
        rows = session.execute(select(conversations.Message.author,
                                      conversations.Message.ticket_id)
                               .where(conversations.Message.conversation_id == "telegram:9")
                               .order_by(conversations.Message.id)).all()
    assert [tuple(r) for r in rows] == [  # the system lines: escalation, queue place
        ("customer", None), ("system", ticket_id), ("bot", ticket_id),
        ("customer", ticket_id), ("system", ticket_id)]


def test_waiting_customer_gets_a_position_update(db_url: str, hours_file) -> None:
    handoff.escalate("webchat:w0", "keyword", database_url=db_url)
    ticket = handoff.escalate("webchat:w1", "keyword", database_url=db_url).ticket
    after = events.last_event_id(db_url)
    decision = gate.accept(Inbound("webchat:w1", "hello? still there?"), db_url)
    assert decision.route == "queue" and decision.ticket_id == ticket.id
    assert "number 2 in the queue" in decision.replies[0]["text"]
    assert [e.kind for e in events.events_after(after, database_url=db_url)] == ["message"]
    assert customer_lines("webchat:w1", db_url) == ["hello? still there?"]


def test_waiting_after_hours_says_when_and_no_position(db_url: str, hours_file) -> None:
    hours_file(NEVER)
    handoff.escalate("webchat:w2", "keyword", database_url=db_url)
    decision = gate.accept(Inbound("webchat:w2", "anyone?"), db_url)
    assert "offline" in decision.replies[0]["text"]


def test_bot_keyword_leaves_the_queue(db_url: str, hours_file) -> None:
    handoff.escalate("webchat:b1", "keyword", database_url=db_url)
    decision = gate.accept(Inbound("webchat:b1", "  Bot! "), db_url)
    assert decision.route == "handled"
    assert "back with the bot" in decision.replies[0]["text"]
    assert handoff.owner("webchat:b1", db_url) == ("bot", None)
    assert gate.accept(Inbound("webchat:b1", "what are your hours"), db_url).route == "bot"


def test_bot_stays_silent_while_an_agent_holds_the_conversation(db_url: str,
                                                                hours_file) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=db_url)
    ticket = handoff.escalate("webchat:a1", "intent", database_url=db_url).ticket
    handoff.claim_ticket(ticket.id, agent.id, db_url)
    for text in ("hi", "AGENT", "BOT", "where is my order 10234"):
        decision = gate.accept(Inbound("webchat:a1", text), db_url)
        assert decision.route == "agent" and decision.replies == []
    assert customer_lines("webchat:a1", db_url) == ["hi", "AGENT", "BOT",
                                                     "where is my order 10234"]


def test_rating_is_asked_after_the_next_bot_answer_and_stored(db_url: str,
                                                              hours_file) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=db_url)
    ticket = handoff.escalate("webchat:r1", "intent", database_url=db_url).ticket
    handoff.claim_ticket(ticket.id, agent.id, db_url)
    handoff.resolve(ticket.id, agent.id, db_url)
    assert gate.accept(Inbound("webchat:r1", "how long is shipping"), db_url).route == "bot"
    extra = gate.after_bot("webchat:r1", [{"text": "3-5 days", "recipient_id": "webchat:r1"}],
                           db_url)
    assert "Rate it from 1" in extra[0]["text"]
    assert [b["payload"] for b in extra[0]["buttons"]] == ["1", "2", "3", "4", "5"]
    assert gate.after_bot("webchat:r1", [{"text": "more"}], db_url) == []  # asked once
    thanks = gate.accept(Inbound("webchat:r1", "4"), db_url)
    assert thanks.route == "handled" and "4/5" in thanks.replies[0]["text"]
    with session_scope(db_url) as s:
        assert s.execute(select(handoff.Rating.score)).scalars().all() == [4]
    assert gate.accept(Inbound("webchat:r1", "5"), db_url).route == "bot"  # not rated twice


def test_anything_but_a_score_ends_the_rating_question(db_url: str, hours_file) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=db_url)
    ticket = handoff.escalate("webchat:r2", "intent", database_url=db_url).ticket
    handoff.claim_ticket(ticket.id, agent.id, db_url)
    handoff.resolve(ticket.id, agent.id, db_url)
    gate.after_bot("webchat:r2", [{"text": "answer"}], db_url)
    assert gate.accept(Inbound("webchat:r2", "where is my order"), db_url).route == "bot"
    with session_scope(db_url) as s:
        assert s.execute(select(handoff.Rating)).first() is None


def test_bot_replies_are_recorded_in_the_transcript(db_url: str, hours_file) -> None:
    gate.accept(Inbound("webchat:t1", "hi"), db_url)
    gate.after_bot("webchat:t1", [{"recipient_id": "webchat:t1", "text": "Hello!",
                                   "buttons": [{"title": "A", "payload": "/a"}]}], db_url)
    lines = conversations.transcript("webchat:t1", db_url)
    assert [(m.author, m.text) for m in lines] == [("customer", "hi"), ("bot", "Hello!")]
    assert lines[1].payload == {"buttons": [{"title": "A", "payload": "/a"}]}
