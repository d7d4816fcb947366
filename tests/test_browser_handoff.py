"""End to end in a real browser: a customer on the web chat, an agent on the desk.

Both sides run in headless Chromium (Playwright, Debian's /usr/bin/chromium)
against the servers `make run` starts.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from parley.bot import agents, conversations, survey
from parley.bot.handoff import approvals
from parley.bot.storage import session_scope
from tests.conftest import RunningBot, desk_login

pytestmark = pytest.mark.servers
TIMEOUT = 15_000


@pytest.fixture(scope="module")
def agent_login(running_bot: RunningBot) -> tuple[str, str]:
    agents.create_user("ana", "ana-password", "agent", "Ana", running_bot.database_url)
    return "ana", "ana-password"


@pytest.fixture
def customer(browser: Browser, running_bot: RunningBot) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(running_bot.webchat_url)
    yield page
    context.close()


@pytest.fixture
def desk(browser: Browser, running_bot: RunningBot, agent_login: tuple[str, str]
         ) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    desk_login(page, running_bot.desk_url, *agent_login)
    expect(page.locator("#me")).to_contain_text("Ana")
    expect(page.locator("#live")).not_to_have_class(re.compile("down"))
    page.evaluate("window.__sameLoad = 42")  # survives only if the page never reloads
    yield page
    context.close()


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#send")).to_be_enabled()  # the webhook answered


def visitor_name(customer: Page) -> str:
    sender = customer.evaluate("localStorage.getItem('parley-webchat-sender')")
    return f"Web visitor {sender[-4:]}"


def wait_for_row(desk: Page, customer: Page, reason: str):
    row = desk.locator("#tickets tr", has_text=visitor_name(customer))
    expect(row).to_be_visible()
    expect(row).to_contain_text(reason)
    assert desk.evaluate("window.__sameLoad") == 42, "the desk reloaded"
    return row


def test_agent_keyword_claim_reply_resolve_and_survey(
        running_bot: RunningBot, customer: Page, desk: Page) -> None:
    say(customer, "AGENT")
    expect(customer.locator(".msg.bot").last).to_contain_text("number 1 in the queue")

    row = wait_for_row(desk, customer, "keyword")
    expect(desk.locator("#toast")).to_contain_text("New conversation waiting")
    row.click()
    expect(desk.locator("#context")).to_contain_text("keyword")
    desk.click("#claim")
    expect(customer.locator(".msg.bot", has_text="Ana from our team has joined")).to_be_visible()

    desk.fill("#reply", "Hi, I'm Ana. How can I help?")
    desk.click("#send")
    expect(customer.locator(".msg.agent")).to_contain_text("Hi, I'm Ana")

    # The customer writes again: the bot stays silent, the agent sees it, inert.
    bot_bubbles = customer.locator(".msg.bot").count()
    payload = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=1\"> hello?"
    say(customer, payload)
    line = desk.locator("#transcript li.customer").last
    expect(line).to_contain_text(payload)
    assert desk.evaluate("window.__pwned") is None
    assert desk.locator("#transcript script, #transcript img").count() == 0
    assert customer.locator(".msg.bot").count() == bot_bubbles

    desk.click("#resolve")
    expect(customer.locator(".msg.bot", has_text="handed you back")).to_be_visible()
    expect(desk.locator("#tickets tr", has_text=visitor_name(customer))).to_have_count(0)

    # The satisfaction survey follows the hand-back: buttons, then a line of text.
    expect(customer.locator(".msg.bot").last).to_contain_text("How happy are you with the answer")
    customer.locator(".buttons button", has_text="5 Excellent").click()
    expect(customer.locator(".msg.bot").last).to_contain_text("the time it took")
    customer.locator(".buttons button", has_text="4 Good").click()
    expect(customer.locator(".msg.bot").last).to_contain_text("How well did Ana help you?")
    customer.locator(".buttons button", has_text="5 Excellent").click()
    expect(customer.locator(".msg.bot").last).to_contain_text("What should we improve?")
    say(customer, "Quicker first replies")
    expect(customer.locator(".msg.bot").last).to_contain_text("Thank you for your feedback")
    # The agent sees the answers on the ticket.
    expect(desk.locator("#survey")).to_contain_text("Quicker first replies")
    expect(desk.locator("#survey")).to_contain_text("4/5")
    with session_scope(running_bot.database_url) as s:
        answered = s.execute(select(survey.SurveyAnswer.question, survey.SurveyAnswer.score)
                             .order_by(survey.SurveyAnswer.id)).all()
    assert [tuple(a) for a in answered][-4:] == [("answer", 5), ("time", 4), ("agent", 5),
                                                 ("improve", None)]

    say(customer, "how long does shipping take?")  # the bot again, as usual
    expect(customer.locator(".msg.bot", has_text="Standard shipping")).to_be_visible()


def test_two_nonsense_messages_reach_the_desk(running_bot: RunningBot, customer: Page,
                                             desk: Page) -> None:
    say(customer, "xqzvk blorptangle frumious")
    expect(customer.locator(".buttons button")).to_have_count(2)
    say(customer, "wubba lubba snorkel grape")
    expect(customer.locator(".msg.bot").last).to_contain_text("in the queue")
    row = wait_for_row(desk, customer, "low confidence")
    row.click()
    expect(desk.locator("#context")).to_contain_text("wubba lubba")
    desk.click("#claim")
    desk.fill("#reply", "/return")  # a canned reply from the writers' library
    expect(desk.locator("#canned li").first).to_contain_text("/return_policy")
    desk.press("#reply", "Enter")
    expect(desk.locator("#reply")).to_have_value(re.compile(r"^You can return unworn items"))
    desk.click("#send")
    expect(customer.locator(".msg.agent").last).to_contain_text("return unworn items")
    desk.fill("#reply", "Sorry about that, what do you need?")
    desk.click("#send")
    expect(customer.locator(".msg.agent").last).to_contain_text("what do you need")
    desk.click("#resolve")
    expect(customer.locator(".msg.bot", has_text="handed you back")).to_be_visible()


def test_bot_leaves_the_queue(running_bot: RunningBot, customer: Page, desk: Page) -> None:
    say(customer, "can I talk to a person")
    expect(customer.locator(".msg.bot").last).to_contain_text("in the queue")
    wait_for_row(desk, customer, "intent")
    say(customer, "still there?")
    expect(customer.locator(".msg.bot").last).to_contain_text("You're number")
    say(customer, "BOT")
    expect(customer.locator(".msg.bot").last).to_contain_text("back with the bot")
    expect(desk.locator("#tickets tr", has_text=visitor_name(customer))).to_have_count(0)
    say(customer, "what payment methods do you accept")
    expect(customer.locator(".msg.bot").last).to_contain_text("PayPal")


def test_account_and_users_panels(running_bot: RunningBot, browser: Browser) -> None:
    """An admin adds a user, disables and enables them, resets their password (shown
    once) and changes their own password; the login page shows the throttle message."""
    db, url = running_bot.database_url, running_bot.desk_url
    agents.create_user("adele", "adele-password", "admin", "Adele", db)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.on("dialog", lambda dialog: dialog.accept())  # the "are you sure?" confirms
    desk_login(page, url, "adele", "adele-password")
    expect(page.locator("#me")).to_contain_text("Adele")

    page.click("#users-open")
    users = page.locator("#users")
    expect(users).to_be_visible()
    page.fill("#nu-username", "cleo")
    page.fill("#nu-name", "Cleo")
    page.select_option("#nu-role", "agent")
    page.fill("#nu-password", "cleo-password")
    users.get_by_role("button", name="Add user").click()
    expect(page.locator("#users-status")).to_contain_text("Added cleo (agent)")
    row = page.locator("#users-list tr[data-user=cleo]")
    row.get_by_role("button", name="Disable: cleo").click()
    expect(row).to_contain_text("disabled")
    assert [a.disabled for a in agents.list_agents(db) if a.username == "cleo"] == [True]
    row.get_by_role("button", name="Enable: cleo").click()
    expect(row).to_contain_text("active")
    row.get_by_role("button", name="Reset password: cleo").click()
    expect(page.locator("#users-status")).to_contain_text("New password for cleo")
    made = page.locator("#users-status .secret").text_content()
    assert made and len(made) >= agents.PASSWORD_MIN
    users.get_by_role("button", name="Close").click()
    expect(users).to_be_hidden()

    other = browser.new_context()
    cleo = other.new_page()
    cleo.set_default_timeout(TIMEOUT)
    desk_login(cleo, url, "cleo", made)
    expect(cleo.locator("#me")).to_contain_text("Cleo")
    expect(cleo.locator("#users-open")).to_be_hidden()  # agents have no Users panel

    page.click("#account-open")
    page.fill("#pw-current", "not-my-password")
    page.fill("#pw-new", "adele-new-password")
    page.fill("#pw-again", "adele-new-password")
    page.locator("#password-form").get_by_role("button", name="Change password").click()
    expect(page.locator("#pw-status")).to_contain_text("The current password is wrong")
    page.fill("#pw-current", "adele-password")
    page.locator("#password-form").get_by_role("button", name="Change password").click()
    expect(page.locator("#pw-status")).to_contain_text("Password changed")
    assert agents.login("adele", "adele-new-password", db) is not None
    context.close()

    cleo.goto(f"{url}/login")
    for _ in range(5):  # login_throttle.LIMITS["user"]
        cleo.fill("input[name=username]", "cleo")
        cleo.fill("input[name=password]", "a-wrong-guess")
        cleo.click("button[type=submit]")
        expect(cleo.locator(".error")).to_contain_text("Wrong username or password")
    cleo.fill("input[name=username]", "cleo")
    cleo.fill("input[name=password]", made)
    cleo.click("button[type=submit]")
    expect(cleo.locator(".error")).to_contain_text(
        re.compile(r"Too many failed attempts for this user; try again in 1[45] minutes"))
    other.close()


def logged_in(browser: Browser, running_bot: RunningBot, username: str, password: str,
              name: str) -> Page:
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT)
    desk_login(page, running_bot.desk_url, username, password)
    expect(page.locator("#me")).to_contain_text(name)
    expect(page.locator("#live")).not_to_have_class(re.compile("down"))
    page.evaluate("window.__sameLoad = 42")
    return page


def test_a_trainees_reply_is_held_approved_by_a_supervisor_and_delivered(
        running_bot: RunningBot, browser: Browser, customer: Page) -> None:
    """An admin makes Tina a trainee. Her replies wait: the supervisor, Sam, sees
    them appear live, sends one back with a comment (Tina sees it), edits and
    approves the next, which the customer then gets; the transcript names Sam."""
    db = running_bot.database_url
    agents.create_user("tina", "tina-password", "agent", "Tina", db)
    agents.create_user("sam", "sam-password", "supervisor", "Sam", db)
    agents.create_user("ada", "ada-password", "admin", "Ada", db)
    admin = logged_in(browser, running_bot, "ada", "ada-password", "Ada")
    admin.click("#users-open")
    row = admin.locator("#users-list tr[data-user=tina]")
    row.get_by_role("button", name="Make trainee: tina").click()
    expect(row).to_contain_text("agent (trainee)")
    admin.context.close()

    tina = logged_in(browser, running_bot, "tina", "tina-password", "Tina (agent, trainee)")
    sam = logged_in(browser, running_bot, "sam", "sam-password", "Sam")
    expect(sam.locator("#approvals")).to_be_visible()
    expect(tina.locator("#approvals")).to_be_hidden()

    say(customer, "AGENT")
    wait_for_row(tina, customer, "keyword").click()
    tina.click("#claim")
    expect(customer.locator(".msg.bot", has_text="Tina from our team has joined")).to_be_visible()
    expect(tina.locator("#send")).to_have_text("Send for approval")
    tina.fill("#reply", "wait")
    tina.click("#send")
    expect(tina.locator("#toast")).to_contain_text("Sent to a supervisor for approval")
    expect(tina.locator("#transcript li.held")).to_contain_text("waiting for a supervisor")

    # Sam's queue fills live (no reload), with a toast.
    held = sam.locator("#approvals-list li", has_text=visitor_name(customer))
    expect(held).to_have_count(1)
    expect(sam.locator("#approvals-count")).to_have_text("1")
    held.get_by_role("textbox", name=re.compile("^Comment")).fill("Greet the customer first")
    held.get_by_role("button", name="Send back").click()
    expect(sam.locator("#approvals-list li")).to_have_count(0)
    expect(tina.locator("#transcript li.held")).to_contain_text("Greet the customer first")
    expect(tina.locator("#transcript li.note")).to_contain_text("sent back by Sam")

    tina.fill("#reply", "Hello! Let me check yor order.")
    tina.click("#send")
    held = sam.locator("#approvals-list li", has_text=visitor_name(customer))
    expect(held).to_have_count(1)
    held.get_by_role("textbox", name=re.compile("^Reply by Tina")).fill(
        "Hello! Let me check your order.")
    # Another held reply arrives, then Tina withdraws it: Sam's list changes live
    # around the edit he is making, which stays.
    tina.fill("#reply", "one more thing")
    tina.click("#send")
    expect(sam.locator("#approvals-list li")).to_have_count(2)
    tina.locator("#transcript li.held", has_text="one more thing").get_by_role(
        "button", name="Withdraw").click()
    expect(sam.locator("#approvals-list li")).to_have_count(1)
    expect(held.get_by_role("textbox", name=re.compile("^Reply by Tina"))).to_have_value(
        "Hello! Let me check your order.")
    customer.wait_for_timeout(1000)  # a long-poll round: nothing held reached the customer
    assert customer.locator(".msg.agent").count() == 0
    clicked = time.monotonic()
    held.get_by_role("button", name="Approve").click()
    expect(customer.locator(".msg.agent")).to_have_text(re.compile("Let me check your order"))
    print(f"approve click to the customer's page: {time.monotonic() - clicked:.2f} s")
    assert customer.locator(".msg.agent").count() == 1
    expect(tina.locator("#transcript li.agent")).to_contain_text("approved by Sam")
    assert sam.evaluate("window.__sameLoad") == 42 and tina.evaluate("window.__sameLoad") == 42

    with session_scope(db) as s:
        reviews = s.execute(select(approvals.ReplyReview.status, approvals.ReplyReview.draft,
                                   approvals.ReplyReview.text)
                            .order_by(approvals.ReplyReview.id)).all()
    assert [tuple(r) for r in reviews][-3:] == [
        ("returned", "wait", "wait"),
        ("approved", "Hello! Let me check yor order.", "Hello! Let me check your order."),
        ("withdrawn", "one more thing", "one more thing")]
    tina.click("#resolve")
    expect(customer.locator(".msg.bot", has_text="handed you back")).to_be_visible()
    tina.context.close()
    sam.context.close()


def test_an_admin_exports_then_erases_a_customer_from_the_desk(
        running_bot: RunningBot, browser: Browser, customer: Page) -> None:
    """"Customer data": the export downloads the customer's messages as JSON, the
    erasure needs ERASE typed and removes them, and both show in the audit trail."""
    db = running_bot.database_url
    say(customer, "how long does shipping take?")
    expect(customer.locator(".msg.bot", has_text="Standard shipping")).to_be_visible()
    sender = customer.evaluate("localStorage.getItem('parley-webchat-sender')")
    conv = f"webchat:{sender}"
    agents.create_user("pia", "pia-password", "admin", "Pia", db)
    admin = logged_in(browser, running_bot, "pia", "pia-password", "Pia")
    admin.click("#privacy-open")
    expect(admin.locator("#privacy")).to_be_visible()
    admin.fill("#privacy-ids", conv)
    with admin.expect_download() as download:
        admin.click("#privacy-export")
    exported = json.loads(Path(download.value.path()).read_text())
    [mine] = exported["conversations"]
    assert mine["id"] == conv
    assert "how long does shipping take?" in [m["text"] for m in mine["messages"]]
    expect(admin.locator("#privacy-status")).to_contain_text("Exported 1 conversation")

    admin.click("#privacy-erase")  # not confirmed: nothing happens but a clear message
    expect(admin.locator("#privacy-status")).to_contain_text("Type ERASE to confirm")
    assert conversations.transcript(conv, db) != []
    admin.fill("#privacy-confirm", "ERASE")
    admin.click("#privacy-erase")
    expect(admin.locator("#privacy-status")).to_contain_text(f"Erased {conv}")
    assert conversations.transcript(conv, db) == []
    trail = admin.locator("#privacy-audit tr")
    expect(trail.first).to_contain_text("erase")
    expect(trail.first).to_contain_text("Pia")
    expect(trail.nth(1)).to_contain_text("export")
    admin.context.close()
