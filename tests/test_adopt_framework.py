"""A Rasa team adopts Parley: a new project for another business, Parley from its wheel.

Writes a small Rasa project for a bike repair shop (its own intents, stories,
replies in its domain and its own action package) into a temporary folder,
builds Parley's wheel and installs it into a separate virtualenv, then runs
`parley init` twice, `parley check`, `parley train` and `parley run` there, and
drives a conversation over HTTP: a normal answer, the shop's own action,
`AGENT`, the ticket in the desk API, claim, an agent reply reaching the
customer, resolve, and the bot answering again.

Nothing may come from this checkout: every process of the adopted project runs
with an audit hook (a `sitecustomize` in the new virtualenv) that records any
file opened or listed under the checkout, other than the third-party packages
in its `.venv`, which the new virtualenv borrows instead of installing Rasa again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import REPO_ROOT
from tests.conftest import _read_banner, stop_run, wait_until
from tests.fakes.stack import free_port

pytestmark = pytest.mark.servers

GUARD = '''
"""Records files of the Parley checkout that this process opens (test_adopt_framework)."""
import os, sys

_root = os.environ.get("PARLEY_FORBIDDEN_ROOT")
_log = os.environ.get("PARLEY_FORBIDDEN_LOG")
if _root and _log:
    _root = os.path.realpath(_root) + os.sep
    _venv = _root + ".venv" + os.sep
    _busy = []

    def _forbidden(path):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False
        path = os.path.abspath(path)
        if "__editable__" in path:
            return True
        return path.startswith(_root) and not path.startswith(_venv)

    def _hook(event, args):
        if _busy or event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        if _forbidden(args[0]):
            _busy.append(1)
            try:
                with open(_log, "a") as out:
                    out.write(f"{os.getpid()} {event} {args[0]}\\n")
            finally:
                _busy.pop()

    sys.addaudithook(_hook)
'''

DOMAIN = """\
version: "3.1"

# Spokes, a bike repair shop. Its replies live here, as `rasa init` makes them.
intents:
  - greet
  - goodbye
  - ask_quote
  - opening_hours

responses:
  utter_greet:
    - text: "Hi! I'm the Spokes bike shop bot. Ask me for a repair quote or our hours."
  utter_goodbye:
    - text: "Ride safe!"
  utter_opening_hours:
    - text: "The workshop is open Tuesday to Saturday, 8 to 18."

actions:
  - action_quote

session_config:
  session_expiration_time: 60
  carry_over_slots_to_new_session: true
"""

NLU = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hi
    - hello
    - hey there
    - good morning
    - hello bike shop
    - hiya
    - hey
    - good evening
- intent: goodbye
  examples: |
    - bye
    - goodbye
    - see you later
    - cya
    - that's all, bye
    - catch you later
- intent: ask_quote
  examples: |
    - how much to fix a flat tyre
    - what does a puncture repair cost
    - price for fixing my brakes
    - how much for a service
    - quote for a new chain
    - what do you charge to true a wheel
    - how much is a tune up
    - can I get a quote for gear adjustment
- intent: opening_hours
  examples: |
    - when are you open
    - what are your opening hours
    - are you open on sunday
    - what time do you close
    - when does the workshop open
    - opening times please
"""

STORIES = """\
version: "3.1"
stories:
- story: greet then a quote
  steps:
  - intent: greet
  - action: utter_greet
  - intent: ask_quote
  - action: action_quote
rules:
- rule: greet
  steps:
  - intent: greet
  - action: utter_greet
- rule: quote
  steps:
  - intent: ask_quote
  - action: action_quote
- rule: hours
  steps:
  - intent: opening_hours
  - action: utter_opening_hours
- rule: goodbye
  steps:
  - intent: goodbye
  - action: utter_goodbye
"""

CONFIG = """\
recipe: default.v1
assistant_id: spokes
language: en
pipeline:
  - name: WhitespaceTokenizer
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 4
  - name: DIETClassifier
    epochs: 80
    random_seed: 7
policies:
  - name: MemoizationPolicy
  - name: RulePolicy
"""

ACTIONS = '''\
"""Spokes' own action: a repair quote."""

from rasa_sdk import Action


class ActionQuote(Action):
    def name(self):
        return "action_quote"

    async def run(self, dispatcher, tracker, domain):
        dispatcher.utter_message(text="A flat tyre repair is 12 euros, done while you wait.")
        return []
'''

ALWAYS_OPEN = """
support_hours:
  timezone: UTC
  weekly: {mon: "00:00-24:00", tue: "00:00-24:00", wed: "00:00-24:00", thu: "00:00-24:00",
           fri: "00:00-24:00", sat: "00:00-24:00", sun: "00:00-24:00"}
"""


