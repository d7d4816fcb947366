"""The conversation's language (bot/language.py): detection, the platform's locale,
an agent's choice, and the worker handing the result to Rasa and the notices.

Detection runs the real lingua detector; conversations are real rows, and the
worker test drives a real Telegram channel's inbox worker. Only Rasa's model is
left out: the stand-in turn does what Rasa's processor does for one `utter_*`
(tracker from the message, Parley's NLG, the output channel).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig
from sqlalchemy import create_engine, inspect

from parley.bot import agents, contract, conversations, handoff, inbox, language, storage
from parley.bot.desk import tickets
from parley.bot.responses.library import dump
from parley.bot.responses.nlg import LibraryNLG
from parley.bot.storage import session_scope, utcnow
from parley.connectors import gate
from parley.connectors.telegram import TelegramInput

OWNER = "test-worker"
_ids = itertools.count(int(time.time()))

# Short direct messages as customers write them: abbreviations, no accents, no capitals.
PORTUGUESE = [
    "oi vc pode me ajudar com o meu pedido", "ola, quando chega a minha encomenda?",
    "cadê meu pedido", "qro cancelar", "quero falar com um atendente", "bom dia",
    "quanto tempo demora a entrega", "meu pedido nao chegou", "pedido 10234",
    "tem frete gratis?", "tudo bem?", "qual o prazo", "devolução", "troca", "oi, boa tarde",
    "vcs aceitam pix?", "quero devolver um produto", "como faço pra trocar o endereço",
    "meu pedido veio errado", "ainda não recebi", "preciso de ajuda", "obrigado",
    "cancela meu pedido por favor", "onde ta meu pedido", "q horas vcs abrem",
    "qual o horario de atendimento", "o produto chegou quebrado",
    "quero meu dinheiro de volta", "pode me passar o rastreio?", "boa noite, tudo bem?",
    "comprei ontem e ainda nao foi enviado", "tem como mudar o endereço de entrega?",
    "aceita cartão?", "falar com humano", "atendente por favor",
    "nao recebi o codigo de rastreamento", "meu pedido esta atrasado",
]
ENGLISH = [
    "where is my order pls", "how long does shipping take", "can i return this",
    "I want to cancel my order", "hey there", "whats my order status", "wheres my package",
    "i need help", "talk to a human", "can i change my delivery address",
    "do you take paypal", "what are your hours", "my order arrived broken",
    "i want my money back", "can you send me the tracking number", "good morning",
    "i ordered yesterday and it hasnt shipped", "do you accept credit cards",
    "hi, is anyone there?", "thank you!!", "pls help", "cancel my order",
    "wrong item received", "it's been 2 weeks", "u there?", "how do i return stuff",
    "still waiting for my parcel", "any update on my order?", "is shipping free",
    "my package is late", "need to speak to someone", "what payment methods do you have",
]
# Says nothing about a language (or, like "blz"/"vlw", fools the detector): never decides.
NOISE = ["ok", "10234", "👍", "?", "ok!", "kkkk", "haha", "hmm", "AGENT", "BOT", "oi", "hi",
         "yes", "sim", "no", "blz", "vlw", "👍👍", "10234 10451", "#10234", "lol", "k",
         "ok ok", "ty", "obg", "pix", "paypal", "/greet", '/order_status{"order":"10234"}']

REPLIES = {
    "utter_greet": [{"text": "Hi {first_name}!"},
                    {"text": "Olá {first_name}!", "metadata": {"language": "pt"}}],
    contract.QUEUE_UPDATE: [
        {"text": "You're number {queue_position} in the queue."},
        {"text": "Você é o número {queue_position} na fila.", "metadata": {"language": "pt"}}],
    contract.AGENT_JOINED: [
        {"text": "{agent_name} has joined."},
        {"text": "{agent_name} entrou na conversa.", "metadata": {"language": "pt"}}],
}


@pytest.fixture
def replies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's reply file, with English and Portuguese variants."""
    path = tmp_path / "responses.yml"
    path.write_text(dump(REPLIES), encoding="utf-8")
    monkeypatch.setenv("PARLEY_REPLIES", str(path))
    return path


