"""Prometheus metrics: `GET /metrics` on the Rasa server, the action server and the desk.

What happens on the message path is counted where it happens (a customer message
stored, a Rasa turn, a send accepted, refused or put back) at the cost of an
increment, and a failing count never fails the message. What lives in the database
(the handoff queue) is read when Prometheus scrapes: one small query, off the event
loop, at most once per QUEUE_CACHE_SECONDS. Each process serves its own numbers and
is its own scrape target, so no label names the process; the queue, which every
process reads from the shared database, is the same on all of them (take the `max`).

`/metrics` needs no login, like `/health`: keep it off the public internet (scrape it
on a private network, or refuse the path at the proxy).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from parley.bot import supervision

logger = logging.getLogger(__name__)
P = ParamSpec("P")
QUEUE_CACHE_SECONDS = 2.0  # scrapes closer together than this share one query
QUEUE_QUERY_TIMEOUT = 5.0  # a scrape waits this long for the database, then reports it down
# One Rasa turn: NLU, policies, actions (the action server), up to the worker's timeout.
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 90.0)
ACTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SEND_FAILURE_KINDS = ("retryable", "permanent")
disable_created_metrics()  # a `_created` series beside every counter is noise here

# Each process's own families (outside the default registry, which holds the client's
# process and Python collectors): a process shows what it does, not empty families.
MESSAGES_IN = Counter(
    "parley_messages_in", "Customer messages stored in the inbox (redeliveries not counted).",
    ["channel"], registry=None)
MESSAGES_OUT = Counter(
    "parley_messages_out", "Messages out: accepted by the platform, or answered in the "
    "webhook's response (the web chat).", ["channel"], registry=None)
TURN_SECONDS = Histogram(
    "parley_turn_seconds", "One Rasa turn in the inbox worker (failed and timed-out "
    "turns included).", ["channel"], buckets=TURN_BUCKETS, registry=None)
SEND_FAILURES = Counter(
    "parley_send_failures", "Sends that failed: `retryable`, each time the platform still "
    "said try later after the platform module's quick retries; `permanent`, each send that "
    "will never go out (refused for good, or out of tries), shown to agents as not "
    "delivered.", ["channel", "kind"], registry=None)
SEND_RETRIES = Counter(
    "parley_send_retries", "Sends put back in the outbox to try again later (after the "
    "platform module's own quick retries).", ["channel"], registry=None)
ACTION_RUNS = Counter(
    "parley_action_runs", "Calls to the action server, by action and HTTP status.",
    ["action", "status"], registry=None)
ACTION_SECONDS = Histogram(
    "parley_action_seconds", "One call to the action server, answered.", buckets=ACTION_BUCKETS,
    registry=None)
PROCESS_FAMILIES: dict[str, tuple[Counter | Histogram, ...]] = {
    "rasa": (MESSAGES_IN, MESSAGES_OUT, TURN_SECONDS, SEND_FAILURES, SEND_RETRIES),
    "actions": (ACTION_RUNS, ACTION_SECONDS),
}


def _never_raises(count: Callable[P, None]) -> Callable[P, None]:
    """Counting is a side show: an error in it is logged, never raised into the
    webhook, the worker or the sender."""
    @functools.wraps(count)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception:
            logger.exception("metrics: %s failed", count.__name__)
    return safe


@_never_raises
def prepare_channel(channel: str, sends: bool) -> None:
    """Start a channel's series at 0, so a rate over them exists before any traffic;
    `sends`: it sends through the outbox (not the web chat, which answers in place)."""
    MESSAGES_IN.labels(channel)
    MESSAGES_OUT.labels(channel)
    TURN_SECONDS.labels(channel)
    if sends:
        SEND_RETRIES.labels(channel)
        for kind in SEND_FAILURE_KINDS:
            SEND_FAILURES.labels(channel, kind)


@_never_raises
def message_in(channel: str) -> None:
    MESSAGES_IN.labels(channel).inc()


@_never_raises
def messages_out(channel: str, count: int = 1) -> None:
    if count:
        MESSAGES_OUT.labels(channel).inc(count)


@_never_raises
def turn_took(channel: str, seconds: float) -> None:
    TURN_SECONDS.labels(channel).observe(seconds)


@_never_raises
def send_failed(channel: str, kind: str) -> None:
    SEND_FAILURES.labels(channel, kind).inc()


@_never_raises
def send_retried(channel: str) -> None:
    SEND_RETRIES.labels(channel).inc()


@_never_raises
def action_ran(action: str, status: int, seconds: float) -> None:
    ACTION_RUNS.labels(action, str(status)).inc()
    ACTION_SECONDS.observe(seconds)


# -- read at scrape time -------------------------------------------------------------
@dataclass(frozen=True)
class QueueState:
    waiting: int  # tickets waiting for an agent
    oldest_waiting_seconds: float  # 0 with nobody waiting
    assigned: int  # tickets an agent holds


def read_queue(database_url: str | None = None) -> QueueState:
    """The queue from the tickets table: one grouped query over open tickets (the
    `queue_order` index leads with the status)."""
    from sqlalchemy import func, select

    from parley.bot.handoff.tickets import OPEN, Ticket
    from parley.bot.storage import session_scope, utcnow

    with session_scope(database_url) as session:
        rows = session.execute(
            select(Ticket.status, func.count(), func.min(Ticket.created_at))
            .where(Ticket.status.in_(OPEN)).group_by(Ticket.status)).all()
    now = utcnow()
    by_status = {status: (int(n), oldest) for status, n, oldest in rows}
    waiting, oldest = by_status.get("waiting", (0, None))
    return QueueState(waiting, max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
                      by_status.get("assigned", (0, None))[0])


class QueueReader:
    """The queue for one database, cached briefly: frequent or concurrent scrapes
    share one query, and a slow database costs a scrape QUEUE_QUERY_TIMEOUT at most."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self._lock = asyncio.Lock()
        self._read_at = -QUEUE_CACHE_SECONDS
        self._state: QueueState | None = None

    async def state(self) -> QueueState | None:
        """None when the database did not answer (the scrape says so)."""
        from parley.bot.storage import off_loop

        async with self._lock:
            if time.monotonic() - self._read_at < QUEUE_CACHE_SECONDS:
                return self._state
            try:
                self._state = await asyncio.wait_for(off_loop(read_queue, self.database_url),
                                                     QUEUE_QUERY_TIMEOUT)
            except Exception as exc:  # (a scrape reports the database down, never a 500)
                logger.warning("metrics: the queue could not be read: %s",
                               exc.__class__.__name__)
                self._state = None
            self._read_at = time.monotonic()
            return self._state


