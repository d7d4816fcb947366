"""Shared fixtures: a fresh SQLite database per test, and a running bot per module."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.bot import storage
from parley.bot.model_freshness import model_path
from tests import REPO_ROOT as PROJECT_ROOT
from tests.fakes.stack import free_port


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite database that the code under test finds through settings."""
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    monkeypatch.setenv("PARLEY_DATABASE_URL", url)
    storage.create_schema(url)
    return url


def wait_until(condition: Callable[[], object], timeout: float = 15.0) -> bool:
    """Poll until `condition()` is truthy (for work done by another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def wait_settled(database_url: str, timeout: float = 60.0) -> None:
    """Until the bot has worked through every stored message and sent what is due:
    webhooks answer before the bot does, so tests wait for the workers."""
    import sqlalchemy as sa

    from parley.bot.conversations import Message

    busy = sa.select(sa.func.count()).select_from(Message).where(sa.or_(
        Message.inbox_state.in_(("received", "processing")),
        sa.and_(Message.delivery == "push", Message.sent_at.is_(None),
                Message.delivery_error.is_(None), Message.retry_at.is_(None),
                Message.conversation_id.not_like("webchat:%"))))
    engine = storage.get_engine(database_url)

    def idle() -> bool:
        with engine.connect() as conn:
            return conn.execute(busy).scalar() == 0

    if not wait_until(idle, timeout):
        raise TimeoutError(f"the bot still had work after {timeout} s")


def _hours_file(path: Path, weekly: dict[str, str]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({
        "timezone": "UTC", "weekly": weekly,
        "channels": {"email": "help@example.com", "phone": "+1 555 0100",
                     "webchat": "example.com/chat"}}))
    return path


@pytest.fixture
def always_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Support hours that are open at any time the tests run."""
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    path = _hours_file(tmp_path / "open.yml", dict.fromkeys(days, "00:00-24:00"))
    monkeypatch.setenv("PARLEY_SUPPORT_HOURS", str(path))


@pytest.fixture
def never_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_SUPPORT_HOURS", str(_hours_file(tmp_path / "shut.yml", {})))


@dataclass
class RunningBot:
    """`python -m parley.bot.cli run` (what `make run` starts), on free ports."""

    process: subprocess.Popen[str]
    rasa_url: str
    action_url: str
    desk_url: str
    state: Path
    banner: str

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.state / 'parley.db'}"

    @property
    def webchat_url(self) -> str:
        return f"{self.rasa_url}/webhooks/webchat/"

    def say(self, sender: str, text: str) -> list[dict]:
        resp = httpx.post(
            f"{self.webchat_url}webhook", json={"sender": sender, "message": text}, timeout=30
        )
        resp.raise_for_status()
        return resp.json()


def _read_banner(proc: subprocess.Popen[str], timeout: float) -> str:
    """Wait for the 'Press Ctrl-C' line that `run` prints once every service is up."""
    lines: list[str] = []

    def pump() -> None:  # keeps reading so the child never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = "".join(lines)
        if "Press Ctrl-C" in seen:
            return seen
        if proc.poll() is not None:
            raise RuntimeError(f"`parley.bot.cli run` exited early ({proc.returncode}):\n{seen}")
        time.sleep(0.2)
    raise TimeoutError(f"`parley.bot.cli run` did not come up:\n{''.join(lines)}")


def stop_run(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a person would: `run` stops every service it started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def running_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    if not model_path(PROJECT_ROOT).exists():
        pytest.fail("no trained model: run `make test` (it trains first)")
    state = tmp_path_factory.mktemp("state")
    rasa_port, action_port, desk_port = free_port(), free_port(), free_port()
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    hours = _hours_file(state / "hours.yml", dict.fromkeys(days, "00:00-24:00"))
    env = {
        **os.environ,
        "PARLEY_RASA_PORT": str(rasa_port),
        "PARLEY_ACTION_PORT": str(action_port),
        "PARLEY_DESK_PORT": str(desk_port),
        "PARLEY_VAR_DIR": str(state),
        "PARLEY_SUPPORT_HOURS": str(hours),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PARLEY_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.bot.cli", "run"], cwd=PROJECT_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        banner = _read_banner(proc, timeout=240)
        yield RunningBot(proc, f"http://127.0.0.1:{rasa_port}",
                         f"http://127.0.0.1:{action_port}", f"http://127.0.0.1:{desk_port}",
                         state, banner)
    finally:
        stop_run(proc)


CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright (Playwright's download fails here)."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (make test does)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                     headless=True)
        yield chromium
        chromium.close()


def desk_login(page: Any, desk_url: str, username: str, password: str) -> None:
    """Log in through the desk's own login form."""
    import re

    from playwright.sync_api import expect

    page.goto(f"{desk_url}/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


POSTGRES_URL = os.environ.get("PARLEY_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def postgres_schema(migrate: bool = True) -> Iterator[str]:
    """A fresh schema in the real PostgreSQL (migrated unless a process under test
    does it); dropped afterwards. Skipped when PostgreSQL is unreachable, except in CI
    (CI=true), where it fails."""
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_URL, future=True)
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip("PostgreSQL not reachable")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    if migrate:
        storage.create_schema(url)
    try:
        yield url
    finally:
        storage.get_engine(url).dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh migrated PostgreSQL schema for one test."""
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'parley.db'}"
        storage.create_schema(url)
        return url
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Which thread ran each call of the sentence encoder's C engine, and on what
    text (the engine itself still runs)."""
    from parley.bot.nlu import encoder

    calls: list[tuple[str, str]] = []
    real = encoder._encode

    def spied(texts: Any, variant: str) -> Any:
        calls.extend((threading.current_thread().name, t) for t in texts)
        return real(texts, variant)

    monkeypatch.setattr(encoder, "_encode", spied)
    return calls
