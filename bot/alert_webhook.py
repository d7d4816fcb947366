"""The alert webhook: a new spike's numbers, signed, POSTed to the operator's URL.

Each delivery runs as a task of its own beside the desk's spike check, never in
it, and never in the Rasa process: a slow or failing receiver delays nothing.
A desk process claims the delivery in the spike's row (`spikes.claim_webhooks`);
one that dies mid-send leaves the claim to run out and another sends it again,
so delivery is at least once and the body carries the spike's `id` for receivers
to drop repeats.

Signature (receivers check it like Stripe's or Slack's): `X-Parley-Timestamp` is
the Unix time of the attempt, `X-Parley-Signature` is `sha256=` and the hex
HMAC-SHA256 of `"<timestamp>.<body>"` keyed with PARLEY_ALERT_SECRET. A webhook
without a secret is refused when the settings load (`parley.bot.settings`); a
Target built by hand without one still sends, unsigned, with one warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp

from parley.bot import spikes
from parley.bot.storage import off_loop

logger = logging.getLogger(__name__)
ATTEMPTS = 5
TIMEOUT_SECONDS = 10.0
MAX_WAIT_SECONDS = 60.0  # the longest Retry-After we honour
LEASE = timedelta(seconds=ATTEMPTS * (TIMEOUT_SECONDS + MAX_WAIT_SECONDS))
TIMESTAMP_HEADER = "X-Parley-Timestamp"
SIGNATURE_HEADER = "X-Parley-Signature"
_warned_unsigned = False


@dataclass(frozen=True)
class Target:
    url: str
    secret: str | None
    desk_url: str  # the link in the alert

    def __repr__(self) -> str:  # the URL may hold a token (chat tools' webhooks do)
        return "Target(<webhook>)"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def warn_if_unsigned(target: Target) -> None:
    global _warned_unsigned
    if target.secret is None and not _warned_unsigned:
        _warned_unsigned = True
        logger.warning("alert webhook configured without PARLEY_ALERT_SECRET: "
                       "spike alerts are sent unsigned")


def body(spike: spikes.Spike, desk_url: str) -> bytes:
    """The spike's numbers, and a `text` line that chat tools' incoming webhooks show."""
    usual = round(spike.usual)
    text = (f"Inbound spike: {spike.count} customer messages in the last "
            f"{int(spikes.WINDOW.total_seconds() // 60)} minutes, usually about {usual} "
            f"at this hour. Desk: {desk_url}")
    payload: dict[str, Any] = {"event": "inbound_spike", **spike.as_json(webhook=False),
                               "desk_url": desk_url, "text": text}
    return json.dumps(payload, separators=(",", ":")).encode()


def _describe(exc: BaseException, url: str) -> str:
    """The error without the URL, whose path may be a secret."""
    detail = str(exc).replace(url, "<webhook>")
    return f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__


def _retry_after(headers: Any) -> float | None:
    try:
        return min(MAX_WAIT_SECONDS, max(0.0, float(headers.get("Retry-After", ""))))
    except ValueError:
        return None


async def _attempt(client: aiohttp.ClientSession, target: Target, data: bytes
                   ) -> tuple[str | None, bool, float | None]:
    """(error or None, whether to retry, how long the receiver asked us to wait)."""
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "Parley-alerts",
               TIMESTAMP_HEADER: timestamp}
    if target.secret:
        headers[SIGNATURE_HEADER] = signature(target.secret, timestamp, data)
    try:
        async with client.post(target.url, data=data, headers=headers,
                               allow_redirects=False) as resp:
            await resp.read()
            if 200 <= resp.status < 300:
                return None, False, None
            retry = resp.status == 429 or resp.status >= 500
            return f"HTTP {resp.status}", retry, _retry_after(resp.headers)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return _describe(exc, target.url), True, None


async def deliver(spike: spikes.Spike, target: Target, *, backoff: float = 1.0,
                  database_url: str | None = None) -> str:
    """Send one claimed spike's alert, retrying network errors, 5xx and 429 with
    exponential backoff; every attempt is recorded. Returns "sent" or "failed"."""
    data = body(spike, target.desk_url)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        for attempt in range(1, ATTEMPTS + 1):
            error, retry, wait = await _attempt(client, target, data)
            final = error is None or not retry or attempt == ATTEMPTS
            await off_loop(spikes.record_webhook, spike.id, error=error, final=final,
                           database_url=database_url)
            if error is None:
                return "sent"
            logger.warning("alert webhook for spike %d: %s (attempt %d of %d)", spike.id,
                           error, attempt, ATTEMPTS)
            if final:
                return "failed"
            await asyncio.sleep(wait if wait is not None else backoff * 2 ** (attempt - 1))
    return "failed"
