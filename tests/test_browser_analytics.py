"""A manager reads the analytics in real Chromium: every chart's table holds the numbers
this test works out itself from the database (plain SQL, its own arithmetic), before
and after changing the filters; a CSV downloads with the same rows; an admin follows
a reply's link into the reply editor."""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import create_engine, select, text

from bench.analytics import seed as seed_month
from parley.bot import agents, analytics, handoff, storage
from parley.bot.conversations import Message
from tests.analytics_data import DeskProcess, Writer, desk_process
from tests.conftest import desk_login

pytestmark = pytest.mark.servers
TIMEOUT = 20_000
DAYS = 8
REASONS = ("keyword", "intent", "low_confidence", "complaint", "external", "bot_error")
SCORED = ("answer", "time", "agent")


@dataclass
class View:
    start: date
    end: date
    channels: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()  # no language yet counts as the default, English

    @property
    def since(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc)

    @property
    def until(self) -> datetime:
        return self.since + timedelta(days=(self.end - self.start).days + 1)

    def bucket(self, when: datetime) -> str:
        hourly = (self.end - self.start).days < 2
        return when.strftime("%Y-%m-%d %H:00" if hourly else "%Y-%m-%d")


def _time(value: Any) -> datetime | None:
    """SQLite hands back stored times as text (naive UTC)."""
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).replace(tzinfo=timezone.utc)


class Database:
    """Everything the charts read, fetched with plain SQL."""

    def __init__(self, url: str) -> None:
        engine = create_engine(url, future=True)
        with engine.connect() as conn:
            def q(sql: str) -> list[dict[str, Any]]:
                return [dict(r._mapping) for r in conn.execute(text(sql))]

            self.conversations = {r["id"]: r for r in q("SELECT id, channel, language "
                                                         "FROM conversations")}
            self.messages = q("SELECT id, conversation_id, author, delivery, delivery_error, "
                              "created_at, reply_to, reply_name, inbox_state FROM messages "
                              "ORDER BY id")
            self.tickets = q("SELECT id, conversation_id, status, team, reason, context, "
                             "assigned_agent_id, created_at, assigned_at, first_reply_at, "
                             "resolved_at FROM tickets")
            self.answers = q("SELECT s.id, s.conversation_id, s.ticket_id, s.agent_id, "
                             "s.started_at, a.question, a.score FROM surveys s "
                             "JOIN survey_answers a ON a.survey_id = s.id")
            self.ratings = q("SELECT r.score, r.created_at, t.assigned_agent_id, "
                             "t.conversation_id FROM ratings r JOIN tickets t "
                             "ON t.id = r.ticket_id")
            self.names = {r["id"]: r["display_name"]
                          for r in q("SELECT id, display_name FROM agents")}
        engine.dispose()
        for rows, keys in ((self.messages, ("created_at",)), (self.answers, ("started_at",)),
                           (self.ratings, ("created_at",)),
                           (self.tickets, ("created_at", "assigned_at", "first_reply_at",
                                           "resolved_at"))):
            for row in rows:
                for key in keys:
                    row[key] = _time(row[key])
        for t in self.tickets:
            t["context"] = json.loads(t["context"]) if isinstance(t["context"], str) \
                else t["context"]

    def ok(self, view: View, conversation_id: str) -> bool:
        conversation = self.conversations[conversation_id]
        return (not view.channels or conversation["channel"] in view.channels) and \
            (not view.languages or (conversation["language"] or "en") in view.languages)


def _in(view: View, when: datetime | None) -> bool:
    return when is not None and view.since <= when < view.until


