"""The ownership gate, on a real database: who answers each stored customer message.

Each message takes the worker's path without Rasa: stored in the inbox, its
conversation claimed, routed; the bot's replies are recorded as a turn would."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from parley.bot import agents, conversations, events, handoff, inbox, support_hours, survey
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


OWNER = "test-worker"


@dataclass(frozen=True)
class Routed:
    route: str
    replies: list[dict]
    ticket_id: int | None = None
    pending: inbox.Pending | None = None


def accept(item: Inbound, url: str) -> Routed:
    """Store, claim, begin and route one message, as a channel worker does."""
    message_id = inbox.store(item.conversation_id, item.text,
                             platform_message_id=item.platform_message_id,
                             display_name=item.display_name, database_url=url)
    if message_id is None:
        return Routed("duplicate", [])
    channel = item.conversation_id.split(":")[0]
    assert item.conversation_id in inbox.claim(channel, OWNER, 30, 100, url)
    pending = inbox.begin(item.conversation_id, OWNER, 30, url)
    assert pending is not None and pending.id == message_id
    decision = gate.route(pending, OWNER, "sync", url)
    replies = inbox.replies_to(message_id, url)
    if decision.route != "bot":
        inbox.release(item.conversation_id, OWNER, url)
    return Routed(decision.route, replies, decision.ticket_id, pending)


def bot_answers(routed: Routed, replies: list[dict], url: str) -> list[dict]:
    """What a bot turn records; returns the gate's own additions (a survey question)."""
    assert routed.pending is not None
    assert gate.finish_bot(routed.pending, OWNER, replies, "sync", url)
    inbox.release(routed.pending.conversation_id, OWNER, url)
    return inbox.replies_to(routed.pending.id, url)[len(replies):]


def customer_lines(conv: str, url: str) -> list[str]:
    return [m.text for m in conversations.transcript(conv, url) if m.author == "customer"]


def test_new_conversation_goes_to_the_bot_and_is_stored(db_url: str, hours_file) -> None:
    decision = accept(Inbound("webchat:n1", "hello", display_name="Nia"), db_url)
    assert decision.route == "bot" and decision.replies == []
    assert customer_lines("webchat:n1", db_url) == ["hello"]
    assert inbox.state_of(decision.pending.id, db_url) == "processing"


def test_redelivered_platform_message_is_stored_once(db_url: str, hours_file) -> None:
    first = inbox.store("telegram:42", "hi", platform_message_id="m1", database_url=db_url)
    again = inbox.store("telegram:42", "hi", platform_message_id="m1", database_url=db_url)
    other = inbox.store("telegram:43", "hi", platform_message_id="m1", database_url=db_url)
    assert first is not None and again is None and other is not None
    assert customer_lines("telegram:42", db_url) == ["hi"]
    # stored but not answered yet: still in the inbox for a worker, not dropped
    assert inbox.state_of(first, db_url) == "received"


def test_the_store_fast_path_on_sqlite_and_postgresql(any_db: str) -> None:
    """Store, rename and dedupe in plain SQL; first messages racing all land."""
    first = accept(Inbound("telegram:7", "hi", "u1", "Ana Silva"), any_db)
    assert bot_answers(first, [{"text": "Hello", "buttons": [
        {"title": "Go", "payload": "/go"}], "recipient_id": "telegram:7"}], any_db) == []
    assert inbox.store("telegram:7", "hey", platform_message_id="u2", display_name="Ana S.",
                       database_url=any_db) is not None
    assert inbox.store("telegram:7", "hey", platform_message_id="u2",
                       database_url=any_db) is None
    lines = conversations.transcript("telegram:7", any_db)
    assert [(line.author, line.text) for line in lines] == [
        ("customer", "hi"), ("bot", "Hello"), ("customer", "hey")]
    assert lines[1].payload == {"buttons": [{"title": "Go", "payload": "/go"}]}
    # written on the driver's cursor, read back through the ORM as if it had written them
    assert all(line.created_at.tzinfo is not None for line in lines)
    assert [line.created_at for line in lines] == sorted(line.created_at for line in lines)
    with session_scope(any_db) as session:
        seen = session.get(conversations.Conversation, "telegram:7")
        assert seen is not None and seen.channel == "telegram" and seen.rating_state == "none"
        assert seen.last_customer_at is not None and seen.last_customer_at.tzinfo is not None
        assert abs((seen.last_customer_at - lines[2].created_at).total_seconds()) < 5
    assert conversations.display_names(["telegram:7"], any_db) == {"telegram:7": "Ana S."}
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: inbox.store(
            "telegram:8", f"m{i}", platform_message_id=f"r{i}", database_url=any_db),
            range(8)))
    assert None not in ids and len(set(ids)) == 8
    assert sorted(x.text for x in conversations.transcript("telegram:8", any_db)) == [
        f"m{i}" for i in range(8)]


