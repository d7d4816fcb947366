"""Desk accounts and access (issue 14): disabling users, password resets and changes,
ending sessions, login throttling, idle expiry, hashed session tokens, live
streams that end with their session, and who may act on another agent's ticket.

Storage on SQLite and PostgreSQL (`any_db`); HTTP against real desk processes, one
per database.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from parley.bot import agents, handoff, login_throttle, storage
from parley.bot.agents import DeskSession
from parley.bot.desk import live
from parley.bot.handoff.commands import NotPermitted
from parley.bot.login_throttle import LoginFailure
from tests import REPO_ROOT as PROJECT_ROOT
from tests.conftest import postgres_schema, wait_until
from tests.fakes.stack import free_port

# Streams check their session this rarely in the main desks, so a stream that ends
# within STREAM_END can only have been ended by a logout, an admin's action or a
# PostgreSQL notification, or by the check before an event is sent.
LONG_CHECK = 120.0
STREAM_END = 20.0
PASSWORDS = {"ana": "ana-password", "bo": "bo-password", "sue": "sue-password",
             "root": "root-password", "zoe": "zoe-password"}
ROLES = {"ana": "agent", "bo": "agent", "sue": "supervisor", "root": "admin", "zoe": "admin"}


def users(db: str) -> dict[str, agents.AgentView]:
    return {name: agents.create_user(name, PASSWORDS[name], ROLES[name], name.title(), db)
            for name in PASSWORDS}


def stored_sessions(db: str) -> list[dict[str, object]]:
    with storage.get_engine(db).connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(DeskSession.__table__))]


# -- storage: sessions ----------------------------------------------------------------------


def test_the_session_token_is_stored_only_as_a_hash(any_db: str) -> None:
    users(any_db)
    session = agents.login("ana", "ana-password", any_db)
    assert session is not None
    [row] = stored_sessions(any_db)
    assert session.token not in {str(value) for value in row.values()}
    assert row["token_hash"] == hashlib.sha256(session.token.encode()).hexdigest()
    assert agents.session_for(session.token, any_db).agent.username == "ana"
    assert agents.session_for(row["token_hash"], any_db) is None  # the hash is no key


def test_sessions_expire_after_idle_time_and_at_their_lifetime(any_db: str) -> None:
    users(any_db)
    session = agents.login("ana", "ana-password", any_db)
    start = stored_sessions(any_db)[0]["last_used_at"]
    assert agents.idle_timeout() == timedelta(minutes=30)

    def used() -> object:
        return stored_sessions(any_db)[0]["last_used_at"]

    now = storage.utcnow()
    # A request within the minute is not written down (no write per request) ...
    assert agents.session_for(session.token, any_db, now=now + timedelta(seconds=30))
    assert used() == start
    # ... a later one is, and keeps the session from going idle.
    for minutes in (29, 58, 87):
        assert agents.session_for(session.token, any_db, now=now + timedelta(minutes=minutes))
    assert used() != start
    # The live stream's checks do not count as use.
    assert agents.session_for(session.token, any_db, touch=False,
                              now=now + timedelta(minutes=87 + 29))
    assert agents.session_for(session.token, any_db,
                              now=now + timedelta(minutes=87 + 31)) is None
    assert stored_sessions(any_db) == []  # and an ended session is cleared away

    # In use all along, a session still ends at its lifetime.
    session = agents.login("ana", "ana-password", any_db)
    now = storage.utcnow()
    step, at = timedelta(minutes=20), now
    while at + step < now + agents.SESSION_LIFETIME - timedelta(minutes=1):
        at += step
        assert agents.session_for(session.token, any_db, now=at)
    assert agents.session_for(session.token, any_db,
                              now=now + agents.SESSION_LIFETIME + timedelta(seconds=1)) is None


def test_the_idle_time_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(agents.IDLE_ENV, "5")
    assert agents.idle_timeout() == timedelta(minutes=5)
    for bad in ("soon", "0", "-3", "100000"):
        monkeypatch.setenv(agents.IDLE_ENV, bad)
        with pytest.raises(ValueError, match=agents.IDLE_ENV):
            agents.idle_timeout()


# -- storage: accounts ----------------------------------------------------------------------


def test_a_disabled_user_cannot_log_in_and_their_sessions_end(any_db: str) -> None:
    people = users(any_db)
    first = agents.login("ana", "ana-password", any_db)
    second = agents.login("ana", "ana-password", any_db)
    bo = agents.login("bo", "bo-password", any_db)
    agents.disable_user(people["ana"].id, people["root"].id, any_db)
    assert agents.session_for(first.token, any_db) is None
    assert agents.session_for(second.token, any_db) is None
    assert agents.session_for(bo.token, any_db) is not None  # nobody else's
    with pytest.raises(agents.AccountDisabled):
        agents.login("ana", "ana-password", any_db)
    assert agents.login("ana", "wrong-password", any_db) is None
    assert [a.disabled for a in agents.list_agents(any_db) if a.username == "ana"] == [True]
    [summary] = [u for u in agents.list_users(any_db) if u.username == "ana"]
    assert summary.disabled_at is not None and summary.sessions == 0

    agents.enable_user(people["ana"].id, any_db)
    assert agents.login("ana", "ana-password", any_db) is not None


def test_an_admin_cannot_disable_themselves_or_the_last_active_admin(any_db: str) -> None:
    people = users(any_db)
    root, zoe = people["root"].id, people["zoe"].id
    with pytest.raises(ValueError, match="your own account"):
        agents.disable_user(root, root, any_db)
    agents.disable_user(zoe, root, any_db)
    # zoe is disabled (a session of hers could not do this), but the rule holds anyway
    with pytest.raises(agents.LastAdmin, match="last active admin"):
        agents.disable_user(root, zoe, any_db)
    assert agents.login("root", "root-password", any_db) is not None
    with pytest.raises(agents.NoSuchUser):
        agents.disable_user(99999, root, any_db)


def test_two_admins_disabling_each_other_at_once_leave_one_admin(any_db: str) -> None:
    people = users(any_db)
    root, zoe = people["root"].id, people["zoe"].id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def disable(user_id: int, by: int) -> None:
        barrier.wait()
        try:
            agents.disable_user(user_id, by, any_db)
            outcomes.append("disabled")
        except agents.LastAdmin:
            outcomes.append("refused")

    threads = [threading.Thread(target=disable, args=(zoe, root)),
               threading.Thread(target=disable, args=(root, zoe))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["disabled", "refused"]
    active = [u for u in agents.list_users(any_db) if u.role == "admin" and not u.disabled_at]
    assert len(active) == 1


def test_an_admin_resets_a_password(any_db: str) -> None:
    people = users(any_db)
    ana, root = people["ana"].id, people["root"].id
    session = agents.login("ana", "ana-password", any_db)
    for _ in range(login_throttle.LIMITS["user"]):
        agents.login("ana", "not-her-password", any_db)
    with pytest.raises(agents.Throttled):
        agents.login("ana", "ana-password", any_db)
    made = agents.reset_password(ana, root, None, any_db)
    assert len(made) >= agents.PASSWORD_MIN
    assert agents.session_for(session.token, any_db) is None
    assert agents.login("ana", "ana-password", any_db) is None  # and the lock is lifted
    assert agents.login("ana", made, any_db) is not None
    agents.reset_password(ana, root, "chosen-by-root", any_db)
    assert agents.login("ana", "chosen-by-root", any_db) is not None
    with pytest.raises(ValueError, match="at least 10"):
        agents.reset_password(ana, root, "short", any_db)
    with pytest.raises(ValueError, match="your own"):
        agents.reset_password(root, root, "root-new-password", any_db)


def test_users_change_their_own_password(any_db: str) -> None:
    users(any_db)
    here = agents.login("ana", "ana-password", any_db)
    elsewhere = agents.login("ana", "ana-password", any_db)
    with pytest.raises(agents.WrongPassword):
        agents.change_password(here.token, "wrong-password", "ana-new-password", any_db)
    for new, reason in (("short", "at least 10"), ("ANA", "at least 10"),
                        ("x" * 201, "at most 200"), ("ana-password", "differ"),
                        ("nul\x00in-password", "plain text")):
        with pytest.raises(ValueError, match=reason):
            agents.change_password(here.token, "ana-password", new, any_db)
    assert agents.login("ana", "ana-password", any_db) is not None  # nothing changed
    agents.change_password(here.token, "ana-password", "ana-new-password", any_db)
    assert agents.session_for(here.token, any_db) is not None  # this one stays
    assert agents.session_for(elsewhere.token, any_db) is None  # the others end
    assert agents.login("ana", "ana-password", any_db) is None
    assert agents.login("ana", "ana-new-password", any_db) is not None


def test_password_rules() -> None:
    assert agents.password_problem("long enough", "ana") is None
    assert "at least 10" in agents.password_problem("nine char", "ana")
    assert "not be the username" in agents.password_problem("Carolina99", "carolina99")
    assert "at most 200" in agents.password_problem("p" * 201, "ana")
    with pytest.raises(ValueError, match="not be the username"):
        agents.create_user("margarida1", "Margarida1", database_url="sqlite:///:memory:")


def test_a_wrong_current_password_counts_as_a_failed_login(any_db: str) -> None:
    """A stolen session cannot be used to guess the password."""
    users(any_db)
    session = agents.login("ana", "ana-password", any_db)
    for _ in range(login_throttle.LIMITS["user"]):
        with pytest.raises(agents.WrongPassword):
            agents.change_password(session.token, "a-guess-at-it", "ana-new-password", any_db)
    with pytest.raises(agents.Throttled, match="for this user"):
        agents.change_password(session.token, "ana-password", "ana-new-password", any_db)
    with pytest.raises(agents.Throttled):
        agents.login("ana", "ana-password", any_db)


# -- storage: throttling --------------------------------------------------------------------


def test_logins_are_throttled_per_user(any_db: str) -> None:
    users(any_db)
    for _ in range(login_throttle.LIMITS["user"] - 1):
        assert agents.login("ana", "wrong-password", any_db, "10.0.0.1") is None
    assert agents.login("ana", "ana-password", any_db, "10.0.0.1") is not None
    # The success cleared the count: as many failures again do not lock ...
    for _ in range(login_throttle.LIMITS["user"] - 1):
        assert agents.login("ana", "wrong-password", any_db, "10.0.0.2") is None
    assert agents.login("ana", "ana-password", any_db, "10.0.0.2") is not None
    # ... but LIMIT in a row do, from any address, right password or not.
    for i in range(login_throttle.LIMITS["user"]):
        assert agents.login("ana", "wrong-password", any_db, f"10.0.1.{i}") is None
    with pytest.raises(agents.Throttled) as locked:
        agents.login("ANA ", "ana-password", any_db, "10.0.2.1")
    assert re.fullmatch(r"Too many failed attempts for this user; try again in 1[45] minutes\.",
                        locked.value.message)
    assert 14 * 60 < locked.value.retry_after <= 15 * 60
    assert agents.login("bo", "bo-password", any_db, "10.0.1.0") is not None  # bo is not locked
    # A name nobody has is throttled alike: a lock tells nothing about who exists.
    for _ in range(login_throttle.LIMITS["user"]):
        assert agents.login("nobody", "wrong-password", any_db) is None
    with pytest.raises(agents.Throttled, match="for this user"):
        agents.login("nobody", "wrong-password", any_db)


def test_logins_are_throttled_per_address(any_db: str) -> None:
    users(any_db)
    for i in range(login_throttle.LIMITS["address"]):
        assert agents.login(f"guess{i}", "wrong-password", any_db, "203.0.113.9") is None
    with pytest.raises(agents.Throttled) as locked:
        agents.login("bo", "bo-password", any_db, "203.0.113.9")
    assert locked.value.message.startswith("Too many failed attempts from your address")
    assert agents.login("bo", "bo-password", any_db, "203.0.113.10") is not None
    # A success does not clear the address: owning one account is no key to guessing more.
    with pytest.raises(agents.Throttled):
        agents.login("bo", "bo-password", any_db, "203.0.113.9")


def test_a_lock_lasts_its_time_and_only_counts_failures_close_together(any_db: str) -> None:
    now = storage.utcnow()
    pairs = [("user", "ana")]
    limit = login_throttle.LIMITS["user"]
    with storage.session_scope(any_db) as session:
        # spread over more than the window: no lock
        for i in range(limit):
            login_throttle.record_failure(session, pairs, now - timedelta(minutes=4 * i))
    with storage.session_scope(any_db) as session:
        assert login_throttle.locked(session, pairs, now) is None
        login_throttle.record_failure(session, pairs, now)  # the 5th within 15 minutes
    with storage.session_scope(any_db) as session:
        lock = login_throttle.locked(session, pairs, now)
        assert lock is not None and lock.until == now + login_throttle.LOCKOUT
        assert login_throttle.locked(session, pairs, now + timedelta(minutes=14))
        assert login_throttle.locked(session, pairs, now + timedelta(minutes=15)) is None
        assert login_throttle.locked(session, [("user", "bo")], now) is None


# -- storage: ticket permissions -------------------------------------------------------------


def test_who_may_act_on_a_ticket_another_agent_holds(any_db: str) -> None:
    people = users(any_db)
    ana, bo, sue, root = (people[n].id for n in ("ana", "bo", "sue", "root"))
    held = handoff.escalate("webchat:held", "keyword", database_url=any_db).ticket
    waiting = handoff.escalate("webchat:waiting", "keyword", database_url=any_db).ticket
    handoff.claim_ticket(held.id, ana, any_db)

    with pytest.raises(NotPermitted, match="held by another agent"):
        handoff.transfer(held.id, bo, bo, any_db)
    with pytest.raises(NotPermitted, match="only a supervisor or an admin may dismiss"):
        handoff.dismiss([waiting.id, held.id], bo, any_db)
    assert handoff.get_ticket(waiting.id, any_db).status == "waiting"  # all or none
    handoff.add_note(held.id, bo, "I know this customer", any_db)  # notes and tags: anyone
    assert handoff.set_tags(held.id, ["VIP"], any_db).tags == ["vip"]
    assert handoff.dismiss([waiting.id], bo, any_db) == [waiting.id]  # nobody holds it

    moved = handoff.transfer(held.id, sue, bo, any_db)  # a supervisor may
    assert moved.assigned_agent_id == bo
    moved = handoff.transfer(held.id, bo, ana, any_db)  # and so may its holder
    assert moved.assigned_agent_id == ana
    assert handoff.dismiss([held.id], root, any_db) == [held.id]  # and an admin


# -- HTTP -------------------------------------------------------------------------------------


@dataclass
class Desk:
    url: str
    db: str
    proc: subprocess.Popen[bytes]
    log: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **kwargs: Any) -> httpx.Client:
        """Closed after the test (an open socket fails the run)."""
        client = httpx.Client(base_url=self.url, **{"timeout": 15, **kwargs})
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        while self.clients:
            self.clients.pop().close()

    def login_form(self, client: httpx.Client, username: str, password: str) -> httpx.Response:
        page = client.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        return client.post("/login", data={"csrf": csrf, "username": username,
                                           "password": password})

    def login(self, username: str, password: str | None = None) -> tuple[httpx.Client, str]:
        client = self.client()
        resp = self.login_form(client, username, password or PASSWORDS[username])
        assert resp.status_code == 303 and resp.headers["location"] == "/", resp.text
        return client, client.get("/api/me").json()["csrf"]

    def ids(self) -> dict[str, int]:
        return {a.username: a.id for a in agents.list_agents(self.db)}


def start_desk(db: str, state: Path, **env: str) -> Desk:
    port = free_port()
    log = state / f"desk-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.bot.desk", "--port", str(port)], cwd=PROJECT_ROOT,
            env={**os.environ, "PARLEY_DATABASE_URL": db, "PYTHONUNBUFFERED": "1", **env},
            stdout=out, stderr=out)
    desk = Desk(f"http://127.0.0.1:{port}", db, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{desk.url}/healthz", timeout=1).status_code == 200:
                return desk
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"desk did not start: {log.read_text()}")


def stop_desk(desk: Desk) -> None:
    desk.proc.terminate()
    try:
        desk.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        desk.proc.kill()
        desk.proc.wait()


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """A PostgreSQL schema for the module's desk (required in CI, as `pg_url`); the
    desk process migrates it."""
    with postgres_schema(migrate=False) as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def desk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Desk]:
    state = tmp_path_factory.mktemp(f"accounts-{request.param}")
    db = f"sqlite:///{state / 'parley.db'}" if request.param == "sqlite" else \
        request.getfixturevalue("pg_module_url")
    storage.create_schema(db)
    users(db)
    running = start_desk(db, state, **{live.SESSION_CHECK_ENV: str(LONG_CHECK)})
    try:
        yield running
    finally:
        stop_desk(running)


@pytest.fixture
def fresh(desk: Desk) -> Iterator[Desk]:
    """Every account as the module made it: enabled, known passwords, no failures
    counted (all requests come from 127.0.0.1, so one test's lock would be the next's)."""
    yield desk
    desk.close_clients()
    ids = desk.ids()
    for name in PASSWORDS:
        agents.enable_user(ids[name], desk.db)
        if name != "root":
            agents.reset_password(ids[name], ids["root"], PASSWORDS[name], desk.db)
    with storage.session_scope(desk.db) as session:
        session.execute(sa.delete(LoginFailure))
        session.execute(sa.delete(DeskSession))


def test_http_disable_and_enable(fresh: Desk) -> None:
    ana, _ = fresh.login("ana")
    root, csrf = fresh.login("root")
    ana_id = fresh.ids()["ana"]
    refused = ana.post(f"/api/users/{ana_id}/disable", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403  # not with someone else's CSRF token (nor role)
    done = root.post(f"/api/users/{ana_id}/disable", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200 and done.json()["disabled"] is True
    assert ana.get("/api/me").status_code == 401
    listed = {u["username"]: u for u in root.get("/api/users").json()}
    assert listed["ana"]["disabled"] and listed["ana"]["sessions"] == 0
    assert not listed["bo"]["disabled"]
    assert "ana" not in {a["display_name"].lower() for a in root.get("/api/agents").json()}
    page = fresh.login_form(fresh.client(), "ana", "ana-password")
    assert page.status_code == 403 and "This account is disabled" in page.text
    again = root.post(f"/api/users/{ana_id}/enable", headers={"X-CSRF-Token": csrf})
    assert again.status_code == 200 and again.json()["disabled"] is False
    fresh.login("ana")


def test_http_an_admin_cannot_lock_out_the_admins(fresh: Desk) -> None:
    root, csrf = fresh.login("root")
    ids = fresh.ids()
    myself = root.post(f"/api/users/{ids['root']}/disable", headers={"X-CSRF-Token": csrf})
    assert myself.status_code == 400 and "your own account" in myself.json()["error"]
    assert root.post(f"/api/users/{ids['zoe']}/disable",
                     headers={"X-CSRF-Token": csrf}).status_code == 200
    # Were root disabled by someone else now (a stale page, an old session): refused.
    with pytest.raises(agents.LastAdmin):
        agents.disable_user(ids["root"], ids["zoe"], fresh.db)
    missing = root.post("/api/users/99999/disable", headers={"X-CSRF-Token": csrf})
    assert missing.status_code == 404 and missing.json()["error"]
    assert root.get("/api/me").status_code == 200


def test_http_reset_password(fresh: Desk) -> None:
    ana, _ = fresh.login("ana")
    root, csrf = fresh.login("root")
    ana_id = fresh.ids()["ana"]
    made = root.post(f"/api/users/{ana_id}/reset-password", json={},
                     headers={"X-CSRF-Token": csrf})
    assert made.status_code == 200
    password = made.json()["password"]
    assert ana.get("/api/me").status_code == 401  # her session ended
    assert "password" not in root.get("/api/users").json()[0]  # shown once, only then
    assert fresh.login_form(fresh.client(), "ana",
                            "ana-password").headers["location"] == "/login?failed=1"
    fresh.login("ana", password)
    chosen = root.post(f"/api/users/{ana_id}/reset-password", json={"password": "tiny"},
                       headers={"X-CSRF-Token": csrf})
    assert chosen.status_code == 400 and "at least 10 characters" in chosen.json()["error"]
    chosen = root.post(f"/api/users/{ana_id}/reset-password",
                       json={"password": "set-by-root-1"}, headers={"X-CSRF-Token": csrf})
    assert chosen.status_code == 200 and "password" not in chosen.json()
    fresh.login("ana", "set-by-root-1")


def test_http_end_sessions(fresh: Desk) -> None:
    first, _ = fresh.login("bo")
    second, _ = fresh.login("bo")
    ana, _ = fresh.login("ana")
    root, csrf = fresh.login("root")
    ended = root.post(f"/api/users/{fresh.ids()['bo']}/end-sessions",
                      headers={"X-CSRF-Token": csrf})
    assert ended.status_code == 200 and ended.json()["ended"] == 2
    assert first.get("/api/me").status_code == 401
    assert second.get("/api/me").status_code == 401
    assert ana.get("/api/me").status_code == 200
    fresh.login("bo")  # bo may log in again at once


def test_http_change_own_password(fresh: Desk) -> None:
    here, csrf = fresh.login("bo")
    elsewhere, _ = fresh.login("bo")
    h = {"X-CSRF-Token": csrf}
    for body, status, reason in (
            ({"current_password": "not-the-password", "new_password": "bo-new-password"},
             400, "current password is wrong"),
            ({"current_password": "bo-password", "new_password": "short"}, 400,
             "at least 10 characters"),
            ({"current_password": "bo-password", "new_password": "BO"}, 400, "at least 10"),
            ({"current_password": "bo-password", "new_password": "bo-password"}, 400,
             "differ"),
            ({"current_password": "bo-password"}, 400, "'new_password'"),
            ({"current_password": "bo-password", "new_password": "p" * 300}, 413, "limit")):
        resp = here.post("/api/me/password", json=body, headers=h)
        assert resp.status_code == status and reason in resp.json()["error"], resp.text
    assert elsewhere.get("/api/me").status_code == 200  # nothing changed
    assert here.post("/api/me/password", json={"current_password": "bo-password",
                                               "new_password": "bo-new-password"}
                     ).status_code == 403  # no CSRF token
    done = here.post("/api/me/password", json={"current_password": "bo-password",
                                               "new_password": "bo-new-password"}, headers=h)
    assert done.status_code == 200
    assert here.get("/api/me").status_code == 200  # this session stays
    assert elsewhere.get("/api/me").status_code == 401  # the other one ended
    fresh.login("bo", "bo-new-password")


def test_http_login_throttling(fresh: Desk) -> None:
    client = fresh.client()
    for _ in range(login_throttle.LIMITS["user"]):
        wrong = fresh.login_form(client, "ana", "wrong-password")
        assert wrong.status_code == 303 and wrong.headers["location"] == "/login?failed=1"
    locked = fresh.login_form(client, "ana", "ana-password")
    assert locked.status_code == 429
    assert re.search(r"Too many failed attempts for this user; try again in 1[45] minutes\.",
                     locked.text)
    assert 14 * 60 < int(locked.headers["retry-after"]) <= 15 * 60
    assert "parley_session" not in client.cookies
    fresh.login("bo")  # the same address, another user: not locked

    # Per address: failures for many names lock every name from there.
    for i in range(login_throttle.LIMITS["address"] - login_throttle.LIMITS["user"]):
        assert fresh.login_form(client, f"guess{i}", "wrong-password").status_code == 303
    from_here = fresh.login_form(client, "bo", "bo-password")
    assert from_here.status_code == 429
    assert "Too many failed attempts from your address" in from_here.text


def test_http_a_success_clears_the_users_count(fresh: Desk) -> None:
    client = fresh.client()
    for _ in range(2):
        for _ in range(login_throttle.LIMITS["user"] - 1):
            assert fresh.login_form(client, "sue", "wrong-password").status_code == 303
        fresh.login("sue")


def test_http_idle_sessions_end(fresh: Desk) -> None:
    ana, _ = fresh.login("ana")
    assert ana.get("/api/me").status_code == 200
    with storage.session_scope(fresh.db) as session:
        session.execute(sa.update(DeskSession).values(
            last_used_at=storage.utcnow() - agents.idle_timeout() - timedelta(seconds=5)))
    assert ana.get("/api/me").status_code == 401


def test_http_the_pages_own_refreshes_do_not_keep_a_session_alive(fresh: Desk) -> None:
    """A desk tab left open on a busy queue refreshes on every live event: those
    requests (X-Parley-Background) must not count as the person being there."""
    ana, _ = fresh.login("ana")
    earlier = storage.utcnow() - agents.TOUCH_EVERY - timedelta(seconds=5)

    def last_used() -> datetime:
        [row] = stored_sessions(fresh.db)
        return row["last_used_at"]

    with storage.session_scope(fresh.db) as session:
        session.execute(sa.update(DeskSession).values(last_used_at=earlier))
    before = last_used()
    assert ana.get("/api/tickets?status=open",
                   headers={"X-Parley-Background": "1"}).status_code == 200
    assert last_used() == before
    assert ana.get("/api/tickets?status=open").status_code == 200
    assert last_used() > before


def test_http_the_cookie_is_not_in_the_database(fresh: Desk) -> None:
    ana, _ = fresh.login("ana")
    token = ana.cookies["parley_session"]
    with storage.get_engine(fresh.db).connect() as conn:
        for table in storage.Base.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                assert token not in repr(tuple(row)), f"the session token is in {table.name}"
    hashes = {row["token_hash"] for row in stored_sessions(fresh.db)}
    assert hashlib.sha256(token.encode()).hexdigest() in hashes


# -- HTTP: the live stream ends with its session ---------------------------------------------


def open_stream(client: httpx.Client) -> tuple[httpx.Response, Iterator[str]]:
    resp = client.send(client.build_request("GET", "/events"), stream=True)
    if resp.status_code != 200:
        resp.read()
        resp.close()
        return resp, iter(())
    lines = resp.iter_lines()
    assert next(lines).startswith("retry:")
    return resp, lines


def stream_ends(lines: Iterator[str]) -> list[str]:
    """Every line until the server ends the stream; fails if it stays open."""
    seen, deadline = [], time.monotonic() + STREAM_END
    try:
        for line in lines:
            seen.append(line)
            assert time.monotonic() < deadline, f"still open after {STREAM_END} s: {seen}"
    except httpx.ReadTimeout:
        pytest.fail(f"the stream stayed open: {seen}")
    return seen


def stream_client(desk: Desk, username: str) -> tuple[httpx.Client, str]:
    client, csrf = desk.login(username)
    client.timeout = httpx.Timeout(15, read=STREAM_END)
    return client, csrf


def test_http_the_stream_ends_at_logout(fresh: Desk) -> None:
    client, csrf = stream_client(fresh, "ana")
    resp, lines = open_stream(client)
    same = fresh.client(cookies=client.cookies)
    assert same.post("/logout", data={"csrf": csrf}).status_code == 303
    stream_ends(lines)
    resp.close()
    assert open_stream(client)[0].status_code == 401  # the browser's reconnect


def test_http_the_stream_ends_when_an_admin_disables_the_user(fresh: Desk) -> None:
    client, _ = stream_client(fresh, "bo")
    resp, lines = open_stream(client)
    root, csrf = fresh.login("root")
    assert root.post(f"/api/users/{fresh.ids()['bo']}/disable",
                     headers={"X-CSRF-Token": csrf}).status_code == 200
    stream_ends(lines)
    resp.close()


def test_http_the_stream_sends_no_event_after_its_session_ends(fresh: Desk) -> None:
    """Disabled from another process (a CLI, another replica): on PostgreSQL its
    notification ends the stream; on SQLite the check before each batch of events."""
    client, _ = stream_client(fresh, "ana")
    resp, lines = open_stream(client)
    agents.disable_user(fresh.ids()["ana"], fresh.ids()["root"], fresh.db)
    handoff.escalate("webchat:after-disable", "keyword", database_url=fresh.db)
    seen = stream_ends(lines)
    resp.close()
    assert not any("ticket_created" in line for line in seen), seen


def test_http_streams_per_session_are_limited(fresh: Desk) -> None:
    client, _ = stream_client(fresh, "sue")
    streams = [open_stream(client) for _ in range(live.MAX_STREAMS_PER_SESSION)]
    assert [resp.status_code for resp, _ in streams] == [200] * live.MAX_STREAMS_PER_SESSION
    extra, _ = open_stream(client)
    assert extra.status_code == 429 and "live streams open" in extra.json()["error"]
    other, _ = stream_client(fresh, "sue")  # another session of the same user: its own limit
    resp, _ = open_stream(other)
    assert resp.status_code == 200
    resp.close()
    streams.pop()[0].close()

    def reopened() -> bool:
        resp, _ = open_stream(client)
        resp.close()
        return resp.status_code == 200

    assert wait_until(reopened), "a closed stream's place was not freed"
    for resp, _ in streams:
        resp.close()


def test_http_an_idle_session_ends_its_stream(tmp_path: Path) -> None:
    """The periodic check (no event, no notification needed)."""
    db = f"sqlite:///{tmp_path / 'parley.db'}"
    storage.create_schema(db)
    users(db)
    desk = start_desk(db, tmp_path, **{live.SESSION_CHECK_ENV: "0.5"})
    try:
        client, _ = stream_client(desk, "ana")
        resp, lines = open_stream(client)
        with storage.session_scope(db) as session:
            session.execute(sa.update(DeskSession).values(
                last_used_at=storage.utcnow() - agents.idle_timeout() - timedelta(seconds=5)))
        stream_ends(lines)
        resp.close()
    finally:
        desk.close_clients()
        stop_desk(desk)


# -- HTTP: tickets ------------------------------------------------------------------------------


def test_http_ticket_permissions(fresh: Desk) -> None:
    ana, ana_csrf = fresh.login("ana")
    bo, bo_csrf = fresh.login("bo")
    ids = fresh.ids()
    ticket = handoff.escalate(f"webchat:perm-{uuid.uuid4().hex[:6]}", "keyword",
                              database_url=fresh.db).ticket
    assert ana.post(f"/api/tickets/{ticket.id}/claim",
                    headers={"X-CSRF-Token": ana_csrf}).status_code == 200
    h = {"X-CSRF-Token": bo_csrf}
    dismiss = bo.post("/api/tickets/dismiss", json={"ids": [ticket.id]}, headers=h)
    assert dismiss.status_code == 403
    assert "held by another agent" in dismiss.json()["error"]
    transfer = bo.post(f"/api/tickets/{ticket.id}/transfer", json={"agent_id": ids["bo"]},
                       headers=h)
    assert transfer.status_code == 403 and "supervisor or an admin" in transfer.json()["error"]
    assert handoff.get_ticket(ticket.id, fresh.db).assigned_agent_id == ids["ana"]
    assert bo.post(f"/api/tickets/{ticket.id}/note", json={"text": "seen before"},
                   headers=h).status_code == 201
    tags = bo.post(f"/api/tickets/{ticket.id}/tags", json={"tags": ["Refund"]}, headers=h)
    assert tags.status_code == 200 and tags.json()["tags"] == ["refund"]

    sue, sue_csrf = fresh.login("sue")
    moved = sue.post(f"/api/tickets/{ticket.id}/transfer", json={"agent_id": ids["bo"]},
                     headers={"X-CSRF-Token": sue_csrf})
    assert moved.status_code == 200 and moved.json()["agent_name"] == "Bo"
    assert ana.post("/api/tickets/dismiss", json={"ids": [ticket.id]},
                    headers={"X-CSRF-Token": ana_csrf}).status_code == 403  # now bo's
    root, root_csrf = fresh.login("root")
    gone = root.post("/api/tickets/dismiss", json={"ids": [ticket.id]},
                     headers={"X-CSRF-Token": root_csrf})
    assert gone.status_code == 200 and gone.json() == {"dismissed": [ticket.id]}


def test_http_no_transfer_to_a_disabled_user(fresh: Desk) -> None:
    ana, csrf = fresh.login("ana")
    ticket = handoff.escalate(f"webchat:to-disabled-{uuid.uuid4().hex[:6]}", "keyword",
                              database_url=fresh.db).ticket
    ana.post(f"/api/tickets/{ticket.id}/claim", headers={"X-CSRF-Token": csrf})
    ids = fresh.ids()
    agents.disable_user(ids["bo"], ids["root"], fresh.db)
    refused = ana.post(f"/api/tickets/{ticket.id}/transfer", json={"agent_id": ids["bo"]},
                       headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 400 and "active desk user" in refused.json()["error"]


def test_concurrent_guesses_check_no_more_passwords_than_the_limit(any_db: str) -> None:
    """Twenty wrong passwords at once for one name: at most the limit are checked
    (answered "wrong"), the rest are refused unchecked, and the name is then locked."""
    users(any_db)
    limit = login_throttle.LIMITS["user"]
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def guess(i: int) -> None:
        barrier.wait()
        try:
            result = agents.login("ana", f"guess-{i}-wrong", any_db, f"198.51.100.{i}")
            outcomes.append("checked" if result is None else "in")
        except agents.Throttled:
            outcomes.append("throttled")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 20 and "in" not in outcomes
    assert outcomes.count("checked") <= limit, outcomes
    with pytest.raises(agents.Throttled, match="for this user"):
        agents.login("ana", "ana-password", any_db, "198.51.100.200")