def _sent(m: dict) -> bool:
    return m["author"] in ("bot", "agent", "system") and m["delivery"] in ("sync", "push") \
        and m["delivery_error"] is None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def expected(db: Database, view: View) -> dict[str, list[dict]]:
    """Each chart's rows, worked out here from the fetched rows."""
    def seconds(a: datetime | None, b: datetime | None) -> float | None:
        return (b - a).total_seconds() if a and b else None

    msgs = [m for m in db.messages if _in(view, m["created_at"])
            and db.ok(view, m["conversation_id"])]
    customer = [m for m in msgs if m["author"] == "customer"]
    tickets = [t for t in db.tickets if _in(view, t["created_at"])
               and db.ok(view, t["conversation_id"])]
    out: dict[str, list[dict]] = {}

    volume: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for m in msgs:
        key = (view.bucket(m["created_at"]), db.conversations[m["conversation_id"]]["channel"])
        volume[key]["inbound"] += m["author"] == "customer"
        volume[key]["outbound"] += _sent(m)
    out["volume"] = [{"bucket": b, "channel": ch, "inbound": c["inbound"],
                      "outbound": c["outbound"]} for (b, ch), c in sorted(volume.items())
                     if c["inbound"] or c["outbound"]]

    last_answer: dict[str, int] = {}  # a bot's or agent's sent message; notices do not count
    for m in db.messages:
        if _sent(m) and m["author"] in ("bot", "agent"):
            last_answer[m["conversation_id"]] = m["id"]
    handled: dict[str, Counter] = defaultdict(Counter)
    for m in customer:
        done = last_answer.get(m["conversation_id"], 0) > m["id"] \
            or m["inbox_state"] == "answered"
        handled[view.bucket(m["created_at"])]["handled" if done else "not_handled"] += 1
    out["handled"] = [{"bucket": b, "handled": c["handled"], "not_handled": c["not_handled"]}
                      for b, c in sorted(handled.items())]

    active = {m["conversation_id"] for m in customer}
    handed = {t["conversation_id"] for t in db.tickets  # open at some time in the range
              if t["created_at"] < view.until
              and (t["resolved_at"] is None or t["resolved_at"] >= view.since)}
    unfinished = {m["conversation_id"] for m in customer if m["inbox_state"] != "answered"}
    per_channel: dict[str, Counter] = defaultdict(Counter)
    for cid in active:
        c = per_channel[db.conversations[cid]["channel"]]
        c["conversations"] += 1
        c["handed_off"] += cid in handed
        c["contained"] += cid not in handed and cid not in unfinished
    out["containment"] = [{"channel": ch, "conversations": c["conversations"],
                           "contained": c["contained"], "handed_off": c["handed_off"],
                           "open": c["conversations"] - c["contained"] - c["handed_off"],
                           "containment": _share(c["contained"], c["conversations"])}
                          for ch, c in sorted(per_channel.items())]

    reasons = Counter(t["reason"] for t in tickets)
    out["handoff_reasons"] = [{"reason": r, "handoffs": reasons[r],
                               "rate": _share(reasons[r], len(active))} for r in REASONS]

    intents: dict[str, list[float]] = defaultdict(list)
    for t in tickets:
        last = (t["context"].get("intents") or [None])[-1]
        if last:
            intents[last["intent"]].append(last["confidence"])
    top = sorted(intents.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:10]
    out["handoff_intents"] = [{"intent": i, "handoffs": len(c), "confidence": _mean(c)}
                              for i, c in top]

    first_bot: dict[int, datetime] = {}
    for m in db.messages:
        if m["author"] == "bot" and _sent(m) and m["reply_to"] is not None:
            first_bot.setdefault(m["reply_to"], m["created_at"])
    bot_times, person_times = defaultdict(list), defaultdict(list)
    for m in customer:
        if m["id"] in first_bot:
            bot_times[view.bucket(m["created_at"])].append(
                seconds(m["created_at"], first_bot[m["id"]]))
    for t in tickets:
        if t["first_reply_at"]:
            person_times[view.bucket(t["created_at"])].append(
                seconds(t["created_at"], t["first_reply_at"]))
    out["first_answer"] = [{"bucket": b, "bot_median": _median(bot_times[b]),
                            "bot_answered": len(bot_times[b]),
                            "person_median": _median(person_times[b]),
                            "person_answered": len(person_times[b])}
                           for b in sorted(set(bot_times) | set(person_times))]

    def times(group: list[dict]) -> dict:
        return {"tickets": len(group),
                "queue_median": _median([seconds(t["created_at"], t["assigned_at"])
                                         for t in group if t["assigned_at"]]),
                "first_answer_median": _median([seconds(t["created_at"], t["first_reply_at"])
                                                for t in group if t["first_reply_at"]]),
                "handle_median": _median([seconds(t["assigned_at"], t["resolved_at"])
                                          for t in group if t["status"] == "resolved"])}

    by_agent, by_team = defaultdict(list), defaultdict(list)
    for t in tickets:
        by_team[t["team"]].append(t)
        if t["assigned_agent_id"] is not None and t["assigned_at"] is not None:
            by_agent[db.names[t["assigned_agent_id"]]].append(t)
    out["agents"] = sorted(({"agent": a, **times(g),
                             "resolved": sum(t["status"] == "resolved" for t in g)}
                            for a, g in by_agent.items()),
                           key=lambda r: (-r["tickets"], r["agent"]))
    out["teams"] = []
    for team, group in sorted(by_team.items()):
        gone = sum(t["status"] == "abandoned" and t["assigned_at"] is None for t in group)
        out["teams"].append({"team": team, **times(group), "abandoned_waiting": gone,
                             "abandoned_share": _share(gone, len(group))})

    answers = [a for a in db.answers if _in(view, a["started_at"])
               and db.ok(view, a["conversation_id"]) and a["question"] in SCORED
               and a["score"] is not None]

    def survey_stats(group: list[dict]) -> dict:
        answer = [a["score"] for a in group if a["question"] == "answer"]
        return {"surveys": len({a["id"] for a in group}),
                **{f"{q}_mean": _mean([a["score"] for a in group if a["question"] == q])
                   for q in SCORED},
                "csat": _share(sum(s >= 4 for s in answer), len(answer))}

    out["satisfaction"] = [
        {"handled_by": "bot only", **survey_stats([a for a in answers if a["ticket_id"] is None])},
        {"handled_by": "person", **survey_stats([a for a in answers if a["ticket_id"]])}]
    per_agent_answers: dict[int, list[dict]] = defaultdict(list)
    for a in answers:
        if a["ticket_id"] and a["agent_id"]:
            per_agent_answers[a["agent_id"]].append(a)
    ratings: dict[int, list[int]] = defaultdict(list)
    for r in db.ratings:
        if _in(view, r["created_at"]) and db.ok(view, r["conversation_id"]) \
                and r["assigned_agent_id"]:
            ratings[r["assigned_agent_id"]].append(r["score"])
    out["satisfaction_agents"] = sorted(
        ({"agent": db.names[a], **survey_stats(per_agent_answers[a]),
          "ratings": len(ratings[a]), "rating_mean": _mean(ratings[a])}
         for a in set(per_agent_answers) | set(ratings)),
        key=lambda r: (-r["surveys"], -r["ratings"], r["agent"]))

    canned: dict[str, Counter] = defaultdict(Counter)
    for m in msgs:
        if m["reply_name"] and m["author"] in ("bot", "agent") and _sent(m):
            canned[m["reply_name"]][m["author"]] += 1
    out["canned"] = sorted(({"reply": n, "by_bot": c["bot"], "by_agents": c["agent"],
                             "total": c["bot"] + c["agent"]} for n, c in canned.items()),
                           key=lambda r: (-r["total"], r["reply"]))[:20]

    by_conversation: dict[str, list[dict]] = defaultdict(list)
    for m in db.messages:
        by_conversation[m["conversation_id"]].append(m)
    conversation_tickets: dict[str, list[datetime]] = defaultdict(list)
    for t in db.tickets:
        conversation_tickets[t["conversation_id"]].append(t["created_at"])
    sent_replies, followed = Counter(), Counter()
    for m in msgs:
        if m["author"] != "bot" or not m["reply_name"] or not _sent(m):
            continue
        sent_replies[m["reply_name"]] += 1
        later = [c["created_at"] for c in by_conversation[m["conversation_id"]]
                 if c["author"] == "customer" and c["id"] > m["id"]]
        cutoff = later[2] if len(later) > 2 else None
        if any(t >= m["created_at"] and (cutoff is None or t < cutoff)
               for t in conversation_tickets[m["conversation_id"]]):
            followed[m["reply_name"]] += 1
    rows = [{"reply": n, "sent": sent_replies[n], "followed_by_handoff": k,
             "share": round(k / sent_replies[n], 4)} for n, k in followed.items()]
    out["canned_handoffs"] = sorted(rows, key=lambda r: (-r["followed_by_handoff"],
                                                         -r["share"], r["reply"]))[:20]
    return out