def test_queued_conversations_get_the_ticket_and_a_place(any_db: str, hours_file) -> None:
    """With a ticket open the message is put on the ticket and answered with the
    queue position; bot replies recorded meanwhile carry the ticket too."""
    first = accept(Inbound("telegram:9", "AGENT", "q1"), any_db)
    ticket_id = handoff.escalate("telegram:9", "keyword", database_url=any_db).ticket.id
    assert bot_answers(first, [{"text": "Connecting you"}], any_db) == []
    decision = accept(Inbound("telegram:9", "still there?", "q2"), any_db)
    assert (decision.route, decision.ticket_id) == ("queue", ticket_id)
    assert accept(Inbound("telegram:9", "still there?", "q2"), any_db).route == "duplicate"
    assert inbox.state_of(decision.pending.id, any_db) == "routed"
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
    decision = accept(Inbound("webchat:w1", "hello? still there?"), db_url)
    assert decision.route == "queue" and decision.ticket_id == ticket.id
    assert "number 2 in the queue" in decision.replies[0]["text"]
    assert [e.kind for e in events.events_after(after, database_url=db_url)] == ["message"]
    assert customer_lines("webchat:w1", db_url) == ["hello? still there?"]


def test_waiting_after_hours_says_when_and_no_position(db_url: str, hours_file) -> None:
    hours_file(NEVER)
    handoff.escalate("webchat:w2", "keyword", database_url=db_url)
    decision = accept(Inbound("webchat:w2", "anyone?"), db_url)
    assert "offline" in decision.replies[0]["text"]


def test_bot_keyword_leaves_the_queue(db_url: str, hours_file) -> None:
    handoff.escalate("webchat:b1", "keyword", database_url=db_url)
    decision = accept(Inbound("webchat:b1", "  Bot! "), db_url)
    assert decision.route == "handled"
    assert "back with the bot" in decision.replies[0]["text"]
    assert handoff.owner("webchat:b1", db_url) == ("bot", None)
    assert accept(Inbound("webchat:b1", "what are your hours"), db_url).route == "bot"


def test_bot_stays_silent_while_an_agent_holds_the_conversation(db_url: str,
                                                                hours_file) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=db_url)
    ticket = handoff.escalate("webchat:a1", "intent", database_url=db_url).ticket
    handoff.claim_ticket(ticket.id, agent.id, db_url)
    for text in ("hi", "AGENT", "BOT", "where is my order 10234"):
        decision = accept(Inbound("webchat:a1", text), db_url)
        assert decision.route == "agent" and decision.replies == []
        assert inbox.state_of(decision.pending.id, db_url) == "routed"
    assert customer_lines("webchat:a1", db_url) == ["hi", "AGENT", "BOT",
                                                     "where is my order 10234"]


def test_a_claim_during_the_turn_withholds_the_bots_reply(any_db: str, hours_file) -> None:
    """Invariant 1: the reply computed before an agent's claim never goes out."""
    turn = accept(Inbound("telegram:11", "where is my order", "c1"), any_db)
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    ticket = handoff.escalate("telegram:11", "intent", database_url=any_db).ticket
    handoff.claim_ticket(ticket.id, agent.id, any_db)
    assert gate.finish_bot(turn.pending, OWNER, [{"text": "Order 1 shipped"}], "push", any_db)
    with session_scope(any_db) as session:
        bot = session.execute(select(conversations.Message).where(
            conversations.Message.author == "bot")).scalar_one()
        assert (bot.delivery, bot.delivery_error) == ("none", "not sent: a person took over "
                                                      "the conversation")


def test_a_worker_that_lost_its_lease_records_nothing(any_db: str, hours_file) -> None:
    turn = accept(Inbound("telegram:12", "hi", "l1"), any_db)
    inbox.release("telegram:12", OWNER, any_db)  # as if the lease ran out ...
    assert inbox.claim("telegram", "other", 30, 10, any_db) == ["telegram:12"]  # ... and moved
    assert not gate.finish_bot(turn.pending, OWNER, [{"text": "late"}], "push", any_db)
    assert [m.author for m in conversations.transcript("telegram:12", any_db)] == ["customer"]
    again = inbox.begin("telegram:12", "other", 30, any_db)  # the same message, a second try
    assert again is not None and (again.id, again.attempts) == (turn.pending.id, 2)
    assert gate.finish_bot(again, "other", [{"text": "answer"}], "push", any_db)
    assert [m.author for m in conversations.transcript("telegram:12", any_db)] == [
        "customer", "bot"]