def receive(conv: str, text: str, url: str, locale: str | None = None) -> str:
    """Store one customer message and apply the rules as the worker does before its
    turn; the language the turn gets."""
    metadata = {"language": locale} if locale else None
    inbox.store(conv, text, platform_message_id=str(next(_ids)), metadata=metadata,
                database_url=url)
    assert conv in inbox.claim(conv.split(":")[0], OWNER, 30, 100, url)
    pending = inbox.begin(conv, OWNER, 30, url)
    assert pending is not None
    spoken = language.for_turn(pending, url)
    with session_scope(url) as session:  # as if answered: the next message is due
        session.get(conversations.Message, pending.id).inbox_state = "answered"
    inbox.release(conv, OWNER, url)
    return spoken


def stored(conv: str, url: str) -> tuple[str | None, str | None]:
    with session_scope(url) as session:
        row = session.get(conversations.Conversation, conv)
        return row.language, row.language_source


# -- detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("oi vc pode me ajudar com o meu pedido", "pt"),
    ("ola, quando chega a minha encomenda?", "pt"),
    ("meu pedido nao chegou", "pt"),
    ("where is my order pls", "en"),
    ("how long does shipping take", "en"),
    ("i want my money back", "en"),
])
def test_detects_short_direct_messages(text: str, expected: str) -> None:
    assert language.detect(text) == expected


@pytest.mark.parametrize("text", NOISE)
def test_texts_that_say_nothing_decide_nothing(text: str) -> None:
    assert language.detect(language.opening([text])) is None


def test_detection_is_never_wrong_on_short_messages_and_mostly_sure() -> None:
    """The figures in the report: wrong guesses would switch a customer's language,
    so none are allowed; unsure ones keep the default, so most must be decided."""
    for texts, expected in ((PORTUGUESE, "pt"), (ENGLISH, "en")):
        found = [language.detect(t) for t in texts]
        wrong = [t for t, f in zip(texts, found, strict=True) if f not in (None, expected)]
        assert wrong == [], f"detected as another language: {wrong}"
        assert sum(f == expected for f in found) >= 0.6 * len(texts)


def test_the_detector_is_built_once_for_our_languages_only() -> None:
    language.detect("where is my order pls")
    first = language._detector()
    language.detect("meu pedido nao chegou")
    assert language._detector() is first and len(language._detectors) == 1
    # Only the languages we have replies in: a guess of a third one would find no reply.
    ranked = first.compute_language_confidence_values("dónde está mi pedido, por favor")
    assert {v.language.iso_code_639_1.name.lower() for v in ranked} == {"en", "pt"}


# -- the rules ------------------------------------------------------------------------------


def test_first_messages_decide_and_short_ones_never_flip(any_db: str) -> None:
    conv = "webchat:first"
    for text in ("ok", "10234", "👍"):  # the default until something is sure
        assert receive(conv, text, any_db) == "en"
        assert stored(conv, any_db) == (None, None)
    # The 4th message is past the first three: the guess is not made again.
    assert receive(conv, "oi vc pode me ajudar com o meu pedido", any_db) == "en"
    assert stored(conv, any_db) == (None, None)

    conv = "webchat:second"
    assert receive(conv, "ola, quando chega a minha encomenda?", any_db) == "pt"
    assert stored(conv, any_db) == ("pt", "detected")
    for text in ("ok", "👍"):  # joined with the first: still Portuguese
        assert receive(conv, text, any_db) == "pt"
    assert receive(conv, "where is my order pls thanks a lot", any_db) == "pt"  # past three
    assert stored(conv, any_db) == ("pt", "detected")


def test_a_later_first_message_can_correct_an_early_guess(db_url: str) -> None:
    conv = "webchat:mixed"
    assert receive(conv, "hi there, good morning", db_url) == "en"
    assert receive(conv, "desculpa, falo português. onde está o meu pedido? quero "
                         "saber quando chega a minha encomenda", db_url) == "pt"
    assert stored(conv, db_url) == ("pt", "detected")