TOLERANCE = {"seconds": 0.11, "share": 0.00011, "score": 0.0051}


def same(kind: str, shown: str, value: Any) -> bool:
    """A value as the page or the CSV carries it (raw text) against ours."""
    if value is None:
        return shown == ""
    if kind in ("label", "link"):
        return shown == str(value)
    if kind == "count":
        return shown != "" and float(shown) == value
    return shown != "" and abs(float(shown) - value) <= TOLERANCE[kind]


def check_rows(name: str, columns: list[dict], got: list[dict[str, str]],
               want: list[dict]) -> None:
    assert len(got) == len(want), f"{name}: {len(got)} rows on the page, {len(want)} expected"
    for n, (row, mine) in enumerate(zip(got, want, strict=True)):
        for column in columns:
            if column["key"] in mine:
                assert same(column["kind"], row[column["key"]], mine[column["key"]]), \
                    f"{name} row {n} {column['key']}: page {row[column['key']]!r}, " \
                    f"database {mine[column['key']]!r}"


TABLES = """() => Object.fromEntries([...document.querySelectorAll("section.chart")].map((s) => [
  s.dataset.chart,
  [...s.querySelectorAll("tbody tr:not(.empty-row)")].map((tr) => Object.fromEntries(
    [...tr.children].map((c) => [c.dataset.key, c.dataset.value])))]))"""
