"""The durable message path under load (issue 11): Telegram webhook acknowledgement,
reply latency and throughput with one Rasa process and with two.

    .venv/bin/python -m bench.webhook_latency [--levels 1,10,50,200] [--duration 20]

Each concurrency level runs that many conversations at once, each a closed loop:
post a Telegram update (with the webhook's secret), wait until the fake Bot API
(its own process) received the bot's reply to it, post the next. A conversation
moves to a new chat every 3 messages, as `bench.connector_overhead` does, so
Telegram's 1 message/s per chat limit does not set the pace. Measured:

- ack: from the POST until our 2xx (the message is stored in the inbox);
- reply: from the POST until the reply reached the fake Bot API, which records
  arrival times on the machine-wide monotonic clock (`/_calls?after=N&wait=S`);
- throughput: replies that reached the API per second of the measured window.

Configurations, each with a fresh PostgreSQL schema (Parley), its own PostgreSQL
database (Rasa's tracker store) and a Redis lock store: one Rasa process; two Rasa
processes with the webhooks spread round-robin over both ports (a load balancer);
and, at the `--inline-levels`, the previous commit's inline path (e1c3277, the turn
inside the webhook) for the reply-latency target. All are started once and measured
alternately in rounds; the ones not being measured are frozen (SIGSTOP) so their
idle polling costs the others nothing.

`--profile LEVEL` then records each configuration's Rasa processes with py-spy
(`--gil` and `--idle`; PY_SPY=/path/to/py-spy if it is not on PATH) and prints where
the time went: by activity under the GIL, and the event loop's wall-clock time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
import yaml

from bench import REPO_ROOT as PROJECT_ROOT
from bench.connector_overhead import Arrivals, FakeBotApi, cpu_seconds
from bench.publish_latency import POSTGRES, drop_schema, fresh_schema
from bench.report import DOCS, grouped_bars_png, percentile, write_section
from parley.bot import launcher, storage
from parley.bot.support_hours import DAYS
from tests.fakes.stack import free_port
from tests.fakes.telegram_api import FakeTelegram

SECRET = "bench-secret"
TEXT = "what payment methods do you accept"
TURNS_PER_CHAT = 3  # then a new chat: Telegram allows ~1 message/s per chat after a burst
INLINE_COMMIT = "e1c3277"
ACK_TARGET_MS = 50.0
SPEEDUP_TARGET = 1.6
INLINE_TARGET_LEVEL = 50  # reply p95 here, one process, no worse than the inline path
REPLY_TIMEOUT = 120.0
_ids = itertools.count(int(time.time()) * 1000)


# -- the systems under test -----------------------------------------------------------
@dataclass
class System:
    label: str
    urls: list[str]  # Telegram webhook bases, used round-robin
    rasa_pids: list[int]
    other_pids: list[int]  # action server, desk: frozen with it, counted apart
    stop: Any
    log_dir: str = ""

    @property
    def pids(self) -> list[int]:
        return [*self.rasa_pids, *self.other_pids]

    def freeze(self, frozen: bool) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def telegram_channel(fake_url: str) -> dict[str, Any]:
    return {"parley.connectors.telegram.TelegramInput": {
        "access_token": FakeTelegram().token, "webhook_secret": SECRET,
        "api_base_url": fake_url, "paid_broadcast": True}}  # 1000/s: not the platform's cap


def stores(tag: str) -> tuple[dict[str, Any], str]:
    """endpoints.yml sections for Rasa: its tracker store in a new PostgreSQL
    database, per-conversation locks in Redis under their own prefix."""
    database = f"bench_tracker_{tag}"
    return {"tracker_store": {"type": "parley.bot.tracker_store.SQLTrackerStore",
                              "dialect": "postgresql", "url": "127.0.0.1", "port": 5432,
                              "username": "postgres", "db": database,
                              "login_db": "test"},
            "lock_store": {"type": "redis", "url": "127.0.0.1", "port": 6379, "db": 0,
                           "key_prefix": f"bench{tag}"}}, database


def create_database(name: str) -> None:
    """Rasa would create it, but two processes starting together race to."""
    engine = sa.create_engine(POSTGRES, future=True, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def drop_database(name: str) -> None:
    engine = sa.create_engine(POSTGRES, future=True, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def start_durable(label: str, processes: int, fake_url: str,
                  env: dict[str, str] | None = None) -> System:
    tag = uuid.uuid4().hex[:8]
    schema, url = fresh_schema()
    overrides, tracker_db = stores(tag)
    create_database(tracker_db)
    state = Path(tempfile.mkdtemp(prefix=f"parley-bench-webhook-{processes}-"))
    hours = state / "hours.yml"
    hours.write_text(yaml.safe_dump({"timezone": "UTC",
                                     "weekly": dict.fromkeys(DAYS, "00:00-24:00")}))
    stack = launcher.Stack(PROJECT_ROOT, rasa_port=free_port(), action_port=free_port(),
                           desk_port=free_port(), var_dir=state,
                           env={"PARLEY_SUPPORT_HOURS": str(hours), **(env or {})},
                           channels=telegram_channel(fake_url), database_url=url,
                           extra_rasa_ports=[free_port() for _ in range(processes - 1)],
                           endpoint_overrides=overrides)

    def stop() -> None:
        stack.stop()
        drop_schema(schema)
        drop_database(tracker_db)

    try:
        stack.start(timeout=600)  # a busy 2-core machine loads several models slowly
    except BaseException:
        with contextlib.suppress(Exception):
            drop_schema(schema)
            drop_database(tracker_db)
        raise
    rasa = [n for n in stack.processes if n.startswith("rasa")]
    return System(label, [f"{u}/webhooks/telegram/webhook" for u in stack.rasa_urls],
                  [stack.processes[n].pid for n in rasa],
                  [p.pid for n, p in stack.processes.items() if n not in rasa], stop,
                  str(stack.log_dir))


def start_inline(fake_url: str, commit: str) -> System:
    """The previous commit's code, from its own tree; `parley` points there through
    PYTHONPATH (a regular package ahead of this checkout's editable install)."""
    work = Path(tempfile.mkdtemp(prefix="parley-bench-inline-code-"))
    tree, pkgs = work / "tree", work / "pkgs" / "parley"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=PROJECT_ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    # Today's model needs today's NLU components (issue 12's classifier): the inline
    # path runs them too, so only the message path differs.
    for component in (PROJECT_ROOT / "bot" / "nlu").glob("*.py"):
        shutil.copy(component, tree / "bot" / "nlu" / component.name)
    (tree / "models").mkdir(exist_ok=True)
    for model in (PROJECT_ROOT / "models").iterdir():
        (tree / "models" / model.name).symlink_to(model)
    pkgs.mkdir(parents=True)
    (pkgs / "__init__.py").write_text("")
    for part in ("bot", "connectors"):
        (pkgs / part).symlink_to(tree / part)
    tag = uuid.uuid4().hex[:8]
    schema, url = fresh_schema()
    overrides, tracker_db = stores(tag)
    create_database(tracker_db)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkgs.parent), str(tree)])}
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "bench" / "inline_stack.py"), json.dumps({
            "root": str(tree), "database_url": url, "channels": telegram_channel(fake_url),
            "endpoint_overrides": overrides})],
        cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()

    def stop() -> None:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=60)
        drop_schema(schema)
        drop_database(tracker_db)
        shutil.rmtree(work, ignore_errors=True)

    if not line:
        proc.wait()
        drop_schema(schema)
        drop_database(tracker_db)
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"the inline stack ({commit}) did not start")
    info = json.loads(line)
    pids = info["pids"]
    return System(f"inline ({commit}), 1 process", [f"{info['rasa_url']}/webhooks/telegram/"
                                                    "webhook"], [pids["rasa"]],
                  [pid for name, pid in pids.items() if name != "rasa"], stop,
                  info["log_dir"])


