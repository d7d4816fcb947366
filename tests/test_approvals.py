"""Supervised agents: a trainee's replies wait for a supervisor, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial

import pytest

from parley.bot import agents, conversations, events, handoff
from parley.bot.handoff import approvals
from parley.bot.storage import session_scope


class Desk:
    """A trainee holding one customer's ticket, and the people around them."""

    def __init__(self, url: str, conv: str = "webchat:t1") -> None:
        self.url = url
        self.conv = conv
        self.trainee = agents.create_user("tina", "tina-password", "agent", "Tina", url)
        agents.set_trainee(self.trainee.id, True, url)
        self.sup = agents.create_user("sue", "sue-password", "supervisor", "Sue", url)
        self.admin = agents.create_user("root", "root-password", "admin", "Root", url)
        self.agent = agents.create_user("ana", "ana-password", "agent", "Ana", url)
        self.ticket = handoff.escalate(conv, "keyword", database_url=url).ticket
        assert handoff.claim_ticket(self.ticket.id, self.trainee.id, url) is not None

    def pushed(self) -> list[tuple[str, str]]:
        return [(m.author, m.text) for m in conversations.pushed_after(self.conv, 0, self.url)
                if m.author == "agent"]

    def hold(self, text: str = "Hello, I can help", **kw: str) -> int:
        written = handoff.agent_reply(self.ticket.id, self.trainee.id, text, self.url, **kw)
        assert written.held
        return written.id


@pytest.fixture
def desk(any_db: str) -> Desk:
    return Desk(any_db)


def test_a_trainees_reply_is_held_not_sent(desk: Desk) -> None:
    rid = desk.hold()
    assert desk.pushed() == []
    [review] = approvals.waiting(desk.url)
    assert (review.id, review.status, review.draft, review.agent_id) == (
        rid, "pending", "Hello, I can help", desk.trainee.id)
    kinds = [e.kind for e in events.events_after(0, database_url=desk.url)]
    assert kinds[-1] == "reply_held"
    with session_scope(desk.url) as s:  # no first reply yet: the customer has none
        assert s.get(handoff.Ticket, desk.ticket.id).first_reply_at is None


def test_an_agent_who_is_not_a_trainee_sends_straight_away(desk: Desk) -> None:
    agents.set_trainee(desk.trainee.id, False, desk.url)
    written = handoff.agent_reply(desk.ticket.id, desk.trainee.id, "Straight out", desk.url)
    assert not written.held and desk.pushed() == [("agent", "Straight out")]
    assert approvals.waiting(desk.url) == []


def test_approved_as_written_goes_out_with_its_approver(desk: Desk) -> None:
    rid = desk.hold("Here is our returns policy", reply_name="utter_returns")
    view = approvals.approve(rid, desk.sup.id, database_url=desk.url)
    assert view.status == "approved" and view.decided_by == desk.sup.id
    assert desk.pushed() == [("agent", "Here is our returns policy")]
    line = next(m for m in conversations.transcript(desk.conv, desk.url) if m.author == "agent")
    assert (line.id, line.agent_id, line.approved_by) == (view.message_id, desk.trainee.id,
                                                          desk.sup.id)
    with session_scope(desk.url) as s:
        message = s.get(conversations.Message, view.message_id)
        assert (message.delivery, message.reply_name) == ("push", "utter_returns")
        assert s.get(handoff.Ticket, desk.ticket.id).first_reply_at is not None
    assert approvals.waiting(desk.url) == []


def test_edit_then_approve_sends_the_edit_and_keeps_the_draft(desk: Desk) -> None:
    rid = desk.hold("Your refund is late sorry", reply_name="utter_returns")
    view = approvals.approve(rid, desk.admin.id, " I'm sorry your refund is late. ", desk.url)
    assert desk.pushed() == [("agent", "I'm sorry your refund is late.")]
    assert (view.draft, view.text) == ("Your refund is late sorry",
                                       "I'm sorry your refund is late.")
    assert view.as_json()["edited"] is True
    with session_scope(desk.url) as s:  # no longer the canned reply as written
        assert s.get(conversations.Message, view.message_id).reply_name is None
    with pytest.raises(ValueError, match="needs some text"):
        approvals.approve(desk.hold(), desk.sup.id, "   ", desk.url)


