"""A small month of conversations whose every analytics number is worked out by hand
(tests/test_analytics.py), and a desk process over a database (the browser test too).

Three days in range, 2026-03-01 to 2026-03-03, and one conversation before them:

    telegram:1   03-02  en  two questions, the bot answers both (2 s, 5 s); bot-only survey
    webchat:2    03-02  pt  the bot asks to rephrase, the next message hands off (low
                            confidence); Ana claims (120 s in queue), answers with a canned
                            reply (180 s after the handoff), resolves (480 s of handling);
                            survey 5/4/5 and a rating of 4
    messenger:3  03-03  -   two messages nobody answered (the bot failed, then one waits)
    telegram:4   03-01  pt  four turns, the fourth hands off (keyword); the customer leaves
                            the queue (abandoned while waiting); bot-only survey
    whatsapp:5   03-02  en  a complaint, Bo claims (60 s) and answers (120 s); the bot's reply
                            during the claim is withheld; a later message is not answered
    telegram:6   02-27  en  out of range: must count nowhere
    instagram:7  03-02  -   handed off (intent), dismissed by Ana while waiting
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from parley.bot import agents
from parley.bot.conversations import Conversation, Message
from parley.bot.handoff.tickets import Rating, Ticket
from parley.bot.storage import get_engine
from parley.bot.survey import Survey, SurveyAnswer
from tests import REPO_ROOT
from tests.fakes.stack import free_port

START, END = "2026-03-01", "2026-03-03"


def at(day: int, clock: str) -> datetime:
    """2026-03-<day> <clock> UTC (day 0 and below: February)."""
    hours, minutes, seconds = (int(p) for p in clock.split(":"))
    return datetime(2026, 3, 1, hours, minutes, seconds, tzinfo=timezone.utc) + \
        timedelta(days=day - 1)


@dataclass
class Seeded:
    agents: dict[str, int]
    tickets: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)


class Writer:
    """Rows with the times given, as the bot would have stored them."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def conversation(self, cid: str, language: str | None, created: datetime) -> None:
        self.conn.execute(insert(Conversation), [{
            "id": cid, "channel": cid.split(":")[0], "display_name": cid, "rating_state": "none",
            "created_at": created, "language": language}])

    def message(self, cid: str, author: str, when: datetime, **values: Any) -> int:
        row = {"conversation_id": cid, "author": author, "text": f"{author} says",
               "delivery": "none" if author in ("customer", "note") else "push",
               # A customer message the bot's turn finished, unless said otherwise.
               "inbox_state": "answered" if author == "customer" else None,
               "attempts": 0, "created_at": when} | values
        return int(self.conn.execute(insert(Message).values(**row)).inserted_primary_key[0])

    def ticket(self, cid: str, reason: str, created: datetime, intents: list[tuple[str, float]],
               **values: Any) -> int:
        row = {"conversation_id": cid, "status": "waiting", "priority": 0, "team": "support",
               "reason": reason, "tags": [], "created_at": created,
               "context": {"intents": [{"text": "…", "intent": i, "confidence": c}
                                       for i, c in intents]}} | values
        ticket = int(self.conn.execute(insert(Ticket).values(**row)).inserted_primary_key[0])
        self.message(cid, "system", created, text="Handed to the queue", ticket_id=ticket,
                     delivery="none")
        return ticket

    def survey(self, cid: str, started: datetime, scores: dict[str, int],
               ticket_id: int | None = None, agent_id: int | None = None) -> None:
        survey = int(self.conn.execute(insert(Survey).values(
            conversation_id=cid, ticket_id=ticket_id, agent_id=agent_id,
            questions=["answer", "time", "agent", "improve"], position=4, state="done",
            started_at=started)).inserted_primary_key[0])
        for question, score in scores.items():
            self.conn.execute(insert(SurveyAnswer).values(
                survey_id=survey, question=question, score=score, created_at=started))
        self.conn.execute(insert(SurveyAnswer).values(
            survey_id=survey, question="improve", text="more staff", created_at=started))


