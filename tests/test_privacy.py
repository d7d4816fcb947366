"""A customer's data: export, erasure (Rasa's tracker included), retention, the audit
trail, and files only their owner can read. On SQLite and PostgreSQL; the desk and
the CLI as real processes; `parley run` once, for the modes of what it creates and a
real conversation's tracker erased through the desk."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

import parley.bot.models  # every table on Base
from parley.bot import agents, audit, handoff, inbox, privacy, storage, tracker_events
from parley.bot.conversations import Conversation, Message
from parley.bot.events import DeskEvent
from parley.bot.handoff import approvals
from parley.bot.handoff.tickets import Rating, Ticket
from parley.bot.storage import Base, utcnow
from parley.bot.survey import Survey, SurveyAnswer
from tests import REPO_ROOT as PROJECT_ROOT
from tests.conftest import _hours_file, _read_banner, stop_run, wait_until
from tests.fakes.stack import free_port
from tests.test_desk import Desk

DAY = timedelta(days=1)
ANA = ("ana", "ana-password-1")
ROOT = ("root", "root-password-1")


# -- fixtures: a tracker store where Rasa would have it, and seeded conversations --------


@dataclass
class Tracker:
    store: SQLTrackerStore  # Rasa's own, to write events as Rasa does
    endpoints: Path

    def save(self, sender: str, events: list[Event]) -> None:
        asyncio.run(self.store.save(DialogueStateTracker.from_events(sender, events)))

    def senders(self) -> set[str]:
        with self.store.engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT DISTINCT sender_id FROM events")).scalars())

    def texts(self, sender: str) -> list[str]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT data FROM events WHERE sender_id = :s "
                                        "ORDER BY id"), {"s": sender}).scalars()
            return [json.loads(r).get("text") or json.loads(r)["event"] for r in rows]


@pytest.fixture
def tracker(any_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracker]:
    """Rasa's SQL tracker store, named in an endpoints file as Rasa reads it: its own
    SQLite file, or Parley's PostgreSQL database through a ${VARIABLE}."""
    if any_db.startswith("sqlite"):
        section = {"type": "SQL", "dialect": "sqlite", "db": str(tmp_path / "tracker.db")}
        store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "tracker.db"))
    else:
        monkeypatch.setenv("PRIVACY_TEST_TRACKER_URL", any_db)
        section = {"type": "parley.bot.tracker_store.SQLTrackerStore",
                   "dialect": "postgresql", "url": "${PRIVACY_TEST_TRACKER_URL}"}
        store = SQLTrackerStore(Domain.empty(), host=any_db)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(yaml.safe_dump({"tracker_store": section}))
    monkeypatch.setenv(tracker_events.ENDPOINTS_ENV, str(endpoints))
    yield Tracker(store, endpoints)
    store.engine.dispose()


def agent(db: str, username: str, password: str, role: str) -> int:
    return agents.create_user(username, password, role, username.title(), db).id


def rasa_turns(marker: str, at: float | None = None) -> list[Event]:
    at = at or time.time()
    return [ActionExecuted("action_session_start", timestamp=at), SessionStarted(timestamp=at),
            ActionExecuted("action_listen", timestamp=at),
            UserUttered(f"rasa heard {marker}", {"name": "greet", "confidence": 0.9},
                        timestamp=at + 1),
            BotUttered(f"rasa said {marker}", timestamp=at + 2)]


def seed(db: str, tracker: Tracker, conversation_id: str, marker: str, agent_id: int,
         close: bool = True, turns: list[Event] | None = None) -> int:
    """What a conversation leaves behind, written by the code that writes it: the
    customer's messages, a ticket (context, tags, a note, a reply), its survey with an
    answer, an old-style rating, desk events, and Rasa's tracker events. The ticket id."""
    inbox.store(conversation_id, f"customer wrote {marker}", display_name=f"Name {marker}",
                platform_message_id=f"pm-{marker}", database_url=db)
    ticket = handoff.escalate(conversation_id, "keyword", database_url=db,
                              context={"last_intent": f"intent-{marker}"}).ticket
    handoff.claim_ticket(ticket.id, agent_id, db)
    handoff.agent_reply(ticket.id, agent_id, f"agent replied {marker}", db)
    agents.set_trainee(agent_id, True, db)  # a reply held for approval, then withdrawn
    held = handoff.agent_reply(ticket.id, agent_id, f"trainee draft {marker}", db)
    approvals.withdraw(held.id, agent_id, db)
    agents.set_trainee(agent_id, False, db)
    handoff.add_note(ticket.id, agent_id, f"note about {marker}", db)
    handoff.set_tags(ticket.id, [f"tag-{marker}"], db)
    if close:
        handoff.resolve(ticket.id, agent_id, db)
        with storage.session_scope(db) as session:
            survey = session.execute(sa.select(Survey).where(
                Survey.conversation_id == conversation_id)).scalar_one()
            session.add(SurveyAnswer(survey_id=survey.id, question="improve",
                                     text=f"survey answer {marker}", created_at=utcnow()))
            session.add(Rating(ticket_id=ticket.id, score=4, created_at=utcnow()))
    tracker.save(conversation_id, rasa_turns(marker) if turns is None else turns)
    return ticket.id


