"""The scale-out files (compose.yaml, Dockerfile, deploy/) agree with each other and
with Rasa: Docker is not needed to catch a renamed variable, a missing mount, a lone
Rasa replica or an endpoints file Rasa would refuse.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.util
import os
import re
import shlex
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests import REPO_ROOT

COMPOSE = REPO_ROOT / "compose.yaml"
ENDPOINTS = REPO_ROOT / "deploy" / "endpoints.replicas.yml"
ENV_EXAMPLE = REPO_ROOT / "deploy" / "env.example"
APP_IMAGE = "parley:local"
WORKDIR = "/app"  # the Dockerfile's WORKDIR, where relative paths in commands resolve
RASA_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # Rasa: ${NAME} only
COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+][^}]*)?\}")

REDIS_HOST = os.environ.get("PARLEY_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = os.environ.get("PARLEY_TEST_REDIS_PORT", "6379")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def app_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if s.get("image") == APP_IMAGE}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount (`./host:/container[:ro]`)."""
    found = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith((".", "/")):
            found[container] = (REPO_ROOT / host).resolve()
    return found


def env_example() -> dict[str, str]:
    lines = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in lines}


def test_topology() -> None:
    svc = services()
    assert {"postgres", "redis", "rasa", "actions", "desk", "lb"} <= set(svc)
    assert svc["rasa"]["deploy"]["replicas"] >= 2
    assert "replicas" in svc["desk"].get("deploy", {})  # scaled on its own
    assert svc["actions"].get("deploy", {}).get("replicas", 1) >= 1
    assert svc["postgres"]["image"].startswith("postgres:")
    assert svc["redis"]["image"].startswith("redis:")


def test_every_parley_service_is_built_from_the_one_dockerfile() -> None:
    apps = app_services()
    assert {"migrate", "rasa", "actions", "desk"} <= set(apps)
    for name, service in apps.items():
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile",
                                                                          "Dockerfile")
        assert (REPO_ROOT / context / dockerfile).resolve() == REPO_ROOT / "Dockerfile", name
    others = {name for name in services() if name not in apps}
    assert all(":" in services()[name]["image"] for name in others)  # pinned public images


def test_commands_run_what_the_image_has() -> None:
    apps = app_services()
    rasa, actions, desk = (command(apps[n]) for n in ("rasa", "actions", "desk"))
    assert rasa[:4] == ["python", "-m", "rasa", "run"]
    assert (REPO_ROOT / "endpoints.yml").is_file() and (REPO_ROOT / "credentials.yml").is_file()
    assert option(rasa, "--model") == "models/parley.tar.gz"  # what `parley train` writes
    assert actions[:3] == ["python", "-m", "parley.bot.action_server"]
    assert option(actions, "--actions") == "actions" and (REPO_ROOT / "actions").is_dir()
    assert desk[:3] == ["python", "-m", "parley.bot.desk"]
    for module in ("rasa", "parley.bot.action_server", "parley.bot.desk"):
        assert importlib.util.find_spec(module) is not None, module
    assert command(apps["migrate"]) == ["parley", "init-db"]
    for argv in (rasa, actions, desk):
        assert option(argv, "--interface" if argv is rasa else "--host") == "0.0.0.0"


def test_rasa_replicas_mount_the_replica_endpoints() -> None:
    rasa = services()["rasa"]
    endpoints = option(command(rasa), "--endpoints")
    mounted = mounts(rasa)
    container_path = endpoints if endpoints.startswith("/") else f"{WORKDIR}/{endpoints}"
    assert container_path in mounted, f"{endpoints} is not mounted into the rasa service"
    assert mounted[container_path] == ENDPOINTS and ENDPOINTS.is_file()


