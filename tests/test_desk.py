"""The desk over HTTP, against a real desk process: sessions, CSRF, roles, API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.bot import agents, conversations, events, handoff, language, storage
from tests import REPO_ROOT as PROJECT_ROOT
from tests.fakes.stack import free_port

# Every route the desk serves, and who may use it: "public" (no session), "any"
# (every role), "session" (agents, supervisors and admins: who answers customers),
# "writer" (writers and admins), "admin", "analytics" (managers and admins).
ROUTES = {
    ("GET", "/healthz"): "public",
    ("GET", "/static/<name:str>"): "public",
    ("GET", "/login"): "public",
    ("POST", "/login"): "public",
    ("POST", "/logout"): "any",
    ("GET", "/"): "any",
    ("GET", "/health"): "public",
    ("GET", "/metrics"): "public",
    ("GET", "/api/me"): "any",
    ("POST", "/api/me/password"): "any",
    ("GET", "/api/agents"): "session",
    ("GET", "/api/users"): "admin",
    ("POST", "/api/users"): "admin",
    ("POST", "/api/users/<user_id:int>/disable"): "admin",
    ("POST", "/api/users/<user_id:int>/enable"): "admin",
    ("POST", "/api/users/<user_id:int>/reset-password"): "admin",
    ("POST", "/api/users/<user_id:int>/end-sessions"): "admin",
    ("POST", "/api/users/<user_id:int>/trainee"): "admin",
    ("GET", "/api/approvals"): "supervising",
    ("POST", "/api/approvals/<rid:int>/approve"): "supervising",
    ("POST", "/api/approvals/<rid:int>/send-back"): "supervising",
    ("POST", "/api/approvals/<rid:int>/withdraw"): "session",
    ("GET", "/api/tickets"): "session",
    ("GET", "/api/tickets/<ticket_id:int>"): "session",
    ("POST", "/api/tickets/<ticket_id:int>/claim"): "session",
    ("POST", "/api/tickets/<ticket_id:int>/reply"): "session",
    ("POST", "/api/tickets/<ticket_id:int>/note"): "session",
    ("POST", "/api/tickets/<ticket_id:int>/tags"): "session",
    ("POST", "/api/tickets/<ticket_id:int>/language"): "session",
    ("POST", "/api/tickets/<ticket_id:int>/transfer"): "session",
    ("POST", "/api/tickets/<ticket_id:int>/resolve"): "session",
    ("GET", "/api/tickets/<ticket_id:int>/survey"): "session",
    ("GET", "/api/tickets/<ticket_id:int>/contact"): "session",
    ("GET", "/api/contacts"): "session",
    ("POST", "/api/contacts/link"): "session",
    ("POST", "/api/contacts/unlink"): "session",
    ("POST", "/api/contacts/name"): "session",
    ("POST", "/api/tickets/dismiss"): "session",
    ("GET", "/events"): "session",
    ("GET", "/api/canned"): "session",
    ("GET", "/api/alerts/active"): "any",
    ("GET", "/api/alerts"): "analytics",
    ("GET", "/analytics"): "analytics",
    ("GET", "/api/analytics"): "analytics",
    ("GET", "/api/analytics/<chart:str>"): "analytics",
    ("GET", "/library"): "writer",
    ("GET", "/api/library/meta"): "writer",
    ("GET", "/api/library/replies"): "writer",
    ("GET", "/api/library/replies/<name:str>"): "writer",
    ("POST", "/api/library/check"): "writer",
    ("POST", "/api/library/replies/<name:str>/draft"): "writer",
    ("POST", "/api/library/revisions/<revision_id:int>/submit"): "writer",
    ("POST", "/api/library/revisions/<revision_id:int>/approve"): "admin",
    ("POST", "/api/library/revisions/<revision_id:int>/send-back"): "admin",
    ("POST", "/api/library/replies/<name:str>/rollback"): "admin",
    ("GET", "/api/library/revisions/<revision_id:int>/diff"): "writer",
    ("GET", "/api/library/review"): "writer",
    ("GET", "/api/privacy/export"): "admin",
    ("POST", "/api/privacy/erase"): "admin",
    ("GET", "/api/privacy/audit"): "admin",
}
ALLOWED = {"any": {"agent", "supervisor", "writer", "admin"},
           "session": {"agent", "supervisor", "admin"},
           "writer": {"writer", "admin"}, "admin": {"admin"},
           "analytics": {"manager", "admin"}, "supervising": {"supervisor", "admin"}}
USERS = {"agent": ("ana", "ana-password"), "writer": ("wes", "wes-password"),
         "admin": ("root", "root-password"), "supervisor": ("sue", "sue-password")}


def concrete(path: str) -> str:
    """A path to try a route with. The user id is no one's: an admin's request then
    changes no account (a 404), and anyone else's is refused for the role first."""
    name = "desk.js" if path.startswith("/static/") else "utter_greet"
    return (path.replace("<ticket_id:int>", "1").replace("<revision_id:int>", "1")
            .replace("<rid:int>", "1")
            .replace("<user_id:int>", "99999").replace("<name:str>", name))