def backdate(db: str, conversation_id: str, by: timedelta) -> None:
    """Move every row of the conversation `by` into the past (as if written then)."""
    engine = storage.get_engine(db)
    with engine.begin() as conn:
        tickets = conn.execute(sa.select(Ticket.id).where(
            Ticket.conversation_id == conversation_id)).scalars().all()
        surveys = conn.execute(sa.select(Survey.id).where(
            Survey.conversation_id == conversation_id)).scalars().all()
        for table, where, columns in (
                (Conversation, Conversation.id == conversation_id,
                 ("created_at", "last_customer_at")),
                (Message, Message.conversation_id == conversation_id, ("created_at", "sent_at")),
                (Ticket, Ticket.conversation_id == conversation_id,
                 ("created_at", "assigned_at", "first_reply_at", "resolved_at")),
                (Survey, Survey.conversation_id == conversation_id,
                 ("started_at", "finished_at", "window_until")),
                (SurveyAnswer, SurveyAnswer.survey_id.in_(surveys), ("created_at",)),
                (Rating, Rating.ticket_id.in_(tickets), ("created_at",)),
                (DeskEvent, sa.or_(DeskEvent.conversation_id == conversation_id,
                                   DeskEvent.ticket_id.in_(tickets)), ("created_at",))):
            for column in columns:
                for key, value in conn.execute(sa.select(table.id, getattr(table, column))
                                               .where(where)).all():
                    if value is not None:
                        conn.execute(sa.update(table).where(table.id == key)
                                     .values({column: value - by}))


def rows_naming(db: str, conversation_ids: list[str], ticket_ids: list[int]) -> dict[str, int]:
    """Rows in any table (every model, so a new table is checked too) that name these
    conversations, their tickets or their surveys."""
    out: dict[str, int] = {}
    with storage.get_engine(db).connect() as conn:
        survey_ids = conn.execute(sa.select(Survey.id).where(
            Survey.conversation_id.in_(conversation_ids))).scalars().all()
        for table in Base.metadata.sorted_tables:
            keys = [(c, ids) for c, ids in (("conversation_id", conversation_ids),
                                             ("ticket_id", ticket_ids),
                                             ("survey_id", survey_ids),
                                             ("rating_ticket_id", ticket_ids))
                    if c in table.c and ids]
            if table.name == "conversations":
                keys.append(("id", conversation_ids))
            if table.name == "tickets":
                keys.append(("id", ticket_ids))
            for column, ids in keys:
                count = conn.execute(sa.select(sa.func.count()).select_from(table)
                                     .where(table.c[column].in_(ids))).scalar()
                if count:
                    out[f"{table.name}.{column}"] = int(count)
    return out


THEM = ["telegram:1001", "whatsapp:351912345678"]  # one customer, two channels
OTHER = "telegram:2002"


@pytest.fixture
def seeded(any_db: str, tracker: Tracker) -> dict[str, Any]:
    ana = agent(any_db, *ANA, "agent")
    tickets = {cid: seed(any_db, tracker, cid, marker, ana)
               for cid, marker in zip([*THEM, OTHER], ["alpha", "beta", "gamma"], strict=True)}
    return {"db": any_db, "tracker": tracker, "agent": ana, "tickets": tickets}


# -- export -----------------------------------------------------------------------------


