"""Inbox leases and outbox claims on SQLite and PostgreSQL: exactly one taker,
order kept per conversation, a dead worker's share taken over after its lease."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from parley.bot import agents, events, handoff, inbox, outbox
from parley.bot.conversations import Conversation, Message, add_message
from parley.bot.storage import session_scope


def stored(url: str, conversation: str, *texts: str) -> list[int]:
    ids = [inbox.store(conversation, t, platform_message_id=f"{conversation}-{t}",
                       database_url=url) for t in texts]
    assert None not in ids
    return [i for i in ids if i is not None]


def test_each_conversation_goes_to_exactly_one_claimer(any_db: str) -> None:
    for n in range(40):
        stored(any_db, f"telegram:{n}", "hi")
    with ThreadPoolExecutor(4) as pool:
        taken = list(pool.map(lambda w: inbox.claim("telegram", f"w{w}", 30, 40, any_db),
                              range(4)))
    flat = [c for share in taken for c in share]
    assert sorted(flat) == sorted(f"telegram:{n}" for n in range(40))  # all, none twice
    assert inbox.claim("telegram", "late", 30, 40, any_db) == []
    assert inbox.claim("messenger", "w0", 30, 40, any_db) == []  # per channel


def test_messages_come_in_order_and_a_dead_workers_lease_runs_out(any_db: str) -> None:
    first, second = stored(any_db, "telegram:1", "one", "two")
    assert inbox.claim("telegram", "dead", 0.5, 10, any_db) == ["telegram:1"]
    taken = inbox.begin("telegram:1", "dead", 0.5, any_db)
    assert taken is not None and taken.id == first
    assert inbox.claim("telegram", "alive", 30, 10, any_db) == []  # the lease holds
    time.sleep(0.7)
    assert inbox.claim("telegram", "alive", 30, 10, any_db) == ["telegram:1"]
    assert inbox.begin("telegram:1", "dead", 30, any_db) is None  # not its lease any more
    again = inbox.begin("telegram:1", "alive", 30, any_db)
    assert again is not None and (again.id, again.attempts) == (first, 2)  # redone, first
    with session_scope(any_db) as session:
        session.get(Message, first).inbox_state = "answered"
    nxt = inbox.begin("telegram:1", "alive", 30, any_db)
    assert nxt is not None and nxt.id == second


def lease_of(url: str, conversation: str) -> tuple[str | None, object]:
    with session_scope(url) as session:
        found = session.get(Conversation, conversation)
        assert found is not None
        return found.lease_owner, found.lease_until


def test_begin_lets_the_lease_go_when_it_returns_nothing(any_db: str) -> None:
    """The worker then skips its own release: `begin` must have cleared the lease
    whether nothing was pending or the lease had run out meanwhile."""
    [mid] = stored(any_db, "telegram:8", "hi")
    assert inbox.claim("telegram", "w", 30, 10, any_db) == ["telegram:8"]
    assert inbox.begin("telegram:8", "w", 30, any_db) is not None
    with session_scope(any_db) as session:
        session.get(Message, mid).inbox_state = "answered"
    assert inbox.begin("telegram:8", "w", 30, any_db) is None  # nothing pending
    assert lease_of(any_db, "telegram:8") == (None, None)
    stored(any_db, "telegram:8", "again")
    assert inbox.claim("telegram", "w", 0.2, 10, any_db) == ["telegram:8"]
    time.sleep(0.4)
    assert inbox.begin("telegram:8", "w", 30, any_db) is None  # ran out
    assert lease_of(any_db, "telegram:8") == (None, None)
    assert inbox.claim("telegram", "other", 30, 10, any_db) == ["telegram:8"]
    assert inbox.begin("telegram:8", "w", 30, any_db) is None  # not ours: left alone
    assert lease_of(any_db, "telegram:8")[0] == "other"


def test_heartbeat_keeps_a_live_workers_lease(any_db: str) -> None:
    stored(any_db, "telegram:2", "hi")
    assert inbox.claim("telegram", "w", 0.5, 10, any_db) == ["telegram:2"]
    for _ in range(3):
        time.sleep(0.3)
        assert inbox.heartbeat("w", 0.5, ["telegram:2"], [], any_db) == 1
    assert inbox.claim("telegram", "other", 30, 10, any_db) == []


def test_a_lease_the_worker_no_longer_uses_runs_out(any_db: str) -> None:
    """A release that failed (database down) must not leave the lease renewed for
    good: the heartbeat keeps only what the process works on."""
    stored(any_db, "telegram:20", "hi")
    stored(any_db, "telegram:21", "hi")
    assert sorted(inbox.claim("telegram", "w", 0.5, 10, any_db)) == \
        ["telegram:20", "telegram:21"]
    for _ in range(3):
        time.sleep(0.3)
        assert inbox.heartbeat("w", 0.5, ["telegram:21"], [], any_db) == 1
    assert inbox.claim("telegram", "other", 30, 10, any_db) == ["telegram:20"]
    assert inbox.heartbeat("other", 30, [], [], any_db) == 0


def test_a_failing_turn_is_retried_then_handed_to_a_person(any_db: str) -> None:
    [mid] = stored(any_db, "telegram:3", "hi")
    for attempt in range(1, inbox.MAX_ATTEMPTS + 1):
        with session_scope(any_db) as session:  # skip the backoff wait
            session.get(Message, mid).retry_at = None
        assert inbox.claim("telegram", "w", 30, 10, any_db) == ["telegram:3"]
        pending = inbox.begin("telegram:3", "w", 30, any_db)
        assert pending is not None and pending.attempts == attempt
        gave_up = inbox.try_failed(mid, "boom", any_db)
        inbox.release("telegram:3", "w", any_db)
        assert gave_up == (attempt == inbox.MAX_ATTEMPTS)
        if not gave_up:
            assert inbox.state_of(mid, any_db) == "received"
            assert inbox.claim("telegram", "w", 30, 10, any_db) == []  # backing off
    assert inbox.state_of(mid, any_db) == "failed"


def pushes(url: str, conversation: str, *texts: str, author: str = "bot") -> list[int]:
    with session_scope(url) as session:
        return [add_message(session, conversation, author, t, delivery="push").id
                for t in texts]


def test_outbox_claims_in_order_and_a_retry_holds_the_rest(any_db: str) -> None:
    stored(any_db, "telegram:5", "hi")
    a, b, c = pushes(any_db, "telegram:5", "a", "b", "c")
    sends = outbox.claim("telegram", "s1", 30, database_url=any_db)
    assert [s.id for s in sends] == [a, b, c]
    assert outbox.claim("telegram", "s2", 30, database_url=any_db) == []  # taken
    outbox.sent(a, "s1", any_db)
    assert not outbox.retry_later(sends[1], "s1", "429", 60, any_db)
    outbox.release([c], "s1", any_db)
    assert outbox.claim("telegram", "s2", 30, database_url=any_db) == []  # c waits behind b
    with session_scope(any_db) as session:
        rows = {m.id: m for m in session.execute(select(Message).where(
            Message.id.in_([a, b, c]))).scalars()}
        assert rows[a].sent_at is not None and rows[b].sent_at is None
        assert rows[b].attempts == 1 and rows[b].retry_at is not None
        rows[b].retry_at = None
    assert [s.id for s in outbox.claim("telegram", "s2", 30, database_url=any_db)] == [b, c]


def test_outbox_senders_never_share_a_message(any_db: str) -> None:
    for n in range(30):
        stored(any_db, f"telegram:{n}", "hi")
        pushes(any_db, f"telegram:{n}", "x", "y")
    with ThreadPoolExecutor(4) as pool:
        taken = list(pool.map(lambda w: outbox.claim("telegram", f"s{w}", 30, 100,
                                                     any_db), range(4)))
    ids = [s.id for share in taken for s in share]
    assert len(ids) == len(set(ids)) == 60
    for share in taken:  # a conversation's messages all went to one sender
        for s in share:
            assert all(o.conversation_id != s.conversation_id
                       for other in taken if other is not share for o in other)


def test_permanent_failures_are_shown_and_bot_replies_withheld(any_db: str) -> None:
    stored(any_db, "telegram:6", "hi")
    [m] = pushes(any_db, "telegram:6", "hello")
    [send] = outbox.claim("telegram", "s", 30, database_url=any_db)
    after = events.last_event_id(any_db)
    outbox.failed(send, "s", "Telegram refused it: chat not found", any_db)
    [event] = events.events_after(after, database_url=any_db)
    assert event.payload["delivery_error"] == "Telegram refused it: chat not found"
    assert outbox.claim("telegram", "s", 30, database_url=any_db) == []
    assert not outbox.person_holds("telegram:6", any_db)
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    ticket = handoff.escalate("telegram:6", "intent", database_url=any_db).ticket
    handoff.claim_ticket(ticket.id, agent.id, any_db)
    assert outbox.person_holds("telegram:6", any_db)
    [late] = pushes(any_db, "telegram:6", "late bot reply")
    [send] = outbox.claim("telegram", "s", 30, database_url=any_db)
    outbox.withhold(send, "s", any_db)
    with session_scope(any_db) as session:
        row = session.get(Message, late)
        assert row.sent_at is None and row.delivery_error == outbox.WITHHELD
        assert session.get(Message, m).delivery_error.startswith("Telegram refused")


def test_a_sender_whose_claim_ran_out_does_not_send(any_db: str) -> None:
    """The check just before each send: a claim another sender took over is not sent
    twice; a bot reply after a person took over is withheld."""
    stored(any_db, "telegram:7", "hi")
    [m] = pushes(any_db, "telegram:7", "hello")
    [stale] = outbox.claim("telegram", "slow", 0.3, database_url=any_db)
    time.sleep(0.5)
    [fresh] = outbox.claim("telegram", "fast", 30, database_url=any_db)
    assert fresh.id == stale.id == m
    assert outbox.confirm(stale, "slow", 30, any_db) == "skip"
    assert outbox.confirm(fresh, "fast", 30, any_db) == "send"
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    ticket = handoff.escalate("telegram:7", "intent", database_url=any_db).ticket
    handoff.claim_ticket(ticket.id, agent.id, any_db)
    assert outbox.confirm(fresh, "fast", 30, any_db) == "withhold"


def test_a_stored_message_creates_or_touches_its_conversation_and_a_redelivery_nothing(
        any_db: str) -> None:
    """On PostgreSQL one statement does both (`inbox_sql.STORE`), on SQLite a
    transaction: the same rows either way, and a redelivery changes none of them."""
    first = inbox.store("telegram:71", "ola", platform_message_id="u1", display_name="Ana",
                        database_url=any_db)
    with session_scope(any_db) as session:
        conversation = session.get(Conversation, "telegram:71")
        assert conversation is not None
        assert (conversation.channel, conversation.display_name) == ("telegram", "Ana")
        touched = conversation.last_customer_at
        assert touched is not None and touched == conversation.created_at
    time.sleep(0.01)
    assert inbox.store("telegram:71", "ola", platform_message_id="u1", display_name="Bia",
                       database_url=any_db) is None
    second = inbox.store("telegram:71", "tudo bem?", platform_message_id="u2",
                         database_url=any_db)  # no name: the stored one stays
    assert first is not None and second is not None and second > first
    with session_scope(any_db) as session:
        conversation = session.get(Conversation, "telegram:71")
        assert conversation is not None and conversation.display_name == "Ana"
        assert conversation.last_customer_at is not None
        assert conversation.last_customer_at > touched
        rows = session.execute(select(Message.text, Message.inbox_state, Message.author)
                               .where(Message.conversation_id == "telegram:71")
                               .order_by(Message.id)).all()
    assert [tuple(r) for r in rows] == [("ola", "received", "customer"),
                                        ("tudo bem?", "received", "customer")]