def write_project(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    (root / "actions").mkdir()
    (root / "domain.yml").write_text(DOMAIN)
    (root / "config.yml").write_text(CONFIG)
    (root / "data" / "nlu.yml").write_text(NLU)
    (root / "data" / "stories.yml").write_text(STORIES)
    (root / "credentials.yml").write_text("rest:\n")
    (root / "endpoints.yml").write_text("action_endpoint:\n  url: http://localhost:5055/webhook\n")
    (root / "actions" / "__init__.py").write_text("")
    (root / "actions" / "actions.py").write_text(ACTIONS)


@dataclass
class Adopter:
    """A virtualenv with Parley's wheel, and the shop's project folder."""

    venv: Path
    project: Path
    env: dict[str, str]
    forbidden_log: Path

    def parley(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "parley"), *args], cwd=self.project,
                              env=self.env, capture_output=True, text=True, timeout=timeout)


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"


@pytest.fixture(scope="module")
def adopter(tmp_path_factory: pytest.TempPathFactory) -> Adopter:
    base = tmp_path_factory.mktemp("adopt")
    # Built from a copy of what git has (tracked, or new and not ignored), so nothing
    # left in the checkout (a stale build/, var/, models/) can slip into the wheel.
    source = base / "source"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout
    names = [n for n in listed.decode().split("\0") if n and (REPO_ROOT / n).is_file()]
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    wheels = base / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "-w", str(wheels), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheels.glob("parley-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    framework = {f"parley/{n}" for n in names if n.startswith(("bot/", "connectors/"))}
    assert framework <= packed, framework - packed  # code, pages, static files, migrations
    assert not [n for n in packed if not n.startswith(("parley/", "parley-"))]  # no demo

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = _site_packages(venv)
    # Rasa and the other dependencies, borrowed from the test's own environment as a
    # plain path: its .pth files (among them the editable install of this checkout)
    # are not run, so `parley` can only come from the wheel.
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "sitecustomize.py").write_text(GUARD)
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install",
                                "--quiet", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # The wheel's declared dependencies are met by what is there (Rasa's pins among them);
    # the venv's own bundled setuptools would shadow the one Rasa pins.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "--quiet", "-y",
                    "setuptools"], check=True, capture_output=True)
    consistent = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "check"],
                                capture_output=True, text=True)
    assert consistent.returncode == 0, consistent.stdout[-3000:]

    project = base / "spokes"
    write_project(project)
    log = base / "forbidden.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PARLEY_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({"PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
                "PARLEY_FORBIDDEN_ROOT": str(REPO_ROOT), "PARLEY_FORBIDDEN_LOG": str(log),
                "PYTHONUNBUFFERED": "1"})
    return Adopter(venv, project, env, log)


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_parley_comes_from_the_wheel(adopter: Adopter) -> None:
    where = subprocess.run(
        [str(adopter.venv / "bin" / "python"), "-c",
         "import sys, parley.bot, parley.connectors; print(parley.bot.__file__); "
         "print(parley.connectors.__file__); print('\\n'.join(sys.path))"],
        cwd=adopter.project, env=adopter.env, capture_output=True, text=True, check=True)
    bot_file, connectors_file, *path = where.stdout.splitlines()
    site = str(_site_packages(adopter.venv))
    assert bot_file.startswith(site) and connectors_file.startswith(site)
    assert str(REPO_ROOT) not in path  # the checkout itself is not importable


def test_init_twice_then_check(adopter: Adopter) -> None:
    before_check = adopter.parley("check")
    assert before_check.returncode == 1
    assert "domain.yml: add intent `human_handoff`" in before_check.stdout
    assert "credentials.yml: add `parley.connectors.webchat.WebChatInput:`" in before_check.stdout

    first = adopter.parley("init")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "parley.yml: created" in first.stdout
    assert "domain.yml: added intent human_handoff" in first.stdout
    assert "data/responses.yml: added reply utter_handoff_queued" in first.stdout
    shop_domain = (adopter.project / "domain.yml").read_text()
    assert "utter_greet" in shop_domain and "# Spokes, a bike repair shop" in shop_domain

    files = _digest(adopter.project)
    second = adopter.parley("init")
    assert second.returncode == 0
    assert second.stdout.strip() == ("Nothing to change: the project already has everything "
                                     "Parley needs.")
    assert _digest(adopter.project) == files  # the second run wrote nothing

    check = adopter.parley("check")
    assert check.returncode == 0, check.stdout + check.stderr


@dataclass
class Running:
    process: subprocess.Popen[str]
    rasa_url: str
    desk_url: str
    var: Path

    def say(self, sender: str, text: str) -> list[dict]:
        resp = httpx.post(f"{self.rasa_url}/webhooks/webchat/webhook",
                          json={"sender": sender, "message": text}, timeout=60)
        resp.raise_for_status()
        return resp.json()


