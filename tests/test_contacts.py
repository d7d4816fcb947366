"""Contacts: one customer across channels. Automatic links by a typed phone matching
a WhatsApp number (through the connectors' own masking and inbox path), agents'
links and unlinks, merges, the history a ticket shows, search, privacy, and the
desk's routes. Storage on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from parley.bot import agents, audit, contacts, handoff, inbox, personal_data, privacy, storage
from parley.bot.contacts import Contact, ContactIdentifier, ContactLink
from parley.bot.conversations import Message
from parley.bot.events import DeskEvent
from parley.bot.storage import utcnow
from parley.bot.survey import Survey, SurveyAnswer
from parley.connectors.base import store_masked
from parley.connectors.gate import Inbound
from tests.test_desk import Desk
from tests.test_privacy import Tracker, desk_process, tracker  # noqa: F401  (a fixture)

WA = "whatsapp:351912345678"  # Maria's WhatsApp: its id is her number
WEB = "webchat:maria-laptop"
TYPED = "my number is +351 912 345 678"  # the same number, as a customer types it


@pytest.fixture(autouse=True)
def mask_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """One masking key for the test and the processes it starts."""
    monkeypatch.setenv(personal_data.SECRET_ENV, "contacts-test-secret-0123456789")


def write(db: str, conversation_id: str, text: str, name: str = "",
          message_id: str | None = None) -> int | None:
    """A customer message as every connector stores it: masked, then the inbox."""
    return store_masked(Inbound(conversation_id, text, message_id, name), personal_data.KINDS, db)


def phone_hash(number: str) -> str:
    return personal_data.digest("phone", personal_data.phone_value(number))


def identifiers(db: str) -> list[tuple[str, str, str, bool, str]]:
    with storage.session_scope(db) as s:
        return [tuple(r) for r in s.execute(sa.select(
            ContactIdentifier.conversation_id, ContactIdentifier.kind, ContactIdentifier.hash,
            ContactIdentifier.verified, ContactIdentifier.source)
            .order_by(ContactIdentifier.id)).all()]


def members(db: str, conversation_id: str) -> set[str]:
    data = contacts.history(conversation_id, db)
    assert data is not None
    return {c["id"] for c in data["conversations"]} if data["contact"] else set()


def contact_count(db: str) -> int:
    with storage.session_scope(db) as s:
        return int(s.execute(sa.select(sa.func.count()).select_from(Contact)).scalar())


def agent(db: str, name: str, role: str = "agent") -> int:
    return agents.create_user(name.lower(), f"{name.lower()}-password", role, name, db).id


# -- automatic links ----------------------------------------------------------------------


def test_a_typed_phone_links_the_web_chat_to_the_whatsapp_number(any_db: str) -> None:
    write(any_db, WA, "olá", "Maria Silva", "wamid.1")
    assert identifiers(any_db) == [(WA, "phone", phone_hash("351912345678"), True, "platform")]
    write(any_db, WA, "ainda aí?", "Maria Silva", "wamid.2")  # not new: nothing more recorded
    assert len(identifiers(any_db)) == 1

    message_id = write(any_db, WEB, TYPED)
    with storage.session_scope(any_db) as s:
        stored = s.get(Message, message_id)
        assert stored.text == "my number is [phone]"  # the value itself is never stored
    assert identifiers(any_db)[1] == (WEB, "phone", phone_hash("+351912345678"), False,
                                      "message")
    assert members(any_db, WEB) == members(any_db, WA) == {WA, WEB}
    data = contacts.history(WEB, any_db)
    assert [c["id"] for c in data["conversations"]] == [WEB, WA]  # this one first
    assert [c["linked_by"] for c in data["conversations"]] == ["automatic", "automatic"]
    assert data["conversations"][1]["display_name"] == "Maria Silva"
    with storage.session_scope(any_db) as s:
        announced = s.execute(sa.select(DeskEvent.conversation_id, DeskEvent.payload)
                              .where(DeskEvent.kind == "contact_updated")).all()
    contact_id = data["contact"]["id"]
    assert sorted((cid, p["contact_id"]) for cid, p in announced) == [(WEB, contact_id),
                                                                       (WA, contact_id)]


def test_the_whatsapp_conversation_may_come_second(any_db: str) -> None:
    write(any_db, "telegram:77", "call me at 912 345 679 please")  # typed first
    assert members(any_db, "telegram:77") == set()
    write(any_db, "whatsapp:351912345679", "hi", "Rui")  # created later: links then
    assert members(any_db, "telegram:77") == {"telegram:77", "whatsapp:351912345679"}


def test_no_link_without_a_verified_match(any_db: str) -> None:
    write(any_db, WA, "olá", "Maria Silva")
    write(any_db, WEB, "my number is +351 912 345 670")  # another number
    write(any_db, "webchat:a", "reach me at +44 20 7946 0958 or ana@example.com")
    write(any_db, "telegram:5", "+44 20 7946 0958, ANA@example.com")  # typed vs typed
    write(any_db, "whatsapp:mixed", "hello")  # not a number: nothing verified
    assert contact_count(any_db) == 0
    rows = identifiers(any_db)
    assert sorted((r[0], r[1], r[3]) for r in rows) == sorted([
        (WA, "phone", True), (WEB, "phone", False), ("webchat:a", "email", False),
        ("webchat:a", "phone", False), ("telegram:5", "email", False),
        ("telegram:5", "phone", False)])
    # The same email in any case is one hash: found by search, but never linked.
    assert len({r[2] for r in rows if r[1] == "email"}) == 1
    assert contacts.evidence("telegram:1", None) is None  # nothing to do on the hot path
    assert contacts.evidence("telegram:1", {"masked": [{"kind": "card", "hash": "0" * 64}]}) \
        is None


def test_a_failed_link_never_loses_the_message(any_db: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write(any_db, WA, "olá")

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise sa.exc.OperationalError("SELECT", {}, Exception("database restarting"))

    monkeypatch.setattr(contacts, "settle", broken)
    message_id = write(any_db, WEB, TYPED)
    assert message_id is not None and inbox.state_of(message_id, any_db) == "received"
    assert members(any_db, WEB) == set()
    monkeypatch.undo()
    monkeypatch.setenv(personal_data.SECRET_ENV, "contacts-test-secret-0123456789")
    write(any_db, WEB, "ok")  # nothing typed: nothing to retry with
    assert members(any_db, WEB) == set()
    write(any_db, WEB, "again: " + TYPED)  # the same number, recorded already: retried
    assert members(any_db, WEB) == {WA, WEB}
    assert len(identifiers(any_db)) == 2


def test_concurrent_messages_make_one_contact(any_db: str) -> None:
    write(any_db, WA, "olá")
    errors: list[BaseException] = []

    def customer(i: int) -> None:
        try:
            write(any_db, f"webchat:tab-{i}", TYPED)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=customer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert contact_count(any_db) == 1
    assert members(any_db, WA) == {WA, *(f"webchat:tab-{i}" for i in range(6))}


# -- agents' links, unlinks and merges -------------------------------------------------------


def test_unlink_is_remembered_and_an_agent_can_link_again(any_db: str) -> None:
    ana, bo = agent(any_db, "Ana"), agent(any_db, "Bo")
    write(any_db, WA, "olá", "Maria Silva")
    write(any_db, WEB, TYPED)
    left = contacts.unlink(WEB, ana, any_db)
    assert contact_count(any_db) == 0  # one conversation is no contact
    data = contacts.history(WEB, any_db)
    assert data["contact"] is None and data["kept_apart"] and data["unlinked_by"] == "Ana"
    assert contacts.history(WA, any_db)["kept_apart"] is False

    # The same evidence again, from either side: not linked again.
    write(any_db, WEB, "it is " + TYPED)
    assert contacts.settle(WEB, any_db) is None and contacts.settle(WA, any_db) is None
    assert members(any_db, WEB) == set()
    with pytest.raises(contacts.NotLinked):
        contacts.unlink(WEB, ana, any_db)

    # New evidence elsewhere links the others, still without the unlinked one.
    write(any_db, "telegram:9", "+351 912 345 678")
    assert members(any_db, WA) == {WA, "telegram:9"}

    # An agent links it by hand: in again, and recorded as theirs.
    contact_id = contacts.link(WEB, WA, bo, any_db)
    assert contact_id == contacts.history(WA, any_db)["contact"]["id"] and left
    data = contacts.history(WEB, any_db)
    assert {c["id"]: c["linked_by"] for c in data["conversations"]} == {
        WEB: "Bo", WA: "automatic", "telegram:9": "automatic"}
    assert data["kept_apart"] is False

    # Out of three, one leaves: the other two stay together.
    contacts.unlink("telegram:9", ana, any_db)
    assert members(any_db, WA) == {WA, WEB}


def test_link_by_hand_refuses_nonsense(any_db: str) -> None:
    ana = agent(any_db, "Ana")
    write(any_db, WEB, "hi")
    with pytest.raises(ValueError, match="itself"):
        contacts.link(WEB, WEB, ana, any_db)
    with pytest.raises(LookupError, match="telegram:404"):
        contacts.link(WEB, "telegram:404", ana, any_db)
    with pytest.raises(LookupError):
        contacts.unlink("telegram:404", ana, any_db)
    with pytest.raises(LookupError):
        contacts.rename(999, "x", any_db)
    assert contact_count(any_db) == 0


def ids_of(conversations: list[dict[str, Any]]) -> list[str]:
    return [c["id"] for c in conversations]


def test_two_verified_numbers_are_never_merged_automatically(any_db: str) -> None:
    ana = agent(any_db, "Ana")
    wa1, wa2 = "whatsapp:351911111111", "whatsapp:351922222222"
    write(any_db, wa1, "olá", "Ana Costa")
    write(any_db, "webchat:one", "+351 911 111 111")
    write(any_db, wa2, "olá", "Rui Costa")
    write(any_db, "webchat:two", "+351 922 222 222")
    first = contacts.history("webchat:one", any_db)["contact"]["id"]
    second = contacts.history("webchat:two", any_db)["contact"]["id"]
    assert first != second and contact_count(any_db) == 2
    contacts.rename(second, "Rui Costa (VIP)", any_db)
    one, two = {wa1, "webchat:one"}, {wa2, "webchat:two"}

    # One message with two people's numbers: linked to neither, the two stay apart;
    # the desk shows each as "may be the same person".
    write(any_db, "telegram:3", "my numbers: 911 111 111 and 922 222 222")
    assert members(any_db, "telegram:3") == set() and contact_count(any_db) == 2
    assert members(any_db, wa1) == one and members(any_db, wa2) == two
    assert ids_of(contacts.history("telegram:3", any_db)["maybe_same"]) == [wa1, wa2]
    assert ids_of(contacts.history("webchat:one", any_db)["maybe_same"]) == ["telegram:3"]

    # A WhatsApp customer who types someone else's number ("call my husband at ..."):
    # not linked to him (nor is anyone who typed either number).
    write(any_db, wa1, "liguem ao meu marido: 922 222 222")
    assert members(any_db, wa1) == one and members(any_db, wa2) == two
    assert contacts.settle(wa1, any_db) == first and contacts.settle(wa2, any_db) == second
    assert ids_of(contacts.history(wa2, any_db)["maybe_same"]) == ["telegram:3", wa1]
    assert ids_of(contacts.history(wa1, any_db)["maybe_same"]) == ["telegram:3", wa2]
    # Her own number, typed on another channel, still links to her alone.
    write(any_db, "messenger:1", "911 111 111")
    assert members(any_db, wa1) == one | {"messenger:1"}

    # An agent says they are one person: merged by hand (the older id, the name kept),
    # each moved conversation keeping how it was linked, the one named now the agent's.
    merged = contacts.link("webchat:two", "webchat:one", ana, any_db)
    everyone = one | two | {"messenger:1"}
    assert merged == first and members(any_db, wa2) == everyone and contact_count(any_db) == 1
    data = contacts.history("telegram:3", any_db)
    assert data["contact"] is None and ids_of(data["maybe_same"]) == [wa1, wa2]
    data = contacts.history(wa1, any_db)
    assert data["contact"]["name"] == "Rui Costa (VIP)"
    assert {c["id"]: c["linked_by"] for c in data["conversations"]} == {
        wa1: "automatic", "webchat:one": "automatic", "messenger:1": "automatic",
        wa2: "automatic", "webchat:two": "Ana"}
    # Both numbers now point at one contact (an agent's): the two-number message links.
    write(any_db, "telegram:3", "911 111 111 or 922 222 222, as I said")
    assert members(any_db, "telegram:3") == everyone | {"telegram:3"}
    assert contacts.history(wa1, any_db)["maybe_same"] == []

    # By hand: an agent merges a separate pair into it.
    write(any_db, "whatsapp:351933333333", "olá")
    write(any_db, "messenger:77", "+351 933 333 333")
    contacts.link("messenger:77", "webchat:one", ana, any_db)
    assert members(any_db, "webchat:one") == everyone | {
        "telegram:3", "whatsapp:351933333333", "messenger:77"}
    assert contact_count(any_db) == 1


def test_a_merge_keeps_who_linked_each_conversation(any_db: str) -> None:
    bo = agent(any_db, "Bo")
    write(any_db, WA, "olá", "Maria Silva")
    write(any_db, WEB, TYPED)  # the older contact: WA and WEB, automatically
    write(any_db, "telegram:1", "hi", "Maria")
    write(any_db, "messenger:1", "hi", "Maria")
    contacts.link("messenger:1", "telegram:1", bo, any_db)  # Bo's pair, no number yet
    write(any_db, "telegram:1", TYPED)  # now the two contacts merge automatically
    data = contacts.history(WA, any_db)
    assert {c["id"]: c["linked_by"] for c in data["conversations"]} == {
        WA: "automatic", WEB: "automatic", "telegram:1": "Bo", "messenger:1": "Bo"}
    with storage.session_scope(any_db) as s:
        assert {r.conversation_id: r.agent_id for r in s.execute(sa.select(ContactLink))
                .scalars()} == {WA: None, WEB: None, "telegram:1": bo, "messenger:1": bo}


def test_an_older_whatsapp_conversation_is_linked_by_its_next_message(any_db: str) -> None:
    write(any_db, WA, "olá", "Maria Silva")
    with storage.session_scope(any_db) as s:  # as if written before contacts existed
        s.execute(sa.delete(ContactIdentifier))
    write(any_db, WEB, TYPED)
    assert members(any_db, WEB) == set()  # nothing verified to match yet
    write(any_db, WA, "ainda aí?", "Maria Silva")  # its number is recorded now
    assert identifiers(any_db)[-1] == (WA, "phone", phone_hash("351912345678"), True,
                                       "platform")
    assert members(any_db, WA) == {WA, WEB}
    write(any_db, WA, "olá?", "Maria Silva")  # once there, nothing more is recorded
    assert len(identifiers(any_db)) == 2


# -- what the ticket view shows --------------------------------------------------------------


def past_ticket(db: str, conversation_id: str, agent_id: int) -> int:
    """A handled ticket: claimed, tagged, a note, resolved, and the survey answered."""
    ticket = handoff.escalate(conversation_id, "keyword", database_url=db).ticket
    handoff.claim_ticket(ticket.id, agent_id, db)
    handoff.add_note(ticket.id, agent_id, "Wants the refund to her card", db)
    handoff.set_tags(ticket.id, ["refund"], db)
    handoff.resolve(ticket.id, agent_id, db)
    with storage.session_scope(db) as s:
        survey = s.execute(sa.select(Survey).where(Survey.ticket_id == ticket.id)).scalar_one()
        s.add_all([SurveyAnswer(survey_id=survey.id, question="answer", score=4,
                                created_at=utcnow()),
                   SurveyAnswer(survey_id=survey.id, question="improve",
                                text="Faster refunds", created_at=utcnow())])
    return ticket.id


def test_history_has_the_other_channels_tickets_ratings_and_notes(any_db: str) -> None:
    ana = agent(any_db, "Ana")
    write(any_db, WA, "quero um reembolso", "Maria Silva")
    old = past_ticket(any_db, WA, ana)
    write(any_db, WEB, "AGENT")
    now = handoff.escalate(WEB, "keyword", database_url=any_db).ticket.id
    write(any_db, WEB, TYPED)

    data = contacts.history(WEB, any_db, current_ticket_id=now)
    assert data["contact"] is not None and data["contact"]["name"] is None
    [mine, theirs] = data["conversations"]
    assert (mine["id"], mine["current"], mine["open_ticket_id"]) == (WEB, True, now)
    assert (theirs["id"], theirs["channel"], theirs["display_name"]) == (
        WA, "whatsapp", "Maria Silva")
    assert theirs["last_message_at"] is not None and theirs["open_ticket_id"] is None
    assert [(i["channel"], i["kind"], i["verified"]) for i in data["identifiers"]] == [
        ("whatsapp", "phone", True), ("webchat", "phone", False)]
    [ticket] = data["tickets"]  # the open one is the view's own: left out
    assert (ticket["id"], ticket["channel"], ticket["status"], ticket["reason"]) == (
        old, "whatsapp", "resolved", "keyword")
    assert ticket["agent"] == "Ana" and ticket["tags"] == ["refund"]
    assert ticket["resolved_at"] is not None
    assert ticket["ratings"] == [{"question": "answer", "score": 4, "text": None},
                                 {"question": "improve", "score": None,
                                  "text": "Faster refunds"}]
    assert [(n["text"], n["agent"]) for n in ticket["notes"]] == [
        ("Wants the refund to her card", "Ana")]
    assert data["more_tickets"] is False
    text = json.dumps(data)
    assert phone_hash("351912345678") not in text and "912 345 678" not in text

    # From the WhatsApp side, with no ticket open in the view, both tickets show.
    other_side = contacts.history(WA, any_db)
    assert [t["id"] for t in other_side["tickets"]] == [now, old]
    # A conversation on its own still shows its own past tickets.
    write(any_db, "telegram:8", "hi")
    lone = past_ticket(any_db, "telegram:8", ana)
    alone = contacts.history("telegram:8", any_db)
    assert alone["contact"] is None and [t["id"] for t in alone["tickets"]] == [lone]
    assert contacts.history("telegram:404", any_db) is None


# -- search ----------------------------------------------------------------------------


def found(result: dict[str, Any]) -> list[set[str]]:
    return [{c["id"] for c in group["conversations"]} for group in result["results"]]


def test_search_by_name_channel_and_identifier(any_db: str) -> None:
    write(any_db, WA, "olá", "Maria Silva")
    write(any_db, WEB, TYPED + " or maria.silva@example.com")
    write(any_db, "telegram:42", "hi", "Mariana Costa")
    write(any_db, "messenger:3", "hi", "João 100%")
    both = {WA, WEB}

    assert found(contacts.search("MARIA", database_url=any_db)) == [
        {"telegram:42"}, both]  # newest activity first, a contact as one result
    [group] = contacts.search("maria silva", database_url=any_db)["results"]
    # The web chat (no name given) is in the result through its contact.
    assert [(c["id"], c["matched"]) for c in group["conversations"]] == [(WA, True),
                                                                         (WEB, False)]
    assert found(contacts.search("", "whatsapp", database_url=any_db)) == [both]
    assert found(contacts.search("maria", "telegram", database_url=any_db)) == [{"telegram:42"}]
    assert found(contacts.search("", "instagram", database_url=any_db)) == []
    for typed in ("912345678", "+351912345678", "00351 912 345 678", "351912345678",
                  "Maria.Silva@Example.com", WA):
        assert found(contacts.search(typed, database_url=any_db)) == [both], typed
    assert found(contacts.search("maria-laptop", database_url=any_db)) == [both]
    assert found(contacts.search("912 345 670", database_url=any_db)) == []
    assert found(contacts.search("%", database_url=any_db)) == [{"messenger:3"}]  # literal
    assert found(contacts.search("_", database_url=any_db)) == []
    assert contacts.search("", database_url=any_db) == {"results": [], "more": False}

    contact_id = group["contact"]["id"]
    contacts.rename(contact_id, "  Dona   Maria ", any_db)
    assert contacts.search("dona maria", database_url=any_db)["results"][0]["contact"] == {
        "id": contact_id, "name": "Dona Maria", "created_at": group["contact"]["created_at"]}

    limited = contacts.search("mari", limit=1, database_url=any_db)
    assert len(limited["results"]) == 1 and limited["more"] is True
    assert contacts.search("mari", limit=2, database_url=any_db)["more"] is False
    with pytest.raises(ValueError):
        contacts.search("x" * 201, database_url=any_db)


def test_search_ignores_the_case_of_accented_letters(any_db: str) -> None:
    write(any_db, "telegram:77", "olá", "Élodie Núñez")
    write(any_db, WA, "olá", "Maria")
    write(any_db, WEB, TYPED)
    contacts.rename(contacts.history(WA, any_db)["contact"]["id"], "DONA ÂNGELA", any_db)
    for query in ("élodie", "ÉLODIE", "núñez", "NÚÑEZ", "Élodie Núñez"):
        assert found(contacts.search(query, database_url=any_db)) == [{"telegram:77"}], query
    for query in ("ângela", "dona â"):
        assert found(contacts.search(query, database_url=any_db)) == [{WA, WEB}], query
    assert found(contacts.search("elodie", database_url=any_db)) == []  # accents count


# -- privacy ---------------------------------------------------------------------------


def test_export_has_the_contact_and_erasure_removes_it(any_db: str,
                                                       tracker: Tracker) -> None:  # noqa: F811
    ana = agent(any_db, "Ana")
    write(any_db, WA, "olá", "Maria Silva")
    write(any_db, WEB, TYPED)
    write(any_db, "telegram:9", "+351 912 345 678")
    contacts.unlink("telegram:9", ana, any_db)  # kept apart: a row of its own
    contact_id = contacts.history(WA, any_db)["contact"]["id"]

    data = privacy.export([WA, WEB, "telegram:9"], audit.CLI, any_db)
    by_id = {c["id"]: c for c in data["conversations"]}
    assert [i["hash"] for i in by_id[WA]["contact_identifiers"]] == [phone_hash("351912345678")]
    assert by_id[WA]["contact_identifiers"][0]["verified"] is True
    assert by_id[WEB]["contact_link"]["contact_id"] == contact_id
    assert by_id["telegram:9"]["contact_link"] == {
        "contact_id": None, "agent_id": ana,
        "changed_at": by_id["telegram:9"]["contact_link"]["changed_at"]}
    assert data["contacts"] == [{"id": contact_id, "name": None,
                                 "created_at": data["contacts"][0]["created_at"],
                                 "updated_at": data["contacts"][0]["updated_at"],
                                 "conversations": [WEB, WA], "other_conversations": 0}]
    assert data["counts"]["contact_identifiers"] == 3 and data["counts"]["contact_links"] == 3
    assert data["agents"] == {str(ana): "Ana"}

    # One side's export names only what was asked for: the contact's other
    # conversations are counted (a WhatsApp id is a phone number).
    mine = privacy.export([WEB], audit.CLI, any_db)
    assert [(c["id"], c["conversations"], c["other_conversations"]) for c in mine["contacts"]
            ] == [(contact_id, [WEB], 1)]
    assert "351912345678" not in json.dumps(mine) and WA not in json.dumps(mine)

    # Erasing one side dissolves the contact: a contact of one is none.
    erased = privacy.erase([WEB], audit.CLI, any_db)["erased"]
    assert (erased["contact_identifiers"], erased["contact_links"]) == (1, 1)
    assert contact_count(any_db) == 0 and members(any_db, WA) == set()
    privacy.erase([WA, "telegram:9"], audit.CLI, any_db)
    with storage.session_scope(any_db) as s:
        for table in (Contact, ContactIdentifier, ContactLink):
            assert s.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


def test_an_erasure_waits_for_a_link_in_progress(any_db: str,
                                                tracker: Tracker) -> None:  # noqa: F811
    ana = agent(any_db, "Ana")
    write(any_db, WA, "olá", "Maria Silva")
    write(any_db, WEB, TYPED)
    write(any_db, "telegram:5", "hi")
    contact_id = contacts.history(WA, any_db)["contact"]["id"]
    erased: list[Any] = []

    def erase() -> None:
        try:
            erased.append(privacy.erase([WEB], audit.CLI, any_db))
        except BaseException as exc:  # reported below
            erased.append(exc)

    # An agent's link half done: the contact lock taken, telegram:5 put in the
    # contact, not committed yet. The erasure of the web chat waits for it, then
    # counts the contact whole: two conversations are left, so it stays.
    with storage.session_scope(any_db) as s:
        contacts.serialise(s)
        s.add(ContactLink(conversation_id="telegram:5", contact_id=contact_id, agent_id=ana,
                          changed_at=utcnow()))
        s.flush()
        thread = threading.Thread(target=erase)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive() and erased == []
    thread.join(30)
    assert not thread.is_alive() and not isinstance(erased[0], BaseException), erased
    assert erased[0]["erased"]["contact_links"] == 1
    assert members(any_db, WA) == {WA, "telegram:5"} and contact_count(any_db) == 1


# -- the desk's routes -----------------------------------------------------------------


def test_desk_routes(any_db: str, tmp_path: Path) -> None:
    ana = agent(any_db, "Ana")
    for name, role in (("Wes", "writer"), ("Max", "manager"), ("Sue", "supervisor")):
        agent(any_db, name, role)
    write(any_db, WA, "olá", "Maria Silva")
    old = past_ticket(any_db, WA, ana)
    write(any_db, WEB, TYPED)
    ticket = handoff.escalate(WEB, "keyword", database_url=any_db).ticket.id
    write(any_db, "telegram:5", "hi", "Maria Sousa")
    with desk_process(any_db, tmp_path,
                      env={personal_data.SECRET_ENV: "contacts-test-secret-0123456789"}) as url:
        desk = Desk(url, any_db)
        try:
            client, csrf = desk.login("ana", "ana-password")
            h = {"X-CSRF-Token": csrf}
            view = client.get(f"/api/tickets/{ticket}/contact")
            assert view.status_code == 200, view.text
            body = view.json()
            assert body["ticket_id"] == ticket
            assert [c["id"] for c in body["conversations"]] == [WEB, WA]
            assert [t["id"] for t in body["tickets"]] == [old]
            assert body["tickets"][0]["notes"][0]["text"] == "Wants the refund to her card"
            assert client.get("/api/tickets/99999/contact").status_code == 404

            searched = client.get("/api/contacts", params={"q": "912 345 678"}).json()
            assert found(searched) == [{WA, WEB}] and searched["more"] is False
            assert "whatsapp" in searched["channels"]
            by_channel = client.get("/api/contacts", params={"channel": "telegram"}).json()
            assert found(by_channel) == [{"telegram:5"}]
            for params, reason in (({"channel": "Tele gram"}, "channel"),
                                   ({"who": "x"}, "unknown parameter"),
                                   ({"limit": "0"}, "limit"), ({"q": "x" * 201}, "at most")):
                bad = client.get("/api/contacts", params=params)
                assert bad.status_code == 400 and reason in bad.json()["error"], params

            def post(path: str, body: Any) -> httpx.Response:
                return client.post(path, json=body, headers=h)

            for sent, status, reason in (
                    ({}, 400, "'conversation_id'"),
                    ({"conversation_id": "telegram:5"}, 400, "'with_conversation_id'"),
                    ({"conversation_id": "telegram:5", "with_conversation_id": 5}, 400, "'with"),
                    ({"conversation_id": "telegram:5", "with_conversation_id": "telegram:5"},
                     400, "itself"),
                    ({"conversation_id": "telegram:5", "with_conversation_id": "telegram:404"},
                     404, "telegram:404")):
                resp = post("/api/contacts/link", sent)
                assert resp.status_code == status and reason in resp.json()["error"], sent
            assert client.post("/api/contacts/link", content=b"{nope", headers=h
                               ).status_code == 400
            linked = post("/api/contacts/link", {"conversation_id": "telegram:5",
                                                 "with_conversation_id": WEB})
            assert linked.status_code == 200, linked.text
            assert members(any_db, WA) == {WA, WEB, "telegram:5"}
            assert contacts.history("telegram:5", any_db)["conversations"][0]["linked_by"] \
                == "Ana"

            assert post("/api/contacts/unlink", {"conversation_id": "telegram:5"}
                        ).status_code == 200
            again = post("/api/contacts/unlink", {"conversation_id": "telegram:5"})
            assert again.status_code == 409 and "not linked" in again.json()["error"]
            assert post("/api/contacts/unlink", {"conversation_id": "telegram:404"}
                        ).status_code == 404
            assert post("/api/contacts/unlink", {"conversation_id": "nope"}).status_code == 400

            contact_id = body["contact"]["id"]
            named = post("/api/contacts/name", {"contact_id": contact_id, "name": "Maria S."})
            assert named.status_code == 200 and named.json()["name"] == "Maria S."
            assert post("/api/contacts/name", {"contact_id": 99999, "name": "x"}
                        ).status_code == 404
            assert post("/api/contacts/name", {"contact_id": "1", "name": "x"}).status_code == 400
            assert post("/api/contacts/name", {"contact_id": contact_id}).status_code == 400
            assert post("/api/contacts/name", {"contact_id": contact_id, "name": "x" * 201}
                        ).status_code == 413

            # Those who answer customers only; no session at all: 401; no CSRF: 403.
            assert client.post("/api/contacts/unlink", json={"conversation_id": WA}
                               ).status_code == 403
            supervisor, _ = desk.login("sue", "sue-password")
            assert supervisor.get(f"/api/tickets/{ticket}/contact").status_code == 200
            for username in ("wes", "max"):
                other, other_csrf = desk.login(username, f"{username}-password")
                for method, path in (("GET", f"/api/tickets/{ticket}/contact"),
                                     ("GET", "/api/contacts?q=maria"),
                                     ("POST", "/api/contacts/link"),
                                     ("POST", "/api/contacts/unlink"),
                                     ("POST", "/api/contacts/name")):
                    resp = other.request(method, path, json={},
                                         headers={"X-CSRF-Token": other_csrf})
                    assert resp.status_code == 403, (username, path)
                    assert httpx.request(method, url + path, json={}).status_code == 401
            assert members(any_db, WA) == {WA, WEB}
        finally:
            desk.close_clients()