def test_export_holds_everything_of_the_customer_and_nothing_of_another(
        seeded: dict[str, Any]) -> None:
    db = seeded["db"]
    data = privacy.export([THEM[0], THEM[1], THEM[0]], "agent:7", db)
    json.dumps(data)  # JSON-able as it is
    assert [c["id"] for c in data["conversations"]] == THEM and data["not_found"] == []
    for conversation, marker in zip(data["conversations"], ["alpha", "beta"], strict=True):
        assert conversation["display_name"] == f"Name {marker}"
        assert conversation["channel"] == conversation["id"].split(":")[0]
        said = [m["text"] for m in conversation["messages"]]
        assert f"customer wrote {marker}" in said and f"agent replied {marker}" in said
        assert f"note about {marker}" not in said  # notes are under their ticket
        [ticket] = conversation["tickets"]
        assert ticket["id"] == seeded["tickets"][conversation["id"]]
        assert ticket["context"] == {"last_intent": f"intent-{marker}"}
        assert ticket["tags"] == [f"tag-{marker}"] and ticket["status"] == "resolved"
        assert [n["text"] for n in ticket["notes"]] == [f"note about {marker}"]
        assert [r["draft"] for r in ticket["reply_reviews"]] == [f"trainee draft {marker}"]
        assert ticket["rating"]["score"] == 4
        [survey] = conversation["surveys"]
        assert [a["text"] for a in survey["answers"]] == [f"survey answer {marker}"]
        kinds = [e["kind"] for e in conversation["desk_events"]]
        assert {"ticket_created", "ticket_claimed", "ticket_resolved"} <= set(kinds)
        heard = [e["data"].get("text") for e in conversation["tracker_events"]]
        assert f"rasa heard {marker}" in heard and f"rasa said {marker}" in heard
        assert not {"lease_owner", "claimed_by"} & (set(conversation)
                                                    | set(conversation["messages"][0]))
    assert data["agents"] == {str(seeded["agent"]): "Ana"}
    text = json.dumps(data)
    assert "gamma" not in text and OTHER not in text  # nothing of the third
    counts = data["counts"]
    assert counts["conversations"] == 2 and counts["tickets"] == 2 and counts["ratings"] == 2
    assert counts["tracker_events"] == 10 and counts["survey_answers"] == 2
    assert counts["reply_reviews"] == 2
    [entry] = audit.recent(10, db)
    assert (entry.actor, entry.action, entry.subject) == (
        "agent:7", "export", [audit.pseudonym(c) for c in THEM])
    assert entry.details == counts and "alpha" not in json.dumps(entry.details)


def test_export_lists_unknown_conversations_and_refuses_bad_ids(seeded: dict[str, Any]) -> None:
    db = seeded["db"]
    data = privacy.export(["telegram:1001", "messenger:404"], audit.CLI, db)
    assert [c["id"] for c in data["conversations"]] == ["telegram:1001"]
    assert data["not_found"] == ["messenger:404"]
    assert privacy.export(["messenger:404"], audit.CLI, db)["conversations"] == []
    for bad in (["telegram"], ["Telegram:1"], ["telegram:1 2"], [], ["x:" + "1" * 200], [5],
                ["telegram:1;drop"], [f"telegram:{i}" for i in range(51)]):
        with pytest.raises(ValueError):
            privacy.export(bad, audit.CLI, db)
    assert [e.subject for e in audit.recent(10, db)] == [[audit.pseudonym("telegram:1001")]]


# -- erasure ----------------------------------------------------------------------------


def test_erase_removes_everything_across_channels_and_leaves_the_third(
        seeded: dict[str, Any]) -> None:
    db, tracker = seeded["db"], seeded["tracker"]
    theirs = [seeded["tickets"][cid] for cid in THEM]
    other_before = privacy.export([OTHER], audit.CLI, db)
    assert rows_naming(db, THEM, theirs)  # the check sees them before
    result = privacy.erase(THEM, "agent:1", db)
    assert rows_naming(db, THEM, theirs) == {}
    assert tracker.senders() == {OTHER}
    erased = result["erased"]
    assert erased["conversations"] == 2 and erased["tickets"] == 2 and erased["ratings"] == 2
    assert erased["surveys"] == 2 and erased["survey_answers"] == 2
    assert erased["reply_reviews"] == 2
    assert erased["tracker_events"] == 10 and result["not_found"] == []
    other_after = privacy.export([OTHER], audit.CLI, db)
    for data in (other_before, other_after):
        data.pop("exported_at")
    assert other_after == other_before
    erase_entry = next(e for e in audit.recent(10, db) if e.action == "erase")
    assert (erase_entry.actor, erase_entry.subject) == (
        "agent:1", [audit.pseudonym(c) for c in THEM])
    # The trail names no one (a WhatsApp id is a phone number), yet proves the erasure
    # to whoever knows the id.
    trail = json.dumps([e.as_json() for e in audit.recent(50, db)])
    assert "351912345678" not in trail
    assert [e.action for e in audit.about(THEM[1], db)] == ["erase"]
    assert {e.action for e in audit.about(OTHER, db)} == {"export"}
    assert audit.about("telegram:3003", db) == []
    assert erase_entry.details == erased
    # Idempotent: again, nothing left, nothing found.
    again = privacy.erase(THEM, "agent:1", db)
    assert set(again["erased"].values()) == {0} and again["not_found"] == THEM


def test_erase_waits_for_a_bot_turn_in_progress(any_db: str, tracker: Tracker) -> None:
    """A worker holds the conversation's lease (Rasa is answering): erasing now would
    let the turn write its reply and tracker after the erasure, so it is refused."""
    ana = agent(any_db, *ANA, "agent")
    seed(any_db, tracker, "telegram:busy", "busy", ana)
    with storage.session_scope(any_db) as session:
        session.execute(sa.update(Conversation).where(Conversation.id == "telegram:busy")
                        .values(lease_owner="worker-1",
                                lease_until=utcnow() + timedelta(seconds=5)))
    with pytest.raises(privacy.InProgress, match="telegram:busy is being answered"):
        privacy.erase(["telegram:busy"], audit.CLI, any_db)
    assert rows_naming(any_db, ["telegram:busy"], []) and tracker.senders() == {"telegram:busy"}
    with storage.session_scope(any_db) as session:  # the turn ended: its lease released
        session.execute(sa.update(Conversation).where(Conversation.id == "telegram:busy")
                        .values(lease_owner=None, lease_until=None))
    assert privacy.erase(["telegram:busy"], audit.CLI, any_db)["erased"]["conversations"] == 1