def test_a_survey_answer_is_the_gates_and_other_text_the_bots(db_url: str,
                                                               hours_file) -> None:
    """After a resolve the gate takes the survey's answers itself; the rest of the
    survey's flow is in tests/test_survey.py."""
    agent = agents.create_user("ana", "correct horse", database_url=db_url)
    ticket = handoff.escalate("webchat:r1", "intent", database_url=db_url).ticket
    handoff.claim_ticket(ticket.id, agent.id, db_url)
    handoff.resolve(ticket.id, agent.id, db_url, agent_name="Ana")
    answered = accept(Inbound("webchat:r1", "4"), db_url)
    assert answered.route == "handled" and "the time it took" in answered.replies[0]["text"]
    assert inbox.state_of(answered.pending.id, db_url) == "answered"
    with session_scope(db_url) as s:
        assert s.execute(select(survey.SurveyAnswer.score)).scalars().all() == [4]
        assert s.execute(select(handoff.Rating)).first() is None  # the old rating: not written
    moved_on = accept(Inbound("webchat:r1", "where is my order"), db_url)
    assert moved_on.route == "bot" and moved_on.replies == []
    assert bot_answers(moved_on, [{"text": "Which one?"}], db_url) == []


def test_bot_replies_are_recorded_in_the_transcript(db_url: str, hours_file) -> None:
    turn = accept(Inbound("webchat:t1", "hi"), db_url)
    bot_answers(turn, [{"recipient_id": "webchat:t1", "text": "Hello!",
                        "buttons": [{"title": "A", "payload": "/a"}]}], db_url)
    lines = conversations.transcript("webchat:t1", db_url)
    assert [(m.author, m.text) for m in lines] == [("customer", "hi"), ("bot", "Hello!")]
    assert lines[1].payload == {"buttons": [{"title": "A", "payload": "/a"}]}
    assert inbox.state_of(turn.pending.id, db_url) == "answered"


REPLIES = [{"recipient_id": "x", "text": "Hello!", "utter_action": "utter_greet",
            "buttons": [{"title": "A", "payload": "/a"}]},
           {"recipient_id": "x", "text": "How can I help?", "utter_action": "utter_help"},
           {"recipient_id": "x", "image": "https://example.com/a.png"}]
COMPARED = ("author", "text", "payload", "delivery", "delivery_error", "reply_name",
            "inbox_state", "attempts", "sent_at", "claimed_by", "agent_id")


def test_the_bots_fast_path_records_what_the_full_path_does(any_db: str, hours_file) -> None:
    """With no person involved, route and finish_bot run on the driver cursor; their
    rows must be the ORM path's (which a waiting ticket forces here), column by column."""
    begun: list[object] = []

    def note(session: object, *_args: object) -> None:  # an ORM transaction began
        begun.append(session)

    inbox.store("telegram:30", "hi", platform_message_id="f1", database_url=any_db)
    assert inbox.claim("telegram", OWNER, 30, 10, any_db) == ["telegram:30"]
    alone = inbox.begin("telegram:30", OWNER, 30, any_db)
    assert alone is not None
    sqlalchemy_event.listen(Session, "after_begin", note)
    try:
        assert gate.route(alone, OWNER, "push", any_db).route == "bot"
        assert gate.finish_bot(alone, OWNER, REPLIES, "push", any_db)
        assert begun == []  # neither took the ORM path
        handoff.escalate("telegram:31", "intent", database_url=any_db)
        queued = accept(Inbound("telegram:31", "hi", "f2"), any_db)
        assert queued.route == "queue"
        # The same turn recorded by the full path (a ticket is open): as if it had run.
        with session_scope(any_db) as session:
            session.get(conversations.Message, queued.pending.id).inbox_state = "processing"
        assert inbox.claim("telegram", OWNER, 30, 10, any_db) == ["telegram:31"]
        begun.clear()
        assert gate.finish_bot(queued.pending, OWNER, REPLIES, "push", any_db)
        assert begun != []
    finally:
        sqlalchemy_event.remove(Session, "after_begin", note)

    def rows(conversation: str) -> list[tuple]:
        with session_scope(any_db) as session:
            found = session.execute(
                select(conversations.Message).where(
                    conversations.Message.conversation_id == conversation,
                    conversations.Message.author != "system")
                .order_by(conversations.Message.id)).scalars().all()
            return [(*(getattr(m, c) for c in COMPARED), m.reply_to is not None)
                    for m in found]

    fast, full = rows("telegram:30"), rows("telegram:31")
    assert fast == full
    assert [r[1] for r in fast] == ["hi", "Hello!", "How can I help?", ""]  # in order
    assert fast[1][2] == {"buttons": [{"title": "A", "payload": "/a"}]}
    assert [r[5] for r in fast] == [None, "utter_greet", "utter_help", None]
