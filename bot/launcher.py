"""Start a project's Rasa server, action server and desk together, and stop them together.

Used by `parley run` (and so `make run`) and by the end-to-end tests, so the
tests exercise the very code a newcomer runs. Every process runs in the
project's folder with this interpreter (`python -m rasa`), so the project's
own packages import and nothing depends on console scripts being on PATH.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from parley.bot import storage, tracker_events
from parley.bot.action_server import TOKEN_ENV, TOKEN_HEADER
from parley.bot.model_freshness import model_path
from parley.bot.settings import Settings

SQL_TRACKER_STORES = ("SQL", "sql", "parley.bot.tracker_store.SQLTrackerStore")
# Conversations, logs and the run files (credentials) are the owner's only: every
# file this creates, and every process it starts, leaves group and others out.
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Created 0600 (and made so if an older run left it readable to others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


@dataclass
class ServiceSpec:
    name: str
    argv: list[str]
    health_url: str


@dataclass
class Stack:
    """The processes of one running bot."""

    root: Path
    rasa_port: int
    action_port: int
    desk_port: int = 5006
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    var_dir: Path | None = None  # databases, runtime config, logs; default root/var
    database_url: str = ""  # default: SQLite under var_dir
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)  # added to credentials
    actions_package: str = "actions"  # the project's Rasa SDK package
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # The secret Rasa sends the action server: from `env` or the environment, else made
    # up for this stack. It travels only in the two processes' environment, never in a file.
    action_token: str = field(default="", repr=False)
    # Replicas: more Rasa processes on these ports (same database, channels, model),
    # and endpoints.yml sections to replace (a PostgreSQL tracker store, a Redis lock
    # store), as deploy/endpoints.replicas.yml does for production.
    extra_rasa_ports: list[int] = field(default_factory=list)
    endpoint_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.database_url = self.database_url or f"sqlite:///{self.state_dir / 'parley.db'}"
        self.action_token = (self.action_token or self.env.get(TOKEN_ENV)
                             or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32))

    @property
    def state_dir(self) -> Path:
        return self.var_dir or self.root / "var"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def rasa_url(self) -> str:
        return f"http://{self.host}:{self.rasa_port}"

    @property
    def rasa_urls(self) -> list[str]:
        """Every Rasa process, the first one first."""
        return [f"http://{self.host}:{port}" for port in [self.rasa_port,
                                                           *self.extra_rasa_ports]]

    @property
    def action_url(self) -> str:
        return f"http://{self.host}:{self.action_port}"

    @property
    def desk_url(self) -> str:
        return f"http://{self.host}:{self.desk_port}"

    @property
    def webchat_url(self) -> str:
        return f"{self.rasa_url}/webhooks/webchat/"

    def runtime_endpoints(self, rasa_port: int | None = None) -> Path:
        """endpoints.yml with this stack's action server port and SQLite paths, and the
        action server's secret as `${PARLEY_ACTION_TOKEN}`, which Rasa fills in from its
        environment when it reads the file (the value itself is never written)."""
        endpoints = yaml.safe_load((self.root / "endpoints.yml").read_text()) or {}
        action = dict(endpoints.get("action_endpoint") or {})
        action["url"] = f"{self.action_url}/webhook"
        action["headers"] = {**(action.get("headers") or {}), TOKEN_HEADER: f"${{{TOKEN_ENV}}}"}
        endpoints["action_endpoint"] = action
        tracker = endpoints.get("tracker_store") or {}
        if tracker.get("type") in SQL_TRACKER_STORES and tracker.get("dialect") == "sqlite":
            tracker["db"] = str(tracker_events.sqlite_path(self.state_dir))
        endpoints.update(self.endpoint_overrides)
        out = self.endpoints_path(rasa_port)
        private_dir(out.parent)
        write_private(out, yaml.safe_dump(endpoints, sort_keys=False))
        return out

    def endpoints_path(self, rasa_port: int | None = None) -> Path:
        return self.state_dir / "run" / f"endpoints.{rasa_port or self.rasa_port}.yml"

    def runtime_credentials(self, rasa_port: int | None = None) -> Path:
        """credentials.yml plus this stack's extra channels (tests add fakes' URLs)."""
        credentials = yaml.safe_load((self.root / "credentials.yml").read_text()) or {}
        credentials.update(self.channels)
        out = self.state_dir / "run" / f"credentials.{rasa_port or self.rasa_port}.yml"
        private_dir(out.parent)
        write_private(out, yaml.safe_dump(credentials, sort_keys=False))
        return out

    def specs(self) -> list[ServiceSpec]:
        python = sys.executable
        return [
            ServiceSpec(
                "actions",
                [python, "-m", "parley.bot.action_server", "--actions", self.actions_package,
                 "--host", self.host, "--port", str(self.action_port)],
                f"{self.action_url}/health",
            ),
            *(ServiceSpec(
                "rasa" if i == 0 else f"rasa-{i + 1}",
                [python, "-m", "rasa", "run", "--model", str(model_path(self.root)),
                 "--port", str(port), "--interface", self.host,
                 "--credentials", str(self.runtime_credentials(port)),
                 "--endpoints", str(self.runtime_endpoints(port))],
                f"http://{self.host}:{port}/",
            ) for i, port in enumerate([self.rasa_port, *self.extra_rasa_ports])),
            ServiceSpec(
                "desk",
                [sys.executable, "-m", "parley.bot.desk", "--host", self.host,
                 "--port", str(self.desk_port)],
                f"{self.desk_url}/healthz",
            ),
        ]

    def _environment(self) -> dict[str, str]:
        # PARLEY_ENDPOINTS: the desk finds Rasa's tracker store where Rasa does (erasure).
        return {**os.environ, **self.env, "PARLEY_DATABASE_URL": self.database_url,
                "PARLEY_PROJECT": str(self.root), "PARLEY_VAR_DIR": str(self.state_dir),
                tracker_events.ENDPOINTS_ENV: str(self.endpoints_path()),
                TOKEN_ENV: self.action_token}

    def _spawn(self, spec: ServiceSpec) -> None:
        private_dir(self.log_dir)
        log = self.log_dir / f"{spec.name}.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "ab") as output:
            self.processes[spec.name] = subprocess.Popen(
                spec.argv, cwd=self.root, env=self._environment(), stdout=output,
                stderr=output, start_new_session=True,  # own process group: stopped as a unit
                umask=PRIVATE_UMASK,
            )

    def start(self, timeout: float = 180.0) -> None:
        """Start every service and wait until each answers its health check."""
        if not model_path(self.root).exists():
            raise FileNotFoundError(
                f"no trained model at {model_path(self.root)}: run `make train`"
            )
        private_dir(self.state_dir)
        storage.create_schema(self.database_url)
        specs = self.specs()
        for spec in specs:
            self._spawn(spec)
        deadline = time.monotonic() + timeout
        for spec in specs:
            self._wait_healthy(spec, deadline)

    def restart(self, name: str, timeout: float = 180.0) -> None:
        """Start one service again (after a crash, or a fault test's kill -9)."""
        [spec] = [s for s in self.specs() if s.name == name]
        old = self.processes.get(name)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"{name} is still running")
        self._spawn(spec)
        self._wait_healthy(spec, time.monotonic() + timeout)

    def _wait_healthy(self, spec: ServiceSpec, deadline: float) -> None:
        proc = self.processes[spec.name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{spec.name} exited with code {proc.returncode} during start-up;"
                    f" see {self.log_dir / (spec.name + '.log')}"
                )
            try:
                with urllib.request.urlopen(spec.health_url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{spec.name} did not answer {spec.health_url} in time")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process group, then SIGKILL what is still alive."""
        for proc in self.processes.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def running(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.processes.items()}


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def serve_forever(stack: Stack, login_hint: str = "") -> int:
    """Run until Ctrl-C/SIGTERM or until one service dies; always stop the rest."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        print(
            "\nParley is running:\n"
            f"  web chat (talk to the bot): {stack.webchat_url}\n"
            f"  agent desk:                 {stack.desk_url}/  {login_hint}\n"
            f"  Rasa server:                {stack.rasa_url}\n"
            f"  action server:              {stack.action_url}/health\n"
            f"  logs:                       {stack.log_dir}/\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while True:
            dead = [name for name, alive in stack.running().items() if not alive]
            if dead:
                print(f"{', '.join(dead)} stopped unexpectedly; shutting down.", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        print("Stopping…", flush=True)
        stack.stop()


def stack_from_settings(settings: Settings) -> Stack:
    return Stack(root=settings.project_root, rasa_port=settings.rasa_port,
                 action_port=settings.action_port, desk_port=settings.desk_port,
                 host=settings.host, var_dir=settings.var_dir,
                 database_url=settings.database_url,
                 actions_package=settings.actions_package)
