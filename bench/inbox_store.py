"""CPU per webhook of the inbox store, the only database work before a webhook
answers: the driver cursor it uses (`bot/inbox_sql.py`) against the same
statements through an ORM session, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.inbox_store [--turns 2000]

CPU time of this thread is counted (`time.thread_time`), so waiting on the
database server is not; the two variants alternate in rounds on the same database.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy.dialects import postgresql, sqlite

from bench.publish_latency import fresh_schema
from bench.report import DOCS, grouped_bars_png, write_section
from parley.bot import inbox
from parley.bot.conversations import Conversation, Message, message_values
from parley.bot.storage import create_schema, session_scope, utcnow

_ids = itertools.count()
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


def orm_store(url: str) -> None:
    """The same statements through a Session with prepared (built once) Core statements."""
    n = next(_ids)
    conversation = f"telegram:{n % 500}"
    with session_scope(url) as session:
        session.execute(_touch(session.get_bind().dialect.name),
                        {"id": conversation, "name": "Ana Lee", "at": utcnow()})
        session.execute(INSERT_MESSAGE, [message_values(
            conversation, "customer", "do you ship abroad", platform_message_id=f"o{n}",
            delivery="none", inbox_state="received")])


def cursor_store(url: str) -> None:
    """What every webhook runs today."""
    n = next(_ids)
    assert inbox.store(f"telegram:{n % 500}", "do you ship abroad", platform_message_id=f"c{n}",
                       display_name="Ana Lee", database_url=url) is not None


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
    variants = {"ORM session": orm_store, "driver cursor (inbox today)": cursor_store}
    rows = ["| database | ORM session µs/store | driver cursor µs/store | ratio |",
            "|---|---|---|---|"]
    chart: dict[str, list[float]] = {name: [] for name in variants}
    for label, url in databases.items():
        create_schema(url)
        totals = dict.fromkeys(variants, 0.0)
        for _ in range(args.rounds):
            for name, turn in variants.items():
                totals[name] += cpu_per_turn(turn, url, args.turns) / args.rounds
        orm, cursor = totals["ORM session"], totals["driver cursor (inbox today)"]
        rows.append(f"| {label} | {orm:.0f} | {cursor:.0f} | {orm / cursor:.1f}× |")
        print(rows[-1], flush=True)
        for name in variants:
            chart[name].append(totals[name])
    png = grouped_bars_png(list(databases), chart, DOCS / "bench" / "inbox_store.png",
                           "Inbox store per webhook (CPU of the calling thread)",
                           "microseconds")
    write_section("Inbox store per webhook: driver cursor vs ORM session", "\n".join([
        f"Command: `.venv/bin/python -m bench.inbox_store --turns {args.turns}` "
        f"(run {time.strftime('%Y-%m-%d')}; in-process, one thread, no load; "
        f"{args.rounds} alternating rounds of {args.turns} turns per variant).",
        "",
        "One store: note the conversation (upsert) and insert the customer's message "
        "as received, in one transaction: all the database work a webhook does "
        "before it answers 2xx.",
        "",
        *rows,
        "",
        f"![inbox store per webhook]({png.relative_to(DOCS).as_posix()})",
    ]))


if __name__ == "__main__":
    main()
