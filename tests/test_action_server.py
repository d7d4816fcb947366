"""The action server is closed by default (invariant 7): real processes on free ports.

The launcher's own action server (its argv, its environment, its token), without the
Rasa server and the desk, so no trained model is needed and each start takes seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.bot import handoff, launcher, model_freshness
from parley.bot.action_server import TOKEN_ENV, TOKEN_HEADER
from tests import REPO_ROOT as PROJECT_ROOT
from tests.fakes.stack import free_port


class ActionServerOnly(launcher.Stack):
    """The real Stack, starting only the service the launcher calls `actions`."""

    def specs(self) -> list[launcher.ServiceSpec]:
        return [spec for spec in super().specs() if spec.name == "actions"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.Stack]:
    root = tmp_path_factory.mktemp("project")
    for name in ("endpoints.yml", "credentials.yml"):
        (root / name).write_text((PROJECT_ROOT / name).read_text())
    model = model_freshness.model_path(root)
    model.parent.mkdir()
    model.write_bytes(b"stand-in: Rasa is not started here")
    stack = ActionServerOnly(root, rasa_port=free_port(), action_port=free_port(),
                             var_dir=root / "var", actions_package="parley.bot.actions")
    stack.start(timeout=60)
    yield stack
    stack.stop()


def handoff_call(sender: str) -> dict[str, Any]:
    """What Rasa posts to run `action_handoff` after a customer typed AGENT."""
    parsed = {"intent": {"name": "human_handoff", "confidence": 1.0}, "entities": []}
    latest = {"text": "AGENT", **parsed, "metadata": {}}
    return {
        "next_action": "action_handoff", "sender_id": sender, "version": "3.6.2",
        "domain": {},
        "tracker": {"sender_id": sender, "slots": {}, "latest_message": latest,
                    "events": [{"event": "user", "text": "AGENT", "parse_data": parsed}],
                    "paused": False, "followup_action": None, "active_loop": {},
                    "latest_action_name": "action_listen"},
    }


def tickets_of(stack: launcher.Stack, sender: str) -> list[handoff.TicketView]:
    return [t for t in handoff.list_tickets(database_url=stack.database_url)
            if t.conversation_id == sender]


@pytest.mark.parametrize("headers", [{}, {TOKEN_HEADER: "wrong"}, {TOKEN_HEADER: ""},
                                     {"Authorization": "Bearer x"}],
                         ids=["no header", "wrong token", "empty token", "other header"])
def test_an_action_call_without_the_token_is_refused_and_not_run(
        stack: launcher.Stack, headers: dict[str, str]) -> None:
    sender = f"webchat:refused-{len(headers)}-{time.monotonic_ns()}"
    resp = httpx.post(f"{stack.action_url}/webhook", json=handoff_call(sender),
                      headers=headers, timeout=10)
    assert resp.status_code == 401
    assert TOKEN_HEADER in resp.json()["error"]
    assert tickets_of(stack, sender) == []  # the handoff did not happen


def test_the_token_prefix_alone_is_refused(stack: launcher.Stack) -> None:
    resp = httpx.post(f"{stack.action_url}/webhook", json=handoff_call("webchat:prefix"),
                      headers={TOKEN_HEADER: stack.action_token[:-1]}, timeout=10)
    assert resp.status_code == 401


def test_an_action_call_with_the_token_runs_the_action(stack: launcher.Stack) -> None:
    sender = "webchat:allowed"
    resp = httpx.post(f"{stack.action_url}/webhook", json=handoff_call(sender),
                      headers={TOKEN_HEADER: stack.action_token}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert {"event": "slot", "name": "handoff_reason", "value": "keyword",
            "timestamp": None} in resp.json()["events"]
    assert [t.reason for t in tickets_of(stack, sender)] == ["keyword"]


def test_every_other_route_and_method_needs_the_token(stack: launcher.Stack) -> None:
    for method, path in (("GET", "/actions"), ("OPTIONS", "/webhook"), ("GET", "/nowhere"),
                         ("POST", "/health")):
        resp = httpx.request(method, f"{stack.action_url}{path}", timeout=10,
                             headers={"Origin": "https://evil.example"})
        assert resp.status_code == 401, (method, path)
    listed = httpx.get(f"{stack.action_url}/actions", timeout=10,
                       headers={TOKEN_HEADER: stack.action_token})
    assert {"name": "action_handoff"} in listed.json()


def test_health_answers_without_the_token(stack: launcher.Stack) -> None:
    resp = httpx.get(f"{stack.action_url}/health", timeout=10)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a socket listening on `port` (Linux /proc)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    if len(raw) == 4:
                        found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                    else:  # four little-endian 32-bit words
                        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                        found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_it_listens_on_loopback_only(stack: launcher.Stack) -> None:
    assert listening_addresses(stack.action_port) == {"127.0.0.1"}
    assert refused("127.0.0.2", stack.action_port)  # Linux routes 127/8 to lo: 0.0.0.0 answers
    for address in {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None,
                                                              socket.AF_INET)} - {"127.0.0.1"}:
        assert refused(address, stack.action_port), address


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, "PARLEY_HOST")}
    return {**env, "PARLEY_PROJECT": str(PROJECT_ROOT), **extra}


@pytest.mark.parametrize("token", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_it_refuses_to_start_without_a_token(token: str | None) -> None:
    port = free_port()
    env = server_env() if token is None else server_env(**{TOKEN_ENV: token})
    done = subprocess.run([sys.executable, "-m", "parley.bot.action_server",
                           "--actions", "parley.bot.actions", "--port", str(port)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and TOKEN_ENV in lines[0]
    assert refused("127.0.0.1", port)


def loopback_alias_available() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not loopback_alias_available(), reason="needs 127.0.0.2 (Linux)")
def test_run_by_hand_it_binds_to_parley_host_and_port() -> None:
    port = free_port()
    env = server_env(**{TOKEN_ENV: "by-hand", "PARLEY_HOST": "127.0.0.2",
                        "PARLEY_ACTION_PORT": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "parley.bot.action_server",
                             "--actions", "parley.bot.actions"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while refused("127.0.0.2", port):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the action server did not come up"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.2:{port}/health", timeout=10).status_code == 200
        assert refused("127.0.0.1", port)
        assert httpx.get(f"http://127.0.0.2:{port}/actions", timeout=10,
                         headers={TOKEN_HEADER: "by-hand"}).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        if proc.stderr is not None:
            proc.stderr.close()