def test_send_back_sends_nothing_and_notes_the_comment(desk: Desk) -> None:
    rid = desk.hold("idk")
    view = approvals.send_back(rid, desk.sup.id, "Greet them and check the order first",
                               desk.url)
    assert (view.status, view.comment) == ("returned", "Greet them and check the order first")
    assert desk.pushed() == []
    notes = [m.text for m in conversations.transcript(desk.conv, desk.url) if m.author == "note"]
    assert notes == ["Reply sent back by Sue: Greet them and check the order first"]
    with pytest.raises(approvals.AlreadyDecided, match="already returned"):
        approvals.approve(rid, desk.sup.id, database_url=desk.url)
    with pytest.raises(ValueError, match="comment"):
        approvals.send_back(desk.hold(), desk.sup.id, " ", desk.url)


def test_only_supervisors_and_admins_review(desk: Desk) -> None:
    rid = desk.hold()
    for who in (desk.agent.id, desk.trainee.id):
        with pytest.raises(approvals.NotASupervisor):
            approvals.approve(rid, who, database_url=desk.url)
        with pytest.raises(approvals.NotASupervisor):
            approvals.send_back(rid, who, "no", desk.url)
    agents.disable_user(desk.sup.id, desk.admin.id, desk.url)
    with pytest.raises(approvals.NotASupervisor):
        approvals.approve(rid, desk.sup.id, database_url=desk.url)
    assert desk.pushed() == [] and approvals.waiting(desk.url)[0].status == "pending"