class Desk:
    def __init__(self, url: str, db: str) -> None:
        self.url = url
        self.db = db
        self.clients: list[httpx.Client] = []

    def client(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=10)
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        while self.clients:
            self.clients.pop().close()

    def login(self, username: str, password: str) -> tuple[httpx.Client, str]:
        client = self.client()
        page = client.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        resp = client.post("/login", data={"csrf": csrf, "username": username,
                                           "password": password})
        assert resp.status_code == 303 and resp.headers["location"] == "/", resp.text
        return client, client.get("/api/me").json()["csrf"]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    state = tmp_path_factory.mktemp("desk")
    db = f"sqlite:///{state / 'parley.db'}"
    storage.create_schema(db)
    agents.create_user("ana", "ana-password", "agent", "Ana", db)
    agents.create_user("bo", "bo-password", "agent", "Bo", db)
    agents.create_user("root", "root-password", "admin", "Root", db)
    agents.create_user("wes", "wes-password", "writer", "Wes", db)
    agents.create_user("sue", "sue-password", "supervisor", "Sue", db)
    port = free_port()
    env = {**os.environ, "PARLEY_DATABASE_URL": db}
    log = (state / "desk.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "parley.bot.desk", "--port", str(port)],
                            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"desk did not start: {Path(state / 'desk.log').read_text()}")
    try:
        yield Desk(url, db)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(autouse=True)
