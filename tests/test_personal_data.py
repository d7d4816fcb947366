"""Personal data masking: each kind's true and false positives in English and Portuguese,
the keyed hashes, the one place messages are masked on their way in, and a whole
conversation through a fake Telegram and the web chat whose card number and email
reach no store, no desk answer and no log."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.asking import PRIVACY_REMINDER, ActionAskOrderNumber
from parley.bot import agents, conversations, language, personal_data
from parley.bot.conversations import Message
from parley.bot.handoff.tickets import Ticket
from parley.bot.personal_data import KINDS, digest, mask, mask_key, phone_value
from parley.bot.settings import MASKABLE, load_settings
from parley.bot.storage import session_scope
from parley.connectors import gate
from parley.connectors.base import masked, store_masked
from tests.conftest import wait_settled, wait_until
from tests.fakes.stack import start_stack
from tests.fakes.telegram_api import FakeTelegram, serve, stop

KEY = b"k" * 32


def masked_text(text: str, kinds: tuple[str, ...] = KINDS) -> str:
    return mask(text, kinds, key=KEY).text


# -- true positives --------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    # cards: Visa, Mastercard (5- and 2-series), Amex, Discover; spaces, dashes, none
    ("my card 4111 1111 1111 1111 was charged twice",
     "my card [card] was charged twice"),
    ("o meu cartão 5555-5555-5555-4444 foi cobrado duas vezes",
     "o meu cartão [card] foi cobrado duas vezes"),
    ("card: 2223003122003222.", "card: [card]."),
    ("amex 3782 822463 10005 please", "amex [card] please"),
    ("cartão 6011111111111117, validade 12/27", "cartão [card], validade 12/27"),
    ("two cards 4111 1111 1111 1111 5555 5555 5555 4444 ok", "two cards [card] [card] ok"),
    # IBANs: grouped by 4, plain, lower case, letters in the account part
    ("please refund to PT50 0002 0123 1234 5678 9015 4 thanks",
     "please refund to [iban] thanks"),
    ("o meu IBAN é pt50000201231234567890154", "o meu IBAN é [iban]"),
    ("GB82 WEST 1234 5698 7654 32 is my account", "[iban] is my account"),
    ("conta NL91ABNA0417164300; BR9700360305000010009795493P1",
     "conta [iban]; [iban]"),
    # email addresses
    ("mail me at Maria.Lopes+shop@Example.co.uk.", "mail me at [email]."),
    ("o meu email é joão_silva@correio.pt, obrigado", "o meu email é [email], obrigado"),
    ("(ana@northwind-store.com)", "([email])"),
    # phones: international, Portuguese mobiles, Brazilian, North American
    ("call me on +351 912 345 678 tomorrow", "call me on [phone] tomorrow"),
    ("ligue para o 912 345 678 ou 936-123-456", "ligue para o [phone] ou [phone]"),
    ("o meu número é 912345678", "o meu número é [phone]"),
    ("whatsapp 00351 912 345 678", "whatsapp [phone]"),
    ("meu celular é (11) 91234-5678 ou 11 9 1234-5678", "meu celular é [phone] ou [phone]"),
    ("fixo (21) 3456-7890", "fixo [phone]"),
    ("call (555) 123-4567 or 555-123-4567 or 555.123.4567",
     "call [phone] or [phone] or [phone]"),
    ("+1 (555) 123-4567 / 1-800-555-1234 / +44 20 7946 0958",
     "[phone] / [phone] / [phone]"),
    ("tel:+351912345678", "tel:[phone]"),
])
def test_personal_data_is_masked(text: str, expected: str) -> None:
    assert masked_text(text) == expected


# -- false positives -------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    # order numbers: 5-8 digits, or any number labelled as an order
    "where is order 10234?", "a minha encomenda #10872 não chegou", "order 12345678",
    "order #912345678", "encomenda 912345678", "order number: 912 345 678",
    "pedido nº 912345678", "ref 555-123-4567",
    # dates and times
    "it was on 2026-11-24 at 10:30", "entregue a 24/11/2026 às 14h05", "em 24.11.2026",
    "between 2026-11-24 and 2026-12-01",
    # prices
    "it cost €12.50", "paid 1,299.00 for it", "paguei R$ 1.299,00", "custou 1 299,00 €",
    "R$ 912 345 678", "912 345 678 €", "total 912 345 678,50",
    # tracking codes
    "tracking LX123456789PT", "UPS 1Z999AA10123456784", "USPS 9400 1000 0000 0000 0000 00",
    "rastreio 9400100000000005", "DHL 1234567890",
    # Luhn-invalid cards and mod-97-invalid IBANs stay as typed
    "my card 4111 1111 1111 1112", "IBAN PT50 0002 0123 1234 5678 9015 5",
    "GB82 WEST 1234 5698 7654 33", "PT50 is not an IBAN",
    # Luhn-valid numbers no card starts with, and digits inside a longer run
    "id 1234567890123452", "ref 1234567890123456785", "41111111111111110",
    # not emails, not phones
    "@northwind on instagram", "user@localhost", "a@b", "10 + 20 = 30",
    "+12.50 on the bill", "1234567890", "ids 0012345678 and 0035191234567",
    "quantidade 3, tamanho 42, 2 x 19,99",
])
def test_what_is_not_personal_data_stays(text: str) -> None:
    assert masked_text(text) == text


def test_a_longer_digit_run_hides_no_card_and_tracking_numbers_stay() -> None:
    # a Luhn-valid card number inside a longer unbroken run is not a card
    assert masked_text("code 94111111111111111") == "code 94111111111111111"
    assert masked_text("card 4111111111111111a") == "card 4111111111111111a"


# -- kinds, settings, hashes -----------------------------------------------------------
SAMPLE = ("card 4111 1111 1111 1111, iban PT50 0002 0123 1234 5678 9015 4, "
          "email maria@example.com, phone +351 912 345 678")


def test_only_the_configured_kinds_are_masked() -> None:
    assert masked_text(SAMPLE, ()) == SAMPLE
    assert masked_text(SAMPLE, ("email",)) == (
        "card 4111 1111 1111 1111, iban PT50 0002 0123 1234 5678 9015 4, "
        "email [email], phone +351 912 345 678")
    assert masked_text(SAMPLE, ("card", "phone")) == (
        "card [card], iban PT50 0002 0123 1234 5678 9015 4, "
        "email maria@example.com, phone [phone]")
    assert masked_text(SAMPLE) == "card [card], iban [iban], email [email], phone [phone]"
    with pytest.raises(ValueError, match="passport"):
        mask(SAMPLE, ("passport",), key=KEY)


def test_a_card_is_never_taken_for_a_phone_when_cards_are_not_masked() -> None:
    text = "4111 1111 1111 1111 e 936 123 456"
    assert masked_text(text, ("phone",)) == "4111 1111 1111 1111 e [phone]"


def test_the_settings_file_turns_masking_off_or_to_a_subset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(personal_data.SECRET_ENV, "s" * 32)
    assert set(MASKABLE) == set(KINDS)
    item = gate.Inbound("telegram:1", SAMPLE)
    (tmp_path / "parley.yml").write_text("personal_data:\n  mask: off\n")
    off = load_settings(env={}, root=tmp_path).mask
    assert off == () and masked(item, off) is item
    (tmp_path / "parley.yml").write_text("personal_data:\n  mask: [iban]\n")
    only_iban = load_settings(env={}, root=tmp_path).mask
    assert only_iban == ("iban",)
    assert masked(item, only_iban).text == SAMPLE.replace(
        "PT50 0002 0123 1234 5678 9015 4", "[iban]")


def test_equal_values_hash_equal_whatever_their_format() -> None:
    def hashes(text: str) -> list[tuple[str, str]]:
        return list(mask(text, key=KEY).found)

    phone = ("phone", digest("phone", "+351912345678", KEY))
    for typed in ("+351 912 345 678", "912 345 678", "912345678", "00351 912-345-678"):
        assert hashes(f"tel {typed}") == [phone], typed
    # a platform's own number (WhatsApp's wa_id) compares with one typed in a chat
    assert digest("phone", phone_value("351912345678"), KEY) == phone[1]
    assert hashes("(11) 91234-5678") == hashes("+55 11 91234 5678")
    assert hashes("(555) 123-4567") == hashes("+1 555 123 4567") == hashes("1-555-123-4567")
    assert hashes("Maria@Example.com") == hashes("maria@example.com")
    assert hashes("PT50 0002 0123 1234 5678 9015 4") == hashes("pt50000201231234567890154")
    assert hashes("4111-1111-1111-1111") == hashes("4111111111111111")
    # distinct values, kinds and keys differ; a value twice is kept once
    assert hashes("912 345 678") != hashes("913 345 678")
    assert digest("email", "a@b.pt", KEY) != digest("email", "a@b.pt", b"x" * 32)
    assert digest("email", "x", KEY) != digest("phone", "x", KEY)
    assert len(hashes("a@b.pt and again a@b.pt, A@B.PT")) == 1
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for _, h in hashes(SAMPLE))
    assert [k for k, _ in hashes(SAMPLE)] == ["card", "iban", "email", "phone"]


def test_the_key_is_the_secret_or_one_random_private_key_per_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(personal_data.SECRET_ENV, raising=False)
    var = tmp_path / "var"
    with ThreadPoolExecutor(8) as pool:  # first use from several threads at once
        keys = set(pool.map(lambda _: mask_key(var), range(8)))
    assert len(keys) == 1
    key_file = var / personal_data.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in var.iterdir()] == [personal_data.KEY_FILE]  # no drafts left
    assert keys == {key_file.read_text().strip().encode()}
    personal_data._keys.clear()  # a new process reads the same key
    assert mask_key(var) in keys
    other = tmp_path / "other"
    assert mask_key(other) not in keys  # another install, another key
    assert mask_key(var, secret="shared-secret") == b"shared-secret"
    monkeypatch.setenv(personal_data.SECRET_ENV, "from-the-environment")
    assert mask_key(var) == b"from-the-environment"


def test_a_broken_key_file_is_an_error_not_a_weak_key(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(personal_data.SECRET_ENV, raising=False)
    (tmp_path / personal_data.KEY_FILE).write_text("\n")
    with pytest.raises(ValueError, match="no usable key"):
        mask_key(tmp_path)


def test_huge_messages_are_masked_in_linear_time() -> None:
    """Adversarial input must not stall the worker: a few MB of each shape at once."""
    text = " ; ".join(["a" * 200_000, "1 " * 100_000, "a@" * 100_000, "PT50 " * 40_000,
                    "+(" * 100_000, "9" * 200_000, "4111 1111 1111 1111 " * 10_000])
    started = time.process_time()
    result = mask(text, key=KEY)
    assert result.text.count("[card]") == 10_000
    assert time.process_time() - started < 60  # quadratic would be hours


# -- the way in ------------------------------------------------------------------------
def test_the_inbound_message_is_masked_into_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(personal_data.SECRET_ENV, "s" * 32)
    item = gate.Inbound("whatsapp:351912345678", "my email is maria@example.com",
                        platform_message_id="wamid.1", display_name="+351 912 345 678",
                        metadata={"chat_id": 7, "callback_query_id": "4111111111111111111"})
    out = masked(item, KINDS)
    assert item.text == "my email is maria@example.com"  # Inbound stays immutable
    assert (out.text, out.display_name) == ("my email is [email]", "[phone]")
    assert out.platform_message_id == "wamid.1"
    # platform ids are kept as they are: they are not the customer's words
    assert out.metadata["chat_id"] == 7
    assert out.metadata["callback_query_id"] == "4111111111111111111"
    assert out.metadata["masked"] == [
        {"kind": "email", "hash": digest("email", "maria@example.com")},
        {"kind": "phone", "hash": digest("phone", phone_value("351912345678"))}]
    plain = gate.Inbound("telegram:1", "where is order 10234")
    assert masked(plain, KINDS) is plain


def test_the_stored_message_holds_the_placeholders_and_hashes(
        any_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(personal_data.SECRET_ENV, "s" * 32)
    item = gate.Inbound("telegram:42", "charged twice on 4111 1111 1111 1111, "
                        "write to maria@example.com", platform_message_id="u1",
                        display_name="Maria", metadata={"chat_id": 42})
    message_id = store_masked(item, KINDS, any_db)
    assert message_id is not None
    assert store_masked(item, KINDS, any_db) is None  # a redelivery is still one message
    with session_scope(any_db) as session:
        row = session.get(Message, message_id)
        assert row is not None
        text, payload = row.text, row.payload
    assert text == "charged twice on [card], write to [email]"
    assert payload["chat_id"] == 42
    assert [m["kind"] for m in payload["masked"]] == ["card", "email"]
    assert payload["masked"][0]["hash"] == digest("card", "4111111111111111")
    [line] = conversations.transcript("telegram:42", any_db)
    assert line.text == text
    assert "4111" not in json.dumps(line.as_json()) and "maria@" not in json.dumps(
        line.as_json())


# -- language detection ------------------------------------------------------------------
def test_placeholders_are_no_words_to_language_detection() -> None:
    assert language.detect("ok [email] [phone]") == "en"  # what it did before
    assert language.detect(language.opening(["ok [email] [phone]"])) is None
    assert language.opening(["o meu email é [email]"]) == "o meu email é  "
    assert language.detect(language.opening(
        ["olá, o meu email é [email]", "e o telemóvel [phone], obrigado"])) == "pt"


# -- the reminder --------------------------------------------------------------------------
def ask(events: list[dict[str, Any]]) -> list[str]:
    dispatcher = CollectingDispatcher()
    tracker = Tracker("telegram:1", {"requested_slot": "order_number"}, {}, events, False,
                      None, {"name": "order_form"}, "order_form")
    asyncio.run(ActionAskOrderNumber().run(dispatcher, tracker, {}))
    return [m["response"] for m in dispatcher.messages]


def test_asking_for_the_order_number_reminds_once_per_form() -> None:
    opened = [{"event": "user", "text": "where is my order"},
              {"event": "active_loop", "name": "order_form"}]
    assert ask(opened) == ["utter_ask_order_number", PRIVACY_REMINDER]
    reminded = [*opened, {"event": "bot", "text": "What's your order number?",
                          "metadata": {"utter_action": "utter_ask_order_number"}},
                {"event": "bot", "text": "Never send…",
                 "metadata": {"utter_action": PRIVACY_REMINDER}},
                {"event": "user", "text": "its 123"}]
    assert ask(reminded) == ["utter_ask_order_number"]  # asked again: no second reminder
    reopened = [*reminded, {"event": "active_loop", "name": None},
                {"event": "user", "text": "and my other order?"},
                {"event": "active_loop", "name": "order_form"}]
    assert ask(reopened) == ["utter_ask_order_number", PRIVACY_REMINDER]


def test_the_reminder_is_written_in_both_languages_and_used_by_the_flows() -> None:
    import yaml

    from tests import REPO_ROOT

    replies = yaml.safe_load((REPO_ROOT / "data" / "responses.yml").read_text())["responses"]
    texts = {(v.get("metadata") or {}).get("language", "en"): v["text"]
             for v in replies[PRIVACY_REMINDER]}
    assert "card" in texts["en"] and "password" in texts["en"]
    assert "cartão" in texts["pt"] and "palavras-passe" in texts["pt"]
    domain = yaml.safe_load((REPO_ROOT / "domain.yml").read_text())
    assert "action_ask_order_number" in domain["actions"]
    rules = yaml.safe_load((REPO_ROOT / "data" / "rules.yml").read_text())["rules"]
    complaint = next(r for r in rules if r["steps"][0] == {"intent": "complaint"})
    assert complaint["steps"][1:] == [{"action": "utter_complaint"},
                                      {"action": PRIVACY_REMINDER}]


# -- end to end ------------------------------------------------------------------------------
SECRET = "webhook-secret-pii"
CARD = "4539 1488 0343 6467"
EMAIL = "maria.lopes@example.com"
# The card's digits in any grouping a store or log could hold them, and the address.
LEAKS = ("4539148803436467", "4539 1488", "1488 0343", "0343 6467", "4539-1488",
         "maria.lopes", "lopes@example")


def leaks(blob: str | bytes) -> list[str]:
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [part for part in LEAKS if part in text]


class Stack:
    def __init__(self) -> None:
        self.fake = FakeTelegram()
        self.server, api_url = serve(self.fake)
        self.stack = start_stack("pii", {"parley.connectors.telegram.TelegramInput": {
            "access_token": self.fake.token, "webhook_secret": SECRET,
            "api_base_url": api_url}})

    def telegram(self, chat: int, text: str) -> None:
        update = {"update_id": int(time.time() * 1000) % 2**31, "message": {
            "message_id": chat, "date": int(time.time()), "text": text,
            "chat": {"id": chat, "type": "private"},
            "from": {"id": chat, "is_bot": False, "first_name": "Maria", "last_name": "Lopes"}}}
        resp = httpx.post(f"{self.stack.rasa_url}/webhooks/telegram/webhook", json=update,
                          headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=60)
        assert resp.status_code == 200, resp.text
        wait_settled(self.stack.database_url)


@pytest.fixture(scope="module")
def pii() -> Iterator[Stack]:
    # Rasa at DEBUG logs every message's text: the logs then would show any leak.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOG_LEVEL", "DEBUG")
        stack = Stack()
    try:
        yield stack
    finally:
        stack.stack.stop()
        stop(stack.server)


def tracker_rows(stack: Stack, conversation_id: str) -> list[dict[str, Any]]:
    path = stack.stack.state_dir / "tracker.db"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT data FROM events WHERE sender_id = ? ORDER BY id",
                          (conversation_id,)).fetchall()
    return [json.loads(data) for (data,) in rows]


@pytest.mark.servers
def test_a_card_and_an_email_reach_no_store_desk_or_log(pii: Stack) -> None:
    chat = 7_100_001
    conv = f"telegram:{chat}"
    pii.telegram(chat, f"my card {CARD} was charged twice!! email me at {EMAIL}")
    pii.telegram(chat, "AGENT")
    db = pii.stack.database_url

    # the transcript: placeholders, and the values' hashes with the message
    lines = conversations.transcript(conv, db)
    first = next(m for m in lines if m.author == "customer")
    assert first.text == "my card [card] was charged twice!! email me at [email]"
    assert leaks(json.dumps([m.as_json() for m in lines], default=str)) == []
    key = (pii.stack.state_dir / personal_data.KEY_FILE).read_bytes().strip()
    with session_scope(db) as session:
        payload = session.get(Message, first.id).payload
    assert payload["masked"] == [
        {"kind": "card", "hash": digest("card", CARD.replace(" ", ""), key)},
        {"kind": "email", "hash": digest("email", EMAIL, key)}]

    # Rasa's NLU read the placeholders and still understood the complaint
    events = tracker_rows(pii, conv)
    said = [e for e in events if e.get("event") == "user"]
    assert said[0]["text"] == first.text
    assert said[0]["parse_data"]["intent"]["name"] == "complaint"
    assert leaks(json.dumps(events)) == []

    # the ticket's context (from Rasa's tracker) and the desk's ticket page
    with session_scope(db) as session:
        row = session.execute(sa.select(Ticket).where(Ticket.conversation_id == conv)
                              ).scalar_one()
        ticket_id, context = row.id, row.context
    assert any(i["text"] == first.text for i in context["intents"])
    assert leaks(json.dumps(context)) == []
    agents.create_user("pia", "pia-password-1", "agent", "Pia", db)
    with httpx.Client(base_url=pii.stack.desk_url, timeout=10) as desk:
        page = desk.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        login = desk.post("/login", data={"csrf": csrf, "username": "pia",
                                          "password": "pia-password-1"})
        assert login.status_code == 303, login.text
        detail = desk.get(f"/api/tickets/{ticket_id}")
        assert detail.status_code == 200
        assert "[card]" in detail.text and "[email]" in detail.text
        assert leaks(detail.text) == []
        assert leaks(desk.get("/api/tickets").text) == []

    # every file the bot wrote: databases (and their write-ahead logs), run files, logs
    files = [p for p in pii.stack.state_dir.rglob("*") if p.is_file()]
    assert {"tracker.db", "parley.db", "rasa.log", "actions.log", "desk.log"} <= {
        p.name for p in files}
    assert [p.name for p in files if leaks(p.read_bytes())] == []
    rasa_log = (pii.stack.log_dir / "rasa.log").read_text(errors="replace")
    assert "my card [card] was charged" in rasa_log  # the log does hold customers' words


@pytest.mark.servers
def test_the_web_chat_and_the_customers_name_are_masked_too(pii: Stack) -> None:
    sender = "pii-visitor"
    resp = httpx.post(f"{pii.stack.webchat_url}webhook", timeout=60, json={
        "sender": sender, "message": f"o meu email é {EMAIL} e o cartão {CARD}"})
    assert resp.status_code == 200
    assert leaks(resp.text) == []
    lines = conversations.transcript(f"webchat:{sender}", pii.stack.database_url)
    assert lines[0].text == "o meu email é [email] e o cartão [card]"
    assert leaks(json.dumps(tracker_rows(pii, f"webchat:{sender}"))) == []
    # a name that is a phone number is masked like the text
    chat = 7_100_002
    update = {"update_id": 7_100_002, "message": {
        "message_id": 1, "date": int(time.time()), "text": "hello",
        "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": False, "first_name": "+351 912 345 678"}}}
    assert httpx.post(f"{pii.stack.rasa_url}/webhooks/telegram/webhook", json=update,
                      headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                      timeout=60).status_code == 200
    wait_settled(pii.stack.database_url)
    assert wait_until(lambda: conversations.display_names(
        [f"telegram:{chat}"], pii.stack.database_url) == {f"telegram:{chat}": "[phone]"})
    # The number's digits as a run (a bare "912" can be part of a timestamp).
    tracker = json.dumps(tracker_rows(pii, f"telegram:{chat}"))
    assert "912 345 678" not in tracker and "912345678" not in tracker
    assert "[phone]" in tracker