def test_two_supervisors_approving_at_once_send_one_reply(desk: Desk) -> None:
    rid = desk.hold("Only once")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def approve(who: int) -> None:
        barrier.wait()
        try:
            approvals.approve(rid, who, database_url=desk.url)
            results.append("sent")
        except approvals.AlreadyDecided:
            results.append("already")

    threads = [threading.Thread(target=approve, args=(w,)) for w in (desk.sup.id, desk.admin.id)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["already", "sent"]
    assert desk.pushed() == [("agent", "Only once")]


def test_resolve_waits_for_held_replies_and_withdraw_frees_it(desk: Desk) -> None:
    rid = desk.hold()
    with pytest.raises(handoff.TransitionError, match="wait for a supervisor"):
        handoff.resolve(desk.ticket.id, desk.trainee.id, desk.url)
    with pytest.raises(approvals.NotASupervisor, match="writer"):
        approvals.withdraw(rid, desk.agent.id, desk.url)
    assert approvals.withdraw(rid, desk.trainee.id, desk.url).status == "withdrawn"
    assert handoff.resolve(desk.ticket.id, desk.trainee.id, desk.url).status == "resolved"
    with pytest.raises(approvals.AlreadyDecided):
        approvals.approve(rid, desk.sup.id, database_url=desk.url)
    assert desk.pushed() == []


def test_a_dismissed_ticket_withdraws_its_held_replies(desk: Desk) -> None:
    rid = desk.hold()
    handoff.dismiss([desk.ticket.id], desk.sup.id, desk.url)
    assert approvals.of_ticket(desk.ticket.id, desk.url)[0].status == "withdrawn"
    with pytest.raises(approvals.AlreadyDecided):
        approvals.approve(rid, desk.sup.id, database_url=desk.url)
    assert desk.pushed() == []


def test_a_transferred_ticket_still_gets_the_approved_reply(desk: Desk) -> None:
    rid = desk.hold("Passing you to Ana, who will finish this")
    handoff.transfer(desk.ticket.id, desk.trainee.id, desk.agent.id, desk.url)
    approvals.approve(rid, desk.sup.id, database_url=desk.url)
    assert desk.pushed() == [("agent", "Passing you to Ana, who will finish this")]


def test_only_agents_can_be_trainees(desk: Desk) -> None:
    for user in (desk.sup, desk.admin):
        with pytest.raises(ValueError, match="only agents"):
            agents.set_trainee(user.id, True, desk.url)
    summary = {u.username: u.trainee for u in agents.list_users(desk.url)}
    assert summary == {"tina": True, "sue": False, "root": False, "ana": False}


def test_timings_measure_review_and_delivery(desk: Desk) -> None:
    assert approvals.timings(desk.url).approved == 0
    view = approvals.approve(desk.hold(), desk.sup.id, database_url=desk.url)
    t = approvals.timings(desk.url)
    assert (t.approved, t.delivered) == (1, 0)  # the web chat fetches its own replies
    assert t.review_p50 is not None and 0 <= t.review_p50 < 30
    with session_scope(desk.url) as s:  # a platform accepted it 0.4 s after approval
        message = s.get(conversations.Message, view.message_id)
        message.sent_at = view.decided_at + timedelta(seconds=0.4)
    t = approvals.timings(desk.url)
    assert t.delivered == 1 and t.delivery_p50 == pytest.approx(0.4, abs=0.01)


def test_the_customer_leaving_the_queue_withdraws_held_replies(desk: Desk) -> None:
    rid = desk.hold()
    assert handoff.abandon(desk.conv, database_url=desk.url)
    assert approvals.waiting(desk.url) == []
    assert approvals.of_ticket(desk.ticket.id, desk.url)[0].status == "withdrawn"
    with pytest.raises(approvals.AlreadyDecided, match="withdrawn"):
        approvals.approve(rid, desk.sup.id, database_url=desk.url)
    assert desk.pushed() == []


def test_after_a_transfer_the_new_holder_may_resolve(desk: Desk) -> None:
    """The trainee's held reply does not block Ana, who now holds the ticket: it
    closes with the ticket, unsent."""
    desk.hold()
    handoff.transfer(desk.ticket.id, desk.trainee.id, desk.agent.id, desk.url)
    assert handoff.resolve(desk.ticket.id, desk.agent.id, desk.url).status == "resolved"
    assert [r.status for r in approvals.of_ticket(desk.ticket.id, desk.url)] == ["withdrawn"]
    assert desk.pushed() == []


def test_approve_racing_dismiss_ends_one_way_or_the_other(any_db: str) -> None:
    """Approve locks the ticket before the review, as dismiss does: no deadlock, and
    either the reply went out before the ticket closed or it was withdrawn."""
    desk = Desk(any_db, "webchat:race0")
    for i in range(8):
        conv = f"webchat:race{i + 1}"
        ticket = handoff.escalate(conv, "keyword", database_url=any_db).ticket
        handoff.claim_ticket(ticket.id, desk.trainee.id, any_db)
        rid = handoff.agent_reply(ticket.id, desk.trainee.id, f"reply {i}", any_db).id
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(fn: Callable[[], object], barrier: threading.Barrier = barrier,
                errors: list[BaseException] = errors) -> None:
            barrier.wait()
            try:
                fn()
            except approvals.AlreadyDecided:
                pass
            except BaseException as exc:  # a deadlock would land here
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(partial(
                       approvals.approve, rid, desk.sup.id, database_url=any_db),)),
                   threading.Thread(target=run, args=(partial(
                       handoff.dismiss, [ticket.id], desk.admin.id, any_db),))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        [review] = approvals.of_ticket(ticket.id, any_db)
        sent = [m.text for m in conversations.pushed_after(conv, 0, any_db)
                if m.author == "agent"]
        assert (review.status, sent) in [("approved", [f"reply {i}"]), ("withdrawn", [])]
        assert handoff.get_ticket(ticket.id, any_db).status == "abandoned"
