"""CPU per bot turn of the gate's SQL: the driver cursor it uses (`bot/turn_sql.py`)
against the same statements through an ORM session, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.gate_sql [--turns 2000]

A turn is what the gate does when the bot answers: store the customer's message
and read who owns the conversation, then record the bot's reply. CPU time of
this thread is counted (`time.thread_time`), so waiting on the database server
is not; the two variants alternate in rounds on the same database.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from bench.publish_latency import fresh_schema
from bench.report import DOCS, grouped_bars_png, write_section
from parley.bot.conversations import Conversation, Message, message_values
from parley.bot.handoff import OPEN, Ticket
from parley.bot.storage import create_schema, session_scope, utcnow
from parley.connectors import gate

_ids = itertools.count()
STATE = (select(Conversation.rating_state, Ticket.id).select_from(Conversation)
         .outerjoin(Ticket, (Ticket.conversation_id == Conversation.id)
                    & Ticket.status.in_(OPEN))
         .where(Conversation.id == bindparam("conversation_id")))
INSERT_MESSAGE = insert(Message)


@cache
def _touch(dialect: str) -> Any:
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = upsert(Conversation).values(
        id=bindparam("id"), channel="telegram", display_name=bindparam("name"),
        rating_state="none", created_at=bindparam("at"), last_customer_at=bindparam("at"))
    return statement.on_conflict_do_update(index_elements=[Conversation.id], set_={
        "last_customer_at": statement.excluded.last_customer_at,
        "display_name": statement.excluded.display_name})


def orm_turn(url: str) -> None:
    """The same work through a Session with prepared (built once) Core statements,
    as the gate did before `bot/turn_sql.py`."""
    n = next(_ids)
    conversation = f"telegram:{n % 500}"
    with session_scope(url) as session:
        session.execute(STATE, {"conversation_id": conversation}).first()
        session.execute(_touch(session.get_bind().dialect.name),
                        {"id": conversation, "name": "Ana Lee", "at": utcnow()})
        session.execute(INSERT_MESSAGE, [message_values(
            conversation, "customer", "do you ship abroad", platform_message_id=f"o{n}")])
    with session_scope(url) as session:
        session.execute(STATE, {"conversation_id": conversation}).first()
        session.execute(INSERT_MESSAGE, [message_values(
            conversation, "bot", "We ship to 30 countries.")])


def cursor_turn(url: str) -> None:
    """What connectors/gate.py runs today."""
    n = next(_ids)
    conversation = f"telegram:{n % 500}"
    decision = gate.accept(gate.Inbound(conversation, "do you ship abroad", f"c{n}",
                                        "Ana Lee"), url)
    assert decision.route == "bot"
    gate.after_bot(conversation, [{"text": "We ship to 30 countries."}], url)


def cpu_per_turn(turn: Callable[[str], None], url: str, turns: int) -> float:
    for _ in range(50):  # warm: pool, statement caches
        turn(url)
    start = time.thread_time()
    for _ in range(turns):
        turn(url)
    return (time.thread_time() - start) / turns * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    databases = {"SQLite": f"sqlite:///{tempfile.mkdtemp(prefix='gate-sql-')}/parley.db",
                 "PostgreSQL": fresh_schema()[1]}
    variants = {"ORM session": orm_turn, "driver cursor (gate today)": cursor_turn}
    rows = ["| database | ORM session µs/turn | driver cursor µs/turn | ratio |",
            "|---|---|---|---|"]
    chart: dict[str, list[float]] = {name: [] for name in variants}
    for label, url in databases.items():
        create_schema(url)
        totals = dict.fromkeys(variants, 0.0)
        for _ in range(args.rounds):
            for name, turn in variants.items():
                totals[name] += cpu_per_turn(turn, url, args.turns) / args.rounds
        orm, cursor = totals["ORM session"], totals["driver cursor (gate today)"]
        rows.append(f"| {label} | {orm:.0f} | {cursor:.0f} | {orm / cursor:.1f}× |")
        print(rows[-1], flush=True)
        for name in variants:
            chart[name].append(totals[name])
    png = grouped_bars_png(list(databases), chart, DOCS / "bench" / "gate_sql.png",
                           "Gate SQL per bot turn (CPU of the calling thread)", "microseconds")
    write_section("Gate SQL per bot turn: driver cursor vs ORM session", "\n".join([
        f"Command: `.venv/bin/python -m bench.gate_sql --turns {args.turns}` "
        f"(run {time.strftime('%Y-%m-%d')}; in-process, one thread, no load; "
        f"{args.rounds} alternating rounds of {args.turns} turns per variant).",
        "",
        "One turn: store the customer's message and read who owns the conversation, "
        "then record the bot's reply (two transactions). Under the Rasa server's load "
        "these costs are two to three times higher (colder caches), and at 50 "
        "concurrent conversations every millisecond of it is queueing for the others.",
        "",
        *rows,
        "",
        f"![gate SQL per turn]({png.relative_to(DOCS).as_posix()})",
    ]))


if __name__ == "__main__":
    main()