def test_erase_refuses_a_conversation_with_an_open_ticket(any_db: str, tracker: Tracker) -> None:
    ana = agent(any_db, *ANA, "agent")
    ticket = seed(any_db, tracker, "telegram:1", "open", ana, close=False)
    seed(any_db, tracker, "webchat:closed", "closed", ana)
    with pytest.raises(privacy.OpenTickets, match=f"ticket {ticket} \\(telegram:1\\)"):
        privacy.erase(["webchat:closed", "telegram:1"], audit.CLI, any_db)
    assert rows_naming(any_db, ["webchat:closed"], [])  # nothing of either went
    assert tracker.senders() == {"telegram:1", "webchat:closed"}
    assert audit.recent(10, any_db) == []
    handoff.resolve(ticket, ana, any_db)
    assert privacy.erase(["webchat:closed", "telegram:1"], audit.CLI, any_db)["erased"][
        "conversations"] == 2


def test_tables_that_name_a_conversation_are_all_erased() -> None:
    """A table added later with a conversation, ticket or survey column must be
    erased too: this lists them, so the list in privacy.py is updated with it."""
    naming = {t.name for t in Base.metadata.sorted_tables
              if {"conversation_id", "ticket_id", "survey_id"} & set(t.c.keys())}
    assert naming == {"messages", "tickets", "ratings", "surveys", "survey_answers",
                      "desk_events", "contact_identifiers", "contact_conversations",
                      "reply_reviews"}


# -- retention --------------------------------------------------------------------------


def retention_setup(db: str, tracker: Tracker) -> dict[str, Any]:
    """Five conversations around a 30-day retention, 60 days old where old."""
    ana = agent(db, *ANA, "agent")
    old = time.time() - 60 * 86400
    seed(db, tracker, "telegram:old", "old", ana, turns=rasa_turns("old", old))  # goes whole
    backdate(db, "telegram:old", 60 * DAY)
    # An old ticket; the customer writes again now, in a new Rasa session.
    seed(db, tracker, "whatsapp:mixed", "mixed-old", ana,
         turns=[*rasa_turns("mixed-old", old), *rasa_turns("mixed-new")])
    backdate(db, "whatsapp:mixed", 60 * DAY)
    inbox.store("whatsapp:mixed", "customer wrote mixed-new", database_url=db)
    held = seed(db, tracker, "telegram:held", "held", ana, close=False)  # an agent has it
    backdate(db, "telegram:held", 60 * DAY)
    seed(db, tracker, "telegram:new", "new", ana)  # recent: untouched
    # A Rasa session begun before the cutoff and still going: Rasa reads all of it.
    tracker.save("webchat:live", [*rasa_turns("live-old", old)[:-1],
                                  UserUttered("rasa heard live-new", timestamp=time.time())])
    return {"held": held}


def expect_retained(db: str, tracker: Tracker, held: int) -> None:
    assert privacy.preview(["telegram:old"], db) == dict.fromkeys(
        ["conversations", "messages", "tickets", "ratings", "surveys", "survey_answers",
         "desk_events", "reply_reviews", "contact_identifiers", "contact_links",
         "tracker_events"], 0)
    [mixed] = privacy.export(["whatsapp:mixed"], audit.CLI, db)["conversations"]
    assert [m["text"] for m in mixed["messages"]] == ["customer wrote mixed-new"]
    assert mixed["tickets"] == [] and mixed["surveys"] == [] and mixed["desk_events"] == []
    assert [e["data"].get("text") for e in mixed["tracker_events"]
            if e["type"] == "user"] == ["rasa heard mixed-new"]  # the old session went
    [kept] = privacy.export(["telegram:held"], audit.CLI, db)["conversations"]
    assert [t["id"] for t in kept["tickets"]] == [held]  # open: kept, with its transcript
    assert {m["text"] for m in kept["messages"]} >= {"customer wrote held", "agent replied held"}
    new = privacy.preview(["telegram:new"], db)
    assert new["messages"] >= 3 and new["tickets"] == 1 and new["tracker_events"] == 5
    assert tracker.texts("webchat:live")[-1] == "rasa heard live-new"
    assert len(tracker.texts("webchat:live")) == 5