def test_the_platform_locale_wins_over_detection(any_db: str) -> None:
    conv = "telegram:locale"
    assert receive(conv, "where is my order pls", any_db, locale="pt-BR") == "pt"
    assert stored(conv, any_db) == ("pt", "platform")
    assert receive(conv, "how long does shipping take", any_db) == "pt"  # no locale this time
    assert receive(conv, "thanks", any_db, locale="en-GB") == "en"  # the customer changed it
    assert stored(conv, any_db) == ("en", "platform")

    conv = "telegram:detected-first"
    assert receive(conv, "meu pedido nao chegou", any_db) == "pt"
    assert receive(conv, "ok", any_db, locale="en") == "en"
    assert stored(conv, any_db) == ("en", "platform")


def test_a_locale_we_have_no_replies_in_leaves_it_to_detection(db_url: str) -> None:
    conv = "telegram:german-app"
    assert receive(conv, "ola, quando chega a minha encomenda?", db_url, locale="de") == "pt"
    assert stored(conv, db_url) == ("pt", "detected")


def test_an_agents_choice_wins_over_everything_and_stays(any_db: str) -> None:
    conv = "telegram:chosen"
    assert receive(conv, "where is my order pls", any_db, locale="en") == "en"
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    ticket = handoff.escalate(conv, "keyword", database_url=any_db).ticket
    chosen = language.choose(conv, "pt", agent.id, "Ana", ticket.id, any_db)
    assert chosen == language.ConversationLanguage("pt", "agent")
    for text, locale in (("how long does shipping take", "en-US"), ("i want my money back",
                                                                      None)):
        assert receive(conv, text, any_db, locale=locale) == "pt"
    assert stored(conv, any_db) == ("pt", "agent")
    lines = conversations.transcript(conv, any_db)
    assert "Language set to Portuguese by Ana" in [line.text for line in lines]
    assert language.of_conversations([conv, "webchat:nobody"], any_db) == {
        conv: language.ConversationLanguage("pt", "agent"),
        "webchat:nobody": language.ConversationLanguage("en", None)}
    with pytest.raises(ValueError, match="choose one of en, pt"):
        language.choose(conv, "de", agent.id, "Ana", ticket.id, any_db)


def test_an_agents_choice_made_during_a_turn_is_not_overwritten(db_url: str) -> None:
    """The worker read the conversation (no language yet) before the agent chose."""
    conv = "telegram:race"
    inbox.store(conv, "meu pedido nao chegou", metadata={"language": "pt-BR"},
                database_url=db_url)
    inbox.claim("telegram", OWNER, 30, 10, db_url)
    pending = inbox.begin(conv, OWNER, 30, db_url)
    agent = agents.create_user("ana", "correct horse", database_url=db_url)
    language.choose(conv, "en", agent.id, "Ana", None, db_url)
    assert language.for_turn(pending, db_url) == "en"
    assert stored(conv, db_url) == ("en", "agent")


def test_the_migration_adds_and_removes_the_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    storage.create_schema(url)
    command.downgrade(storage.alembic_config(url), "0005")

    def columns() -> set[str]:
        engine = create_engine(url, future=True)
        try:
            return {c["name"] for c in inspect(engine).get_columns("conversations")}
        finally:
            engine.dispose()

    assert not {"language", "language_source"} & columns()
    storage.create_schema(url)
    assert {"language", "language_source"} <= columns()


# -- what the customer reads ----------------------------------------------------------------


def telegram_update(chat: int, text: str, locale: str | None) -> dict:
    sender = {"id": chat, "is_bot": False, "first_name": "Maria"}
    if locale:
        sender["language_code"] = locale
    return {"update_id": next(_ids), "message": {
        "message_id": next(_ids), "date": int(time.time()), "text": text,
        "chat": {"id": chat, "type": "private", "first_name": "Maria"}, "from": sender}}


