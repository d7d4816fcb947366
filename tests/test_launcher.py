"""Process supervision behind `make run`, with stand-in services that start in a second."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from parley.bot import launcher, model_freshness
from parley.bot.action_server import TOKEN_ENV, TOKEN_HEADER
from parley.bot.settings import load_settings
from tests import REPO_ROOT as PROJECT_ROOT
from tests.fakes.stack import free_port


class StandInStack(launcher.Stack):
    """The real Stack with plain HTTP servers as services (each forks a grandchild
    too, as Rasa's workers do, to prove the whole process group is stopped)."""

    def specs(self) -> list[launcher.ServiceSpec]:
        code = ("import http.server, os, sys; os.fork() == 0 and __import__('time').sleep(600);"
                "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler,"
                " port=int(sys.argv[1]), bind='127.0.0.1')")
        return [
            launcher.ServiceSpec(name, [sys.executable, "-c", code, str(port)],
                                 f"http://127.0.0.1:{port}/")
            for name, port in (("actions", self.action_port), ("rasa", self.rasa_port))
        ]


def live_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (nobody may reap orphans here)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.fixture
def project_with_model(tmp_path: Path) -> Path:
    for name in ("endpoints.yml", "credentials.yml"):
        (tmp_path / name).write_text((PROJECT_ROOT / name).read_text())
    model = model_freshness.model_path(tmp_path)
    model.parent.mkdir()
    model.write_bytes(b"stand-in")
    return tmp_path


def test_runtime_endpoints_point_at_this_stacks_ports(project_with_model: Path) -> None:
    stack = launcher.Stack(project_with_model, rasa_port=7005, action_port=7055,
                           var_dir=project_with_model / "state")
    endpoints = yaml.safe_load(stack.runtime_endpoints().read_text())
    assert endpoints["action_endpoint"]["url"] == "http://127.0.0.1:7055/webhook"
    assert endpoints["tracker_store"]["db"] == str(project_with_model / "state" / "tracker.db")


def test_rasa_reads_the_action_token_from_its_environment_not_from_the_file(
        project_with_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rasa.utils.endpoints import read_endpoint_config

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    stack = launcher.Stack(project_with_model, rasa_port=7005, action_port=7055,
                           var_dir=project_with_model / "state")
    path = stack.runtime_endpoints()
    assert stack.action_token not in path.read_text()
    monkeypatch.setenv(TOKEN_ENV, stack.action_token)  # as start() gives Rasa
    endpoint = read_endpoint_config(str(path), "action_endpoint")
    assert endpoint is not None and endpoint.url == "http://127.0.0.1:7055/webhook"
    assert endpoint.headers == {TOKEN_HEADER: stack.action_token}
    shipped = read_endpoint_config(str(PROJECT_ROOT / "endpoints.yml"), "action_endpoint")
    assert shipped is not None and shipped.headers == {TOKEN_HEADER: stack.action_token}


def test_each_stack_makes_its_own_token_unless_one_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    made = [launcher.Stack(tmp_path, rasa_port=1, action_port=2).action_token for _ in "ab"]
    assert made[0] != made[1] and min(len(t) for t in made) >= 40
    assert launcher.Stack(tmp_path, rasa_port=1, action_port=2,
                          env={TOKEN_ENV: "from-env"}).action_token == "from-env"
    monkeypatch.setenv(TOKEN_ENV, "operator's")
    assert launcher.Stack(tmp_path, rasa_port=1, action_port=2).action_token == "operator's"
    assert "operator's" not in repr(launcher.Stack(tmp_path, rasa_port=1, action_port=2))


def test_the_stack_runs_parleys_action_server_on_its_host(tmp_path: Path) -> None:
    stack = launcher.Stack(tmp_path, rasa_port=1, action_port=2, host="127.0.0.1")
    (tmp_path / "endpoints.yml").write_text("")
    (tmp_path / "credentials.yml").write_text("")
    argv = next(s.argv for s in stack.specs() if s.name == "actions")
    assert argv[1:3] == ["-m", "parley.bot.action_server"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_start_waits_for_health_and_stop_ends_every_process(project_with_model: Path) -> None:
    stack = StandInStack(project_with_model, rasa_port=free_port(), action_port=free_port(),
                         var_dir=project_with_model / "state")
    stack.start(timeout=30)
    pids = [p.pid for p in stack.processes.values()]
    assert all(stack.running().values()) and len(pids) == 2
    assert all(len(live_members(pid)) == 2 for pid in pids)  # service + its worker
    stack.stop(grace=5)
    deadline = time.monotonic() + 5
    while any(live_members(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(live_members(pid) for pid in pids)
    # the demo database was prepared before the services started
    assert (project_with_model / "state" / "parley.db").exists()


def test_start_without_a_model_says_how_to_get_one(tmp_path: Path) -> None:
    stack = launcher.Stack(tmp_path, rasa_port=free_port(), action_port=free_port())
    with pytest.raises(FileNotFoundError, match="make train"):
        stack.start()


def test_a_service_that_dies_at_start_is_reported_with_its_log(project_with_model: Path) -> None:
    class Broken(launcher.Stack):
        def specs(self) -> list[launcher.ServiceSpec]:
            return [launcher.ServiceSpec("rasa", [sys.executable, "-c", "raise SystemExit(3)"],
                                         "http://127.0.0.1:9/")]

    stack = Broken(project_with_model, rasa_port=free_port(), action_port=free_port(),
                   var_dir=project_with_model / "state")
    with pytest.raises(RuntimeError, match=r"rasa exited with code 3 .*rasa\.log"):
        stack.start(timeout=30)
    assert stack.processes == {}


def test_stack_from_settings_uses_configured_ports(tmp_path: Path) -> None:
    settings = load_settings({"PARLEY_RASA_PORT": "6111", "PARLEY_VAR_DIR": str(tmp_path)})
    stack = launcher.stack_from_settings(settings)
    assert stack.rasa_url == "http://127.0.0.1:6111"
    assert stack.webchat_url == "http://127.0.0.1:6111/webhooks/webchat/"
    assert stack.database_url == f"sqlite:///{tmp_path / 'parley.db'}"


@pytest.mark.parametrize("name", ["PARLEY_TURN_THREADS", "PARLEY_TURNS_IN_FLIGHT"])
@pytest.mark.parametrize("value", ["0", "0.5", "2.5", "many"])
def test_a_count_setting_must_be_a_whole_number(tmp_path: Path, name: str, value: str) -> None:
    """0.5 once became 0: no turn ever ran, or every core for BLAS."""
    with pytest.raises(ValueError, match=f"{name} must be a whole number of at least 1"):
        load_settings({name: value, "PARLEY_VAR_DIR": str(tmp_path)})
    assert getattr(load_settings({name: "3", "PARLEY_VAR_DIR": str(tmp_path)}),
                   name.removeprefix("PARLEY_").lower()) == 3
