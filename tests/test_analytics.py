"""The manager's analytics: every chart's numbers on hand-checked data (SQLite and
PostgreSQL), the filters, and the desk API (roles, 400s, CSV) against a real desk."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select

from parley.bot import agents, analytics, handoff, storage
from parley.bot.analytics import FilterError, Filters
from parley.bot.conversations import Message
from parley.bot.handoff.tickets import Ticket
from tests.analytics_data import END, START, DeskProcess, Seeded, at, desk_process, seed

RANGE = Filters(date(2026, 3, 1), date(2026, 3, 3))


@pytest.fixture
def seeded(any_db: str) -> tuple[str, Seeded]:
    return any_db, seed(any_db)


def rows(name: str, url: str, f: Filters = RANGE) -> list[dict]:
    return analytics.run(name, f, url)["rows"]


def test_volume_counts_inbound_and_sent_per_day_and_channel(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    assert rows("volume", url) == [
        {"bucket": "2026-03-01", "channel": "telegram", "inbound": 4, "outbound": 4},
        {"bucket": "2026-03-02", "channel": "instagram", "inbound": 1, "outbound": 0},
        {"bucket": "2026-03-02", "channel": "telegram", "inbound": 2, "outbound": 2},
        {"bucket": "2026-03-02", "channel": "webchat", "inbound": 2, "outbound": 3},
        # the withheld bot reply and the note are not sent
        {"bucket": "2026-03-02", "channel": "whatsapp", "inbound": 2, "outbound": 1},
        {"bucket": "2026-03-03", "channel": "messenger", "inbound": 2, "outbound": 0},
    ]


def test_two_days_or_less_are_counted_per_hour(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    one_day = Filters(date(2026, 3, 2), date(2026, 3, 2))
    data = analytics.run("volume", one_day, url)
    assert data["filters"]["bucket"] == "hour" and len(data["buckets"]) == 24
    assert data["rows"] == [
        {"bucket": "2026-03-02 10:00", "channel": "telegram", "inbound": 2, "outbound": 2},
        {"bucket": "2026-03-02 10:00", "channel": "webchat", "inbound": 2, "outbound": 3},
        {"bucket": "2026-03-02 11:00", "channel": "whatsapp", "inbound": 2, "outbound": 1},
        {"bucket": "2026-03-02 13:00", "channel": "instagram", "inbound": 1, "outbound": 0},
    ]
    assert all(r["bucket"] in data["buckets"] for r in data["rows"])
    assert len(Filters(date(2026, 3, 1), date(2026, 3, 2)).buckets()) == 48
    assert Filters(date(2026, 3, 1), date(2026, 3, 3)).buckets() == [
        "2026-03-01", "2026-03-02", "2026-03-03"]


def test_handled_and_the_oldest_unhandled_message(seeded: tuple[str, Seeded]) -> None:
    url, data = seeded
    result = analytics.run("handled", RANGE, url)
    assert result["rows"] == [
        {"bucket": "2026-03-01", "handled": 4, "not_handled": 0},
        # instagram:7's message was answered by the bot's handoff turn
        {"bucket": "2026-03-02", "handled": 6, "not_handled": 1},
        {"bucket": "2026-03-03", "handled": 0, "not_handled": 2},
    ]
    oldest = result["oldest_unhandled"]
    assert oldest["message_id"] == data.messages["oldest_unhandled"]
    assert (oldest["conversation_id"], oldest["channel"]) == ("whatsapp:5", "whatsapp")
    assert oldest["created_at"] == at(2, "11:03:00").isoformat()
    # The oldest waiting message is found even when the range starts after it.
    march_3 = Filters(date(2026, 3, 3), date(2026, 3, 3))
    assert analytics.run("handled", march_3, url)["oldest_unhandled"]["message_id"] == \
        data.messages["oldest_unhandled"]
    # A queue notice (the system's) tells, it does not answer: still not handled.
    with storage.get_engine(url).begin() as conn:
        conn.execute(insert(Message).values(conversation_id="whatsapp:5", author="system",
                                            text="You are number 1", delivery="push",
                                            attempts=0, created_at=at(2, "11:03:01")))
    assert analytics.run("handled", RANGE, url)["rows"][1]["not_handled"] == 1
    # Answered now by the agent: handled, and the next oldest is messenger:3's.
    with storage.get_engine(url).begin() as conn:
        conn.execute(insert(Message).values(conversation_id="whatsapp:5", author="agent",
                                            text="sorry", delivery="push", attempts=0,
                                            created_at=at(4, "08:00:00")))
    after = analytics.run("handled", RANGE, url)
    assert after["rows"][1] == {"bucket": "2026-03-02", "handled": 7, "not_handled": 0}
    assert after["oldest_unhandled"]["conversation_id"] == "messenger:3"


def test_containment_and_handoff_reasons(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    result = analytics.run("containment", RANGE, url)
    assert result["rows"] == [
        {"channel": "instagram", "conversations": 1, "contained": 0, "handed_off": 1,
         "open": 0, "containment": 0.0},
        # messenger:3: nobody answered, so the bot did not finish it: open
        {"channel": "messenger", "conversations": 1, "contained": 0, "handed_off": 0,
         "open": 1, "containment": 0.0},
        {"channel": "telegram", "conversations": 2, "contained": 1, "handed_off": 1,
         "open": 0, "containment": 0.5},
        {"channel": "webchat", "conversations": 1, "contained": 0, "handed_off": 1,
         "open": 0, "containment": 0.0},
        {"channel": "whatsapp", "conversations": 1, "contained": 0, "handed_off": 1,
         "open": 0, "containment": 0.0},
    ]
    assert result["total"] == {"channel": "all", "conversations": 6, "contained": 1,
                               "handed_off": 4, "open": 1, "containment": 0.1667}
    reasons = analytics.run("handoff_reasons", RANGE, url)
    assert reasons["conversations"] == 6
    assert reasons["rows"] == [
        {"reason": "keyword", "handoffs": 1, "rate": 0.1667},
        {"reason": "intent", "handoffs": 1, "rate": 0.1667},
        {"reason": "low_confidence", "handoffs": 1, "rate": 0.1667},
        {"reason": "complaint", "handoffs": 1, "rate": 0.1667},
        {"reason": "external", "handoffs": 0, "rate": 0.0},  # telegram:6 is out of range
        {"reason": "bot_error", "handoffs": 0, "rate": 0.0},
    ]
    # telegram:6's ticket from before the range is still waiting: a message the bot
    # answers in range does not make that conversation the bot's alone.
    with storage.get_engine(url).begin() as conn:
        conn.execute(insert(Message).values(conversation_id="telegram:6", author="customer",
                                            text="hello?", delivery="none", attempts=0,
                                            inbox_state="answered",
                                            created_at=at(2, "09:00:00")))
    telegram = analytics.run("containment", RANGE, url)["rows"][2]
    assert telegram == {"channel": "telegram", "conversations": 3, "contained": 1,
                        "handed_off": 2, "open": 0, "containment": 0.3333}


def test_top_intents_that_end_in_a_handoff(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    assert rows("handoff_intents", url) == [
        {"intent": "complaint", "handoffs": 1, "confidence": 0.8},
        {"intent": "nlu_fallback", "handoffs": 1, "confidence": 0.3},
        {"intent": "refund", "handoffs": 1, "confidence": 0.6},
        {"intent": "talk_to_person", "handoffs": 1, "confidence": 0.99},
    ]


def test_time_to_first_answer_bot_and_person(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    assert rows("first_answer", url) == [
        {"bucket": "2026-03-01", "bot_median": 1.0, "bot_answered": 4,
         "person_median": None, "person_answered": 0},
        # bot: 2, 5 (telegram:1) and 1, 2 (webchat:2); the withheld reply is no answer
        {"bucket": "2026-03-02", "bot_median": 2.0, "bot_answered": 4,
         "person_median": 150.0, "person_answered": 2},
    ]


def test_per_agent_and_per_team(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    assert rows("agents", url) == [
        # T1 (resolved); T4, dismissed from the queue, was never hers
        {"agent": "Ana", "tickets": 1, "queue_median": 120.0, "first_answer_median": 180.0,
         "handle_median": 480.0, "resolved": 1},
        {"agent": "Bo", "tickets": 1, "queue_median": 60.0, "first_answer_median": 120.0,
         "handle_median": None, "resolved": 0},
    ]
    assert rows("teams", url) == [
        {"team": "billing", "tickets": 1, "queue_median": 60.0, "first_answer_median": 120.0,
         "handle_median": None, "abandoned_waiting": 0, "abandoned_share": 0.0},
        # T2: the customer left the queue; T4: dismissed from the queue, never served
        {"team": "support", "tickets": 3, "queue_median": 120.0, "first_answer_median": 180.0,
         "handle_median": 480.0, "abandoned_waiting": 2, "abandoned_share": 0.6667},
    ]


def test_satisfaction_bot_only_person_and_per_agent(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    assert rows("satisfaction", url) == [
        {"handled_by": "bot only", "surveys": 2, "answer_mean": 3.0, "time_mean": 3.0,
         "agent_mean": None, "csat": 0.5},
        {"handled_by": "person", "surveys": 1, "answer_mean": 5.0, "time_mean": 4.0,
         "agent_mean": 5.0, "csat": 1.0},
    ]
    assert rows("satisfaction_agents", url) == [
        {"agent": "Ana", "surveys": 1, "answer_mean": 5.0, "time_mean": 4.0, "agent_mean": 5.0,
         "csat": 1.0, "ratings": 1, "rating_mean": 4.0},
    ]


def test_canned_replies_and_those_followed_by_a_handoff(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    assert rows("canned", url) == [
        {"reply": "utter_greet", "by_bot": 3, "by_agents": 1, "total": 4},
        {"reply": "utter_ask_rephrase", "by_bot": 2, "by_agents": 0, "total": 2},
        {"reply": "utter_handoff_queue", "by_bot": 2, "by_agents": 0, "total": 2},
        {"reply": "utter_shipping", "by_bot": 1, "by_agents": 0, "total": 1},
    ]
    # telegram:4: both greets were followed by the handoff within two customer turns;
    # its rephrase request only on the third. webchat:2's rephrase: on the next turn.
    assert rows("canned_handoffs", url) == [
        {"reply": "utter_greet", "sent": 3, "followed_by_handoff": 2, "share": 0.6667,
         "editor": "/library?reply=utter_greet"},
        {"reply": "utter_ask_rephrase", "sent": 2, "followed_by_handoff": 1, "share": 0.5,
         "editor": "/library?reply=utter_ask_rephrase"},
    ]


def test_channel_and_language_filters(seeded: tuple[str, Seeded]) -> None:
    url, _ = seeded
    telegram = Filters(RANGE.start, RANGE.end, ("telegram",))
    assert {r["channel"] for r in rows("volume", url, telegram)} == {"telegram"}
    assert rows("containment", url, telegram) == [
        {"channel": "telegram", "conversations": 2, "contained": 1, "handed_off": 1,
         "open": 0, "containment": 0.5}]
    reasons = analytics.run("handoff_reasons", telegram, url)
    assert reasons["conversations"] == 2
    assert {r["reason"]: r["handoffs"] for r in reasons["rows"]}["keyword"] == 1
    assert [r["reply"] for r in rows("canned_handoffs", url, telegram)] == ["utter_greet"]
    assert rows("agents", url, telegram) == []
    portuguese = Filters(RANGE.start, RANGE.end, (), ("pt",))
    assert {r["channel"] for r in rows("volume", url, portuguese)} == {"telegram", "webchat"}
    assert [r["intent"] for r in rows("handoff_intents", url, portuguese)] == [
        "nlu_fallback", "talk_to_person"]
    # No language yet counts as the default language (English).
    english = Filters(RANGE.start, RANGE.end, (), ("en",))
    assert {r["channel"] for r in rows("containment", url, english)} == {
        "instagram", "messenger", "telegram", "whatsapp"}
    both = Filters(RANGE.start, RANGE.end, ("webchat", "whatsapp"), ("pt",))
    assert [r["agent"] for r in rows("agents", url, both)] == ["Ana"]
    assert rows("satisfaction", url, both)[0]["surveys"] == 0
    march_3 = Filters(date(2026, 3, 3), date(2026, 3, 3))
    assert rows("handled", url, march_3) == [
        {"bucket": "2026-03-03 09:00", "handled": 0, "not_handled": 2}]


def test_filters_from_query_parameters() -> None:
    today = date(2026, 11, 24)
    default = Filters.parse({}, today)
    assert (default.start, default.end) == (date(2026, 10, 26), today)
    assert (default.channels, default.languages) == ((), ())
    given = Filters.parse({"from": ["2026-03-01"], "to": ["2026-03-03"],
                           "channel": ["telegram,webchat", "telegram"], "language": ["pt"]},
                          today)
    assert given == Filters(date(2026, 3, 1), date(2026, 3, 3), ("telegram", "webchat"),
                            ("pt",))
    assert Filters.parse({"to": ["2026-03-03"]}, today).start == date(2026, 2, 2)
    assert Filters.parse({"from": ["2026-11-20"]}, today).end == today
    assert Filters.parse({"from": ["2027-01-05"]}, today).end == date(2027, 1, 5)
    for args, reason in [
        ({"from": ["2026-3-1"]}, "must be a date"),
        ({"from": ["yesterday"]}, "must be a date"),
        ({"to": ["2026-02-30"]}, "must be a date"),
        ({"from": ["2026-03-04"], "to": ["2026-03-03"]}, "is after"),
        ({"from": ["2025-01-01"], "to": ["2026-03-03"]}, "at most 366"),
        ({"from": ["1999-12-31"]}, "between"),
        ({"from": ["2026-03-01", "2026-03-02"]}, "given 2 times"),
        ({"channel": ["telegram,fax"]}, "unknown channel 'fax'"),
        ({"language": ["klingon"]}, "unknown language 'klingon'"),
    ]:
        with pytest.raises(FilterError, match=reason):
            Filters.parse(args, today)


def test_empty_database_gives_empty_charts(any_db: str) -> None:
    for name in analytics.CHARTS:
        data = analytics.run(name, RANGE, any_db)
        assert data["chart"] == name and data["columns"]
        assert data["rows"] == [] or name in {"handoff_reasons", "satisfaction"}
    assert analytics.run("handled", RANGE, any_db)["oldest_unhandled"] is None
    assert all(r["handoffs"] == 0 and r["rate"] is None
               for r in rows("handoff_reasons", any_db))


# --- the desk API -----------------------------------------------------------------------

USERS = {"manager": "mia", "admin": "root", "agent": "ana", "writer": "wes"}


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeskProcess]:
    state = tmp_path_factory.mktemp("analytics-desk")
    db = f"sqlite:///{state / 'parley.db'}"
    storage.create_schema(db)
    seed(db)
    agents.create_user("mia", "mia-password", "manager", "Mia", db)
    agents.create_user("root", "root-password", "admin", "Root", db)
    agents.create_user("wes", "wes-password", "writer", "Wes", db)
    with desk_process(db, state) as process:
        yield process


def login(desk: DeskProcess, role: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=desk.url, timeout=30)
    page = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    username = USERS[role]
    resp = client.post("/login", data={"csrf": token, "username": username,
                                       "password": f"{username}-password"})
    assert resp.status_code == 303, resp.text
    return client, client.get("/api/me").json()["csrf"]


@pytest.fixture
def manager(desk: DeskProcess) -> Iterator[httpx.Client]:
    client, _ = login(desk, "manager")
    yield client
    client.close()


QUERY = f"from={START}&to={END}"


def test_only_managers_and_admins_see_the_numbers(desk: DeskProcess) -> None:
    for role in ("agent", "writer"):
        client, _ = login(desk, role)
        for path in ("/analytics", "/api/analytics", f"/api/analytics/volume?{QUERY}",
                     f"/api/analytics/volume?{QUERY}&format=csv"):
            resp = client.get(path)
            assert resp.status_code == 403 and "role" in resp.json()["error"], (role, path)
        client.close()
    anonymous = httpx.get(f"{desk.url}/api/analytics/volume", timeout=10)
    assert anonymous.status_code == 401
    assert httpx.get(f"{desk.url}/analytics", timeout=10).headers["location"] == "/login"
    for role in ("manager", "admin"):
        client, _ = login(desk, role)
        data = client.get(f"/api/analytics/volume?{QUERY}").json()
        assert data["rows"] == analytics.run("volume", RANGE, desk.database_url)["rows"]
        page = client.get("/analytics")
        assert page.status_code == 200 and 'id="spike-banner"' in page.text
        assert "<script>" not in page.text and "style=" not in page.text
        client.close()


def test_a_manager_lands_on_the_analytics(desk: DeskProcess, manager: httpx.Client) -> None:
    assert manager.get("/").headers["location"] == "/analytics"
    admin, _ = login(desk, "admin")
    assert admin.get("/").status_code == 200  # admins keep the desk, with a link
    assert 'href="/analytics"' in admin.get("/").text
    admin.close()


def test_the_index_lists_charts_and_filter_choices(manager: httpx.Client) -> None:
    index = manager.get("/api/analytics").json()
    assert [c["name"] for c in index["charts"]] == list(analytics.CHARTS)
    assert "webchat" in [c["name"] for c in index["channels"]]
    assert index["languages"] == ["en", "pt"]
    assert index["filters"]["bucket"] == "day"
    picked = manager.get("/api/analytics?from=2026-03-02&to=2026-03-02&channel=telegram")
    assert picked.json()["filters"] == {"from": "2026-03-02", "to": "2026-03-02",
                                        "channels": ["telegram"], "languages": [],
                                        "bucket": "hour"}


def test_every_chart_over_http_matches_the_queries(desk: DeskProcess,
                                                   manager: httpx.Client) -> None:
    f = Filters(RANGE.start, RANGE.end, ("telegram", "webchat"), ("pt",))
    for name in analytics.CHARTS:
        resp = manager.get(f"/api/analytics/{name}?{QUERY}&channel=telegram,webchat"
                           "&language=pt")
        assert resp.status_code == 200, resp.text
        expected = analytics.run(name, f, desk.database_url)
        got = resp.json()
        if name == "handled" and expected["oldest_unhandled"]:  # the wait goes on
            for data in (got, expected):
                data["oldest_unhandled"].pop("waiting_seconds")
        assert got == expected


@pytest.mark.parametrize(("query", "reason"), [
    ("from=2026-13-01", "'from' must be a date"),
    ("from=2026-03-01&to=2026-02-01", "is after"),
    ("from=2024-01-01&to=2026-03-01", "at most 366 days"),
    ("channel=fax", "unknown channel 'fax'"),
    ("channel=telegram,%00", "unknown channel"),
    ("language=de", "unknown language 'de'"),
    ("from=2026-03-01&from=2026-03-02", "given 2 times"),
    ("chanel=telegram", "unknown parameter 'chanel'"),
    ("format=xlsx", "'format' must be one of json, csv"),
])
def test_bad_filters_get_a_400_with_the_reason(manager: httpx.Client, query: str,
                                               reason: str) -> None:
    resp = manager.get(f"/api/analytics/volume?{query}")
    assert resp.status_code == 400 and reason in resp.json()["error"], resp.text


def test_unknown_chart_is_404(manager: httpx.Client) -> None:
    assert manager.get("/api/analytics/revenue").status_code == 404


def test_csv_download(desk: DeskProcess, manager: httpx.Client) -> None:
    resp = manager.get(f"/api/analytics/agents?{QUERY}&format=csv")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert resp.headers["content-disposition"] == \
        f'attachment; filename="parley-agents-{START}-{END}.csv"'
    table = list(csv.reader(io.StringIO(resp.text)))
    assert table == [
        ["Agent", "Tickets", "Median time in queue", "Median time to first answer",
         "Median handle time", "Resolved"],
        ["Ana", "1", "120.0", "180.0", "480.0", "1"],
        ["Bo", "1", "60.0", "120.0", "", "0"],
    ]
    links = list(csv.reader(io.StringIO(
        manager.get(f"/api/analytics/canned_handoffs?{QUERY}&format=csv").text)))
    assert links[0] == ["Reply", "Sent by the bot", "Followed by a handoff", "Share"]
    containment = list(csv.reader(io.StringIO(
        manager.get(f"/api/analytics/containment?{QUERY}&format=csv").text)))
    assert containment[-1] == ["all", "6", "1", "4", "1", "0.1667"]  # the total row


def test_csv_cells_never_run_as_formulas(desk: DeskProcess, manager: httpx.Client) -> None:
    """An intent name is text from the model: a spreadsheet must not run it."""
    with storage.get_engine(desk.database_url).begin() as conn:
        conn.execute(insert(Ticket).values(
            conversation_id="telegram:1", status="abandoned", priority=0, team="support",
            reason="intent", tags=[], created_at=at(3, "23:00:00"),
            context={"intents": [{"intent": "=HYPERLINK(\"http://x\")", "confidence": 1}]}))
    text = manager.get(f"/api/analytics/handoff_intents?{QUERY}&format=csv").text
    row = next(r for r in csv.reader(io.StringIO(text)) if "HYPERLINK" in r[0])
    assert row[0] == "'=HYPERLINK(\"http://x\")"


def test_an_agents_canned_reply_is_counted(desk: DeskProcess, manager: httpx.Client) -> None:
    """The desk sends the picked reply's name with the reply; a name that is not a
    published reply is refused and nothing is sent."""
    ana, csrf = login(desk, "agent")
    ticket = handoff.escalate("webchat:canned", "keyword", database_url=desk.database_url).ticket
    h = {"X-CSRF-Token": csrf}
    assert ana.post(f"/api/tickets/{ticket.id}/claim", json={}, headers=h).status_code == 200
    path = f"/api/tickets/{ticket.id}/reply"
    for name in ("utter_no_such_reply", "UTTER_GREET", "utter_greet\n", 7, ["utter_greet"],
                 "utter_" + "x" * 95):
        bad = ana.post(path, json={"text": "Hi!", "reply_name": name}, headers=h)
        assert bad.status_code == 400 and "published reply" in bad.json()["error"], name
    sent = ana.post(path, json={"text": "Hi there!", "reply_name": "utter_greet"}, headers=h)
    assert sent.status_code == 201
    plain = ana.post(path, json={"text": "Anything else?"}, headers=h)
    assert plain.status_code == 201
    with storage.session_scope(desk.database_url) as session:
        stored = session.execute(
            select(Message.text, Message.reply_name)
            .where(Message.conversation_id == "webchat:canned", Message.author == "agent")
            .order_by(Message.id)).all()
    assert [tuple(r) for r in stored] == [("Hi there!", "utter_greet"), ("Anything else?", None)]
    ana.close()
    today = Filters.parse({})
    canned = manager.get(f"/api/analytics/canned?from={today.start}&to={today.end}").json()
    assert {"reply": "utter_greet", "by_bot": 0, "by_agents": 1, "total": 1} in canned["rows"]


def test_the_desk_serves_the_vendored_chart_library(desk: DeskProcess) -> None:
    js = httpx.get(f"{desk.url}/static/chart.umd.js", timeout=10)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "Chart.js v4.6.1" in js.text[:200]
    licence = Path(analytics.__file__).parent / "desk" / "static" / "chart.js.LICENSE.md"
    assert "MIT License" in licence.read_text()
