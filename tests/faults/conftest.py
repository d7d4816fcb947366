"""The replicas stack the fault tests (issue 11) break: two Rasa processes, the action
server and the desk over one PostgreSQL schema (Parley's tables and Rasa's tracker
store), Redis as Rasa's lock store, Telegram and Messenger pointed at fake platform
APIs on loopback, support hours always open, and 3-second leases so a dead process's
conversations are taken over quickly.

`make test-full` runs these (`pytest -m faults tests/faults`); plain `pytest` skips them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.pool import NullPool

from parley.bot import launcher, storage
from parley.bot.model_freshness import model_path
from parley.bot.support_hours import DAYS
from tests import REPO_ROOT as PROJECT_ROOT
from tests.conftest import POSTGRES_URL
from tests.fakes.graph_api import FakeGraph
from tests.fakes.graph_api import serve as serve_graph
from tests.fakes.http import stop
from tests.fakes.stack import free_port
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_api import serve as serve_telegram

TELEGRAM_SECRET = "fault-webhook-secret"
APP_SECRET = "fault-app-secret"
VERIFY_TOKEN = "fault-verify"
APP_ID = "4242"
# Short leases, so a dead process's conversations are taken over within seconds
# (production's default is 30); PARLEY_FAULT_LEASE_SECONDS overrides it for experiments.
LEASE_SECONDS = float(os.environ.get("PARLEY_FAULT_LEASE_SECONDS", "3"))
RESULTS = PROJECT_ROOT / "results" / "faults"


def _admin() -> sa.engine.Engine:
    # No pool: a connection held across a PostgreSQL restart would fail the teardown.
    return sa.create_engine(POSTGRES_URL, future=True, poolclass=NullPool)


@pytest.fixture(scope="module")
def fault_db() -> Iterator[tuple[str, str]]:
    """A fresh, migrated schema in the real PostgreSQL (as `pg_url`, but one that
    survives the server being restarted mid-test): (database URL, schema)."""
    admin = _admin()
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.fail(f"the fault tests need PostgreSQL at {POSTGRES_URL}: {exc}")
    schema = f"f_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    storage.create_schema(url)
    # Rasa's tracker table, made once here: two Rasa processes creating it at the same
    # time collide, and the loser waits 5 s before trying again.
    from rasa.core.tracker_store import SQLTrackerStore

    SQLTrackerStore.Base.metadata.create_all(storage.get_engine(url))
    try:
        yield url, schema
    finally:
        storage.get_engine(url).dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def postgres_cluster() -> str:
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: float(v))
    return versions[-1]


@dataclass
class Replicas:
    stack: launcher.Stack
    database_url: str
    schema: str
    telegram: FakeTelegram
    graph: FakeGraph
    servers: list[Any] = field(default_factory=list)

    @property
    def rasa_urls(self) -> list[str]:
        return self.stack.rasa_urls

    def kill(self, name: str) -> int:
        """kill -9 of one service's whole process group; its pid."""
        proc = self.stack.processes[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return proc.pid

    def ensure_running(self) -> list[str]:
        """Start again any service an earlier scenario left dead; their names."""
        dead = [name for name, alive in self.stack.running().items() if not alive]
        for name in dead:
            self.stack.restart(name, timeout=300)
        return dead

    def others_on_postgres(self) -> int:
        """Clients of other stacks on this PostgreSQL server: other databases, or
        desks that are not ours (each desk names its listener connection by pid)."""
        ours = {f"parley-desk-listener:{p.pid}" for p in self.stack.processes.values()}
        with _admin().connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT datname, application_name FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")).all()
        return sum(1 for db, app in rows if db != sa.engine.make_url(POSTGRES_URL).database
                   or (app.startswith("parley-desk-listener:") and app not in ours))

    def restart_postgres(self) -> float:
        """`pg_ctlcluster … restart` (every connection is cut); seconds it took."""
        start = time.monotonic()
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", postgres_cluster(),
                        "main", "restart"], check=True, capture_output=True, timeout=120)
        return time.monotonic() - start

    def received(self) -> dict[str, list[str]]:
        """Per conversation, the texts the fake platform APIs accepted, in arrival order."""
        out: dict[str, list[str]] = {}
        for call in self.telegram.sent():
            if "chat_id" not in call.params:
                continue  # a body cut short by a kill -9: the fake failed it, no 200
            out.setdefault(f"telegram:{int(call.params['chat_id'])}", []).append(
                str(call.params.get("text", "")))
        with self.graph.lock:
            calls = list(self.graph.calls)
        for call in calls:
            recipient = (call.body.get("recipient") or {}).get("id")
            message = call.body.get("message") or {}
            out.setdefault(f"messenger:{recipient}", []).append(str(message.get("text", "")))
        return out

    def log_tail(self, lines: int = 40) -> str:
        """The end of every service's log (for assertion messages and bug reports)."""
        parts = []
        for log in sorted(self.stack.log_dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"==> {log} <==\n" + "\n".join(text))
        return "\n".join(parts)