def test_replica_endpoints_use_postgres_and_redis() -> None:
    endpoints = yaml.safe_load(ENDPOINTS.read_text())
    root = yaml.safe_load((REPO_ROOT / "endpoints.yml").read_text())
    assert endpoints["tracker_store"]["type"] == "parley.bot.tracker_store.SQLTrackerStore"
    assert endpoints["tracker_store"]["dialect"] == "postgresql"
    assert endpoints["lock_store"]["type"] == "redis"
    assert endpoints["nlg"] == root["nlg"]
    assert endpoints["action_endpoint"].get("headers") == root["action_endpoint"].get("headers")


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_every_variable_rasa_reads_is_set_for_rasa() -> None:
    """From the replica endpoints and the credentials the rasa service loads."""
    credentials = option(command(services()["rasa"]), "--credentials")
    values = [*strings(yaml.safe_load(ENDPOINTS.read_text())),  # not the comments
              *strings(yaml.safe_load((REPO_ROOT / credentials).read_text()))]
    wanted = {name for value in values for name in RASA_VAR.findall(value)}
    assert {"PARLEY_ACTION_TOKEN", "POSTGRES_PASSWORD", "REDIS_HOST"} <= wanted
    env = services()["rasa"]["environment"]
    assert wanted <= set(env), f"unset for rasa: {sorted(wanted - set(env))}"
    assert '"${' not in ENDPOINTS.read_text()  # Rasa 3.6 does not expand quoted ${...}