def seed(database_url: str) -> Seeded:
    people = {name: agents.create_user(name, f"{name}-password", "agent", name.title(),
                                       database_url).id for name in ("ana", "bo")}
    s = Seeded(people)
    with get_engine(database_url).begin() as conn:
        w = Writer(conn)
        # telegram:1
        w.conversation("telegram:1", "en", at(2, "10:00:00"))
        c = w.message("telegram:1", "customer", at(2, "10:00:00"))
        w.message("telegram:1", "bot", at(2, "10:00:02"), reply_to=c, reply_name="utter_greet")
        c = w.message("telegram:1", "customer", at(2, "10:01:00"))
        w.message("telegram:1", "bot", at(2, "10:01:05"), reply_to=c,
                  reply_name="utter_shipping")
        w.survey("telegram:1", at(2, "10:02:00"), {"answer": 4, "time": 3})
        # webchat:2
        w.conversation("webchat:2", "pt", at(2, "10:05:00"))
        c = w.message("webchat:2", "customer", at(2, "10:05:00"))
        w.message("webchat:2", "bot", at(2, "10:05:01"), reply_to=c, delivery="sync",
                  reply_name="utter_ask_rephrase")
        c = w.message("webchat:2", "customer", at(2, "10:06:00"))
        t1 = w.ticket("webchat:2", "low_confidence", at(2, "10:06:01"),
                      [("greet", 0.9), ("nlu_fallback", 0.3)], status="resolved",
                      assigned_agent_id=people["ana"], assigned_at=at(2, "10:08:01"),
                      first_reply_at=at(2, "10:09:01"), resolved_at=at(2, "10:16:01"))
        w.message("webchat:2", "bot", at(2, "10:06:02"), reply_to=c, delivery="sync",
                  reply_name="utter_handoff_queue", ticket_id=t1)
        w.message("webchat:2", "agent", at(2, "10:09:01"), ticket_id=t1,
                  agent_id=people["ana"], reply_name="utter_greet")
        w.survey("webchat:2", at(2, "10:17:00"), {"answer": 5, "time": 4, "agent": 5},
                 ticket_id=t1, agent_id=people["ana"])
        conn.execute(insert(Rating).values(ticket_id=t1, score=4, created_at=at(2, "10:20:00")))
        s.tickets["T1"] = t1
        # messenger:3
        w.conversation("messenger:3", None, at(3, "09:00:00"))
        w.message("messenger:3", "customer", at(3, "09:00:00"), inbox_state="failed")
        w.message("messenger:3", "customer", at(3, "09:00:30"), inbox_state="received")
        # telegram:4
        w.conversation("telegram:4", "pt", at(1, "12:00:00"))
        names = ["utter_ask_rephrase", "utter_greet", "utter_greet"]
        for n, name in enumerate(names):
            c = w.message("telegram:4", "customer", at(1, f"12:0{n}:00"))
            w.message("telegram:4", "bot", at(1, f"12:0{n}:01"), reply_to=c, reply_name=name)
        c = w.message("telegram:4", "customer", at(1, "12:03:00"))
        t2 = w.ticket("telegram:4", "keyword", at(1, "12:03:01"), [("talk_to_person", 0.99)],
                      status="abandoned", resolved_at=at(1, "12:10:01"))
        w.message("telegram:4", "bot", at(1, "12:03:02"), reply_to=c,
                  reply_name="utter_handoff_queue", ticket_id=t2)
        w.message("telegram:4", "system", at(1, "12:10:01"), text="Left the queue",
                  ticket_id=t2, delivery="none")
        w.survey("telegram:4", at(1, "12:11:00"), {"answer": 2})
        s.tickets["T2"] = t2
        # whatsapp:5
        w.conversation("whatsapp:5", "en", at(2, "11:00:00"))
        c = w.message("whatsapp:5", "customer", at(2, "11:00:00"))
        t3 = w.ticket("whatsapp:5", "complaint", at(2, "11:00:01"), [("complaint", 0.8)],
                      team="billing", status="assigned", assigned_agent_id=people["bo"],
                      assigned_at=at(2, "11:01:01"), first_reply_at=at(2, "11:02:01"))
        w.message("whatsapp:5", "bot", at(2, "11:01:02"), reply_to=c, delivery="none",
                  delivery_error="withheld", reply_name="utter_order_status", ticket_id=t3)
        w.message("whatsapp:5", "agent", at(2, "11:02:01"), ticket_id=t3, agent_id=people["bo"])
        s.messages["oldest_unhandled"] = w.message("whatsapp:5", "customer", at(2, "11:03:00"),
                                                   ticket_id=t3, inbox_state="routed")
        w.message("whatsapp:5", "note", at(2, "11:03:10"), ticket_id=t3, agent_id=people["bo"])
        s.tickets["T3"] = t3
        # telegram:6, before the range
        w.conversation("telegram:6", "en", at(-2, "10:00:00"))
        c = w.message("telegram:6", "customer", at(-2, "10:00:00"))
        w.message("telegram:6", "bot", at(-2, "10:00:01"), reply_to=c, reply_name="utter_greet")
        w.ticket("telegram:6", "external", at(-2, "10:00:02"), [("complaint", 0.1)])
        w.survey("telegram:6", at(-2, "10:05:00"), {"answer": 1})
        # instagram:7
        w.conversation("instagram:7", None, at(2, "13:00:00"))
        w.message("instagram:7", "customer", at(2, "13:00:00"))
        s.tickets["T4"] = w.ticket("instagram:7", "intent", at(2, "13:00:01"),
                                   [("order_status", 0.7), ("refund", 0.6)], status="abandoned",
                                   assigned_agent_id=people["ana"],
                                   resolved_at=at(2, "13:05:00"))
    return s


@dataclass
class DeskProcess:
    url: str
    database_url: str


@contextmanager
def desk_process(database_url: str, state: Path) -> Iterator[DeskProcess]:
    """`python -m parley.bot.desk` over `database_url` on a free port, as test_desk does."""
    port = free_port()
    env = {**os.environ, "PARLEY_DATABASE_URL": database_url}
    log_path = state / "desk.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "parley.bot.desk", "--port", str(port)],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"desk did not start: {log_path.read_text()}")
                time.sleep(0.2)
            yield DeskProcess(url, database_url)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