def _loop_health(process: str) -> list[tuple[str, float, bool, int]]:
    """(loop, seconds since its last good tick, up, failures) for this process's loops."""
    now = time.time()
    loops = [(h.name, h.seconds_since_ok(now), h.seconds_since_ok(now) <= h.stale_after,
              h.failures) for h in supervision.supervised()]
    if process == "desk":  # its live listener is a thread of its own, not a supervised loop
        from parley.bot.desk import live

        listener = live.listener_health()
        loops.append(("desk live listener", listener.seconds_since_ok, listener.ok(),
                      listener.failures))
    return loops


class Scrape:
    """What one scrape serves: the client's process and Python collectors, this
    process's counters, the state read for it."""

    def __init__(self, process: str, queue: QueueState | None) -> None:
        self.process = process
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        for family in PROCESS_FAMILIES.get(self.process, ()):
            yield from family.collect()
        database = GaugeMetricFamily("parley_database_up",
                                     "1 if this scrape could read the queue from the database.")
        database.add_metric([], 0 if self.queue is None else 1)
        yield database
        if self.queue is not None:
            yield GaugeMetricFamily("parley_queue_length", "Tickets waiting for an agent.",
                                    value=self.queue.waiting)
            yield GaugeMetricFamily("parley_queue_oldest_waiting_seconds",
                                    "How long the longest-waiting ticket has waited (0 with "
                                    "none waiting).", value=self.queue.oldest_waiting_seconds)
            yield GaugeMetricFamily("parley_tickets_assigned", "Tickets an agent holds.",
                                    value=self.queue.assigned)
        up = GaugeMetricFamily("parley_loop_up", "1 if the background loop had a good tick "
                               "lately (max(60 s, 3 idle waits)).", labels=["loop"])
        since = GaugeMetricFamily("parley_loop_seconds_since_ok", "Seconds since the "
                                  "background loop's last good tick.", labels=["loop"])
        failures = CounterMetricFamily("parley_loop_failures", "Ticks of the background loop "
                                       "that raised (it logged and went on).", labels=["loop"])
        for name, seconds, ok, failed in _loop_health(self.process):
            up.add_metric([name], 1 if ok else 0)
            since.add_metric([name], seconds)
            failures.add_metric([name], failed)
        yield from (up, since, failures)


def install(app: Any, process: str) -> None:
    """Serve `GET /metrics` on this Sanic app (once, however often it is called);
    `process` is "rasa", "actions" or "desk". Before the server starts: Sanic 21.12
    takes no routes after."""
    from sanic.response import HTTPResponse, raw

    if getattr(app.ctx, "parley_metrics", None) is not None:
        return
    reader = app.ctx.parley_metrics = QueueReader(getattr(app.ctx, "database_url", None))

    async def metrics(_request: Any) -> HTTPResponse:
        scrape = Scrape(process, await reader.state())
        return raw(generate_latest(scrape), content_type=CONTENT_TYPE_LATEST)

    app.add_route(metrics, "/metrics", methods=["GET"], name="parley_metrics")
