"""What every Parley channel shares: the webhook, the inbox hand-off, the workers
and the outbox. A platform module keeps only what is its own: how a request is
verified, the payload's shape, parsing into `Inbound`, and one send.

    webhook: size limit (413, before the body is read) -> verify (401/403) -> JSON
             and shape (400, with a reason) -> parse -> store (inbox) -> 2xx
    inbox worker: claim conversations (leases) -> per conversation, in order:
             language -> gate -> Rasa when the bot owns it -> replies into the outbox
    outbox sender: claim in order -> owner check for bot replies -> send ->
             marked sent once the platform accepted (retry, or fail with a reason)

Every loop is supervised (`parley.bot.supervision`); GET `/webhooks/<channel>/health`
reports their last good tick. The channels' blueprint also brings the Rasa server its
GET `/metrics` (`parley.bot.metrics`). No database call runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, ClassVar

import threadpoolctl
from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.core.lock_store import LOCK_LIFETIME
from rasa.shared.core.events import BotUttered, UserUtteranceReverted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from parley.bot import inbox, language, metrics, outbox, personal_data, supervision
from parley.bot.inbox import Pending
from parley.bot.outbox import Send
from parley.bot.settings import load_settings
from parley.bot.storage import off_loop, off_loop_urgent
from parley.connectors import gate
from parley.connectors.outbound import Retryable
from parley.connectors.requests import DEFAULT_MAX_BODY, RejectedRequest, read_json_object
from parley.connectors.turns import TURNS, conversation_lock, prepare_nlu

logger = logging.getLogger(__name__)
# This process, as lease owner: unique across replicas and restarts.
OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
# Seconds: a Rasa turn taking longer is abandoned and retried. Within the lifetime of
# Rasa's conversation lock (TICKET_LOCK_LIFETIME, 60 s by default), which `AtMostOnce`
# relies on to keep a retry out until the turn it waits for is saved.
TURN_TIMEOUT = max(5.0, LOCK_LIFETIME - 5.0)
# Seconds to wait for a message's encoding before its turn (~15 ms): past this the
# turn goes ahead and encodes for itself.
PREPARE_TIMEOUT = 5.0
CLAIM_FACTOR = 2  # conversations a worker holds: this many per turn it may run at once
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
# In a turn's user event (its metadata): which stored message the turn answered, and
# on which try.
MESSAGE_ID = "parley_message_id"
ATTEMPT = "parley_attempt"


class DeliveryFailed(Exception):
    """The platform will not take this message; `reason` is shown to the agent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TurnFailed(Exception):
    """Rasa finished the turn but an action in it failed (the action server down or
    refusing): its replies are not the answer, so the message is tried again."""


# Rasa logs an exception from a custom action and carries on without its events
# (processor._run_action); the worker hears it through this, per turn (task).
_turn_errors: ContextVar[list[str] | None] = ContextVar("parley_turn_errors", default=None)