# What each chart draws, summed: it must add up to the same columns of its table.
DRAWN = """() => Object.fromEntries([...document.querySelectorAll("section.chart")].map((s) => {
  const chart = Chart.getChart(s.querySelector("canvas"));
  const spec = SPECS[s.dataset.chart];
  const keys = spec.perChannel || spec.series;
  const table = [...s.querySelectorAll("tbody td")].filter((c) => keys.includes(c.dataset.key))
    .reduce((sum, c) => sum + (c.dataset.value === "" ? 0 : Number(c.dataset.value)), 0);
  const drawn = chart ? chart.data.datasets.flatMap((d) => d.data)
    .reduce((sum, v) => sum + (v === null ? 0 : v), 0) : null;
  return [s.dataset.chart, [table, drawn]];
}))"""


def wait_ready(page: Page, query_part: str = "") -> None:
    """Every chart drawn for the current filters (`query_part` of them, if given)."""
    query = f'[data-query*="{query_part}"]' if query_part else "[data-query]"
    expect(page.locator(f"section.chart[data-state=ready]{query}")).to_have_count(
        len(analytics.CHARTS), timeout=TIMEOUT)


def check_page(page: Page, db: Database, view: View) -> None:
    tables = page.evaluate(TABLES)
    want = expected(db, view)
    assert set(tables) == set(analytics.CHARTS)
    for name, chart in analytics.CHARTS.items():
        check_rows(name, chart.columns, tables[name], want[name])
    for name, (table, drawn) in page.evaluate(DRAWN).items():
        assert drawn is not None and abs(table - drawn) < 0.01, (name, table, drawn)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DeskProcess, Database]]:
    state = tmp_path_factory.mktemp("analytics-browser")
    db = f"sqlite:///{state / 'parley.db'}"
    storage.create_schema(db)
    today = datetime.now(timezone.utc).date()
    seed_month(db, 1500, DAYS, today)
    # One certain case for the editor link: a greeting, then a handoff on the next turn.
    with storage.get_engine(db).begin() as conn:
        w = Writer(conn)
        noon = datetime(today.year, today.month, today.day, 0, 30, tzinfo=timezone.utc)
        w.conversation("webchat:greeted", "en", noon)
        asked = w.message("webchat:greeted", "customer", noon)
        w.message("webchat:greeted", "bot", noon + timedelta(seconds=1), reply_to=asked,
                  reply_name="utter_greet")
        w.message("webchat:greeted", "customer", noon + timedelta(seconds=30))
        w.ticket("webchat:greeted", "intent", noon + timedelta(seconds=31), [("greet", 0.4)])
    agents.create_user("mia", "mia-password", "manager", "Mia", db)
    agents.create_user("root", "root-password", "admin", "Root", db)
    agents.create_user("cal", "cal-password", "agent", "Cal", db)
    with desk_process(db, state) as process:
        yield process, Database(db)


