"""The manager's analytics on a busy month: each chart's data call, timed, on SQLite and
PostgreSQL, over 100,000 seeded messages.

    .venv/bin/python -m bench.analytics [--messages 100000] [--days 30] [--runs 3]

The seed is a month of conversations on five channels in two languages: customers
and the bot taking turns (named replies), some conversations handed to a person
(tickets with reasons and intents; claimed, answered, resolved, abandoned or still
waiting), surveys and ratings. Each chart (`parley.bot.analytics.CHARTS`) is then
timed over the whole month, and with a channel and a language filter: the median of
`--runs` calls, each a fresh transaction. Target: under 1 s per call.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from datetime import time as day_time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench.report import DOCS
from parley.bot import analytics
from parley.bot.agents import Agent
from parley.bot.contract import REASONS
from parley.bot.conversations import Conversation, Message
from parley.bot.handoff.tickets import Rating, Ticket
from parley.bot.storage import create_schema, get_engine
from parley.bot.survey import Survey, SurveyAnswer

TARGET_MS = 1000.0
CHANNELS = {"webchat": 30, "telegram": 25, "messenger": 20, "instagram": 10, "whatsapp": 15}
LANGUAGES = {"en": 65, "pt": 25, None: 10}
REPLIES = [f"utter_{name}" for name in (
    "greet", "shipping_times", "return_policy", "payment_methods", "order_status",
    "store_hours", "ask_rephrase", "warranty", "sizes", "discounts", "gift_cards",
    "track_order", "cancel_order", "refund_status", "contact", "goodbye")]
INTENTS = ["order_status", "refund", "complaint", "cancel_order", "talk_to_person",
           "payment_problem", "nlu_fallback", "shipping", "warranty", "damaged_item"]
AGENTS = [("ana", "support"), ("bo", "support"), ("cy", "support"), ("di", "billing"),
          ("ed", "billing"), ("flo", "support")]
BATCH = 5000


def _pick(rng: random.Random, weights: dict[Any, int]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class Seeder:
    """Rows built in memory, in each conversation's order, inserted in batches."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.url, self.rng = url, rng
        self.rows: dict[Any, list[dict[str, Any]]] = {
            Conversation: [], Message: [], Ticket: [], Survey: [], SurveyAnswer: [],
            Rating: []}
        self.ids = {Message: 0, Ticket: 0, Survey: 0}
        self.messages = 0

    def add(self, table: Any, **values: Any) -> int:
        if table in self.ids:
            self.ids[table] += 1
            values["id"] = self.ids[table]
        self.rows[table].append(values)
        return int(values["id"]) if table in self.ids else 0

    def message(self, conversation: str, author: str, at: datetime, **values: Any) -> int:
        self.messages += 1
        out = author != "customer" and author != "note"
        defaults = {"text": f"{author} text", "delivery": "push" if out else "none",
                    "attempts": 0, "ticket_id": None, "agent_id": None, "reply_to": None,
                    "reply_name": None, "delivery_error": None,
                    "inbox_state": "answered" if author == "customer" else None}
        return self.add(Message, conversation_id=conversation, author=author, created_at=at,
                        **(defaults | values))

    def flush(self) -> None:
        engine = get_engine(self.url)
        with engine.begin() as conn:
            for table in (Conversation, Message, Ticket, Survey, SurveyAnswer, Rating):
                rows = self.rows[table]
                for i in range(0, len(rows), BATCH):
                    conn.execute(insert(table), rows[i:i + BATCH])
                rows.clear()