class _ActionFailures(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        errors = _turn_errors.get()
        if errors is not None and record.exc_info:
            errors.append(record.getMessage()[:200])


logging.getLogger("rasa.core.processor").addHandler(_ActionFailures(logging.ERROR))


async def rasa_turn(on_new_message: OnNewMessage, message: UserMessage) -> None:
    """One Rasa turn; TurnFailed if Rasa swallowed a failing action on the way."""
    errors: list[str] = []
    token = _turn_errors.set(errors)
    try:
        await on_new_message(message)
    finally:
        _turn_errors.reset(token)
    if errors:
        raise TurnFailed(errors[0])


def recorded_replies(tracker: DialogueStateTracker, pending: Pending,
                     failed_turn: int | None = None) -> list[dict[str, Any]] | None:
    """The bot's messages of the last turn the tracker holds for this stored message,
    or None when none counts: no turn ran, or the last one failed (its try is at or
    before `failed_turn`, by default `pending.failed_turn`). The text must match too
    (Rasa strips it): a database may reuse an erased message's id."""
    failed = pending.failed_turn if failed_turn is None else failed_turn
    text = pending.text.strip()
    events = list(tracker.events)
    for n in range(len(events) - 1, -1, -1):
        event = events[n]
        if not isinstance(event, UserUttered):
            continue
        metadata = event.metadata or {}
        if metadata.get(MESSAGE_ID) != pending.id or (event.text or "").strip() != text:
            continue
        attempt = metadata.get(ATTEMPT)
        if failed is not None and (not isinstance(attempt, int) or attempt <= failed):
            return None
        replies = []
        for later in events[n + 1:]:
            if isinstance(later, UserUttered):
                break
            if isinstance(later, UserUtteranceReverted):
                return None
            if isinstance(later, BotUttered):
                replies.append(later.message())
        return replies
    return None


def _primary(store: Any) -> Any:
    """Behind Rasa's FailSafeTrackerStore, the configured store: the fail-safe one
    answers a database error with "no tracker", which here would mean "no turn yet"
    and let a second turn run. An error must fail this try instead."""
    return getattr(store, "_tracker_store", store)


class AtMostOnce:
    """A stored message's turn, run once however many workers try it (a lease ran
    out, a process died). Rasa's `Agent.handle_message`, with checks inside Rasa's
    lock on the conversation, so after any turn still running for it:
    - a try runs only while its worker holds the conversation (else the worker that
      took it over answers);
    - a try after the first finds the tracker's turn for this message, if one ran
      and did not fail, and gives its replies again: no second user event, no action
      run twice;
    - a turn whose action failed is marked so (`inbox.turn_failed`) before the lock
      is let go, so no try can take its replies for the answer.
    Holds while turns end within Rasa's lock lifetime, hence TURN_TIMEOUT; the
    tracker read covers the current session only (docs/reliability.md)."""

    def __init__(self, agent: Any, pending: Pending,
                 check: Callable[[], Awaitable[tuple[bool, int | None]]],
                 mark_failed: Callable[[], Awaitable[None]]) -> None:
        self.agent = agent
        self.pending = pending
        self.check = check
        self.mark_failed = mark_failed
        self.ran = False  # Rasa's turn began (a time limit hit before it is no failed turn)
        self.failed = False  # its action failed (the worker marks it, should the mark here fail)

    async def __call__(self, message: UserMessage) -> None:
        agent, pending = self.agent, self.pending
        if not agent.is_ready():  # no model loaded: what Rasa's own handler does
            await agent.handle_message(message)
            return
        sender = message.sender_id
        async with conversation_lock(agent.lock_store, sender):
            ours, failed_turn = await self.check()
            if not ours:
                logger.info("message %s: lease gone before its turn", pending.id)
                return
            if pending.attempts > 1:
                tracker = await _primary(agent.tracker_store).retrieve(sender)
                replies = recorded_replies(tracker, pending, failed_turn) if tracker else None
                if replies is not None:
                    logger.info("message %s was answered by an earlier turn: its replies "
                                "again", pending.id)
                    for reply in replies:
                        await message.output_channel.send_response(sender, reply)
                    return
            self.ran = True
            await agent.processor.handle_message(message)
            if _turn_errors.get():  # Rasa went on past a failed action: not the answer
                self.failed = True
                await self.mark_failed()


class Collector(CollectingOutputChannel):
    """Rasa's replies for one turn, under the channel's name so writers' variants
    for that channel apply; they go to the outbox, not straight out."""

    def __init__(self, channel: str) -> None:
        super().__init__()
        self._channel = channel

    def name(self) -> str:  # type: ignore[override]
        return self._channel

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        """Keep which writer-owned reply each message came from (Rasa passes it in
        the message's metadata, then drops it), for the transcript and analytics."""
        first = len(self.messages)
        reply_name = message.get("utter_action")
        await super().send_response(recipient_id, message)
        if isinstance(reply_name, str):
            for collected in self.messages[first:]:
                collected["utter_action"] = reply_name


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a streamed route, refused (413) from its Content-Length before
    any of it is read, or as soon as a chunked body passes the limit."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RejectedRequest(400, "Content-Length must be a number")
        if int(length) > limit:
            raise RejectedRequest(413, f"body is {length} bytes; the limit is {limit}")
    chunks, size = [], 0
    if request.stream is not None:
        async for chunk in request.stream:
            size += len(chunk)
            if size > limit:
                raise RejectedRequest(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
    request.body = b"".join(chunks)
    return request.body


def masked(item: gate.Inbound, kinds: tuple[str, ...]) -> gate.Inbound:
    """The message with card numbers, IBANs, email addresses and phone numbers (those
    of `kinds`) replaced by placeholders in its text and the customer's name, and
    their keyed hashes in its metadata under "masked" (`parley.bot.personal_data`).
    Done here, where every channel's messages enter, so nothing after (the inbox, the
    transcript, the desk, the gate, Rasa and its tracker store, the logs) ever holds
    the values. The metadata holds platform ids, never the customer's words."""
    text = personal_data.mask(item.text, kinds)
    name = personal_data.mask(item.display_name, kinds)
    if not text.found and not name.found:
        return item
    metadata = {**item.metadata, "masked": personal_data.found_payload(text.found + name.found)}
    return replace(item, text=text.text, display_name=name.text, metadata=metadata)


def store_masked(item: gate.Inbound, kinds: tuple[str, ...],
                 database_url: str | None = None) -> int | None:
    """`inbox.store` of the masked message (masking runs off the event loop too)."""
    item = masked(item, kinds)
    return inbox.store(item.conversation_id, item.text,
                       platform_message_id=item.platform_message_id,
                       display_name=item.display_name, metadata=item.metadata or None,
                       database_url=database_url)


class ChannelBlueprint(Blueprint):
    """A channel's routes, which also serve GET `/metrics` on the Rasa server: Rasa
    mounts each channel under /webhooks/<name>/ and has no plug point for a route of
    the server's own, but registers every channel's blueprint on its app (once per
    app, whatever the number of channels) before the server starts."""

    def register(self, app: Any, options: dict[str, Any]) -> None:
        super().register(app, options)
        metrics.install(app, "rasa")


class ParleyInput(InputChannel):
    """A Rasa input channel on Parley's durable path. Subclasses set `name()` and
    implement `verify`, `parse` and (unless `delivery` is "sync") `deliver`."""

    delivery = "push"  # how replies reach the customer: the outbox ("push"), or
    # the webhook's own answer ("sync", the web chat)
    max_body_bytes = DEFAULT_MAX_BODY
    workers: ChannelWorkers

    # -- what a platform module provides ------------------------------------------
    def verify(self, request: Request) -> None:
        """Raise RejectedRequest (401/403) unless the request is the platform's."""
        raise NotImplementedError

    def check(self, payload: dict[str, Any]) -> None:
        """Raise RejectedRequest (400) unless the payload has a shape parse can read."""

    def parse(self, payload: dict[str, Any]) -> list[gate.Inbound]:
        raise NotImplementedError

    async def deliver(self, send: Send) -> None:
        """One outgoing message to the platform: raise `Retryable` to try again
        later, anything else for a permanent refusal (see `refusal`)."""
        raise NotImplementedError

    def refusal(self, error: Exception) -> str:
        """The reason agents see for a send the platform refused for good."""
        if isinstance(error, DeliveryFailed):
            return error.reason
        return f"{self.name()} refused it: {error.__class__.__name__}: {error}"

    async def before_turn(self, pending: Pending) -> None:
        """Platform courtesy before the bot's turn (Telegram answers a button press)."""

    def add_routes(self, hook: Blueprint) -> None:
        """Routes of the platform's own (Meta's subscription check, the web chat page)."""

    async def inbound(self, payload: dict[str, Any]) -> list[gate.Inbound]:
        """The customer messages to store; platforms with more to do on arrival
        (Meta's echoes of a person's replies) extend it."""
        return self.parse(payload)

    # -- shared --------------------------------------------------------------------
    async def store(self, items: list[gate.Inbound]) -> list[int | None]:
        """Commit each message to the inbox, its personal data masked, and wake this
        process's worker."""
        kinds = self.workers.settings.mask
        ids = [await off_loop_urgent(store_masked, item, kinds) for item in items]
        self.workers.inbox_wake.set()
        return ids

    async def answer(self, request: Request, items: list[gate.Inbound]) -> HTTPResponse:
        await self.store(items)
        return response.json({"ok": True})

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        hook = ChannelBlueprint(f"{self.name()}_webhook", __name__)
        self.workers = ChannelWorkers(self, on_new_message)
        metrics.prepare_channel(self.name(), sends=self.delivery == "push")
        settings = load_settings()

        @hook.listener("before_server_start")
        async def limit_bodies(app: Any, _loop: Any) -> None:
            # Sanic refuses larger bodies from their Content-Length, unread (413).
            app.config.REQUEST_MAX_SIZE = min(app.config.REQUEST_MAX_SIZE,
                                              settings.request_max_bytes)

        @hook.listener("after_server_start")
        async def start_workers(app: Any, _loop: Any) -> None:
            self.workers.start(app)

        @hook.route("/health", methods=["GET"])
        async def health(_request: Request) -> HTTPResponse:
            report = supervision.report(stale_after=max(60.0, settings.lease_seconds * 2))
            return response.json(report, status=200 if report["status"] == "ok" else 503)

        @hook.route("/webhook", methods=["POST"], stream=True)
        async def receive(request: Request) -> HTTPResponse:
            try:
                await read_body(request, self.max_body_bytes)
                self.verify(request)
                payload = read_json_object(request, self.max_body_bytes)
                self.check(payload)
                items = await self.inbound(payload)
            except RejectedRequest as rejected:
                return rejected.as_response()
            try:
                return await self.answer(request, items)
            except (DBAPIError, SQLAlchemyTimeoutError) as exc:  # nothing was stored
                logger.warning("%s webhook: storage unavailable (%s); the platform will "
                               "retry", self.name(), exc.__class__.__name__)
                return response.json({"error": "storage unavailable; retry later"},
                                     status=503, headers={"Retry-After": "5"})

        self.add_routes(hook)
        return hook


_heartbeat_started = False


class Held:
    """What this process works on now, over all its channels: the lease heartbeat
    renews these leases and no others."""

    conversations: ClassVar[set[str]] = set()
    sends: ClassVar[set[int]] = set()


class ChannelWorkers:
    """The background side of one channel in one process: the inbox worker, the
    outbox sender, and (once per process) the lease heartbeat."""

    def __init__(self, channel: ParleyInput, on_new_message: OnNewMessage) -> None:
        self.channel = channel
        self.name = channel.name()
        self.on_new_message = on_new_message
        self.settings = load_settings()
        self.inbox_wake = asyncio.Event()
        self.outbox_wake = asyncio.Event()
        self.turns = asyncio.Semaphore(self.settings.turns_in_flight)
        self.active: set[str] = set()
        # Conversations claimed again while their task was still running (both on the
        # loop): the task takes the new lease instead of a second task starting.
        self.again: set[str] = set()
        self.finished: dict[int, asyncio.Event] = {}
        self.app: Any = None  # the Rasa server, once started (its agent runs the turns)

    def start(self, app: Any) -> None:
        global _heartbeat_started
        self.app = app
        lease = self.settings.lease_seconds
        app.add_task(supervision.supervise(f"{self.name} inbox", self._inbox_tick, idle=0.5,
                                           wake=self.inbox_wake))
        if self.channel.delivery == "push":
            app.add_task(supervision.supervise(f"{self.name} outbox", self._outbox_tick,
                                               idle=0.5, wake=self.outbox_wake))
        if not _heartbeat_started:  # once per process, whatever its channels
            _heartbeat_started = True
            sys.setswitchinterval(self.settings.gil_switch_ms / 1000)
            # A turn's products are tiny (one message against the examples): a second
            # BLAS thread saves nothing and spins on a core between them, the core
            # that webhooks, other turns and a second Rasa process need.
            threadpoolctl.threadpool_limits(self.settings.turn_threads, user_api="blas")
            app.add_task(supervision.supervise("lease heartbeat", self._heartbeat,
                                               idle=lease / 3))

    async def _heartbeat(self) -> bool:
        await off_loop_urgent(inbox.heartbeat, OWNER, self.settings.lease_seconds,
                              list(Held.conversations), list(Held.sends))
        return False

    # -- inbox ---------------------------------------------------------------------
    async def _inbox_tick(self) -> bool:
        # Hold only what can be worked on soon: the rest stays free for other processes.
        room = CLAIM_FACTOR * self.settings.turns_in_flight - len(self.active)
        if room <= 0:
            return False
        claimed = await off_loop(inbox.claim, self.name, OWNER, self.settings.lease_seconds,
                                 room)
        for conversation_id in claimed:
            if conversation_id in self.active:  # its task is ending or outlived its lease:
                self.again.add(conversation_id)  # it goes on with the new lease
                continue
            self.active.add(conversation_id)
            Held.conversations.add(conversation_id)
            asyncio.get_running_loop().create_task(self._conversation(conversation_id))
        return bool(claimed)

    async def _conversation(self, conversation_id: str) -> None:
        """This conversation's pending messages, one at a time, in order."""
        released = False  # `begin` found nothing to do and let the lease go itself
        try:
            while True:
                self.again.discard(conversation_id)
                pending = await off_loop(inbox.begin, conversation_id, OWNER,
                                         self.settings.lease_seconds)
                if pending is None:
                    if conversation_id in self.again:  # claimed again meanwhile: ours
                        continue
                    released = True
                    return
                await self._process(pending)
        except Exception:  # (the lease runs out; another try follows)
            logger.exception("worker stopped on %s", conversation_id)
        finally:
            self.active.discard(conversation_id)
            self.again.discard(conversation_id)
            Held.conversations.discard(conversation_id)
            try:
                if not released:
                    await off_loop(inbox.release, conversation_id, OWNER)
            except Exception:
                logger.warning("could not release %s; its lease will run out",
                               conversation_id)
            self.inbox_wake.set()

    async def _process(self, pending: Pending) -> None:
        delivery = self.channel.delivery
        once: AtMostOnce | None = None
        try:
            # The conversation's language first: the gate's notices and the turn use it.
            spoken = await off_loop(language.for_turn, pending)
            decision = await off_loop(gate.route, pending, OWNER, delivery)
            ours = decision.route != "lost"  # else another worker answers, and counts
            if decision.route == "bot":
                await self.channel.before_turn(pending)
                collector = Collector(self.name)
                message = UserMessage(
                    pending.text, collector, pending.conversation_id,  # type: ignore[arg-type]
                    input_channel=self.name,
                    metadata={"display_name": pending.display_name, "language": spoken,
                              MESSAGE_ID: pending.id, ATTEMPT: pending.attempts})
                agent = getattr(getattr(self.app, "ctx", None), "agent", None)
                handler: OnNewMessage = self.on_new_message
                if agent is not None:
                    handler = once = AtMostOnce(
                        agent, pending,
                        lambda: off_loop(inbox.turn_check, pending.id,
                                         pending.conversation_id, OWNER),
                        lambda: off_loop(inbox.turn_failed, pending.id, pending.attempts))
                # Encoded first, off the turns' thread, and before a turn's slot.
                await prepare_nlu(message.text or "", PREPARE_TIMEOUT)
                async with self.turns:
                    started = time.perf_counter()
                    try:
                        await TURNS.run(TURN_TIMEOUT, rasa_turn(handler, message))
                    finally:
                        metrics.turn_took(self.name, time.perf_counter() - started)
                ours = await off_loop(gate.finish_bot, pending, OWNER, collector.messages,
                                      delivery)
            if delivery == "sync" and ours:
                await self._count_answer(pending)
        except Exception as exc:
            error = f"{exc.__class__.__name__}: {exc}"
            logger.exception("processing message %s of %s failed", pending.id,
                             pending.conversation_id)
            # The turn itself failed (an action, or the time limit once Rasa's turn had
            # begun): what it left in the tracker is not the answer. Any other error
            # (storage, the lock) leaves a turn that ran standing.
            failed_turn = isinstance(exc, TurnFailed) or (once is not None and once.failed) \
                or (isinstance(exc, asyncio.TimeoutError) and (once is None or once.ran))
            if await off_loop(inbox.try_failed, pending.id, error, attempt=pending.attempts,
                              failed_turn=failed_turn):
                await off_loop(gate.give_up, pending, error)
        finally:
            done = self.finished.pop(pending.id, None)
            if done is not None:
                done.set()
            self.outbox_wake.set()

    async def _count_answer(self, pending: Pending) -> None:
        """Messages out on a channel that answers in the webhook's response (the web
        chat): what answers this message, counted before the webhook is woken."""
        try:
            metrics.messages_out(self.name, await off_loop(inbox.sync_replies, pending.id))
        except Exception as exc:  # (the message is answered: a count never undoes that)
            logger.warning("metrics: could not count the answer to %s: %s", pending.id,
                           exc.__class__.__name__)

    async def wait_finished(self, message_id: int, timeout: float) -> bool:
        """Until the message is answered or routed (by this process or another)."""
        done = self.finished.setdefault(message_id, asyncio.Event())
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                state = await off_loop(inbox.state_of, message_id)
                if state in inbox.FINISHED:
                    return True
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return False
                # Woken by our own worker; polled when another process has it.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(done.wait(), min(left, 0.5))
        finally:
            self.finished.pop(message_id, None)

    # -- outbox --------------------------------------------------------------------
    async def _outbox_tick(self) -> bool:
        sends = await off_loop(outbox.claim, self.name, OWNER, self.settings.lease_seconds)
        Held.sends.update(s.id for s in sends)
        by_conversation: dict[str, list[Send]] = {}
        for send in sends:
            by_conversation.setdefault(send.conversation_id, []).append(send)
        await asyncio.gather(*(self._send_in_order(s) for s in by_conversation.values()))
        return bool(sends)

    async def _send_in_order(self, sends: list[Send]) -> None:
        settled = 0  # sends finished with (sent, failed, withheld or retrying)
        try:
            for send in sends:
                retry = not await self._send(send)
                settled += 1
                if retry:
                    return  # the rest waits behind it
        finally:  # the rest, and one a database error interrupted: give them back
            Held.sends.difference_update(s.id for s in sends)
            await off_loop(outbox.release, [s.id for s in sends[settled:]], OWNER)

    async def _send(self, send: Send) -> bool:
        """One message; False when it must be retried later (or is no longer ours)."""
        verdict = await off_loop(outbox.confirm, send, OWNER, self.settings.lease_seconds)
        if verdict == "skip":
            return False
        if verdict == "withhold":
            await off_loop(outbox.withhold, send, OWNER)
            return True
        try:
            await self.channel.deliver(send)
        except (DBAPIError, SQLAlchemyTimeoutError):
            raise  # our storage failed (a window check, say), not the platform: released
        except Retryable as exc:
            logger.info("%s send to %s will be retried: %s", self.name, send.conversation_id,
                        exc)
            metrics.send_failed(self.name, "retryable")
            gave_up = await off_loop(outbox.retry_later, send, OWNER, str(exc), exc.retry_after)
            if gave_up:
                metrics.send_failed(self.name, "permanent")
            else:
                metrics.send_retried(self.name)
            return False
        except Exception as exc:  # (permanent: shown to agents)
            reason = self.channel.refusal(exc)
            logger.warning("%s send to %s failed: %s", self.name, send.conversation_id, reason)
            metrics.send_failed(self.name, "permanent")
            await off_loop(outbox.failed, send, OWNER, reason)
            return True
        metrics.messages_out(self.name)  # before `sent` commits: whoever sees it sent sees this
        await off_loop(outbox.sent, send.id, OWNER)
        return True
