"""A bot turn through the Telegram connector (with its fake Bot API server) against
the token-protected script channel, on the same model and server, side by side.

    .venv/bin/python -m bench.connector_overhead [--turns 150]

Rasa's `rest` channel, the old baseline, is gone (it reached Rasa around the gate);
the script channel is the plainest path left: the same inbox, worker and gate, and
the webhook answers with the bot's replies once the worker has them. For each
concurrency level the two paths alternate in rounds, so machine noise hits both
alike. A turn ends when the customer has the reply: for the script channel, the
response; for Telegram, the reply's arrival at the (fake) Bot API, after the
secret check, the inbox, the worker (gate and Rasa) and the outbox sender.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import REPO_ROOT as PROJECT_ROOT
from bench.report import DOCS, grouped_bars_png, percentile, write_section
from tests.fakes.stack import start_stack
from tests.fakes.telegram_api import FakeTelegram

SECRET = "bench-secret"
SCRIPT_TOKEN = "bench-script-token-0123456789"  # the throw-away stack's own
TEXT = "what payment methods do you accept"
TURNS_PER_CHAT = 3  # stay inside Telegram's per-chat burst, as real chats do
_ids = itertools.count(int(time.time()) * 1000)


class FakeBotApi:
    """The fake Bot API in its own process, as Telegram is: the load generator's
    busy event loop must not delay when a reply is seen to arrive."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.telegram_api"],
                                     cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class Arrivals:
    """Every message the fake Bot API received, per chat, long-polled from it
    (`/_calls?after=N&wait=S`) by a task in the load generator's event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cursor = 0
        self.by_chat: defaultdict[int, list[float]] = defaultdict(list)
        self.waiters: dict[int, asyncio.Event] = {}

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            while True:
                resp = await client.get(f"{self.url}/_calls",
                                        params={"after": self.cursor, "wait": 5})
                data = resp.json()
                self.cursor = data["next"]
                for call in data["calls"]:
                    chat = int(call["params"]["chat_id"])
                    self.by_chat[chat].append(call["at"])
                    waiter = self.waiters.get(chat)
                    if waiter is not None:
                        waiter.set()

    async def nth(self, chat: int, n: int, timeout: float = 120.0) -> float:
        """When the n-th message to this chat arrived (monotonic clock, one for every
        process on the machine), waiting for it."""
        deadline = time.monotonic() + timeout
        while len(self.by_chat[chat]) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chat {chat}: no message {n} after {timeout:.0f} s")
            waiter = self.waiters[chat] = asyncio.Event()
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter.wait(), left)
            finally:
                self.waiters.pop(chat, None)
        return self.by_chat[chat][n - 1]


FAKE: FakeBotApi | None = None
ARRIVALS: Arrivals | None = None
SENT: defaultdict[int, int] = defaultdict(int)  # Telegram turns posted, per chat


async def script_turn(client: httpx.AsyncClient, base: str, chat: int) -> float:
    """Until the reply is in hand: the script channel answers with it."""
    start = time.monotonic()
    resp = await client.post(f"{base}/webhooks/script/webhook",
                             json={"sender": f"bench{chat}", "message": TEXT},
                             headers={"Authorization": f"Bearer {SCRIPT_TOKEN}"})
    resp.raise_for_status()
    assert resp.status_code == 200 and resp.json(), "no reply"
    return time.monotonic() - start


WEBHOOK_DONE: list[float] = []  # Telegram: until the webhook answered 2xx (stored)


async def telegram_turn(client: httpx.AsyncClient, base: str, chat: int) -> float:
    """Posts the update; the turn ends when the reply reached the fake Bot API (the
    customer). The bot sends one message for TEXT."""
    assert ARRIVALS is not None
    update = {"update_id": next(_ids), "message": {
        "message_id": next(_ids), "date": int(time.time()), "text": TEXT,
        "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": False, "first_name": "Bench"}}}
    start = time.monotonic()
    resp = await client.post(f"{base}/webhooks/telegram/webhook", content=json.dumps(update),
                             headers={"X-Telegram-Bot-Api-Secret-Token": SECRET,
                                      "Content-Type": "application/json"})
    resp.raise_for_status()
    WEBHOOK_DONE.append(time.monotonic() - start)
    SENT[chat] += 1
    return await ARRIVALS.nth(chat, SENT[chat]) - start


async def load(kind: str, base: str, concurrency: int, turns: int) -> tuple[list[float], float]:
    turn = script_turn if kind == "script" else telegram_turn
    latencies: list[float] = []
    remaining = itertools.count()

    async def worker(client: httpx.AsyncClient) -> None:
        chat, used = next(_ids), 0
        while next(remaining) < turns:
            if used == TURNS_PER_CHAT:
                chat, used = next(_ids), 0
            latencies.append(await turn(client, base, chat))
            used += 1

    assert ARRIVALS is not None
    poller = asyncio.get_running_loop().create_task(ARRIVALS.run())
    limits = httpx.Limits(max_connections=concurrency + 10)
    try:
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            start = time.perf_counter()
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    return latencies, len(latencies) / elapsed


def _pin_all_threads(pid: int, cpus: set[int]) -> None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def pin(rasa_pid: int, fake_pid: int) -> str:
    """On a machine with two or more cores, give the Rasa server (the system under
    test) its own core and put the load generator and the fake Bot API on the
    others, so the fake platform's own CPU is not charged to the connector.
    Both paths run under the same placement."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one core)"
    _pin_all_threads(rasa_pid, {cpus[0]})
    rest = set(cpus[1:])
    _pin_all_threads(fake_pid, rest)
    _pin_all_threads(os.getpid(), rest)
    return f"Rasa server on CPU {cpus[0]}; load generator and fake Bot API on CPU " + \
        ",".join(map(str, sorted(rest)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """One Rasa server with one Telegram configuration, the script channel alternating
    with it."""

    label: str
    paid_broadcast: bool
    levels: list[int]
    rows: list[str] = field(default_factory=list)
    chart: dict[str, list[float]] = field(default_factory=lambda: {
        "script p50": [], "Telegram p50": [], "script p95": [], "Telegram p95": []})


def run_phase(phase: Phase, turns: int, rounds: int) -> str:
    """Measures every level of the phase; returns how the processes were placed."""
    assert FAKE is not None
    stack = start_stack("bench-tg", {"parley.connectors.telegram.TelegramInput": {
        "access_token": FakeTelegram().token, "webhook_secret": SECRET,
        "api_base_url": FAKE.url, "paid_broadcast": phase.paid_broadcast},
        "parley.connectors.script.ScriptInput": {"token": SCRIPT_TOKEN}})
    rasa_pid = stack.processes["rasa"].pid
    pinned = pin(rasa_pid, FAKE.proc.pid)
    try:
        base = stack.rasa_url
        asyncio.run(load("script", base, 5, 20))  # warm-up: model, caches, pools
        asyncio.run(load("telegram", base, 5, 20))
        for level in phase.levels:
            samples: dict[str, list[float]] = {"script": [], "telegram": []}
            WEBHOOK_DONE.clear()
            rates: dict[str, list[float]] = {"script": [], "telegram": []}
            cpu: dict[str, float] = {"script": 0.0, "telegram": 0.0}
            # At least 8 turns per conversation worker and round: a steady state, not
            # one burst whose "latencies" are only the order its turns finish in.
            per_round = max(turns // rounds, 8 * level)
            for _ in range(rounds):
                for kind in ("script", "telegram"):
                    before = cpu_seconds(rasa_pid)
                    lat, rate = asyncio.run(load(kind, base, level, per_round))
                    cpu[kind] += cpu_seconds(rasa_pid) - before
                    samples[kind] += lat
                    rates[kind].append(rate)
            ms = {k: [x * 1000 for x in v] for k, v in samples.items()}
            p = {k: (percentile(v, 50), percentile(v, 95), sum(v) / len(v)) for k, v in ms.items()}
            for kind, label in (("script", "script"), ("telegram", "Telegram")):
                phase.chart[f"{label} p50"].append(p[kind][0])
                phase.chart[f"{label} p95"].append(p[kind][1])
            for kind in ("script", "telegram"):
                over = ("", "", "") if kind == "script" else tuple(
                    f"{(p['telegram'][i] / p['script'][i] - 1) * 100:+.1f} %" for i in range(3))
                rate = sum(rates[kind]) / len(rates[kind])
                done = "" if kind == "script" else (
                    f"{percentile([x * 1000 for x in WEBHOOK_DONE], 50):.0f} / "
                    f"{percentile([x * 1000 for x in WEBHOOK_DONE], 95):.0f}")
                per_turn = cpu[kind] * 1000 / len(samples[kind])
                path = "script" if kind == "script" else f"telegram, {phase.label}"
                phase.rows.append(
                    f"| {level} | {path} | {len(samples[kind])} | {p[kind][0]:.0f} "
                    f"| {p[kind][1]:.0f} | {p[kind][2]:.0f} | {rate:.1f} | {over[0]} "
                    f"| {over[1]} | {over[2]} | {done} | {per_turn:.1f} |")
                print(phase.rows[-1], flush=True)
    finally:
        stack.stop()
    return pinned


HEADER = ["| concurrent | path | turns | p50 ms | p95 ms | mean ms | turns/s | p50 vs script "
          "| p95 vs script | mean vs script | Telegram ack p50 / p95 ms "
          "| Rasa server CPU ms per turn |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=150,
                        help="turns per path and level (at least 8 per concurrent worker "
                             "and round)")
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--capped-level", type=int, default=50,
                        help="the level measured again under Telegram's default 30/s "
                             "bot-wide limit (0: skip)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    global FAKE, ARRIVALS
    FAKE = FakeBotApi()
    ARRIVALS = Arrivals(FAKE.url)
    overhead = Phase("1000/s (paid broadcast)", True, [int(x) for x in args.levels.split(",")])
    capped = Phase("30/s (default)", False, [args.capped_level] if args.capped_level else [])
    try:
        pinned = run_phase(overhead, args.turns, args.rounds)
        if capped.levels:
            run_phase(capped, args.turns, args.rounds)
    finally:
        FAKE.stop()
    if args.no_write:
        return
    png = grouped_bars_png([f"{level} concurrent" for level in overhead.levels], overhead.chart,
                           DOCS / "bench" / "connector_overhead.png",
                           "Bot turn: Telegram connector vs the script channel", "milliseconds")
    write_section("Connector overhead: Telegram vs the script channel", "\n".join([
        "Command: `.venv/bin/python -m bench.connector_overhead "
        f"--turns {args.turns} --rounds {args.rounds}` "
        f"(run {time.strftime('%Y-%m-%d')}; one Rasa server per table, SQLite; the fake "
        f"Bot API on loopback in its own process; {pinned}; the script channel and "
        "Telegram alternate in rounds within each table).",
        "",
        "Both paths go through the inbox, a worker (gate, Rasa) and the transcript; the "
        "script channel's webhook then answers with the replies, while Telegram's answered "
        "2xx as soon as the update was stored (the ack column) and its reply goes out "
        "through the outbox sender to the Bot API. A turn ends when the customer has the "
        "reply: the script channel's response, or the reply's arrival at the fake Bot API. "
        "Each conversation waits for its reply before its next message.",
        "",
        "With the bot allowed 1000 messages/s (`paid_broadcast: true`), so that Telegram's "
        "own limit does not cap throughput:",
        "",
        *HEADER, *overhead.rows,
        "",
        f"![turn latency by concurrency]({png.relative_to(DOCS).as_posix()})",
        "",
        *(["The same load under Telegram's default limit of about 30 messages/s per bot "
           "(a second server, measured after the first): when the server could answer "
           "faster than that, a Telegram bot's throughput is capped by the platform, not "
           "by the connector.",
           "", *HEADER, *capped.rows] if capped.rows else []),
    ]))


if __name__ == "__main__":
    main()