# -- the load -----------------------------------------------------------------------
@dataclass
class Turn:
    start: float
    ack: float  # seconds until our 2xx
    reply_at: float  # fake API's arrival time of the (last) reply
    retries: int


@dataclass
class Cell:
    """One configuration at one level, over all rounds."""

    turns: list[Turn] = field(default_factory=list)
    replies: int = 0  # replies arriving inside the measured windows
    seconds: float = 0.0  # length of the measured windows
    lost: int = 0
    connections: int = 0  # PostgreSQL connections opened inside the windows
    cpu: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))


def update(chat: int) -> bytes:
    return json.dumps({"update_id": next(_ids), "message": {
        "message_id": next(_ids), "date": int(time.time()), "text": TEXT,
        "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": False, "first_name": "Bench"}}}).encode()


HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}


def platform_client(level: int) -> aiohttp.ClientSession:
    """The posting side of the load generator. aiohttp rather than httpx: 0.18
    against 3.7 ms of CPU per post here with 50 in flight (measured once:
    3,000 posts to a local aiohttp server), and the generator shares the cores
    with the stacks it measures."""
    connector = aiohttp.TCPConnector(limit=level + 10, force_close=False)
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=60))


async def post(client: aiohttp.ClientSession, url: str, body: bytes) -> int:
    """Until a 2xx; like Telegram, the same update again after a failure (the
    inbox drops a redelivery). Returns how many retries it took."""
    for attempt in range(10):
        try:
            async with client.post(url, data=body, headers=HEADERS) as resp:
                await resp.read()
                if resp.status < 300:
                    return attempt
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url}: no 2xx after 10 tries")


