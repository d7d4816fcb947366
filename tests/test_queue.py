"""The handoff queue: state machine, positions and waits, atomic claims."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from parley.bot import agents, conversations, events, handoff, survey
from parley.bot.storage import session_scope, utcnow


def escalate(url: str, conv: str, reason: str = "keyword", **kw) -> handoff.QueuePlace:
    return handoff.escalate(conv, reason, database_url=url, **kw)


def test_escalation_creates_one_waiting_ticket_with_context(any_db: str) -> None:
    ctx = {"intents": [{"name": "complaint", "confidence": 0.93}], "slots": {}}
    place = escalate(any_db, "webchat:a", "complaint", context=ctx, display_name="Ana")
    assert place.created and place.position == 1
    assert place.ticket.status == "waiting" and place.ticket.context == ctx
    again = escalate(any_db, "webchat:a", "keyword")
    assert not again.created and again.ticket.id == place.ticket.id
    assert handoff.owner("webchat:a", any_db)[0] == "waiting"
    kinds = [e.kind for e in events.events_after(0, database_url=any_db)]
    assert kinds == ["ticket_created"]


def test_unknown_reason_is_refused(any_db: str) -> None:
    with pytest.raises(ValueError, match="unknown handoff reason"):
        escalate(any_db, "webchat:a", "boredom")


def test_positions_follow_priority_then_arrival(any_db: str) -> None:
    first = escalate(any_db, "webchat:1")
    second = escalate(any_db, "webchat:2")
    urgent = escalate(any_db, "webchat:3", "complaint", priority=handoff.PRIORITY_HIGH)
    assert urgent.position == 1
    assert escalate(any_db, "webchat:1").position == 2  # asking again tells the place
    assert escalate(any_db, "webchat:2").position == 3
    assert first.ticket.id < second.ticket.id


def test_repeat_escalation_can_raise_priority(any_db: str) -> None:
    escalate(any_db, "webchat:1")
    escalate(any_db, "webchat:2")
    raised = escalate(any_db, "webchat:2", "complaint", priority=handoff.PRIORITY_HIGH)
    assert raised.position == 1 and raised.ticket.priority == handoff.PRIORITY_HIGH


def test_wait_estimate_uses_recent_handle_times(any_db: str) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    for i in range(3):  # three tickets handled in 2, 4 and 6 minutes: median 4
        t = escalate(any_db, f"webchat:old{i}").ticket
        handoff.claim_ticket(t.id, agent.id, any_db)
        with session_scope(any_db) as s:
            s.execute(update(handoff.Ticket).where(handoff.Ticket.id == t.id).values(
                assigned_at=utcnow() - timedelta(minutes=2 * (i + 1))))
        handoff.resolve(t.id, agent.id, any_db)
    escalate(any_db, "webchat:x")
    place = escalate(any_db, "webchat:y")
    assert place.position == 2
    with session_scope(any_db) as s:
        assert abs(handoff.recent_handle_time(s) - timedelta(minutes=4)) < timedelta(seconds=5)
    assert abs(place.eta - timedelta(minutes=6)) < timedelta(seconds=10)  # (2 rounds - 0.5) * 4


def test_estimate_wait_scales_with_agents() -> None:
    five = timedelta(minutes=5)
    assert handoff.estimate_wait(0, five, 1) == timedelta(0)
    assert handoff.estimate_wait(1, five, 1) == timedelta(minutes=2.5)
    assert handoff.estimate_wait(4, five, 1) == timedelta(minutes=17.5)
    assert handoff.estimate_wait(4, five, 4) == timedelta(minutes=2.5)
    assert handoff.estimate_wait(3, five, 0) == handoff.estimate_wait(3, five, 1)


def test_claim_reply_resolve_and_survey(any_db: str) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    ticket = escalate(any_db, "webchat:c").ticket
    claimed = handoff.claim_ticket(ticket.id, agent.id, any_db)
    assert claimed is not None and claimed.status == "assigned"
    assert handoff.claim_ticket(ticket.id, agent.id + 1, any_db) is None
    msg_id = handoff.agent_reply(ticket.id, agent.id, " Hi, Ana here ", any_db).id
    pushed = conversations.pushed_after("webchat:c", 0, any_db)
    assert [(m.id, m.author, m.text) for m in pushed] == [(msg_id, "agent", "Hi, Ana here")]
    handoff.add_note(ticket.id, agent.id, "customer is a VIP", any_db)
    assert [m.author for m in conversations.pushed_after("webchat:c", 0, any_db)] == ["agent"]
    resolved = handoff.resolve(ticket.id, agent.id, any_db)
    assert resolved.status == "resolved" and resolved.first_reply_at is not None
    assert handoff.owner("webchat:c", any_db) == ("bot", None)
    with session_scope(any_db) as s:  # the satisfaction survey started with the resolve
        started = s.execute(select(survey.Survey)).scalar_one()
        assert (started.ticket_id, started.agent_id, started.state) == (
            ticket.id, agent.id, "asking")


def test_illegal_transitions_are_refused(any_db: str) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    ticket = escalate(any_db, "webchat:d").ticket
    with pytest.raises(handoff.TransitionError):
        handoff.resolve(ticket.id, agent.id, any_db)  # nobody holds it yet
    with pytest.raises(handoff.TransitionError):
        handoff.agent_reply(ticket.id, agent.id, "hello", any_db)
    handoff.claim_ticket(ticket.id, agent.id, any_db)
    with pytest.raises(handoff.TransitionError):
        handoff.resolve(ticket.id, agent.id + 99, any_db)  # someone else's ticket
    handoff.resolve(ticket.id, agent.id, any_db)
    with pytest.raises(handoff.TransitionError):
        handoff.resolve(ticket.id, agent.id, any_db)


def test_transfer_moves_the_ticket(any_db: str) -> None:
    ana = agents.create_user("ana", "correct horse", database_url=any_db)
    bo = agents.create_user("bo", "battery staple", database_url=any_db)
    ticket = escalate(any_db, "webchat:e").ticket
    handoff.claim_ticket(ticket.id, ana.id, any_db)
    moved = handoff.transfer(ticket.id, ana.id, bo.id, any_db)
    assert moved.assigned_agent_id == bo.id
    with pytest.raises(handoff.TransitionError):
        handoff.agent_reply(ticket.id, ana.id, "still me?", any_db)
    handoff.agent_reply(ticket.id, bo.id, "Bo here", any_db)


def test_customer_leaving_and_bulk_dismiss(any_db: str) -> None:
    escalate(any_db, "webchat:f")
    assert handoff.abandon("webchat:f", database_url=any_db)
    assert not handoff.abandon("webchat:f", database_url=any_db)
    assert handoff.owner("webchat:f", any_db)[0] == "bot"
    ids = [escalate(any_db, f"webchat:g{i}").ticket.id for i in range(3)]
    assert handoff.dismiss([*ids[:2], 9999], agent_id=1, database_url=any_db) == ids[:2]
    assert [t.id for t in handoff.list_tickets(database_url=any_db)] == ids[2:]
    # a closed conversation can be handed off again
    assert escalate(any_db, "webchat:f").created


def test_tags_are_normalised(any_db: str) -> None:
    ticket = escalate(any_db, "webchat:h").ticket
    assert handoff.set_tags(ticket.id, ["Refund", " refund", "VIP", ""], any_db).tags == [
        "refund", "vip"]


def test_schema_forbids_two_open_tickets(any_db: str) -> None:
    from sqlalchemy.exc import IntegrityError

    escalate(any_db, "webchat:i")
    with pytest.raises(IntegrityError), session_scope(any_db) as s:
        s.add(handoff.Ticket(conversation_id="webchat:i", status="assigned", reason="intent",
                             priority=0, team="support", context={}, tags=[],
                             created_at=utcnow()))


def run_threads(n: int, target) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # surfaced below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def test_ten_claimers_on_100_tickets_each_ticket_goes_to_exactly_one(any_db: str) -> None:
    ids = {escalate(any_db, f"webchat:q{i}").ticket.id for i in range(100)}
    won: dict[int, list[int]] = {i: [] for i in range(10)}

    def claimer(agent: int) -> None:
        """Click waiting tickets at random, as agents in the desk do, until none is left."""
        pick = random.Random(agent)
        while waiting := handoff.list_tickets(("waiting",), 200, any_db):
            ticket = handoff.claim_ticket(pick.choice(waiting).id, agent + 1, any_db)
            if ticket is not None:
                won[agent].append(ticket.id)

    run_threads(10, claimer)
    claims = Counter(t for tickets in won.values() for t in tickets)
    assert set(claims) == ids  # every ticket claimed
    assert set(claims.values()) == {1}  # none twice
    assert sum(1 for tickets in won.values() if tickets) >= 2  # real contention happened
    with session_scope(any_db) as s:
        rows = s.execute(select(handoff.Ticket.id, handoff.Ticket.assigned_agent_id)).all()
    for ticket_id, agent_id in rows:
        assert ticket_id in won[agent_id - 1]
    claimed_events = [e for e in events.events_after(0, 1000, any_db) if e.kind == "ticket_claimed"]
    assert len(claimed_events) == 100


def test_ten_agents_clicking_the_same_ticket_one_wins(any_db: str) -> None:
    for round_ in range(5):
        ticket = escalate(any_db, f"webchat:same{round_}").ticket
        winners: list[int] = []

        def click(agent: int, ticket_id: int = ticket.id, won: list[int] = winners) -> None:
            if handoff.claim_ticket(ticket_id, agent + 1, any_db) is not None:
                won.append(agent + 1)

        run_threads(10, click)
        assert len(winners) == 1
        assert handoff.get_ticket(ticket.id, any_db).assigned_agent_id == winners[0]


def test_follow_up_once_when_the_customer_went_quiet(any_db: str) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    quiet = escalate(any_db, "webchat:quiet").ticket
    answered = escalate(any_db, "webchat:answered").ticket
    for t in (quiet, answered):
        handoff.claim_ticket(t.id, agent.id, any_db)
        handoff.agent_reply(t.id, agent.id, "Could you send a photo?", any_db)
    with session_scope(any_db) as s:
        conversations.add_message(s, "webchat:answered", "customer", "sure, here")
    day = timedelta(hours=24)
    assert handoff.send_follow_ups(day, "Checking in", database_url=any_db) == []  # too soon
    later = utcnow() + timedelta(hours=25)
    assert handoff.send_follow_ups(day, "Checking in", later, any_db) == [quiet.id]
    assert handoff.send_follow_ups(day, "Checking in", later, any_db) == []  # only once
    assert conversations.pushed_after("webchat:quiet", 0, any_db)[-1].text == "Checking in"


def test_a_person_in_the_platform_inbox_holds_the_conversation(any_db: str) -> None:
    held = handoff.hold_externally("messenger:z", "messenger inbox", "Hi, Zoe here", any_db)
    assert (held.status, held.reason, held.assigned_agent_id) == ("assigned", "external", None)
    assert held.context == {"held_by": "messenger inbox"} and held.first_reply_at is not None
    assert handoff.owner("messenger:z", any_db)[0] == "assigned"
    # Their words are in the transcript, but they were already sent: nothing to push.
    lines = conversations.transcript("messenger:z", any_db)
    assert [(m.author, m.text) for m in lines][-1] == ("agent", "Hi, Zoe here")
    assert conversations.pushed_after("messenger:z", 0, any_db) == []
    again = handoff.hold_externally("messenger:z", "messenger inbox", database_url=any_db)
    assert again.id == held.id and again.first_reply_at == held.first_reply_at
    kinds = [e.kind for e in events.events_after(0, database_url=any_db)]
    assert kinds == ["ticket_created", "ticket_claimed"]


def test_public_names_still_resolve_on_the_package() -> None:
    from parley.bot import contract

    assert handoff.REASONS is contract.REASONS  # one list of reasons, owned by the contract
    assert all(hasattr(handoff, name) for name in handoff.__all__)
    used = {"OPEN", "PRIORITY_HIGH", "PRIORITY_NORMAL", "QueuePlace", "Rating", "Ticket",
            "TicketView", "TransitionError", "abandon", "add_note", "agent_reply",
            "claim_ticket", "dismiss", "escalate", "estimate_wait", "get_ticket",
            "hold_externally", "list_tickets", "open_ticket", "owner", "place_of", "push_notice",
            "recent_handle_time", "resolve", "send_follow_ups",
            "set_tags", "transfer"}
    assert used <= set(handoff.__all__)
