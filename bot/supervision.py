"""Background loops that never die quietly, and what they report.

Every loop (inbox workers, outbox senders, lease heartbeats, the desk's follow-ups
and live listener) runs through `supervise`: an exception is logged with its
traceback, counted, and the loop goes on after a backoff. Each loop's last
successful tick is kept for the processes' health endpoints and `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

logger = logging.getLogger(__name__)
MAX_BACKOFF = 30.0
STUCK_AFTER = 120.0  # a tick this long is abandoned and counted as a failure
MIN_STALE = 60.0  # `/metrics`: a loop is down after this long without a good tick …
IDLE_PERIODS = 3  # … or this many of its idle waits, if longer (an hourly job is not down)


@dataclass
class LoopHealth:
    name: str
    started: float
    last_ok: float | None = None
    failures: int = 0  # in total since start
    last_error: str | None = None
    idle: float = 0.5  # its wait between ticks when there is no work

    @property
    def stale_after(self) -> float:
        """Seconds without a good tick after which the loop counts as down."""
        return max(MIN_STALE, IDLE_PERIODS * self.idle)

    def seconds_since_ok(self, now: float) -> float:
        return now - (self.last_ok or self.started)


_LOOPS: dict[str, LoopHealth] = {}


async def supervise(name: str, tick: Callable[[], Awaitable[bool]], *, idle: float = 0.5,
                    wake: asyncio.Event | None = None) -> None:
    """Run `tick` forever. It returns whether it did work: if not, wait `idle`
    seconds (or until `wake` is set) before the next one."""
    health = _LOOPS[name] = LoopHealth(name, time.time(), idle=idle)
    failing = 0
    while True:
        try:
            busy = await asyncio.wait_for(tick(), STUCK_AFTER)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # (the point: nothing ends the loop)
            failing += 1
            health.failures += 1
            health.last_error = f"{exc.__class__.__name__}: {exc}"[:300]
            logger.exception("%s failed (%d in a row); going on", name, failing)
            await asyncio.sleep(min(MAX_BACKOFF, 0.1 * 2 ** min(failing, 9)))
            continue
        failing = 0
        health.last_ok = time.time()
        if busy:
            await asyncio.sleep(0)
            continue
        if wake is None:
            await asyncio.sleep(idle)
            continue
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), idle)
        wake.clear()


def _iso(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, timezone.utc).isoformat()


def supervised() -> list[LoopHealth]:
    """This process's supervised loops, by name (read, never changed, by callers)."""
    return [health for _name, health in sorted(_LOOPS.items())]


def report(stale_after: float = 60.0) -> dict[str, Any]:
    """Each loop's last successful tick; `ok` unless one has not had one lately."""
    now = time.time()
    loops = {}
    healthy = True
    for name, h in sorted(_LOOPS.items()):
        since = h.seconds_since_ok(now)
        fresh = since <= stale_after
        healthy = healthy and fresh
        loops[name] = {"last_ok": _iso(h.last_ok), "seconds_since_ok": round(since, 3),
                       "failures": h.failures, "last_error": h.last_error, "ok": fresh}
    return {"status": "ok" if healthy else "stale", "loops": loops}
