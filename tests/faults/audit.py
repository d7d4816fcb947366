"""What became of every customer message a fault test delivered, from three sides:
the platform's (what the `Deliverer` got a 2xx for), ours (the inbox row, its state
and the outbox replies with `reply_to` = its id) and the customer's (what the fake
platform APIs received, per conversation, in order).

Matching: per conversation, the texts the fake API received are walked against the
transcript's outgoing messages (in id order, which is the order they are sent). A
text received again right after its first arrival is a double send (the platform
took it, our `sent` commit was lost, the next sender sent it again); the test texts
are chosen so that no two consecutive replies are equal, so a double cannot pass for
the next reply.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from parley.bot import storage
from parley.bot.conversations import Message
from tests.fakes.platform import Deliverer
from tests.faults.conftest import RESULTS


@dataclass
class Alignment:
    delivered: list[bool]  # per expected message: it reached the platform
    doubled: int  # arrivals beyond what we sent (a message sent twice)
    unexpected: list[str]  # arrivals we have no outgoing message for
    in_order: bool  # the arrivals keep the transcript's order (doubles aside)


def align(expected: list[str], received: list[str]) -> Alignment:
    """Texts repeat within a conversation, so what arrived is counted per text: more
    arrivals than outgoing messages with that text are doubles, fewer are losses (the
    latest ones with that text counted as the lost ones). Order: with immediate
    repeats folded, the arrivals are the delivered messages in transcript order."""
    want, got = Counter(expected), Counter(received)
    doubled = sum(max(0, got[t] - n) for t, n in want.items())
    unexpected = [t for t in received if t not in want]
    delivered = [True] * len(expected)
    for text, n in want.items():
        missing = max(0, n - got[text])
        for i in reversed(range(len(expected))):
            if missing == 0:
                break
            if expected[i] == text:
                delivered[i] = False
                missing -= 1
    kept = [t for t, ok in zip(expected, delivered, strict=True) if ok]
    # A resend right after the first send is the documented double; anything else
    # out of sequence (an older reply arriving again later) breaks the order.
    collapsed = [t for i, t in enumerate(received) if i == 0 or t != received[i - 1]]
    return Alignment(delivered, doubled, unexpected, collapsed == kept)


@dataclass
class Figures:
    scenario: str
    sent: int = 0  # updates the platform tried to deliver
    accepted: int = 0  # got a 2xx in the end
    refused: int = 0  # refused (5xx, timeout, refused connection) at least once, then accepted
    refused_attempts: int = 0
    stored: int = 0  # accepted and found in the inbox
    answered: int = 0  # accepted, and its reply reached the platform
    handed_over: int = 0  # accepted, the bot gave up (MAX_ATTEMPTS), a person took over
    lost: int = 0  # accepted, but neither answered nor handed over
    doubled: int = 0  # a reply that reached the platform twice (or a second turn's replies)
    doubled_turns: int = 0  # of which: a customer message answered by two bot turns
    wrong_replies: int = 0  # answered, but not with what that text gets without faults
    out_of_order: int = 0  # conversations whose replies arrived out of order
    unsent: int = 0  # replies still pending in the outbox at the end
    undelivered: int = 0  # replies the outbox gave up on (delivery_error)
    conversations: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list, repr=False)
    conversation_ids: list[str] = field(default_factory=list, repr=False)

    def note(self, kind: str, example: Any) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < 5:
            found.append(example)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("details")
        data.pop("conversation_ids")
        return data


def _rows(database_url: str, conversation_ids: list[str]) -> list[Any]:
    with storage.get_engine(database_url).connect() as conn:
        return list(conn.execute(
            sa.select(Message.id, Message.conversation_id, Message.author, Message.text,
                      Message.delivery, Message.platform_message_id, Message.inbox_state,
                      Message.reply_to, Message.sent_at, Message.delivery_error,
                      Message.attempts)
            .where(Message.conversation_id.in_(conversation_ids))
            .order_by(Message.id)))


def audit(scenario: str, deliverer: Deliverer, database_url: str,
          received: dict[str, list[str]], canonical: dict[tuple[str, str], tuple[str, ...]]
          | None = None) -> Figures:
    """The figures for one run. `canonical`: per (channel, text), the replies that text
    gets without faults; default: the most common replies in this run."""
    stats = deliverer.stats()
    figures = Figures(scenario, sent=stats["sent"], accepted=stats["accepted"],
                      refused=stats["refused_then_accepted"],
                      refused_attempts=stats["refused_attempts"],
                      conversations=len(deliverer.queues),
                      conversation_ids=list(deliverer.queues))
    figures.extra["refusal_reasons"] = stats["refusal_reasons"]
    rows = _rows(database_url, list(deliverer.queues))
    by_platform_id = {(r.conversation_id, r.platform_message_id): r for r in rows
                      if r.author == "customer"}
    outgoing: dict[str, list[Any]] = {}
    for r in rows:
        if r.author != "customer" and r.delivery == "push":
            outgoing.setdefault(r.conversation_id, []).append(r)
    replies_of: dict[int, list[Any]] = {}
    for r in rows:
        if r.reply_to is not None and r.delivery == "push":
            replies_of.setdefault(r.reply_to, []).append(r)

    # The customer's side: which outgoing messages arrived, doubles, order.
    arrived: set[int] = set()
    details: list[dict[str, Any]] = []
    for conversation_id, queue in deliverer.queues.items():
        sendable = [r for r in outgoing.get(conversation_id, []) if r.delivery_error is None]
        figures.unsent += sum(r.sent_at is None for r in sendable)
        figures.undelivered += sum(r.delivery_error is not None
                                   for r in outgoing.get(conversation_id, []))
        got = received.get(conversation_id, [])
        result = align([r.text for r in sendable], got)
        figures.doubled += result.doubled
        if result.doubled:
            figures.note("doubled", {"conversation": conversation_id,
                                     "received": len(got), "expected": len(sendable)})
        arrived.update(r.id for r, ok in zip(sendable, result.delivered, strict=True) if ok)
        customer_ids = [by_platform_id[(conversation_id, u.platform_message_id)].id
                        for u in queue if (conversation_id, u.platform_message_id)
                        in by_platform_id]
        answers = [r.reply_to for r in sendable if r.reply_to is not None]
        order_kept = (result.in_order and not result.unexpected
                      and customer_ids == sorted(customer_ids) and answers == sorted(answers))
        if not order_kept:
            figures.out_of_order += 1
            figures.note("out_of_order", {"conversation": conversation_id,
                                          "expected": [t[:24] for t in
                                                       (r.text for r in sendable)],
                                          "received": [t[:24] for t in got]})
        details.append({"conversation": conversation_id,
                        "customer": [(u.platform_message_id, u.text, u.attempts, u.accepted)
                                     for u in queue],
                        "outgoing": [(r.id, r.reply_to, r.author, r.text[:40],
                                      r.sent_at is not None, r.delivery_error)
                                     for r in outgoing.get(conversation_id, [])],
                        "received": [t[:40] for t in got]})

    # Per customer message.
    if canonical is None:
        canonical = canonical_replies(deliverer, by_platform_id, replies_of)
    for conversation_id, queue in deliverer.queues.items():
        channel = conversation_id.split(":", 1)[0]
        for update in queue:
            if not update.accepted:
                continue
            row = by_platform_id.get((conversation_id, update.platform_message_id))
            if row is None:
                figures.lost += 1
                figures.note("lost", {"update": update.platform_message_id,
                                      "why": "accepted but not in the inbox"})
                continue
            figures.stored += 1
            replies = [r for r in replies_of.get(row.id, []) if r.author == "bot"]
            texts = tuple(r.text for r in replies if r.delivery_error is None)
            expected = canonical.get((channel, update.text))
            if expected and len(texts) >= 2 * len(expected) \
                    and texts[:len(expected)] == texts[len(expected):2 * len(expected)]:
                figures.doubled_turns += 1
                figures.note("doubled_turn", {"message": row.id, "replies": texts})
            if row.inbox_state == "failed":
                figures.handed_over += 1
                continue
            if replies and all(r.id in arrived for r in replies if r.delivery_error is None):
                figures.answered += 1
                if expected is not None and texts not in (expected, expected * 2):
                    figures.wrong_replies += 1
                    figures.note("wrong_reply", {"message": row.id, "text": update.text,
                                                 "replies": [t[:60] for t in texts]})
            else:
                figures.lost += 1
                figures.note("lost", {"message": row.id, "text": update.text,
                                      "state": row.inbox_state, "attempts": row.attempts,
                                      "replies": len(replies),
                                      "arrived": sum(r.id in arrived for r in replies)})
    figures.doubled += figures.doubled_turns
    figures.details = details
    return figures


def canonical_replies(deliverer: Deliverer, by_platform_id: dict[tuple[str, str], Any],
                      replies_of: dict[int, list[Any]]) -> dict[tuple[str, str], tuple[str, ...]]:
    seen: dict[tuple[str, str], Counter[tuple[str, ...]]] = {}
    for conversation_id, queue in deliverer.queues.items():
        channel = conversation_id.split(":", 1)[0]
        for update in queue:
            row = by_platform_id.get((conversation_id, update.platform_message_id))
            if row is None:
                continue
            texts = tuple(r.text for r in replies_of.get(row.id, []) if r.author == "bot")
            if texts:
                seen.setdefault((channel, update.text), Counter())[texts] += 1
    return {key: counts.most_common(1)[0][0] for key, counts in seen.items()}


def code_version() -> str:
    """The commit the figures come from, `+dirty` if bot/ or connectors/ had changes."""
    import subprocess

    from tests import REPO_ROOT

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                                  text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "bot", "connectors")
    return commit + ("+dirty" if dirty else "")


def write_results(figures: Figures, started: float) -> dict[str, Any]:
    """results/faults/<scenario>.json (read by bench/reliability_report.py)."""
    figures.seconds = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = figures.as_json()
    data["command"] = "make test-full"
    data["code"] = code_version()
    (RESULTS / f"{figures.scenario}.json").write_text(json.dumps(data, indent=2,
                                                                  ensure_ascii=False) + "\n")
    if figures.details:  # per conversation, for reading a failure (not in the report)
        (RESULTS / "detail").mkdir(exist_ok=True)
        (RESULTS / "detail" / f"{figures.scenario}.json").write_text(
            json.dumps(figures.details, ensure_ascii=False, default=str) + "\n")
    return data