def all_cpu(system: System) -> dict[str, float]:
    """CPU seconds so far: the Rasa processes, the stack's other services,
    PostgreSQL, the fake Bot API and this load generator; and the machine's busy time."""
    out = {"rasa": sum(_cpu(p) for p in system.rasa_pids),
           "actions + desk": sum(_cpu(p) for p in system.other_pids),
           "postgres + redis": server_cpu(),
           **{name: _cpu(pid) for name, pid in CPU_OF.items()},
           "load generator": _cpu(os.getpid())}
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields]
    out["machine busy"] = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return out


def _cpu(pid: int) -> float:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return cpu_seconds(pid)
    return 0.0


def server_cpu() -> float:
    """CPU seconds of PostgreSQL and Redis so far, including PostgreSQL's backends
    that have ended: the postmaster reaps them, so their time is in its children's
    fields (a connection opened and closed inside a window would otherwise show as
    "other work")."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                if (entry / "comm").read_text().strip() not in {"postgres", "redis-server"}:
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
                if fields[1] == "1" or _comm(int(fields[1])) != "postgres":  # the postmaster
                    total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


def connections_opened() -> int:
    """PostgreSQL sessions started so far, all databases (pg_stat_database)."""
    engine = sa.create_engine(POSTGRES, future=True, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT sum(sessions) FROM pg_stat_database")).scalar_one()) - 1
    finally:
        engine.dispose()


CPU_OF: dict[str, int] = {}  # more processes whose CPU is counted (the fake Bot API)
ONE, TWO = "durable, 1 process", "durable, 2 processes"


async def drive(system: System, arrivals: Arrivals, level: int, warmup: float,
                duration: float, cell: Cell | None, per_turn: int) -> None:
    """`level` closed-loop conversations for warmup + duration seconds, then until
    every reply is in; what falls in the window after the warm-up goes into `cell`."""
    urls = itertools.cycle(system.urls)
    t0 = time.monotonic()
    w0, w1 = t0 + warmup, t0 + warmup + duration
    turns: list[Turn] = []
    cpu: list[dict[str, float]] = []
    sessions: list[int] = []

    async def conversation() -> None:
        chat, used = next(_ids), 0
        while time.monotonic() < w1:
            if used == TURNS_PER_CHAT:
                chat, used = next(_ids), 0
            body, url = update(chat), next(urls)
            start = time.monotonic()
            retries = await post(client, url, body)
            ack = time.monotonic() - start
            used += 1
            try:
                reply_at = await arrivals.nth(chat, used * per_turn, REPLY_TIMEOUT)
            except TimeoutError:
                if cell is not None:
                    cell.lost += 1
                chat, used = next(_ids), 0
                continue
            turns.append(Turn(start, ack, reply_at, retries))

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, w0 - time.monotonic()))
        cpu.append(all_cpu(system))
        sessions.append(connections_opened())
        await asyncio.sleep(max(0.0, w1 - time.monotonic()))
        cpu.append(all_cpu(system))
        sessions.append(connections_opened())

    async with platform_client(level) as client:
        sampler = asyncio.create_task(sample_cpu())
        # Spread the first posts over a second, as customers' would be.
        await asyncio.gather(*(_after(i / level, conversation()) for i in range(level)))
        await sampler
    if cell is None:
        return
    cell.turns += [t for t in turns if w0 <= t.start < w1]
    cell.replies += sum(1 for t in turns if w0 <= t.reply_at < w1)
    cell.seconds += w1 - w0
    cell.connections += sessions[1] - sessions[0]
    for key, value in cpu[1].items():
        cell.cpu[key] += value - cpu[0][key]


async def _after(delay: float, coro: Any) -> None:
    await asyncio.sleep(delay)
    await coro


async def replies_per_turn(system: System, arrivals: Arrivals) -> int:
    """How many messages the bot sends for TEXT (waits a while for more after the first)."""
    chat = next(_ids)
    async with platform_client(1) as client:
        await post(client, system.urls[0], update(chat))
    await arrivals.nth(chat, 1)
    await asyncio.sleep(1.5)
    return len(arrivals.by_chat[chat])


# -- where the time goes (--profile) ------------------------------------------------
MAIN_THREAD = [  # (what, a substring of a frame), most specific first
    ("Rasa: tracker store", "tracker_store.py"), ("Rasa: lock store", "lock_store.py"),
    ("Rasa: NLU", "rasa/nlu/"), ("Rasa: policies", "rasa/core/policies/"),
    ("Parley NLG (reply library)", "responses/"), ("Rasa: action server call", "actions/action.py"),
    ("Rasa: graph and processor, other", "rasa/"),
    ("Telegram send (PTB, aiohttp)", "telegram"), ("Sanic request handling", "sanic/"),
    ("Parley connectors, other", "connectors/"),
]


def on_loop(frames: list[str]) -> str | None:
    """What a sample of the event loop's thread was doing; None when it was inside
    the loop itself (uvloop is C: no Python frame above Sanic's `serve`)."""
    serve = max((i for i, f in enumerate(frames) if f.startswith("serve (sanic/server")),
                default=-1)
    work = frames[serve + 1:]  # below `serve`: how every process started (rasa/__main__ …)
    if not work:
        return None
    return next((label for label, key in MAIN_THREAD if any(key in f for f in work)),
                "event loop: asyncio, Parley's loops, other")


def py_spy() -> str | None:
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


def summarize(raw: Path, seconds: float, rate_hz: int, replies: int) -> list[str]:
    """Who held the GIL (py-spy --gil): the event loop by activity, the storage
    threads by the function they ran; ms per reply."""
    counts: defaultdict[str, int] = defaultdict(int)
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if frames[0].startswith("_bootstrap (threading.py"):  # a thread of its own
            run = next((i for i, f in enumerate(frames)
                        if f.startswith("run (concurrent/futures/thread.py")), None)
            if run is None or run + 1 >= len(frames):
                what = "other threads (and storage threads between calls)"
            else:
                called = frames[run + 1]  # "name (path/file.py:line)"
                name, _, where = called.partition(" (")
                what = f"storage thread: {name} ({where.rsplit(':', 1)[0]})"
        else:
            what = on_loop(frames) or "event loop: idle (between callbacks)"
        counts[what] += int(n)
    total = sum(counts.values())
    per_reply = 1000 / rate_hz / max(1, replies)
    out = [f"GIL held {total / rate_hz / seconds * 100:.0f} % of the time; "
           f"{total * per_reply:.1f} ms per reply"]
    out += [f"  {n * per_reply:6.2f} ms  {n / total * 100:5.1f} %  {what}"
            for what, n in sorted(counts.items(), key=lambda kv: -kv[1])[:25]]
    return out


def summarize_loop(raw: Path) -> list[str]:
    """What the event loop's thread did, in wall-clock time (py-spy --idle): waiting
    in epoll for something to do, or busy (running, or blocked in a synchronous call)."""
    counts: defaultdict[str, int] = defaultdict(int)
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].startswith("_run_module_as_main"):
            continue  # not the event loop's thread
        what = on_loop(frames) or "idle: waiting for events (in uvloop)"
        counts[what] += int(n)
    total = sum(counts.values())
    return ["event loop thread, share of wall-clock time:"] + [
        f"  {n / total * 100:5.1f} %  {what}"
        for what, n in sorted(counts.items(), key=lambda kv: -kv[1])[:12]]