def open_as(browser: Browser, desk: DeskProcess, username: str) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    problems: list[str] = []

    def console(message: Any) -> None:
        # Failed loads are judged by their response below (Chromium also asks for a
        # favicon, which no desk page has).
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    def answered(response: Any) -> None:
        refused_filters = response.status == 400 and "/api/analytics?" in response.url
        if response.status >= 400 and not refused_filters:
            problems.append(f"{response.status} {response.url}")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", answered)
    desk_login(page, desk.url, username, f"{username}-password")
    yield page
    context.close()
    assert problems == [], problems  # no script error, nothing the CSP blocked


@pytest.fixture
def manager(browser: Browser, site: tuple[DeskProcess, Database]) -> Iterator[Page]:
    yield from open_as(browser, site[0], "mia")


@pytest.fixture
def admin(browser: Browser, site: tuple[DeskProcess, Database]) -> Iterator[Page]:
    yield from open_as(browser, site[0], "root")


@pytest.fixture
def agent(browser: Browser, site: tuple[DeskProcess, Database]) -> Iterator[Page]:
    yield from open_as(browser, site[0], "cal")


def test_every_chart_shows_the_databases_numbers(
        manager: Page, site: tuple[DeskProcess, Database], tmp_path: Path) -> None:
    db = site[1]
    today = datetime.now(timezone.utc).date()
    expect(manager).to_have_url(re.compile(r"/analytics\?"))  # managers land here
    wait_ready(manager)
    month = View(today - timedelta(days=29), today)
    assert (manager.input_value("#from"), manager.input_value("#to")) == (
        month.start.isoformat(), month.end.isoformat())
    check_page(manager, db, month)
    oldest = manager.locator("#chart-handled .extra")
    unhandled = [m for m in db.messages if m["author"] == "customer"
                 and m["inbox_state"] != "answered" and not any(
                     _sent(r) and r["author"] in ("bot", "agent")
                     and r["conversation_id"] == m["conversation_id"] and r["id"] > m["id"]
                     for r in db.messages)]
    first = min(unhandled, key=lambda m: (m["created_at"], m["id"]))
    expect(oldest).to_have_attribute("data-message-id", str(first["id"]))
    expect(oldest).to_contain_text(first["conversation_id"])

    # Two days of Telegram: counted per hour.
    two_days = View(today - timedelta(days=2), today - timedelta(days=1), ("telegram",))
    manager.fill("#from", two_days.start.isoformat())
    manager.fill("#to", two_days.end.isoformat())
    manager.check("input[name=channel][value=telegram]")
    manager.click("#filters button[type=submit]")
    wait_ready(manager, "channel=telegram")
    expect(manager).to_have_url(re.compile(r"channel=telegram"))
    check_page(manager, db, two_days)
    buckets = manager.locator("#chart-volume tbody th[data-key=bucket]").all_inner_texts()
    assert buckets and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00", b) for b in buckets)
    assert set(manager.locator("#chart-volume tbody td[data-key=channel]").all_inner_texts()) \
        == {"telegram"}

    with manager.expect_download() as info:
        manager.click("#chart-teams a.csv")
    download = info.value
    assert download.suggested_filename == \
        f"parley-teams-{two_days.start.isoformat()}-{two_days.end.isoformat()}.csv"
    path = tmp_path / "teams.csv"
    download.save_as(path)
    with path.open(newline="") as handle:
        table = list(csv.reader(handle))
    columns = analytics.CHARTS["teams"].columns
    assert table[0] == [c["label"] for c in columns]
    check_rows("teams.csv", columns, [dict(zip([c["key"] for c in columns], row, strict=True))
                                      for row in table[1:]], expected(db, two_days)["teams"])

    # The month again, Portuguese conversations only, any channel.
    portuguese = View(month.start, month.end, (), ("pt",))
    manager.fill("#from", month.start.isoformat())
    manager.fill("#to", month.end.isoformat())
    manager.uncheck("input[name=channel][value=telegram]")
    manager.check("input[name=language][value=pt]")
    manager.click("#filters button[type=submit]")
    wait_ready(manager, "language=pt")
    expect(manager).to_have_url(re.compile(r"language=pt"))
    check_page(manager, db, portuguese)
    assert expected(db, portuguese) != expected(db, month)  # the filter changes numbers

    # A date the server refuses: the reason shows, the charts keep the last good view.
    manager.fill("#from", "2020-01-01")
    manager.click("#filters button[type=submit]")
    expect(manager.locator("#filter-error")).to_contain_text("at most 366 days")
    check_page(manager, db, portuguese)


