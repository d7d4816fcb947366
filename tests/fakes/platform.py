"""The delivering side of the fake platforms: webhooks POSTed the way Telegram and
Meta post them, redelivered until we answer 2xx.

A `Deliverer` holds updates per conversation and sends them from one asyncio loop on
a background thread: conversations in parallel, each conversation's updates one at
a time (the next only after the previous got its 2xx), as both platforms keep a
chat's updates in order. Anything but a 2xx within the timeout (a timeout, a refused
connection, a 5xx) is tried again after an exponential backoff (0.2 s doubling,
capped at 5 s) until it is accepted or the deadline passes. With several Rasa URLs
it round-robins between them like a load balancer, and moves straight on to the
next URL when one refuses connections.

Each update records its attempts and whether (and when) it was accepted, so a fault
test can say how many were refused first and accepted later.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from parley.connectors.meta import generate_signature

TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TELEGRAM_PATH = "/webhooks/telegram/webhook"
MESSENGER_PATH = "/webhooks/messenger/webhook"
_update_ids = itertools.count(int(time.time() * 1000) % 10**12 * 10)


@dataclass
class Update:
    """One platform delivery (a webhook POST) and what became of it."""

    conversation_id: str  # Parley's id: "telegram:<chat>", "messenger:<psid>"
    text: str
    platform_message_id: str  # what the inbox deduplicates on
    path: str  # the webhook route on a Rasa server
    body: bytes
    headers: dict[str, str]
    attempts: int = 0
    accepted: bool = False
    accepted_at: float | None = None  # monotonic
    failures: list[str] = field(default_factory=list)  # one short reason per refused try

    @property
    def refused(self) -> bool:
        """Refused at least once (5xx, timeout, refused connection) before the end."""
        return bool(self.failures)


def telegram_update(chat: int, text: str, secret: str) -> Update:
    """A private-chat text message, as Telegram POSTs it, with the webhook secret."""
    update_id = next(_update_ids)
    payload = {"update_id": update_id, "message": {
        "message_id": update_id % 2**31, "date": int(time.time()), "text": text,
        "chat": {"id": chat, "type": "private", "first_name": "Maria"},
        "from": {"id": chat, "is_bot": False, "first_name": "Maria", "last_name": "Lopes"}}}
    return Update(f"telegram:{chat}", text, str(update_id), TELEGRAM_PATH,
                  json.dumps(payload).encode(),
                  {"Content-Type": "application/json", TELEGRAM_SECRET_HEADER: secret})


def messenger_update(psid: str, text: str, app_secret: str) -> Update:
    """A Messenger text message, as Meta POSTs it, signed with the app secret."""
    mid = f"m_{next(_update_ids)}"
    payload = {"object": "page", "entry": [{"id": "PAGE", "time": int(time.time() * 1000),
                                            "messaging": [{
        "sender": {"id": psid}, "recipient": {"id": "PAGE"},
        "timestamp": int(time.time() * 1000), "message": {"mid": mid, "text": text}}]}]}
    raw = json.dumps(payload).encode()
    return Update(f"messenger:{psid}", text, mid, MESSENGER_PATH, raw,
                  {"Content-Type": "application/json",
                   "X-Hub-Signature-256": generate_signature(raw, app_secret)})


class Deliverer:
    """Posts queued updates to our webhooks until each is accepted (see the module)."""

    def __init__(self, base_urls: list[str], *, timeout: float = 5.0,
                 first_backoff: float = 0.2, max_backoff: float = 5.0,
                 deadline: float = 600.0, gap: float = 0.0) -> None:
        if not base_urls:
            raise ValueError("at least one URL to deliver to")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.timeout = timeout
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.deadline = deadline  # seconds from start() after which nothing is retried
        self.gap = gap  # pause between a conversation's updates (a customer typing)
        self.queues: dict[str, list[Update]] = {}
        self._next_url = itertools.count()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self.finished_at: float | None = None
        self._lock = threading.Lock()

    # -- what a test queues and reads -----------------------------------------------
    def add(self, update: Update) -> Update:
        if self._thread is not None:
            raise RuntimeError("add updates before start()")
        self.queues.setdefault(update.conversation_id, []).append(update)
        return update

    @property
    def updates(self) -> list[Update]:
        return [u for queue in self.queues.values() for u in queue]

    def accepted_count(self) -> int:
        with self._lock:
            return sum(u.accepted for u in self.updates)

    def stats(self) -> dict[str, Any]:
        updates = self.updates
        reasons = Counter(r for u in updates for r in u.failures)
        return {
            "sent": len(updates),
            "accepted": sum(u.accepted for u in updates),
            "not_accepted": sum(not u.accepted for u in updates),
            "refused_then_accepted": sum(u.accepted and u.refused for u in updates),
            "refused_attempts": sum(len(u.failures) for u in updates),
            "attempts": sum(u.attempts for u in updates),
            "refusal_reasons": dict(reasons.most_common()),
        }

    # -- running ---------------------------------------------------------------------
    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()),
                                        name="deliverer", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every conversation is done (accepted or past the deadline)."""
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self, timeout: float | None = None) -> bool:
        self.start()
        return self.join(timeout)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=len(self.queues) + 8,
                              max_keepalive_connections=len(self.queues) + 8)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            await asyncio.gather(*(self._conversation(client, q) for q in self.queues.values()))
        self.finished_at = time.monotonic()

    async def _conversation(self, client: httpx.AsyncClient, queue: list[Update]) -> None:
        for i, update in enumerate(queue):
            if i and self.gap:
                await asyncio.sleep(self.gap)
            if not await self._deliver(client, update):
                return  # past the deadline: the platform gives up on the rest too

    async def _deliver(self, client: httpx.AsyncClient, update: Update) -> bool:
        backoff = self.first_backoff
        while time.monotonic() - self._started < self.deadline:
            refused_urls = 0
            while True:  # through the URLs while they refuse connections
                url = self.base_urls[next(self._next_url) % len(self.base_urls)]
                outcome = await self._post(client, url, update)
                if outcome != "connect":
                    break
                refused_urls += 1
                if refused_urls >= len(self.base_urls):
                    break
            if outcome == "ok":
                return True
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)
        return False

    async def _post(self, client: httpx.AsyncClient, url: str, update: Update) -> str:
        """'ok' on a 2xx, else 'connect' (refused) or 'failed' (timeout, other status)."""
        with self._lock:
            update.attempts += 1
        try:
            resp = await client.post(url + update.path, content=update.body,
                                     headers=update.headers)
        except httpx.ConnectError:
            self._failed(update, "connection refused")
            return "connect"
        except httpx.TimeoutException:
            self._failed(update, "timeout")
            return "failed"
        except httpx.TransportError as exc:
            self._failed(update, exc.__class__.__name__)
            return "failed"
        if 200 <= resp.status_code < 300:
            with self._lock:
                update.accepted = True
                update.accepted_at = time.monotonic()
            return "ok"
        self._failed(update, f"HTTP {resp.status_code}")
        return "failed"

    def _failed(self, update: Update, reason: str) -> None:
        with self._lock:
            update.failures.append(reason)