async def profile(system: System, arrivals: Arrivals, level: int, seconds: float,
                  per_turn: int, out_dir: Path) -> list[str]:
    """Drive `level` conversations and record the Rasa processes with py-spy."""
    spy = py_spy()
    assert spy is not None
    rate_hz = 100
    slug = system.label.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    paths = [out_dir / f"{slug}.{i}.{level}" for i in range(len(system.rasa_pids))]
    cell = Cell()

    async def record() -> None:
        await asyncio.sleep(5.0)
        procs = [await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
            str(rate_hz), *mode, "--nonblocking", "--format", "raw", "-o", f"{path}.{suffix}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            for pid, path in zip(system.rasa_pids, paths, strict=True)
            for mode, suffix in ((["--gil"], "gil.raw"), (["--idle"], "wall.raw"))]
        for proc in procs:
            await proc.wait()

    recorder = asyncio.create_task(record())
    await drive(system, arrivals, level, 5.0, seconds, cell, per_turn)
    await recorder
    out = [f"{system.label}, {level} concurrent: {rate(cell):.1f} replies/s; py-spy raw files: "
           f"{out_dir}/"]
    for i, path in enumerate(paths):
        out.append(f"Rasa process {i + 1} (ms per reply: over all replies of the configuration)")
        gil, wall = Path(f"{path}.gil.raw"), Path(f"{path}.wall.raw")
        if gil.exists():
            out += summarize(gil, seconds, rate_hz, cell.replies)
        if wall.exists():
            out += summarize_loop(wall)
    return out