def seed(url: str, messages: int, days: int, today: date, seed_value: int = 13) -> dict[str, int]:
    """About `messages` messages over the `days` days up to `today` (UTC)."""
    rng = random.Random(seed_value)
    agent_ids = []
    engine = get_engine(url)
    with engine.begin() as conn:
        for n, (name, _team) in enumerate(AGENTS, 1):
            conn.execute(insert(Agent), [{"id": n, "username": name, "display_name": name.title(),
                                          "password_hash": "x", "role": "agent",
                                          "created_at": datetime.now(timezone.utc)}])
            agent_ids.append(n)
    seeder = Seeder(url, rng)
    start = datetime.combine(today - timedelta(days=days - 1), day_time(), tzinfo=timezone.utc)
    span = days * 86400 - 4 * 3600  # conversations start early enough to finish in range
    n = 0
    while seeder.messages < messages:
        n += 1
        channel = _pick(rng, CHANNELS)
        conversation = f"{channel}:bench{n}"
        at = start + timedelta(seconds=rng.randrange(span))
        seeder.add(Conversation, id=conversation, channel=channel, display_name=f"Customer {n}",
                   rating_state="none", created_at=at, language=_pick(rng, LANGUAGES))
        _conversation(seeder, conversation, at, agent_ids)
        if len(seeder.rows[Message]) >= 20000:
            seeder.flush()
    seeder.flush()
    return {"conversations": n, "messages": seeder.messages, "tickets": seeder.ids[Ticket],
            "surveys": seeder.ids[Survey]}


def _conversation(s: Seeder, conversation: str, at: datetime, agent_ids: list[int]) -> None:
    rng = s.rng
    turns = rng.randint(1, 6)
    handoff_turn = rng.randrange(turns) if rng.random() < 0.2 else None
    ticket_id = None
    for turn in range(turns):
        asked = s.message(conversation, "customer", at)
        at += timedelta(seconds=rng.uniform(0.5, 4))
        if turn == handoff_turn:
            ticket_id, at = _handoff(s, conversation, at, asked, agent_ids)
            break
        for _ in range(rng.choice((1, 1, 1, 2))):
            s.message(conversation, "bot", at, reply_to=asked,
                      reply_name=rng.choice(REPLIES), delivery=rng.choice(("push", "sync")))
            at += timedelta(seconds=rng.uniform(0.2, 1))
        at += timedelta(seconds=rng.uniform(10, 180))
    if rng.random() < 0.35:
        agent = None
        if ticket_id is not None:
            ticket = s.rows[Ticket][-1] if s.rows[Ticket] else None
            if ticket is None or ticket["status"] != "resolved":
                return
            agent = ticket["assigned_agent_id"]
        survey = s.add(Survey, conversation_id=conversation, ticket_id=ticket_id, agent_id=agent,
                       questions=["answer", "time", "agent", "improve"], position=3,
                       state="done", started_at=at + timedelta(seconds=5))
        for question in ("answer", "time") + (("agent",) if agent else ()):
            s.add(SurveyAnswer, survey_id=survey, question=question,
                  score=rng.choice((1, 2, 3, 4, 4, 5, 5, 5)), text=None,
                  created_at=at + timedelta(seconds=30))


def _handoff(s: Seeder, conversation: str, at: datetime, asked: int,
             agent_ids: list[int]) -> tuple[int, datetime]:
    rng = s.rng
    agent = rng.choice(agent_ids)
    team = AGENTS[agent - 1][1]
    intents = [{"text": "…", "intent": rng.choice(INTENTS), "confidence": rng.random()}
               for _ in range(rng.randint(1, 3))]
    fate = rng.choices(("resolved", "assigned", "abandoned", "waiting", "dismissed"),
                       weights=(70, 8, 10, 7, 5))[0]
    ticket = {"conversation_id": conversation, "status": "waiting", "priority": 0, "team": team,
              "reason": rng.choice(REASONS), "context": {"intents": intents}, "tags": [],
              "assigned_agent_id": None, "created_at": at, "assigned_at": None,
              "first_reply_at": None, "resolved_at": None}
    ticket_id = s.add(Ticket, **ticket)
    row = s.rows[Ticket][-1]
    s.message(conversation, "system", at, text="Handed to the queue", ticket_id=ticket_id,
              delivery="none")
    s.message(conversation, "bot", at + timedelta(seconds=0.5), reply_to=asked,
              reply_name="utter_handoff_queue", ticket_id=ticket_id)
    at += timedelta(seconds=rng.uniform(20, 900))
    if fate in ("abandoned", "dismissed"):
        row.update(status="abandoned", resolved_at=at,
                   assigned_agent_id=agent if fate == "dismissed" else None)
        return ticket_id, at
    if fate == "waiting":
        s.message(conversation, "customer", at, ticket_id=ticket_id, inbox_state="routed")
        return ticket_id, at
    row.update(status="assigned", assigned_agent_id=agent, assigned_at=at)
    for _ in range(rng.randint(1, 4)):
        at += timedelta(seconds=rng.uniform(15, 240))
        row["first_reply_at"] = row["first_reply_at"] or at
        s.message(conversation, "agent", at, ticket_id=ticket_id, agent_id=agent,
                  reply_name=rng.choice(REPLIES) if rng.random() < 0.3 else None)
        at += timedelta(seconds=rng.uniform(20, 300))
        s.message(conversation, "customer", at, ticket_id=ticket_id, inbox_state="routed")
    if fate == "resolved":
        at += timedelta(seconds=rng.uniform(10, 120))
        row.update(status="resolved", resolved_at=at)
        if rng.random() < 0.3:
            s.add(Rating, ticket_id=ticket_id, score=rng.randint(1, 5),
                  created_at=at + timedelta(seconds=60))
    return ticket_id, at