def replicas_stack(state: Path, database_url: str, schema: str, telegram_url: str,
                   graph_url: str, telegram_token: str, graph_token: str) -> launcher.Stack:
    hours = state / "hours.yml"
    hours.write_text(yaml.safe_dump({"timezone": "UTC",
                                     "weekly": dict.fromkeys(DAYS, "00:00-24:00")}))
    pg = sa.engine.make_url(POSTGRES_URL)
    # Rasa 3.6's SQLTrackerStore builds its URL from these keys; `query` goes to
    # psycopg2 as connection options, so its `events` table lands in the test's schema.
    tracker_store = {"type": "parley.bot.tracker_store.SQLTrackerStore", "dialect": "postgresql",
                     "url": pg.host or "127.0.0.1",
                     "port": pg.port or 5432, "db": pg.database, "username": pg.username,
                     "query": {"options": f"-csearch_path={schema}"}}
    if pg.password:
        tracker_store["password"] = pg.password
    lock_store = {"type": "redis", "url": "127.0.0.1", "port": 6379,
                  "key_prefix": f"fault{uuid.uuid4().hex[:10]}"}
    channels = {
        "parley.connectors.telegram.TelegramInput": {
            "access_token": telegram_token, "webhook_secret": TELEGRAM_SECRET,
            "api_base_url": telegram_url},
        "parley.connectors.messenger.MessengerInput": {
            "page_access_token": graph_token, "app_id": APP_ID, "app_secret": APP_SECRET,
            "verify_token": VERIFY_TOKEN, "graph_base_url": graph_url},
    }
    return launcher.Stack(
        PROJECT_ROOT, rasa_port=free_port(), action_port=free_port(), desk_port=free_port(),
        var_dir=state, database_url=database_url, channels=channels,
        extra_rasa_ports=[free_port()],
        endpoint_overrides={"tracker_store": tracker_store, "lock_store": lock_store},
        env={"PARLEY_SUPPORT_HOURS": str(hours), "PARLEY_LEASE_SECONDS": str(LEASE_SECONDS),
             "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def replicas(fault_db: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Replicas]:
    """One stack for the module's scenarios (each Rasa process takes about two minutes
    to load the model on the CI machine); each scenario has its own conversations."""
    if not model_path(PROJECT_ROOT).exists():
        pytest.fail("no trained model: run `make test-full` (it trains first)")
    database_url, schema = fault_db
    telegram, graph = FakeTelegram(), FakeGraph()
    tg_server, tg_url = serve_telegram(telegram)
    graph_server, graph_url = serve_graph(graph)
    state = tmp_path_factory.mktemp("stack")
    stack = replicas_stack(state, database_url, schema, tg_url, graph_url, telegram.token,
                           graph.token)
    running = Replicas(stack, database_url, schema, telegram, graph,
                       [tg_server, graph_server])
    try:
        stack.start(timeout=300)
        yield running
    finally:
        stack.stop()
        for server in running.servers:
            stop(server)
        # Kept beside the figures (pytest prunes its temporary folders after 3 runs).
        kept = RESULTS / "logs"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(stack.log_dir, kept, dirs_exist_ok=True)
        print(f"logs: {kept}")