def test_the_rasa_service_points_at_the_other_services() -> None:
    svc = services()
    env = svc["rasa"]["environment"]
    assert env["POSTGRES_HOST"] == "postgres" and env["REDIS_HOST"] == "redis"
    assert env["POSTGRES_USER"] == svc["postgres"]["environment"]["POSTGRES_USER"]
    assert env["POSTGRES_DB"] == svc["postgres"]["environment"]["POSTGRES_DB"]
    assert env["POSTGRES_PASSWORD"] == svc["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert env["REDIS_PASSWORD"] in " ".join(command(svc["redis"]))
    action_url = urlsplit(env["PARLEY_ACTION_URL"])
    assert (action_url.hostname, action_url.path) == ("actions", "/webhook")
    assert str(action_url.port) == option(command(svc["actions"]), "--port")
    # The same secret on both sides of the action endpoint.
    assert env["PARLEY_ACTION_TOKEN"] == svc["actions"]["environment"]["PARLEY_ACTION_TOKEN"]


def test_parley_services_share_the_postgres_database() -> None:
    svc = services()
    pg = svc["postgres"]["environment"]
    for name, service in app_services().items():
        url = make_url(service["environment"]["PARLEY_DATABASE_URL"])
        assert url.get_backend_name() == "postgresql", name
        assert (url.host, url.username, url.database) == ("postgres", pg["POSTGRES_USER"],
                                                         pg["POSTGRES_DB"]), name
        if name != "migrate":
            assert "migrate" in service["depends_on"], f"{name} starts before the migrations"


def test_every_compose_variable_has_a_default_or_an_example() -> None:
    text = COMPOSE.read_text()
    required = {name for name, default in COMPOSE_VAR.findall(text)
                if not default or default.lstrip(":").startswith("?")}
    assert required, "compose.yaml should read its secrets from the environment"
    example = env_example()
    assert required <= set(example), f"add to deploy/env.example: {required - set(example)}"
    unused = set(example) - {name for name, _ in COMPOSE_VAR.findall(text)}
    assert not unused, f"deploy/env.example lists what compose.yaml never reads: {unused}"


def test_the_load_balancer_reaches_the_replicas() -> None:
    svc = services()
    lb = svc["lb"]
    conf_path = next(host for container, host in mounts(lb).items() if container.endswith(
        "nginx.conf"))
    conf = conf_path.read_text()
    assert conf_path.parent == REPO_ROOT / "deploy"
    for name in ("rasa", "desk"):
        argv = command(svc[name])
        port = option(argv, "--port")
        assert re.search(rf"server\s+{name}:{port}\b", conf), f"nginx does not reach {name}"
        assert name in lb["depends_on"]
    published = {p.split(":")[0] for p in lb["ports"]}
    assert published == {"5005", "5006"}
    assert "proxy_buffering off" in conf  # the desk's live events are not held back


def test_dockerfile_installs_the_project_with_the_pins() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.10-slim\b", dockerfile, re.M)
    assert re.search(r"pip install -c constraints\.txt \.", dockerfile)
    assert f"WORKDIR {WORKDIR}" in dockerfile
    assert "parley train" in dockerfile  # the model the rasa command loads
    ignored = [line.strip().rstrip("/") for line in
               (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
        *sources, _dest = [w for w in line.split() if not w.startswith("--")]
        for source in sources:
            path = source.rstrip("/")
            assert (REPO_ROOT / path).exists(), f"Dockerfile copies missing {source}"
            assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), \
                f".dockerignore hides {source} from the build"


# --- What Rasa itself makes of the file ---------------------------------------------

def replica_env(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> dict[str, str]:
    env = {
        "PARLEY_ACTION_URL": "http://actions:5055/webhook",
        "PARLEY_ACTION_TOKEN": "s3cret-token",
        "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "5432", "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "pw", "POSTGRES_DB": "test", "RASA_TRACKER_DB": "rasa",
        "REDIS_HOST": REDIS_HOST, "REDIS_PORT": REDIS_PORT, "REDIS_PASSWORD": "",
        "REDIS_LOCK_DB": "1", **overrides,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_rasa_reads_the_replica_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.core.utils import AvailableEndpoints, read_endpoints_from_path

    replica_env(monkeypatch)
    endpoints = read_endpoints_from_path(ENDPOINTS)
    assert isinstance(endpoints, AvailableEndpoints)
    assert endpoints.action.url == "http://actions:5055/webhook"
    assert endpoints.action.headers == {"X-Parley-Action-Token": "s3cret-token"}
    assert endpoints.nlg.type == "parley.bot.responses.nlg.LibraryNLG"
    assert endpoints.lock_store.type == "redis" and endpoints.lock_store.url == REDIS_HOST
    tracker = endpoints.tracker_store
    assert tracker.type == "parley.bot.tracker_store.SQLTrackerStore"
    kwargs = {k: v for k, v in tracker.kwargs.items() if k != "login_db"}
    url = SQLTrackerStore.get_db_url(host=tracker.url, **kwargs)
    assert url.get_backend_name() == "postgresql"
    assert (url.host, url.port, url.database, url.username, url.password) == \
        ("127.0.0.1", 5432, "rasa", "postgres", "pw")
    assert tracker.kwargs["login_db"] == "test"


def test_rasa_names_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from rasa.core.utils import read_endpoints_from_path
    from rasa.shared.exceptions import RasaException

    replica_env(monkeypatch)
    monkeypatch.delenv("REDIS_LOCK_DB")
    with pytest.raises(RasaException, match="REDIS_LOCK_DB"):
        read_endpoints_from_path(ENDPOINTS)


def test_the_redis_lock_store_locks_across_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two lock stores built as two Rasa replicas build them, on the local Redis."""
    import redis
    from rasa.core.lock_store import LockStore, RedisLockStore
    from rasa.core.utils import read_endpoints_from_path

    replica_env(monkeypatch)
    config = read_endpoints_from_path(ENDPOINTS).lock_store
    try:
        redis.Redis(host=REDIS_HOST, port=int(REDIS_PORT), socket_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip("Redis not reachable")
    first, second = LockStore.create(config), LockStore.create(config)
    assert isinstance(first, RedisLockStore) and first.key_prefix.startswith("parley:")
    conversation = f"deploy-test-{uuid.uuid4().hex}"

    async def scenario() -> None:
        async with first.lock(conversation, lock_lifetime=10):
            waiting = second.issue_ticket(conversation, lock_lifetime=10)
            assert second.get_lock(conversation).is_locked(waiting)  # the other replica waits
        assert not second.get_lock(conversation).is_locked(waiting)  # its turn now
        second.cleanup(conversation, waiting)

    try:
        asyncio.run(scenario())
        assert first.get_lock(conversation) is None  # nothing left behind in Redis
    finally:
        first.delete_lock(conversation)
        first.red.close()
        second.red.close()
