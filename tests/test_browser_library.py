"""A writer edits a reply, an admin approves it, and the running bot says the new
text at once: no retrain, no restart. Real Chromium against `make run`'s servers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from parley.bot import agents
from tests.conftest import RunningBot, desk_login

pytestmark = pytest.mark.servers
TIMEOUT = 15_000
QUESTION = "what payment methods do you accept"
NEW_TEXT = "We take cards, PayPal, Apple Pay and Klarna. Hi {first_name}!"
NEW_TEXT_PT = "Aceitamos cartões, PayPal, Apple Pay e Klarna. Olá {first_name}!"


@pytest.fixture(scope="module")
def people(running_bot: RunningBot) -> None:
    agents.create_user("wes", "wes-password", "writer", "Wes", running_bot.database_url)
    agents.create_user("root", "root-password", "admin", "Root", running_bot.database_url)


def open_page(browser: Browser, running_bot: RunningBot, username: str) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    desk_login(page, running_bot.desk_url, username, f"{username}-password")
    yield page
    context.close()


@pytest.fixture
def writer(browser: Browser, running_bot: RunningBot, people: None) -> Iterator[Page]:
    yield from open_page(browser, running_bot, "wes")


@pytest.fixture
def admin(browser: Browser, running_bot: RunningBot, people: None) -> Iterator[Page]:
    yield from open_page(browser, running_bot, "root")


def test_writer_edits_admin_approves_customer_gets_it(
        running_bot: RunningBot, writer: Page, admin: Page) -> None:
    before = running_bot.say("lib-before", QUESTION)
    assert before[0]["text"].startswith("We accept Visa")

    expect(writer).to_have_url(f"{running_bot.desk_url}/library")  # writers land here
    writer.fill("#search", "payment")
    writer.click("li[data-name=utter_payment_methods]")
    expect(writer.locator("#reply-name")).to_have_text("utter_payment_methods")

    # Too long for Messenger: the preview counts it and the check names the fix.
    writer.fill(".v-text", "x" * 2001)
    counter = writer.locator(".phone[data-channel=messenger][data-language=en] .counter")
    expect(counter).to_have_text("2001 / 2000 characters")
    expect(counter).to_have_class("counter over")
    expect(writer.locator("#problems")).to_contain_text("Messenger shows at most 2000")
    expect(writer.locator("#submit")).to_be_disabled()

    writer.fill(".v-text", NEW_TEXT)
    # A placeholder new in the English text must reach the Portuguese variant too.
    expect(writer.locator("#problems")).to_contain_text("(pt): leaves out {first_name}")
    writer.locator(".v-text").nth(1).fill(NEW_TEXT_PT)
    expect(writer.locator("#problems")).to_contain_text("No problems on any channel")
    sample = writer.locator("#samples label", has_text="{first_name}").locator("input")
    sample.fill("Marta")
    expect(writer.locator(".phone[data-channel=telegram][data-language=en] .bubble")).to_have_text(
        NEW_TEXT.replace("{first_name}", "Marta"))
    writer.click("#submit")
    expect(writer.locator("#toast")).to_contain_text("Submitted for review")
    expect(writer.locator("#review li")).to_have_count(1)
    expect(writer.locator("#review li .approve")).to_have_count(0)  # never their own

    assert running_bot.say("lib-pending", QUESTION)[0]["text"] == before[0]["text"]

    admin.goto(f"{running_bot.desk_url}/library")
    item = admin.locator("#review li", has_text="utter_payment_methods")
    item.click()
    expect(admin.locator("#diff")).to_contain_text("+  - text: " + NEW_TEXT)
    item.locator(".approve").click()
    expect(admin.locator("#toast")).to_contain_text("utter_payment_methods is live")
    approved = time.monotonic()

    expected = NEW_TEXT.replace("{first_name}", "there")
    seen = ""
    while time.monotonic() - approved < 2.0:  # DESIGN invariant 4
        seen = running_bot.say(f"lib-after-{time.monotonic_ns()}", QUESTION)[0]["text"]
        if seen == expected:
            break
    assert seen == expected, f"not live 2 s after approval: {seen!r}"
    expect(admin.locator("#history li").first).to_contain_text("published")


def test_a_writer_changes_their_password_from_the_library(
        browser: Browser, running_bot: RunningBot) -> None:
    """Every role has "Account", not only those who use the desk page."""
    agents.create_user("willa", "willa-password", "writer", "Willa", running_bot.database_url)
    page = next(open_page(browser, running_bot, "willa"))
    expect(page.locator("h1, strong").first).to_contain_text("Reply library")
    page.click("#account-open")
    expect(page.locator("#account-who")).to_contain_text("willa (writer)")
    page.fill("#pw-current", "willa-password")
    page.fill("#pw-new", "willa-better-password")
    page.fill("#pw-again", "willa-better-password")
    page.locator("#password-form").get_by_role("button", name="Change password").click()
    expect(page.locator("#pw-status")).to_contain_text("Password changed")
    assert agents.login("willa", "willa-better-password", running_bot.database_url) is not None
    assert agents.login("willa", "willa-password", running_bot.database_url) is None