# -- the run ------------------------------------------------------------------------
def ms(values: list[float], p: float) -> float:
    """The percentile in ms; NaN without samples (every reply lost), not a crash."""
    return percentile([v * 1000 for v in values], p) if values else float("nan")


def row(level: int, label: str, cell: Cell) -> str:
    acks = [t.ack for t in cell.turns]
    replies = [t.reply_at - t.start for t in cell.turns]
    per_reply = {k: v * 1000 / max(1, cell.replies) for k, v in cell.cpu.items()}
    ours = sum(v for k, v in per_reply.items() if k != "machine busy")
    cores = cell.seconds * (os.cpu_count() or 1)
    busy = cell.cpu["machine busy"] / cores
    unrelated = (cell.cpu["machine busy"] - sum(v for k, v in cell.cpu.items()
                                                if k != "machine busy")) / cores
    retries = sum(t.retries for t in cell.turns)
    return (f"| {level} | {label} | {len(cell.turns)} | {ms(acks, 50):.0f} | {ms(acks, 95):.0f} "
            f"| {ms(replies, 50):.0f} | {ms(replies, 95):.0f} | {rate(cell):.1f} "
            f"| {per_reply['rasa']:.1f} | {ours:.1f} | {busy * 100:.0f} % "
            f"| {max(0.0, unrelated) * 100:.0f} % "
            f"| {cell.connections / max(cell.seconds, 1e-9):.1f} | {retries} / {cell.lost} |")


def cpu_breakdown(cell: Cell) -> str:
    """Where the benchmark's CPU per reply went, by process group."""
    return ", ".join(f"{name} {seconds * 1000 / max(1, cell.replies):.1f}"
                     for name, seconds in cell.cpu.items() if name != "machine busy")