def test_the_worker_gives_rasa_the_conversations_language(db_url: str, replies: Path) -> None:
    """Through a Telegram channel's real inbox worker: the platform's locale, then
    detection, reach the Rasa message's metadata and choose the reply variant."""
    channel = TelegramInput("123456:test-token", "secret", "http://127.0.0.1:9")
    nlg = LibraryNLG(EndpointConfig(type="parley.bot.responses.nlg.LibraryNLG"), Domain.empty())
    turns: list[UserMessage] = []

    async def rasa(message: UserMessage) -> None:
        """One turn that answers utter_greet, as Rasa's processor runs it."""
        turns.append(message)
        tracker = DialogueStateTracker.from_events(message.sender_id, [UserUttered(
            message.text, metadata=message.metadata, input_channel=message.input_channel)])
        reply = await nlg.generate("utter_greet", tracker, message.output_channel.name())
        await message.output_channel.send_response(message.sender_id, reply)

    channel.blueprint(rasa)

    async def deliver(*updates: dict) -> None:
        for update in updates:
            await channel.store(channel.parse(update))
        await channel.workers._inbox_tick()
        deadline = time.monotonic() + 30
        while channel.workers.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not channel.workers.active

    asyncio.run(deliver(telegram_update(71, "hi", "pt-BR"),  # the locale: Portuguese
                        telegram_update(72, "ola, quando chega a minha encomenda?", None),
                        telegram_update(73, "where is my order pls", None),
                        telegram_update(74, "👍", None)))  # nothing sure: the default
    spoken = {m.sender_id: m.metadata["language"] for m in turns}
    assert spoken == {"telegram:71": "pt", "telegram:72": "pt", "telegram:73": "en",
                      "telegram:74": "en"}
    answers = {chat: [line.text for line in conversations.transcript(f"telegram:{chat}", db_url)
                      if line.author == "bot"] for chat in (71, 72, 73, 74)}
    assert answers == {71: ["Olá Maria!"], 72: ["Olá Maria!"], 73: ["Hi Maria!"],
                       74: ["Hi Maria!"]}

    # An agent's choice: the next turn speaks it, whatever the platform says.
    agent = agents.create_user("ana", "correct horse", database_url=db_url)
    language.choose("telegram:71", "en", agent.id, "Ana", None, db_url)
    asyncio.run(deliver(telegram_update(71, "oi de novo", "pt-BR")))
    assert turns[-1].metadata["language"] == "en"
    assert [line.text for line in conversations.transcript("telegram:71", db_url)
            if line.author == "bot"][-1] == "Hi Maria!"


def test_queue_notices_speak_the_conversations_language(db_url: str, replies: Path,
                                                        always_open: None) -> None:
    conv = "webchat:fila"
    assert receive(conv, "quero falar com um atendente", db_url) == "pt"
    handoff.escalate(conv, "keyword", database_url=db_url)
    inbox.store(conv, "ainda estou esperando", database_url=db_url)
    inbox.claim("webchat", OWNER, 30, 10, db_url)
    pending = inbox.begin(conv, OWNER, 30, db_url)
    assert language.for_turn(pending, db_url) == "pt"
    assert gate.route(pending, OWNER, "sync", db_url).route == "queue"
    assert [r["text"] for r in inbox.replies_to(pending.id, db_url)] == [
        "Você é o número 1 na fila."]


def test_desk_notices_and_follow_ups_speak_it_too(any_db: str, replies: Path) -> None:
    agent = agents.create_user("ana", "correct horse", database_url=any_db)
    receive("webchat:pt", "oi vc pode me ajudar com o meu pedido", any_db)
    receive("webchat:en", "where is my order pls", any_db)
    views = {conv: handoff.escalate(conv, "keyword", database_url=any_db).ticket
             for conv in ("webchat:pt", "webchat:en")}
    joined = {conv: tickets._notice(view, contract.AGENT_JOINED, "Ana", any_db)
              for conv, view in views.items()}
    assert joined == {"webchat:pt": "Ana entrou na conversa.", "webchat:en": "Ana has joined."}
    for view in views.values():
        handoff.claim_ticket(view.id, agent.id, any_db)
        handoff.agent_reply(view.id, agent.id, "Could you send a photo?", any_db)
    later = utcnow() + timedelta(hours=25)
    texts = {"en": "Checking in", "pt": "Tudo certo por aí?"}
    assert sorted(handoff.send_follow_ups(timedelta(hours=24), texts, later, any_db)) == sorted(
        v.id for v in views.values())
    assert [conversations.pushed_after(conv, 0, any_db)[-1].text
            for conv in ("webchat:pt", "webchat:en")] == ["Tudo certo por aí?", "Checking in"]