def test_retention_deletes_only_what_is_older(any_db: str, tracker: Tracker) -> None:
    held = retention_setup(any_db, tracker)["held"]
    runs = []
    while True:  # batches of 2 rows: a backlog goes in several short runs
        runs.append(privacy.apply_retention(30, any_db, batch=2))
        if not runs[-1].more:
            break
    assert len(runs) > 3
    expect_retained(any_db, tracker, held)
    total = {k: sum(r.counts[k] for r in runs) for k in runs[0].counts}
    assert total["conversations"] == 1 and total["tickets"] == 2 and total["ratings"] == 2
    assert total["tracker_events"] == 10  # telegram:old's 5, whatsapp:mixed's old 5
    entries = [e for e in audit.recent(200, any_db) if e.action == "retention"]
    assert len(entries) == sum(1 for r in runs if any(r.counts.values()))
    for entry in entries:
        assert (entry.actor, entry.subject, entry.details["days"]) == ("retention job", [], 30)
        assert set(entry.details) - {"days", "cutoff"} == set(total)  # counts only
    assert sum(e.details["messages"] for e in entries) == total["messages"]
    nothing = privacy.apply_retention(30, any_db)
    assert not any(nothing.counts.values()) and not nothing.more
    assert len([e for e in audit.recent(200, any_db) if e.action == "retention"]) == len(entries)


