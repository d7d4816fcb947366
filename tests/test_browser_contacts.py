"""End to end in a real browser: one customer on two channels. She wrote on WhatsApp
before (a ticket handled, rated and noted); now she asks for a person on the web chat
and types her phone number; the agent sees her WhatsApp history beside the ticket,
and finds her in the Contacts search by name and by channel. Her husband's WhatsApp
number, which she typed, was not linked automatically (two verified numbers): the
agent sees him as "may be the same person" and links him by hand. Her WhatsApp name,
a note and a survey answer hold markup: shown as text, never run.

Headless Chromium (Playwright, Debian's /usr/bin/chromium) against the servers
`make run` starts; the WhatsApp conversation is stored through the inbox path its
connector uses (`connectors.base.store_masked`).
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, expect

from parley.bot import agents, contacts, handoff, personal_data, storage
from parley.bot.storage import utcnow
from parley.bot.survey import Survey, SurveyAnswer
from parley.connectors.base import store_masked
from parley.connectors.gate import Inbound
from tests.conftest import RunningBot, desk_login, wait_until

pytestmark = pytest.mark.servers
TIMEOUT = 15_000
WA = "whatsapp:351912345678"
RUI = "whatsapp:351934567890"  # her husband
XSS = '<img src=x onerror="window.__pwned=1">'
NAME = "Maria Silva " + XSS
NOTE = "Parcel lost by the carrier; resent " + XSS


def whatsapp_past(db: str, agent_id: int) -> int:
    """Maria on WhatsApp last week: a ticket claimed, noted, tagged, resolved, rated;
    she gave her husband's number, and he has written on WhatsApp too."""
    store_masked(Inbound(RUI, "Boa tarde", "wamid.contacts-0", "Rui Silva"),
                 personal_data.KINDS, db)
    store_masked(Inbound(WA, "Olá, a minha encomenda não chegou", "wamid.contacts-1", NAME),
                 personal_data.KINDS, db)
    store_masked(Inbound(WA, "Liguem ao meu marido: 934 567 890", "wamid.contacts-2", NAME),
                 personal_data.KINDS, db)
    ticket = handoff.escalate(WA, "keyword", database_url=db).ticket
    handoff.claim_ticket(ticket.id, agent_id, db)
    handoff.add_note(ticket.id, agent_id, NOTE, db)
    handoff.set_tags(ticket.id, ["lost-parcel"], db)
    handoff.resolve(ticket.id, agent_id, db)
    with storage.session_scope(db) as s:
        survey = s.execute(sa.select(Survey).where(Survey.ticket_id == ticket.id)).scalar_one()
        s.add_all([SurveyAnswer(survey_id=survey.id, question="answer", score=4,
                                created_at=utcnow()),
                   SurveyAnswer(survey_id=survey.id, question="improve", text=XSS,
                                created_at=utcnow())])
    return ticket.id


def test_a_contacts_history_across_two_channels(running_bot: RunningBot, browser: Browser,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    db = running_bot.database_url
    # Hashes made here must match the bot's: the same install, so the same key file.
    monkeypatch.setenv("PARLEY_VAR_DIR", str(running_bot.state))
    ana = agents.create_user("cora", "cora-password", "agent", "Cora", db).id
    past = whatsapp_past(db, ana)

    context = browser.new_context()
    customer = context.new_page()
    customer.set_default_timeout(TIMEOUT)
    customer.goto(running_bot.webchat_url)
    customer.fill("#text", "AGENT")
    customer.press("#text", "Enter")
    expect(customer.locator(".msg.bot").last).to_contain_text("in the queue")
    customer.fill("#text", "my number is +351 912 345 678")
    customer.press("#text", "Enter")
    expect(customer.locator("#send")).to_be_enabled()  # the webhook answered: stored
    sender = customer.evaluate("localStorage.getItem('parley-webchat-sender')")
    web = f"webchat:{sender}"
    assert wait_until(lambda: {c["id"] for c in contacts.history(web, db)["conversations"]}
                      == {web, WA}), "the typed number did not link the two conversations"

    agent_side = browser.new_context()
    desk = agent_side.new_page()
    desk.set_default_timeout(TIMEOUT)
    desk_login(desk, running_bot.desk_url, "cora", "cora-password")
    row = desk.locator("#tickets tr", has_text=f"Web visitor {sender[-4:]}")
    row.click()
    expect(desk.locator("#transcript li.customer").last).to_contain_text("my number is [phone]")

    section = desk.locator("#contact")
    other = section.locator(f".contact-conversations li[data-conversation='{WA}']")
    expect(other).to_contain_text("whatsapp")
    expect(other).to_contain_text(NAME)  # the markup as text
    expect(other).to_contain_text("linked automatically")
    ticket = section.locator(f".contact-tickets li[data-ticket='{past}']")
    expect(ticket).to_contain_text(f"#{past} whatsapp")
    expect(ticket).to_contain_text("resolved")
    expect(ticket).to_contain_text("Cora")
    expect(ticket).to_contain_text("lost-parcel")
    expect(ticket.locator(".score")).to_have_text("★★★★☆ 4/5")
    expect(ticket.locator(".contact-note")).to_have_text("Cora: " + NOTE)
    expect(ticket.locator(".ratings dd").last).to_have_text(XSS)
    expect(section.locator(".contact-identifiers")).to_contain_text("phone · verified · whatsapp")
    expect(section.locator(".contact-identifiers")).to_contain_text("phone · typed · webchat")
    assert section.locator("script, img").count() == 0
    assert desk.evaluate("window.__pwned") is None

    # Her husband: not linked automatically; the agent links him by hand.
    maybe = section.locator(f".contact-maybe li[data-conversation='{RUI}']")
    expect(maybe).to_contain_text("Rui Silva")
    maybe.get_by_role("button", name="Link").click()
    linked = section.locator(f".contact-conversations li[data-conversation='{RUI}']")
    expect(linked).to_contain_text("linked by Cora")
    expect(section.locator(".contact-maybe")).to_have_count(0)
    assert {c["id"] for c in contacts.history(web, db)["conversations"]} == {web, WA, RUI}

    # The Contacts search: by name, then by channel alone.
    desk.click("#contacts-open")
    dialog = desk.locator("#contacts")
    expect(dialog).to_be_visible()
    desk.fill("#contacts-q", "maria")
    dialog.get_by_role("button", name="Search").click()
    result = dialog.locator(".contact-result").filter(has_text="Maria Silva")
    expect(result).to_have_count(1)
    expect(result.locator(f"li[data-conversation='{WA}']")).to_have_class(re.compile("matched"))
    expect(result.locator(f"li[data-conversation='{web}']")).to_contain_text("webchat")
    expect(result).to_contain_text("this ticket's customer")
    desk.fill("#contacts-q", "")
    desk.select_option("#contacts-channel", "whatsapp")
    dialog.get_by_role("button", name="Search").click()
    expect(desk.locator("#contacts-status")).to_contain_text("1 found")
    expect(dialog.locator(".contact-result")).to_have_count(1)
    expect(dialog.locator(".contact-result")).to_contain_text(NAME)
    assert desk.locator("img").count() == 0  # anywhere in the desk
    desk.wait_for_timeout(500)  # an error handler would have run by now
    assert desk.evaluate("window.__pwned") is None
    agent_side.close()
    context.close()