def time_charts(url: str, filters: analytics.Filters, runs: int) -> dict[str, float]:
    """Median milliseconds of `runs` calls per chart."""
    out = {}
    for name in analytics.CHARTS:
        samples = []
        for _ in range(runs):
            began = time.perf_counter()
            analytics.run(name, filters, url)
            samples.append((time.perf_counter() - began) * 1000)
        out[name] = round(statistics.median(samples), 1)
    return out


@contextmanager
def databases(keep_sqlite: Path | None = None) -> Iterator[dict[str, str]]:
    from bench.publish_latency import drop_schema, fresh_schema

    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{keep_sqlite or Path(tmp) / 'analytics.db'}"
        schema, postgresql = fresh_schema()
        try:
            yield {"sqlite": sqlite, "postgresql": postgresql}
        finally:
            get_engine(postgresql).dispose()
            drop_schema(schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    today = datetime.now(timezone.utc).date()
    whole = analytics.Filters(today - timedelta(days=args.days - 1), today)
    narrow = analytics.Filters(whole.start, whole.end, ("telegram",), ("pt",))
    result: dict[str, Any] = {"messages": args.messages, "days": args.days, "runs": args.runs,
                              "target_ms": TARGET_MS, "backends": {}}
    with databases() as urls:
        for backend, url in urls.items():
            create_schema(url)
            began = time.perf_counter()
            counts = seed(url, args.messages, args.days, today)
            print(f"{backend}: seeded {counts} in {time.perf_counter() - began:.1f} s",
                  flush=True)
            if backend == "postgresql":
                with get_engine(url).begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
            result["backends"][backend] = {
                "seeded": counts, "all": time_charts(url, whole, args.runs),
                "filtered": time_charts(url, narrow, args.runs)}
    charts = list(analytics.CHARTS)
    print(f"\n{'chart':<22}" + "".join(f"{b + ' ' + k:>22}" for b in result["backends"]
                                       for k in ("all", "filtered")) + "   (ms, median)")
    for name in charts:
        print(f"{name:<22}" + "".join(f"{result['backends'][b][k][name]:>22.1f}"
                                      for b in result["backends"] for k in ("all", "filtered")))
    slowest = max(v for b in result["backends"].values() for k in ("all", "filtered")
                  for v in b[k].values())
    result["slowest_ms"] = slowest
    result["all_under_target"] = slowest < TARGET_MS
    try:
        series = {f"{b} ({k})": [result["backends"][b][k][c] for c in charts]
                  for b in result["backends"] for k in ("all", "filtered")}
        png = bars_png(charts, series, DOCS / "bench" / "analytics.png",
                       f"Analytics data calls over {args.messages:,} messages\n"
                       f"(median of {args.runs}; target: under {TARGET_MS:.0f} ms)")
        result["chart"] = str(png.relative_to(DOCS.parent))
    except ImportError:
        print("matplotlib is not installed: no chart")
    print(json.dumps(result))


def bars_png(charts: list[str], series: dict[str, list[float]], path: Path, title: str) -> Path:
    """Horizontal bars, one group per chart, so that the charts' names stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7))
    height = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.barh([y + i * height for y in range(len(charts))], values, height=height,
                label=label)
    ax.set_yticks([y + height * (len(series) - 1) / 2 for y in range(len(charts))], charts)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