@pytest.fixture(scope="module")
def running(adopter: Adopter) -> Iterator[Running]:
    if adopter.parley("check").returncode != 0:
        assert adopter.parley("init").returncode == 0
    _always_open(adopter.project / "parley.yml")
    trained = adopter.parley("train")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert (adopter.project / "models" / "parley.tar.gz").exists()

    rasa_port, action_port, desk_port = free_port(), free_port(), free_port()
    env = {**adopter.env, "PARLEY_RASA_PORT": str(rasa_port),
           "PARLEY_ACTION_PORT": str(action_port), "PARLEY_DESK_PORT": str(desk_port)}
    proc = subprocess.Popen([str(adopter.venv / "bin" / "parley"), "run"], cwd=adopter.project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _read_banner(proc, timeout=240)
        yield Running(proc, f"http://127.0.0.1:{rasa_port}", f"http://127.0.0.1:{desk_port}",
                      adopter.project / "var")
    finally:
        stop_run(proc)


def _always_open(settings_file: Path) -> None:
    """The operator sets support hours that cover the test run (UTC, every day)."""
    text = settings_file.read_text()
    start = text.index("support_hours:")
    end = text.index("\n# The channels", start)
    settings_file.write_text(text[:start] + ALWAYS_OPEN.strip() + "\n" + text[end:])


def texts(replies: list[dict]) -> str:
    return " ".join(r.get("text", "") for r in replies)


def test_the_shop_bot_answers_hands_off_and_comes_back(running: Running,
                                                       adopter: Adopter) -> None:
    sender = f"s{uuid.uuid4().hex[:10]}"
    conversation = f"webchat:{sender}"
    page = httpx.get(f"{running.rasa_url}/webhooks/webchat/", timeout=30).text
    assert "<title>Spokes · chat</title>" in page and "Northwind" not in page  # its own brand
    assert "Spokes bike shop bot" in texts(running.say(sender, "hello"))
    assert "12 euros" in texts(running.say(sender, "how much to fix a flat tyre?"))
    updates = f"{running.rasa_url}/webhooks/webchat/updates"
    cursor = httpx.get(updates, params={"sender": sender}, timeout=30).json()["cursor"]

    queued = texts(running.say(sender, "AGENT"))
    assert "number 1 in the queue" in queued and "Type BOT" in queued

    desk = httpx.Client(base_url=running.desk_url, timeout=30)
    page = desk.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    password = (running.var / "desk-admin-password.txt").read_text().strip()
    assert desk.post("/login", data={"csrf": csrf, "username": "admin",
                                     "password": password}).status_code == 303
    headers = {"X-CSRF-Token": desk.get("/api/me").json()["csrf"]}
    tickets = [t for t in desk.get("/api/tickets").json()
               if t["conversation_id"] == conversation]
    assert len(tickets) == 1 and tickets[0]["reason"] == "keyword"
    ticket = tickets[0]["id"]
    assert tickets[0]["context"]["intents"][-1]["intent"] == "human_handoff"

    assert desk.post(f"/api/tickets/{ticket}/claim", json={}, headers=headers).status_code == 200
    assert desk.post(f"/api/tickets/{ticket}/reply", json={"text": "Hi, Marta from the workshop."},
                     headers=headers).status_code == 201
    assert running.say(sender, "is anyone there?") == []  # the agent owns it: the bot is quiet

    seen: list[str] = []

    def pushed(*wanted: str) -> bool:
        nonlocal cursor
        got = httpx.get(updates, params={"sender": sender, "after": cursor}, timeout=30).json()
        cursor = got["cursor"]
        seen.extend(m["text"] for m in got["messages"])
        return all(any(w in s for s in seen) for w in wanted)

    assert wait_until(lambda: pushed("has joined the chat", "Marta from the workshop"),
                      timeout=30), seen

    assert desk.post(f"/api/tickets/{ticket}/resolve", json={},
                     headers=headers).status_code == 200
    # Parley's satisfaction survey follows the hand-back, in the words `parley init` wrote.
    assert wait_until(lambda: pushed("handed you back", "How happy are you with the answer"),
                      timeout=30), seen
    assert "the time it took" in texts(running.say(sender, "5"))
    back = running.say(sender, "hello")  # not a score: the survey stops, the bot answers
    assert "Spokes bike shop bot" in texts(back)
    desk.close()


def test_nothing_came_from_the_checkout(running: Running, adopter: Adopter) -> None:
    """Every process above (init, check, train, run and its servers) ran under the guard."""
    assert (adopter.project / "models" / "parley.tar.gz").exists()  # it all ran
    time.sleep(0.5)
    opened = adopter.forbidden_log.read_text() if adopter.forbidden_log.exists() else ""
    assert opened == "", f"the adopted project read files from the checkout:\n{opened[:3000]}"