HEADER = ["| concurrent | configuration | turns | ack p50 ms | ack p95 ms | reply p50 ms "
          "| reply p95 ms | replies/s | Rasa CPU ms per reply | benchmark CPU ms per reply "
          "| machine busy | busy with other work | PostgreSQL connections opened per s "
          "| retried posts / lost |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


def rate(cell: Cell) -> float:
    return cell.replies / cell.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,10,50,200")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="measured seconds per configuration, level and round")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds before measuring, plus 40 ms per conversation")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--inline-levels", default="1,50",
                        help="levels at which the previous commit's inline path is "
                             "measured too ('' to skip it)")
    parser.add_argument("--inline-commit", default=INLINE_COMMIT)
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--profile", type=int, default=0, metavar="LEVEL",
                        help="after measuring, record each configuration's Rasa processes "
                             "with py-spy (--gil) at this level and print where the time went")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--variant", default="", metavar="NAME=VALUE",
                        help="also measure one process with this environment variable set "
                             "(a setting under trial), at every level")
    parser.add_argument("--variant-processes", default="1", metavar="N[,N]",
                        help="Rasa processes of the variant's stacks: 1, 2 or 1,2")
    parser.add_argument("--platform-nice", type=int, default=-5, metavar="N",
                        help="CPU priority of the load generator and the fake Bot API, once "
                             "the stacks are up (0: as the stacks). On a deployment the "
                             "platform is other machines; here it must not queue for the "
                             "cores behind the stacks it measures")
    args = parser.parse_args()
    if args.platform_nice < 0 and os.geteuid() != 0:
        parser.error("--platform-nice below 0 needs root (or pass --platform-nice 0)")
    if not {n for n in args.variant_processes.split(",") if n} <= {"1", "2"}:
        parser.error("--variant-processes takes 1, 2 or 1,2")
    if args.profile and not py_spy():
        parser.error("--profile needs py-spy on PATH (or PY_SPY=/path/to/py-spy)")
    levels = [int(x) for x in args.levels.split(",") if x]
    inline_levels = [int(x) for x in args.inline_levels.split(",") if x]
    began = time.monotonic()
    fake = FakeBotApi()
    CPU_OF["fake API"] = fake.proc.pid
    systems: list[System] = []
    try:
        print(f"fake Bot API at {fake.url}; starting the stacks (a minute or two)…",
              flush=True)
        starters: list[list[Any]] = [[lambda: start_durable(ONE, 1, fake.url)],
                                     [lambda: start_durable(TWO, 2, fake.url)]]
        if inline_levels:
            starters.append([lambda: start_inline(fake.url, args.inline_commit)])
        if args.variant:
            name, _, value = args.variant.partition("=")
            for count in sorted({int(n) for n in args.variant_processes.split(",") if n}):
                base = {1: ONE, 2: TWO}[count]
                starters.append([lambda base=base, count=count: start_durable(
                    f"{base}, {args.variant}", count, fake.url, {name: value})])
        systems = start_all(starters)
        print(f"stacks up after {time.monotonic() - began:.0f} s", flush=True)
        if args.platform_nice:
            for pid in (os.getpid(), fake.proc.pid):
                renice(pid, args.platform_nice)
        results = asyncio.run(measure(args, fake.url, systems, levels, inline_levels))
    finally:
        for system in systems:
            system.freeze(False)
        for system in systems:
            with contextlib.suppress(Exception):
                system.stop()
        fake.stop()
    if levels and not args.no_write:
        report(args, systems, levels, results, time.monotonic() - began)