def test_an_admin_opens_a_reply_from_the_analytics(admin: Page) -> None:
    expect(admin.locator("#to-analytics")).to_be_visible()  # in the desk's header
    admin.click("#to-analytics")
    wait_ready(admin)
    link = admin.locator('#chart-canned_handoffs a[href="/library?reply=utter_greet"]')
    expect(link).to_be_visible()
    link.click()
    expect(admin).to_have_url(re.compile(r"/library\?reply=utter_greet$"))
    expect(admin.locator("#editor")).to_be_visible()
    expect(admin.locator("#reply-name")).to_have_text("utter_greet")


def test_an_agents_canned_reply_is_recorded_by_name(agent: Page,
                                                   site: tuple[DeskProcess, Database]) -> None:
    """Picked with `/` and sent as picked: the reply's name is stored with it (the
    analytics count it); typed text has none."""
    desk = site[0]
    ticket = handoff.escalate("webchat:canned-ui", "keyword", display_name="Canny",
                              database_url=desk.database_url).ticket
    agent.reload()  # the queue as it is now
    expect(agent.locator("#to-analytics")).to_be_hidden()  # agents do not read the numbers
    agent.locator("#tickets tr", has_text="Canny").click()
    agent.click("#claim")
    expect(agent.locator("#send")).to_be_enabled()
    agent.fill("#reply", "/greet")
    expect(agent.locator("#canned li").first).to_be_visible()
    agent.press("#reply", "Enter")
    picked = agent.input_value("#reply")
    assert picked and not picked.startswith("/")
    agent.click("#send")
    expect(agent.locator("#transcript li.agent")).to_have_count(1)
    agent.fill("#reply", "Anything else I can do?")
    agent.click("#send")
    expect(agent.locator("#transcript li.agent")).to_have_count(2)
    with storage.session_scope(desk.database_url) as session:
        sent = session.execute(
            select(Message.text, Message.reply_name)
            .where(Message.ticket_id == ticket.id, Message.author == "agent")
            .order_by(Message.id)).all()
    assert [tuple(r) for r in sent] == [(picked, "utter_greet"),
                                       ("Anything else I can do?", None)]