def _close_clients(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "desk" in request.fixturenames:
        request.getfixturevalue("desk").close_clients()


def test_route_table_matches_the_app() -> None:
    from parley.bot.desk.app import create_app

    app = create_app("sqlite:///:memory:")
    served = {(method, "/" + route.path.lstrip("/"))
              for route in app.router.routes for method in route.methods
              if method not in {"HEAD", "OPTIONS"}}
    assert served == set(ROUTES), "update ROUTES (and its access rule) with the app"


@pytest.mark.parametrize(("method", "path"), [k for k, v in ROUTES.items() if v != "public"])
def test_every_private_route_needs_a_session(desk: Desk, method: str, path: str) -> None:
    resp = httpx.request(method, desk.url + concrete(path), json={}, timeout=10)
    if path.startswith("/api/") or path == "/events":
        assert resp.status_code == 401
    else:
        assert resp.status_code == 302 and resp.headers["location"] == "/login"


@pytest.mark.parametrize(("method", "path"), [k for k, v in ROUTES.items() if v != "public"])
def test_every_route_lets_in_exactly_its_roles(desk: Desk, method: str, path: str) -> None:
    for role, (username, password) in USERS.items():
        client, csrf = desk.login(username, password)
        with client.stream(method, concrete(path), json={}, headers={"X-CSRF-Token": csrf},
                           follow_redirects=False) as resp:  # /events never ends
            error = resp.read().decode() if resp.status_code == 403 else ""
        refused = resp.status_code == 403 and "role" in error
        allowed = role in ALLOWED[ROUTES[(method, path)]]
        assert refused != allowed, f"{role} {method} {path}: {resp.status_code} {error}"


def test_login_failures(desk: Desk) -> None:
    client = desk.client()
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    wrong = client.post("/login", data={"csrf": csrf, "username": "ana", "password": "nope"})
    assert wrong.status_code == 303 and "failed" in wrong.headers["location"]
    forged = httpx.post(f"{desk.url}/login", data={"csrf": csrf, "username": "ana",
                                                   "password": "ana-password"})
    assert forged.status_code == 403  # no matching login cookie: cross-site post
    assert "parley_session" not in client.cookies


def test_posts_need_the_csrf_token(desk: Desk) -> None:
    client, csrf = desk.login("ana", "ana-password")
    ticket = handoff.escalate("webchat:csrf", "keyword", database_url=desk.db).ticket
    assert client.post(f"/api/tickets/{ticket.id}/claim", json={}).status_code == 403
    assert client.post(f"/api/tickets/{ticket.id}/claim", json={},
                       headers={"X-CSRF-Token": "guess"}).status_code == 403
    assert handoff.get_ticket(ticket.id, desk.db).status == "waiting"
    ok = client.post(f"/api/tickets/{ticket.id}/claim", json={}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200


def test_two_agents_claiming_one_ticket(desk: Desk) -> None:
    ana, ana_csrf = desk.login("ana", "ana-password")
    bo, bo_csrf = desk.login("bo", "bo-password")
    ticket = handoff.escalate("webchat:race", "intent", database_url=desk.db).ticket
    first = ana.post(f"/api/tickets/{ticket.id}/claim", json={},
                     headers={"X-CSRF-Token": ana_csrf})
    second = bo.post(f"/api/tickets/{ticket.id}/claim", json={},
                     headers={"X-CSRF-Token": bo_csrf})
    assert (first.status_code, second.status_code) == (200, 409)
    assert "someone else" in second.json()["error"]
    # Bo cannot reply to or resolve Ana's conversation
    assert bo.post(f"/api/tickets/{ticket.id}/reply", json={"text": "hi"},
                   headers={"X-CSRF-Token": bo_csrf}).status_code == 409


def test_reply_note_tags_transfer_resolve(desk: Desk) -> None:
    ana, csrf = desk.login("ana", "ana-password")
    h = {"X-CSRF-Token": csrf}
    conv = "webchat:flow"
    ticket = handoff.escalate(conv, "complaint", database_url=desk.db, display_name="Flo").ticket
    listed = ana.get("/api/tickets").json()
    assert any(t["id"] == ticket.id and t["display_name"] == "Flo" for t in listed)
    ana.post(f"/api/tickets/{ticket.id}/claim", json={}, headers=h)
    assert ana.post(f"/api/tickets/{ticket.id}/reply", json={"text": "Hello Flo"},
                    headers=h).status_code == 201
    assert ana.post(f"/api/tickets/{ticket.id}/note", json={"text": "VIP"},
                    headers=h).status_code == 201
    tags = ana.post(f"/api/tickets/{ticket.id}/tags", json={"tags": ["Refund"]}, headers=h)
    assert tags.json()["tags"] == ["refund"]
    pushed = [(m.author, m.text) for m in conversations.pushed_after(conv, 0, desk.db)]
    assert pushed == [("system", "Ana from our team has joined the chat."),
                      ("agent", "Hello Flo")]  # the note is not sent
    detail = ana.get(f"/api/tickets/{ticket.id}").json()
    assert [line["author"] for line in detail["transcript"]][-2:] == ["agent", "note"]
    bo_id = next(a["id"] for a in ana.get("/api/agents").json() if a["display_name"] == "Bo")
    moved = ana.post(f"/api/tickets/{ticket.id}/transfer", json={"agent_id": bo_id}, headers=h)
    assert moved.json()["agent_name"] == "Bo"
    bo, bo_csrf = desk.login("bo", "bo-password")
    done = bo.post(f"/api/tickets/{ticket.id}/resolve", json={},
                   headers={"X-CSRF-Token": bo_csrf})
    assert done.json()["status"] == "resolved"
    notice, question = conversations.pushed_after(conv, 0, desk.db)[-2:]
    assert "Bo has handed you back" in notice.text  # then the survey, in that order
    assert question.text.startswith("How happy are you with the answer")


def test_an_agent_sets_the_conversations_language(desk: Desk) -> None:
    """Shown with where it came from; changed only by an agent or admin with the
    session's CSRF token and a language we have replies in; published live."""
    conv = "telegram:lang"
    ticket = handoff.escalate(conv, "keyword", database_url=desk.db).ticket
    ana, csrf = desk.login("ana", "ana-password")
    shown = ana.get(f"/api/tickets/{ticket.id}").json()
    assert (shown["ticket"]["language"], shown["ticket"]["language_source"]) == ("en", None)
    assert [c["code"] for c in shown["languages"]] == ["en", "pt"]
    after = events.last_event_id(desk.db)
    path = f"/api/tickets/{ticket.id}/language"
    for body in ({"language": "xx"}, {"language": "PT"}, {"language": ["pt"]}, {}):
        bad = ana.post(path, json=body, headers={"X-CSRF-Token": csrf})
        assert bad.status_code == 400 and "one of en, pt" in bad.json()["error"]
    assert ana.post(path, json={"language": "pt"}).status_code == 403  # no CSRF token
    wes, wes_csrf = desk.login("wes", "wes-password")
    refused = wes.post(path, json={"language": "pt"}, headers={"X-CSRF-Token": wes_csrf})
    assert refused.status_code == 403 and "role" in refused.json()["error"]
    assert language.of_conversations([conv], desk.db)[conv].source is None  # nothing changed
    assert events.events_after(after, database_url=desk.db) == []
    done = ana.post(path, json={"language": "pt"}, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200
    assert (done.json()["language"], done.json()["language_source"]) == ("pt", "agent")
    listed = next(t for t in ana.get("/api/tickets").json() if t["id"] == ticket.id)
    assert (listed["language"], listed["language_source"]) == ("pt", "agent")
    [event] = events.events_after(after, database_url=desk.db)
    assert (event.kind, event.ticket_id, event.payload) == (
        "ticket_updated", ticket.id, {"language": "pt", "language_source": "agent"})
    transcript = ana.get(f"/api/tickets/{ticket.id}").json()["transcript"]
    assert transcript[-1]["text"] == "Language set to Portuguese by Ana"
    assert ana.post("/api/tickets/99999/language", json={"language": "pt"},
                    headers={"X-CSRF-Token": csrf}).status_code == 404


def test_bulk_dismiss(desk: Desk) -> None:
    ana, csrf = desk.login("ana", "ana-password")
    ids = [handoff.escalate(f"webchat:spam{i}", "intent", database_url=desk.db).ticket.id
           for i in range(3)]
    resp = ana.post("/api/tickets/dismiss", json={"ids": ids[:2]}, headers={"X-CSRF-Token": csrf})
    assert resp.json() == {"dismissed": ids[:2]}
    open_ids = {t["id"] for t in ana.get("/api/tickets").json()}
    assert ids[2] in open_ids and not open_ids & set(ids[:2])


@pytest.mark.parametrize(("path", "body", "status", "reason"), [
    ("/api/tickets/{id}/reply", b"{oops", 400, "JSON"),
    ("/api/tickets/{id}/reply", b'{"text": "  "}', 400, "non-empty"),
    ("/api/tickets/{id}/reply", b'{"text": "' + b"x" * 5000 + b'"}', 413, "limit"),
    ("/api/tickets/{id}/tags", b'{"tags": "vip"}', 400, "list of strings"),
    ("/api/tickets/{id}/transfer", b'{"agent_id": 99999}', 400, "desk user"),
    ("/api/tickets/dismiss", b'{"ids": []}', 400, "non-empty list"),
    ("/api/tickets/99999/claim", b"{}", 404, "not found"),
])
def test_bad_input_gets_a_clear_4xx(desk: Desk, path: str, body: bytes, status: int,
                                    reason: str) -> None:
    ana, csrf = desk.login("ana", "ana-password")
    ticket = handoff.escalate(f"webchat:bad{time.monotonic_ns()}", "intent",
                              database_url=desk.db).ticket
    ana.post(f"/api/tickets/{ticket.id}/claim", json={}, headers={"X-CSRF-Token": csrf})
    resp = ana.post(path.format(id=ticket.id), content=body,
                    headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"})
    assert resp.status_code == status
    assert reason in resp.json()["error"]


def test_oversized_body_is_413(desk: Desk) -> None:
    ana, csrf = desk.login("ana", "ana-password")
    resp = ana.post("/api/tickets/dismiss", content=b"x" * (200 * 1024),
                    headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 413


def test_admin_can_add_users(desk: Desk) -> None:
    root, csrf = desk.login("root", "root-password")
    h = {"X-CSRF-Token": csrf}
    made = root.post("/api/users", json={"username": "cy", "password": "cy-password-1"},
                     headers=h)
    assert made.status_code == 201 and made.json()["role"] == "agent"
    again = root.post("/api/users", json={"username": "cy", "password": "cy-password-1"},
                      headers=h)
    assert again.status_code == 409
    weak = root.post("/api/users", json={"username": "dee", "password": "short"}, headers=h)
    assert weak.status_code == 400 and "10 characters" in weak.json()["error"]
    desk.login("cy", "cy-password-1")


def test_logout_ends_the_session(desk: Desk) -> None:
    ana, csrf = desk.login("ana", "ana-password")
    assert ana.post("/logout", data={"csrf": csrf}).status_code == 303
    assert ana.get("/api/me").status_code == 401


def test_pages_forbid_inline_script(desk: Desk) -> None:
    ana, _ = desk.login("ana", "ana-password")
    page = ana.get("/")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text  # only the external desk.js


def test_reply_library_over_http(desk: Desk) -> None:
    writer, wcsrf = desk.login("wes", "wes-password")
    admin, acsrf = desk.login("root", "root-password")
    agent, _ = desk.login("ana", "ana-password")
    assert writer.get("/", follow_redirects=False).headers["location"] == "/library"
    found = writer.get("/api/library/replies", params={"q": "Klarna"}).json()
    assert [r["name"] for r in found] == ["utter_payment_methods"]

    checked = writer.post("/api/library/check", headers={"X-CSRF-Token": wcsrf}, json={
        "name": "utter_payment_methods", "body": [{"text": "x" * 2100}],
        "samples": {}}).json()
    assert any(p["channel"] == "messenger" for p in checked["problems"])
    messenger = next(p for p in checked["previews"] if p["channel"] == "messenger")
    assert messenger["length"] == 2100 and messenger["limit"] == 2000

    bad = writer.post("/api/library/replies/utter_payment_methods/draft",
                      headers={"X-CSRF-Token": wcsrf}, json={"body": [{"text": "x" * 2100}]})
    assert bad.status_code == 200 and bad.json()["problems"]  # drafts may be unfinished
    refused = writer.post(f"/api/library/revisions/{bad.json()['id']}/submit",
                          headers={"X-CSRF-Token": wcsrf}, json={})
    assert refused.status_code == 409 and "Messenger" in refused.json()["error"]

    text = "We take cards, PayPal and Klarna."
    draft = writer.post("/api/library/replies/utter_payment_methods/draft",
                        headers={"X-CSRF-Token": wcsrf}, json={"body": [{"text": text}]}).json()
    assert draft["id"] == bad.json()["id"] and draft["problems"] == []
    assert writer.post(f"/api/library/revisions/{draft['id']}/submit",
                       headers={"X-CSRF-Token": wcsrf}, json={}).status_code == 200
    assert writer.post(f"/api/library/revisions/{draft['id']}/approve",
                       headers={"X-CSRF-Token": wcsrf}, json={}).status_code == 403
    review = admin.get("/api/library/review").json()
    assert [r["id"] for r in review] == [draft["id"]] and review[0]["author"] == "Wes"
    diff = admin.get(f"/api/library/revisions/{draft['id']}/diff").json()["diff"]
    assert f"+  - text: {text}" in diff
    approved = admin.post(f"/api/library/revisions/{draft['id']}/approve",
                          headers={"X-CSRF-Token": acsrf}, json={})
    assert approved.status_code == 200 and approved.json()["state"] == "published"
    detail = writer.get("/api/library/replies/utter_payment_methods").json()
    assert detail["live"] == [{"text": text}] and detail["draft"] is None

    ticket = handoff.escalate("telegram:777", "keyword", database_url=desk.db).ticket
    canned = agent.get("/api/canned", params={"q": "/payment", "ticket": ticket.id}).json()
    assert canned[0] == {"name": "utter_payment_methods", "shortcut": "/payment_methods",
                         "text": text}
    assert writer.get("/api/canned").status_code == 403
    assert writer.get("/api/library/replies/utter_nope").status_code == 404
    assert writer.get("/api/library/replies/Bad%20Name").status_code == 400


def test_a_trainees_reply_is_approved_over_http(desk: Desk) -> None:
    """An admin makes Tia a trainee; her reply is held (202), a supervisor sees it,
    sends one back and edits and approves another; only that one reaches the customer."""
    tia = agents.create_user("tia", "tia-password", "agent", "Tia", desk.db)
    admin, acsrf = desk.login("root", "root-password")
    assert admin.post(f"/api/users/{tia.id}/trainee", json={"trainee": "yes"},
                      headers={"X-CSRF-Token": acsrf}).status_code == 400
    marked = admin.post(f"/api/users/{tia.id}/trainee", json={"trainee": True},
                        headers={"X-CSRF-Token": acsrf})
    assert marked.json()["trainee"] is True
    sue_id = next(u["id"] for u in admin.get("/api/users").json() if u["username"] == "sue")
    refused = admin.post(f"/api/users/{sue_id}/trainee", json={"trainee": True},
                         headers={"X-CSRF-Token": acsrf})
    assert refused.status_code == 400 and "only agents" in refused.json()["error"]

    trainee, tcsrf = desk.login("tia", "tia-password")
    th = {"X-CSRF-Token": tcsrf}
    assert trainee.get("/api/me").json()["trainee"] is True
    conv = "webchat:trainee-http"
    ticket = handoff.escalate(conv, "keyword", database_url=desk.db, display_name="Tom").ticket
    trainee.post(f"/api/tickets/{ticket.id}/claim", json={}, headers=th)
    first = trainee.post(f"/api/tickets/{ticket.id}/reply", json={"text": "dunno"}, headers=th)
    second = trainee.post(f"/api/tickets/{ticket.id}/reply", json={"text": "Hi Tom, let me check"},
                          headers=th)
    assert (first.status_code, first.json()["held"]) == (202, True)
    assert [m.author for m in conversations.pushed_after(conv, 0, desk.db)] == ["system"]
    assert trainee.post(f"/api/tickets/{ticket.id}/resolve", json={}, headers=th
                        ).status_code == 409

    sup, scsrf = desk.login("sue", "sue-password")
    sh = {"X-CSRF-Token": scsrf}
    queue = sup.get("/api/approvals").json()
    mine = [r for r in queue["waiting"] if r["ticket_id"] == ticket.id]
    assert [(r["text"], r["agent_name"], r["display_name"]) for r in mine] == [
        ("dunno", "Tia", "Tom"), ("Hi Tom, let me check", "Tia", "Tom")]
    assert sup.post(f"/api/approvals/{first.json()['id']}/send-back", json={"comment": " "},
                    headers=sh).status_code == 400
    back = sup.post(f"/api/approvals/{first.json()['id']}/send-back",
                    json={"comment": "Say hello and what you will do"}, headers=sh)
    assert back.json()["status"] == "returned"
    sent = sup.post(f"/api/approvals/{second.json()['id']}/approve",
                    json={"text": "Hi Tom, let me check your order."}, headers=sh)
    assert sent.status_code == 200 and sent.json()["edited"] is True
    again = sup.post(f"/api/approvals/{second.json()['id']}/approve", json={}, headers=sh)
    assert again.status_code == 409 and "already approved" in again.json()["error"]
    assert sup.post("/api/approvals/999999/approve", json={}, headers=sh).status_code == 404
    pushed = [(m.author, m.text) for m in conversations.pushed_after(conv, 0, desk.db)]
    assert pushed[1:] == [("agent", "Hi Tom, let me check your order.")]

    detail = trainee.get(f"/api/tickets/{ticket.id}").json()
    agent_line = next(line for line in detail["transcript"] if line["author"] == "agent")
    assert agent_line["approved_by_name"] == "Sue"
    assert [(r["status"], r["draft"]) for r in detail["reviews"]] == [
        ("returned", "dunno"), ("approved", "Hi Tom, let me check")]
    assert any("Say hello and what you will do" in line["text"]
               for line in detail["transcript"] if line["author"] == "note")
    assert trainee.post(f"/api/tickets/{ticket.id}/resolve", json={}, headers=th
                        ).json()["status"] == "resolved"