def renice(pid: int, nice: int) -> None:
    """Every thread of the process (Linux sets a priority per thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def start_all(sequences: list[list[Any]]) -> list[System]:
    """Run the sequences of starters side by side, each one starter after the other."""
    upgrade = storage.create_schema
    lock = threading.Lock()

    def create_schema(database_url: str | None = None) -> None:
        with lock:  # Alembic keeps its migration context in module globals
            upgrade(database_url)

    storage.create_schema = create_schema  # type: ignore[assignment]
    systems: list[System] = []
    failed: list[BaseException] = []

    def run(sequence: list[Any]) -> None:
        try:
            for starter in sequence:
                systems.append(starter())
        except BaseException as exc:  # reported below, once every start has ended
            failed.append(exc)

    threads = [threading.Thread(target=run, args=(seq,)) for seq in sequences]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        for system in systems:
            with contextlib.suppress(Exception):
                system.stop()
        raise RuntimeError(f"a stack did not start: {failed[0]!r}")
    order = [ONE, TWO]  # a stable order for the tables, whichever started first
    return sorted(systems, key=lambda s: (order.index(s.label) if s.label in order else 9,
                                          s.label))


async def measure(args: argparse.Namespace, fake_url: str, systems: list[System],
                  levels: list[int], inline_levels: list[int]) -> dict[tuple[str, int], Cell]:
    arrivals = Arrivals(fake_url)
    poller = asyncio.create_task(arrivals.run())
    results: dict[tuple[str, int], Cell] = {}
    try:
        per_turn = 0
        for system in systems:  # warm each: model, pools, caches
            for other in systems:
                other.freeze(other is not system)
            if not per_turn:
                per_turn = await replies_per_turn(system, arrivals)
                print(f"the bot sends {per_turn} message(s) per turn", flush=True)
            await drive(system, arrivals, 10, 5.0, 0.0, None, per_turn)
            print(f"warmed: {system.label}", flush=True)
        for level in levels:
            here = [s for s in systems if s.label.startswith((ONE, TWO))
                    or level in inline_levels]
            for r in range(args.rounds):
                for system in here if r % 2 == 0 else list(reversed(here)):
                    for other in systems:
                        other.freeze(other is not system)
                    cell = results.setdefault((system.label, level), Cell())
                    start = time.monotonic()
                    await drive(system, arrivals, level, args.warmup + 0.04 * level,
                                args.duration, cell, per_turn)
                    print(f"  {level} concurrent, round {r + 1}/{args.rounds}, "
                          f"{system.label}: {time.monotonic() - start:.0f} s", flush=True)
            print("\n".join(HEADER), flush=True)
            for system in here:
                print(row(level, system.label, results[(system.label, level)]), flush=True)
            for system in here:
                print(f"  CPU ms per reply, {system.label}: "
                      + cpu_breakdown(results[(system.label, level)]), flush=True)
        if args.profile:
            out_dir = Path(tempfile.mkdtemp(prefix="parley-bench-profile-"))
            for system in systems:
                for other in systems:
                    other.freeze(other is not system)
                try:
                    print("\n".join(await profile(system, arrivals, args.profile,
                                                  args.profile_seconds, per_turn, out_dir)),
                          flush=True)
                except Exception as exc:  # the measurements above still get written
                    print(f"profiling {system.label} failed: {exc!r}", flush=True)
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    return results


def p95_ack(cell: Cell) -> float:
    return ms([t.ack for t in cell.turns], 95)


def p95_reply(cell: Cell) -> float:
    return ms([t.reply_at - t.start for t in cell.turns], 95)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets(results: dict[tuple[str, int], Cell], levels: list[int],
            inline_label: str | None) -> list[str]:
    out = ["| target | measured | |", "|---|---|---|"]
    for label in (ONE, TWO):
        acks = {level: p95_ack(results[(label, level)]) for level in levels}
        out.append(f"| ack p95 ≤ {ACK_TARGET_MS:.0f} ms at every level, {label} | "
                   + ", ".join(f"{level}: {v:.0f} ms" for level, v in acks.items())
                   + f" | {verdict(max(acks.values()) <= ACK_TARGET_MS)} |")
    ratios = {level: rate(results[(TWO, level)]) / rate(results[(ONE, level)])
              for level in levels}
    top = max(levels)
    out.append(f"| two processes ≥ {SPEEDUP_TARGET}× the throughput of one (judged at "
               f"{top}, where one process is saturated) | "
               + ", ".join(f"{level}: {r:.2f}×" for level, r in ratios.items())
               + f" | {verdict(ratios[top] >= SPEEDUP_TARGET)} |")
    if inline_label is not None:
        for level in [INLINE_TARGET_LEVEL]:  # the target's level; others are in the table
            if (inline_label, level) in results:
                durable, inline = p95_reply(results[(ONE, level)]), \
                    p95_reply(results[(inline_label, level)])
                out.append(f"| reply p95 at {level} conversations, one process, no worse than "
                           f"the inline path | {durable:.0f} ms against {inline:.0f} ms "
                           f"({(durable / inline - 1) * 100:+.0f} %) | "
                           f"{verdict(durable <= inline)} |")
    return out


def report(args: argparse.Namespace, systems: list[System], levels: list[int],
           results: dict[tuple[str, int], Cell], took: float) -> None:
    labels = [s.label for s in systems]
    inline_label = next((x for x in labels if x.startswith("inline")), None)
    names = {ONE: "1 process", TWO: "2 processes", inline_label: "inline",
             **{x: x.removeprefix("durable, ") for x in labels
                if x.startswith((f"{ONE}, ", f"{TWO}, "))}}
    groups = [f"{level} concurrent" for level in levels]
    nan = float("nan")
    latency: dict[str, list[float]] = {}
    for label in labels:
        cells = [results.get((label, level)) for level in levels]
        if label != inline_label:
            latency[f"ack p95, {names[label]}"] = [p95_ack(c) if c else nan for c in cells]
        latency[f"reply p95, {names[label]}"] = [p95_reply(c) if c else nan for c in cells]
    latency_png = grouped_bars_png(groups, latency, DOCS / "bench" / "webhook_latency.png",
                                   "Telegram webhook: ack and reply p95 (log scale)",
                                   "milliseconds", log=True)
    throughput_png = grouped_bars_png(
        groups, {f"{names[label]}": [rate(results[(label, level)])
                                     if (label, level) in results else nan
                                     for level in levels] for label in labels},
        DOCS / "bench" / "webhook_throughput.png", "Telegram webhook: replies per second",
        "replies/s")
    rows = [row(level, label, results[(label, level)]) for level in levels
            for label in labels if (label, level) in results]
    command = (f"Command: `.venv/bin/python -m bench.webhook_latency --levels {args.levels} "
               f"--duration {args.duration:g} --warmup {args.warmup:g} --rounds {args.rounds}"
               + (f" --inline-levels {args.inline_levels}" if args.inline_levels != "1,50"
                  else "")
               + (f" --variant {args.variant} --variant-processes {args.variant_processes}"
                  if args.variant else "")
               + (f" --platform-nice {args.platform_nice}" if args.platform_nice != -5
                  else "") + "`")
    turns_in_flight = os.environ.get("PARLEY_TURNS_IN_FLIGHT", "4 (default)")
    write_section("Webhook latency and throughput: the durable path", "\n".join([
        f"{command} (run {time.strftime('%Y-%m-%d')}, {took / 60:.0f} min; "
        f"{os.cpu_count()} cores, no pinning; PostgreSQL (a fresh schema for Parley, a fresh "
        "database for Rasa's tracker store) and a Redis lock store per configuration; "
        f"PARLEY_TURNS_IN_FLIGHT={turns_in_flight}; the fake Bot API on loopback in its own "
        "process, `paid_broadcast: true` so Telegram's 30/s cap does not bind).",
        "",
        "Each conversation is a closed loop: post an update to the Telegram webhook, wait "
        "until the fake Bot API received the bot's reply, post the next; every 3 messages it "
        f"moves to a new chat (Telegram's ~1/s per chat). **Ack**: POST until our 2xx (the "
        "message is committed to the inbox). **Reply**: POST until the reply reached the "
        "Bot API. **Replies/s**: replies that arrived during the measured windows. The "
        f"configurations alternate in {args.rounds} rounds per level, each "
        f"{args.warmup:g} s + 40 ms per conversation of warm-up and then {args.duration:g} s "
        "measured; the ones not being measured are frozen (SIGSTOP). With two processes "
        "the webhooks go round-robin to both ports, as a load balancer would; either "
        "process's worker may take the conversation. Once the stacks are up, the load "
        f"generator and the fake Bot API run at nice {args.platform_nice} (on a deployment "
        "the platform is other machines; here it must not queue for the cores behind the "
        "stacks it measures). "
        + (f"The variant rows run with {args.variant} (a setting under trial). "
           if args.variant else "")
        + "The inline path is the previous "
        f"commit ({args.inline_commit}): the Rasa turn inside the webhook, which answered 200 "
        "only after the reply was sent, on the same PostgreSQL + Redis set-up. CPU per "
        "reply, during the measured windows: of the Rasa processes; of everything the "
        "benchmark runs (Rasa, action server and desk, PostgreSQL and Redis, the fake API, "
        "the load generator; PostgreSQL's includes its backends that ended inside the "
        "window, which the postmaster reaps). Machine busy: all cores; busy with other "
        "work: whatever else ran (kernel threads, other users of this shared machine; "
        "PostgreSQL serves other clients too, which the benchmark's column then "
        "includes). PostgreSQL connections opened per s: new server sessions during the "
        "windows (`pg_stat_database`), all clients. The load generator posts with "
        "aiohttp.",
        "",
        *HEADER, *rows,
        "",
        *targets(results, levels, inline_label),
        "",
        f"![ack and reply p95]({latency_png.relative_to(DOCS).as_posix()})",
        f"![throughput]({throughput_png.relative_to(DOCS).as_posix()})",
    ]))


if __name__ == "__main__":
    main()