def test_retention_from_two_replicas_deletes_each_row_once(pg_url: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Desk replicas (PostgreSQL) run the job at the same time: no errors, and the
    counts they report add up to what there was."""
    monkeypatch.setenv("PRIVACY_TEST_TRACKER_URL", pg_url)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(yaml.safe_dump({"tracker_store": {
        "type": "SQL", "dialect": "postgresql", "url": "${PRIVACY_TEST_TRACKER_URL}"}}))
    monkeypatch.setenv(tracker_events.ENDPOINTS_ENV, str(endpoints))
    store = Tracker(SQLTrackerStore(Domain.empty(), host=pg_url), endpoints)
    try:
        ana = agent(pg_url, *ANA, "agent")
        for i in range(6):
            seed(pg_url, store, f"telegram:{i}", f"m{i}", ana)
            backdate(pg_url, f"telegram:{i}", 60 * DAY)
        before = privacy.preview([f"telegram:{i}" for i in range(6)], pg_url)
        results: list[privacy.Retention] = []
        errors: list[BaseException] = []

        def replica() -> None:
            try:
                while True:
                    run = privacy.apply_retention(30, pg_url, batch=3)
                    results.append(run)
                    if not run.more:
                        return
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=replica) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        # What both skipped while the other held it (a conversation whose last rows the
        # other was deleting) goes on the next run.
        results.append(privacy.apply_retention(30, pg_url))
        total = {k: sum(r.counts[k] for r in results) for k in results[0].counts}
        assert {k: v for k, v in total.items() if k != "tracker_events"} == {
            k: v for k, v in before.items() if k != "tracker_events"}
        assert rows_naming(pg_url, [f"telegram:{i}" for i in range(6)], list(range(1, 99))) == {}
    finally:
        store.store.engine.dispose()


# -- the desk: routes and the retention loop, in a real desk process --------------------


@contextmanager
def desk_process(db: str, tmp_path: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / f"desk-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.bot.desk", "--port", str(port), *args],
            cwd=PROJECT_ROOT, stdout=log, stderr=log,
            env={**os.environ, "PARLEY_DATABASE_URL": db, "PARLEY_FOLLOWUP_HOURS": "0",
                 **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until(lambda: _answers(url), 60):
            pytest.fail(f"desk did not start: {log_path.read_text()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_desk_routes_export_erase_audit(seeded: dict[str, Any], tmp_path: Path) -> None:
    db = seeded["db"]
    agent(db, *ROOT, "admin")
    with desk_process(db, tmp_path) as url:
        desk = Desk(url, db)
        try:
            root, csrf = desk.login(*ROOT)
            ana, ana_csrf = desk.login(*ANA)
            query = "/api/privacy/export?conversation=telegram:1001&conversation=" + THEM[1]
            assert ana.get(query).status_code == 403  # agents: no
            assert httpx.get(url + query).status_code == 401
            exported = root.get(query)
            assert exported.status_code == 200, exported.text
            assert exported.headers["content-disposition"].startswith(
                'attachment; filename="parley-export-')
            assert [c["id"] for c in exported.json()["conversations"]] == THEM
            assert "gamma" not in exported.text
            for bad, reason in (("conversation=telegram", "not a conversation id"),
                                ("", "at least one"), ("conversation=a:1&who=me", "unknown"),
                                ("conversation=telegram:%00", "not a conversation id")):
                resp = root.get(f"/api/privacy/export?{bad}")
                assert resp.status_code == 400 and reason in resp.json()["error"], bad
            missing = root.get("/api/privacy/export?conversation=messenger:404")
            assert missing.status_code == 404 and "nothing is stored" in missing.json()["error"]

            h = {"X-CSRF-Token": csrf}
            body = {"conversations": THEM, "confirm": "ERASE"}
            assert ana.post("/api/privacy/erase", json=body,
                            headers={"X-CSRF-Token": ana_csrf}).status_code == 403
            assert root.post("/api/privacy/erase", json=body).status_code == 403  # no CSRF
            for bad_body, reason in (({"conversations": THEM}, "'confirm'"),
                                     ({"conversations": THEM, "confirm": "erase"}, "'confirm'"),
                                     ({"conversations": "telegram:1001", "confirm": "ERASE"},
                                      "non-empty list"),
                                     ({"conversations": ["tg 1"], "confirm": "ERASE"},
                                      "not a conversation id")):
                resp = root.post("/api/privacy/erase", json=bad_body, headers=h)
                assert resp.status_code == 400 and reason in resp.json()["error"], bad_body
            assert rows_naming(db, THEM, [])  # nothing went on a refusal
            erased = root.post("/api/privacy/erase", json=body, headers=h)
            assert erased.status_code == 200, erased.text
            assert erased.json()["erased"]["tracker_events"] == 10
            assert rows_naming(db, THEM, [seeded["tickets"][c] for c in THEM]) == {}
            assert seeded["tracker"].senders() == {OTHER}

            trail = root.get("/api/privacy/audit?limit=5").json()["entries"]
            root_id = next(a.id for a in agents.list_agents(db) if a.username == "root")
            assert [(e["action"], e["actor"]) for e in trail] == [
                ("erase", f"agent:{root_id}"), ("export", f"agent:{root_id}")]
            for entry in trail:  # pseudonyms: the channel and a keyed hash, no raw id
                assert [s.split(":#")[0] for s in entry["subject"]] == ["telegram", "whatsapp"]
                assert "351912345678" not in json.dumps(entry)
            assert ana.get("/api/privacy/audit").status_code == 403
            assert root.get("/api/privacy/audit?limit=0").status_code == 400
        finally:
            desk.close_clients()


def test_desk_refuses_to_erase_an_open_ticket(any_db: str, tracker: Tracker,
                                              tmp_path: Path) -> None:
    ana = agent(any_db, *ANA, "agent")
    agent(any_db, *ROOT, "admin")
    ticket = seed(any_db, tracker, "telegram:5", "busy", ana, close=False)
    with desk_process(any_db, tmp_path) as url:
        desk = Desk(url, any_db)
        try:
            root, csrf = desk.login(*ROOT)
            resp = root.post("/api/privacy/erase", headers={"X-CSRF-Token": csrf},
                             json={"conversations": ["telegram:5"], "confirm": "ERASE"})
            assert resp.status_code == 409 and f"ticket {ticket}" in resp.json()["error"]
            assert rows_naming(any_db, ["telegram:5"], [ticket])
        finally:
            desk.close_clients()


def test_retention_runs_as_a_supervised_loop_in_the_desk(any_db: str, tracker: Tracker,
                                                         tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "parley.yml").write_text(yaml.safe_dump({
        "personal_data": {"retention_days": 30},
        "replies": str(PROJECT_ROOT / "data" / "responses.yml")}))
    held = retention_setup(any_db, tracker)["held"]
    env = {"PARLEY_PROJECT": str(project), "PARLEY_VAR_DIR": str(tmp_path / "var")}
    with desk_process(any_db, tmp_path, env, ("--retention-check-seconds", "1")) as url:
        assert wait_until(lambda: not any(privacy.preview(["telegram:old"], any_db).values())
                          and privacy.preview(["whatsapp:mixed"], any_db)["tracker_events"] == 5,
                          60)
        expect_retained(any_db, tracker, held)
        assert any(e.actor == "retention job" for e in audit.recent(50, any_db))
        # It goes on: an old conversation stored now goes on a later run.
        ana = next(a.id for a in agents.list_agents(any_db) if a.username == "ana")
        seed(any_db, tracker, "telegram:later", "later", ana)
        backdate(any_db, "telegram:later", 45 * DAY)
        assert wait_until(lambda: privacy.preview(["telegram:later"], any_db)["messages"] == 0,
                          30)
        health = httpx.get(f"{url}/health", timeout=5).json()
        assert health["loops"]["retention"]["ok"] and health["loops"]["retention"][
            "failures"] == 0


# -- the CLI ----------------------------------------------------------------------------


def parley(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parley.bot.cli", *args], cwd=PROJECT_ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)


def test_cli_export_and_erase_customer(seeded: dict[str, Any], tmp_path: Path) -> None:
    db, tracker = seeded["db"], seeded["tracker"]
    env = {"PARLEY_DATABASE_URL": db, "PARLEY_VAR_DIR": str(tmp_path / "var"),
           tracker_events.ENDPOINTS_ENV: str(tracker.endpoints)}
    out = tmp_path / "export.json"
    done = parley("export-customer", *THEM, "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [c["id"] for c in json.loads(out.read_text())["conversations"]] == THEM
    printed = parley("export-customer", OTHER, env=env)
    assert json.loads(printed.stdout)["conversations"][0]["id"] == OTHER
    bad = parley("export-customer", "telegram", env=env)
    assert bad.returncode == 2 and "not a conversation id" in bad.stderr
    asked = parley("erase-customer", *THEM, env=env)
    assert asked.returncode == 1 and "add --yes" in asked.stderr
    assert "2 tickets" in asked.stderr and "10 tracker events" in asked.stderr
    assert rows_naming(db, THEM, [])  # nothing erased without --yes
    erased = parley("erase-customer", *THEM, "--yes", env=env)
    assert erased.returncode == 0, erased.stderr
    assert "2 conversations" in erased.stdout and "10 tracker events" in erased.stdout
    assert rows_naming(db, THEM, [seeded["tickets"][c] for c in THEM]) == {}
    assert tracker.senders() == {OTHER}
    assert [(e.actor, e.action) for e in audit.recent(10, db)] == [
        ("cli", "erase"), ("cli", "export"), ("cli", "export")]


# -- files only their owner reads -------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def loose_umask() -> Iterator[None]:
    """The usual 022, so a private mode seen is the code's doing, not the test's."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_sqlite_files_are_the_owners_only(tmp_path: Path) -> None:
    env = {"PARLEY_VAR_DIR": str(tmp_path / "var")}
    env_without_db = {k: v for k, v in os.environ.items() if k != "PARLEY_DATABASE_URL"}
    with loose_umask():
        done = subprocess.run([sys.executable, "-m", "parley.bot.cli", "init-db"],
                              cwd=PROJECT_ROOT, env={**env_without_db, **env},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert mode(tmp_path / "var") == 0o700
        assert mode(tmp_path / "var" / "parley.db") == 0o600
        # Parley's own code in a process that set no umask (a test, a user's script).
        url = f"sqlite:///{tmp_path / 'elsewhere' / 'parley.db'}"
        storage.create_schema(url)
        with storage.get_engine(url).connect() as conn:  # WAL: -wal and -shm exist now
            conn.execute(sa.text("SELECT count(*) FROM conversations"))
            files = [tmp_path / "elsewhere" / f"parley.db{suffix}"
                     for suffix in ("", "-wal", "-shm")]
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        storage.get_engine(url).dispose()
        assert mode(tmp_path / "elsewhere") == 0o700


@dataclass
class Run:
    process: subprocess.Popen[str]
    var: Path
    rasa_url: str
    desk_url: str


@pytest.fixture(scope="module")
def parley_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """`parley run` (what `make run` starts) with a var dir it creates itself."""
    state = tmp_path_factory.mktemp("run")
    var = state / "var"
    rasa_port, action_port, desk_port = free_port(), free_port(), free_port()
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    env = {**os.environ, "PARLEY_RASA_PORT": str(rasa_port),
           "PARLEY_ACTION_PORT": str(action_port), "PARLEY_DESK_PORT": str(desk_port),
           "PARLEY_VAR_DIR": str(var), "PYTHONUNBUFFERED": "1",
           "PARLEY_SUPPORT_HOURS": str(_hours_file(state / "hours.yml",
                                                   dict.fromkeys(days, "00:00-24:00")))}
    env.pop("PARLEY_DATABASE_URL", None)
    env.pop(tracker_events.ENDPOINTS_ENV, None)
    with loose_umask():
        proc = subprocess.Popen([sys.executable, "-m", "parley.bot.cli", "run"],
                                cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        _read_banner(proc, timeout=240)
        yield Run(proc, var, f"http://127.0.0.1:{rasa_port}", f"http://127.0.0.1:{desk_port}")
    finally:
        stop_run(proc)


@pytest.mark.servers
def test_what_parley_run_creates_is_the_owners_only(parley_run: Run) -> None:
    var = parley_run.var
    httpx.post(f"{parley_run.rasa_url}/webhooks/webchat/webhook",
               json={"sender": "modes", "message": "hi"}, timeout=60).raise_for_status()
    dirs = [var, var / "log", var / "run"]
    files = [var / "parley.db", var / "parley.db-wal", var / "parley.db-shm",
             var / "tracker.db", var / "desk-admin-password.txt",
             *sorted((var / "log").iterdir()), *sorted((var / "run").iterdir())]
    assert {p.name for p in (var / "log").iterdir()} >= {"rasa.log", "actions.log", "desk.log"}
    assert {p.name for p in (var / "run").iterdir() if p.name.startswith("credentials")}
    assert {str(d): mode(d) for d in dirs} == {str(d): 0o700 for d in dirs}
    assert {str(f): mode(f) for f in files} == {str(f): 0o600 for f in files}
    others = [p for p in var.rglob("*") if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert others == []


@pytest.mark.servers
def test_a_real_conversation_is_erased_from_rasas_tracker_through_the_desk(
        parley_run: Run) -> None:
    """The desk finds the tracker store `parley run` gave Rasa (PARLEY_ENDPOINTS)."""
    sender = f"erase{time.monotonic_ns()}"
    conversation = f"webchat:{sender}"
    for text in ("hi", "where is my order?"):
        httpx.post(f"{parley_run.rasa_url}/webhooks/webchat/webhook",
                   json={"sender": sender, "message": text}, timeout=60).raise_for_status()
    tracker_db = parley_run.var / "tracker.db"
    events_left = sa.text("SELECT count(*) FROM events WHERE sender_id = :s")
    engine = sa.create_engine(f"sqlite:///{tracker_db}", future=True)
    db = f"sqlite:///{parley_run.var / 'parley.db'}"
    try:
        with engine.connect() as conn:
            assert conn.execute(events_left, {"s": conversation}).scalar() > 0
        password = (parley_run.var / "desk-admin-password.txt").read_text().strip()
        desk = Desk(parley_run.desk_url, db)
        try:
            root, csrf = desk.login("admin", password)
            exported = root.get(f"/api/privacy/export?conversation={conversation}").json()
            [data] = exported["conversations"]
            assert "where is my order?" in [e["data"].get("text") for e in data["tracker_events"]]
            assert "where is my order?" in [m["text"] for m in data["messages"]]
            resp = root.post("/api/privacy/erase", headers={"X-CSRF-Token": csrf},
                             json={"conversations": [conversation], "confirm": "ERASE"})
            assert resp.status_code == 200, resp.text
            assert resp.json()["erased"]["tracker_events"] > 0
        finally:
            desk.close_clients()
        with engine.connect() as conn:
            assert conn.execute(events_left, {"s": conversation}).scalar() == 0
        assert rows_naming(db, [conversation], []) == {}
    finally:
        engine.dispose()


def test_erase_reads_the_tracker_store_as_rasa_does(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the events are, from the endpoints file; what cannot be erased, refused."""
    monkeypatch.setenv("PARLEY_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv(tracker_events.ENDPOINTS_ENV, raising=False)
    from parley.bot.settings import load_settings

    # The project's endpoints.yml, as `parley run` runs it: SQLite in the var dir.
    assert str(tracker_events.locate()) == f"sqlite:///{tmp_path / 'var' / 'tracker.db'}"
    endpoints = tmp_path / "endpoints.yml"
    monkeypatch.setenv(tracker_events.ENDPOINTS_ENV, str(endpoints))
    for section, reason in (
            ({"type": "redis", "url": "localhost"}, "not supported"),
            ({"type": "SQL", "dialect": "postgresql", "url": "${NOT_SET_ANYWHERE}"},
             "NOT_SET_ANYWHERE")):
        endpoints.write_text(yaml.safe_dump({"tracker_store": section}))
        with pytest.raises(tracker_events.TrackerStoreError, match=reason):
            privacy.erase(["telegram:1"], audit.CLI, f"sqlite:///{tmp_path / 'x.db'}")
    endpoints.write_text(yaml.safe_dump({"nlg": {"type": "x"}}))  # in-memory: none kept
    assert tracker_events.locate(load_settings()) is None
    endpoints.write_text(yaml.safe_dump({"tracker_store": {
        "type": "SQL", "dialect": "postgresql", "url": "db.internal", "port": 5433,
        "username": "rasa", "password": "s3cret", "db": "rasa"}}))
    where = tracker_events.locate()
    assert str(where) == "postgresql://rasa:***@db.internal:5433/rasa"
    endpoints.unlink()
    with pytest.raises(tracker_events.TrackerStoreError, match="does not exist"):
        tracker_events.locate()



def test_the_desk_in_compose_finds_the_replicas_tracker_store(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/: the desk replicas erase where the Rasa replicas keep their trackers."""
    services = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())["services"]

    def located(service: str) -> str:
        for name, value in services[service]["environment"].items():
            monkeypatch.setenv(name, str(value).replace("${POSTGRES_PASSWORD:?set it in .env}",
                                                        "pw"))
        monkeypatch.setenv(tracker_events.ENDPOINTS_ENV, "deploy/endpoints.replicas.yml")
        monkeypatch.setenv("PARLEY_PROJECT", str(PROJECT_ROOT))
        return str(tracker_events.locate())

    assert located("rasa") == "postgresql://parley:***@postgres:5432/rasa"
    for name in list(services["rasa"]["environment"]):
        monkeypatch.delenv(name, raising=False)
    assert located("desk") == "postgresql://parley:***@postgres:5432/rasa"
