"""The conversation's language: where it comes from and when it changes, in one place.

Replies exist in a few languages (`responses.channels.LANGUAGES`). A conversation
is in one of them, stored on its row with where that came from, strongest first:

- "agent": chosen in the desk. Never overridden: a person read the conversation.
- "platform": the customer's locale as the platform sends it (Telegram's
  `language_code`, "pt-BR" -> "pt"), taken from every message that carries one:
  the customer's own setting beats a guess from a few words. A locale we have no
  replies in tells us nothing we can use, so detection decides then.
- "detected": a guess from the first DETECT_MESSAGES customer messages joined,
  made again as each of them arrives, and kept only when the detector is sure:
  "ok", "10234" or "👍" never switch a conversation. Until something is sure the
  conversation is in the default language (source None).

The worker applies the rules before each Rasa turn (`for_turn`: off the event loop,
never on the webhook's path); the turn's metadata, the gate's notices and the
desk's notices then all read the stored language.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from parley.bot import driver_sql, events
from parley.bot.conversations import Conversation, add_message
from parley.bot.inbox import Pending
from parley.bot.personal_data import PLACEHOLDER
from parley.bot.responses.channels import DEFAULT_LANGUAGE, LANGUAGES, language_code
from parley.bot.storage import session_scope

if TYPE_CHECKING:
    from lingua import LanguageDetector

logger = logging.getLogger(__name__)

SOURCES = ("platform", "detected", "agent")
# What each source may replace: an agent's choice nothing; a locale a guess.
REPLACES: dict[str, tuple[str, ...]] = {"agent": SOURCES, "platform": ("platform", "detected"),
                                        "detected": ("detected",)}
NAMES = {"en": "English", "pt": "Portuguese"}  # for the desk; a code without one shows as is
DETECT_MESSAGES = 3
# A guess counts only past all three. Measured on short DM texts in tests/test_language.py:
# with two languages to choose from, lingua is 90-95% "sure" of one-word texts it gets
# wrong ("blz", "vlw": Portuguese slang, taken for English), so length gates come first.
MIN_WORDS = 2
MIN_LETTERS = 8
MIN_CONFIDENCE = 0.8
_WORD = re.compile(r"[^\W\d_]+")
# Not prose: a button's intent payload ("/track_order") or a bare keyword (AGENT, BOT),
# which customers type whatever their language.
_NOT_PROSE = re.compile(r"\s*/\S.*|\W*(agent|bot)\W*", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ConversationLanguage:
    language: str  # what replies use: the stored language, or the default one
    source: str | None  # one of SOURCES; None: nothing has said yet

    def as_json(self) -> dict[str, Any]:
        return {"language": self.language, "language_source": self.source}


def choices() -> list[dict[str, str]]:
    """The languages an agent may pick: those we have replies in."""
    return [{"code": code, "name": NAMES.get(code, code)} for code in LANGUAGES]


def supported(code: object) -> str | None:
    """A platform locale as one of our languages ('pt-BR' -> 'pt'), or None."""
    short = str(code or "").replace("_", "-").split("-")[0].strip().lower()
    return short if short in LANGUAGES else None


# -- detection -----------------------------------------------------------------------
_detector_lock = threading.Lock()
_detectors: list[LanguageDetector | None] = []  # built at most once per process


def _build() -> LanguageDetector | None:
    """Lingua, offline (its models are inside the wheel), restricted to our languages:
    a detector that knows Spanish would call half of our Portuguese customers Spanish,
    and no reply would follow. None (and an error logged) if it cannot be loaded: the
    bot then keeps conversations in the default language rather than fail turns."""
    try:
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        codes = [IsoCode639_1.from_str(code) for code in LANGUAGES]
        return (LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
                .with_preloaded_language_models().build())
    except Exception:
        logger.exception("language detection is off: the lingua detector did not load")
        return None


def _detector() -> LanguageDetector | None:
    """Built on first use (about 0.8 s and 56 MB for English and Portuguese), under a
    lock so the worker's threads never build it twice."""
    with _detector_lock:
        if not _detectors:
            _detectors.append(_build())
        return _detectors[0]


def detect(text: str) -> str | None:
    """The language of `text` when the detector is sure of it, else None."""
    words = _WORD.findall(text)
    if len(words) < MIN_WORDS or sum(map(len, words)) < MIN_LETTERS:
        return None
    detector = _detector()
    if detector is None:
        return None
    ranked = detector.compute_language_confidence_values(text)
    if not ranked or ranked[0].value < MIN_CONFIDENCE:
        return None
    found = ranked[0].language.iso_code_639_1.name.lower()
    return found if found in LANGUAGES else None


def opening(texts: Iterable[str]) -> str:
    """What detection reads: the customer's words, without button payloads, keywords
    or the placeholders of masked personal data ("[email]" is no English word)."""
    words = (PLACEHOLDER.sub(" ", t) for t in texts if not _NOT_PROSE.fullmatch(t))
    return "\n".join(t for t in words if t.strip())


# -- the rules, per customer message ----------------------------------------------------
def for_turn(pending: Pending, database_url: str | None = None) -> str:
    """Apply the rules for this customer message; returns the language its turn uses.

    Runs in the worker before the gate and the Rasa turn, so whatever answers this
    message (the bot, a queue notice) speaks the result. Writes only on a change,
    through a guarded update: an agent's choice made meanwhile is never overwritten.
    """
    stored, source = pending.language, pending.language_source
    if source == "agent":
        return language_code(stored)
    locale = supported(pending.metadata.get("language"))
    if locale is not None:
        if (stored, source) == (locale, "platform"):
            return locale
        return _commit(pending.conversation_id, locale, "platform", database_url)
    if source == "platform":
        return language_code(stored)
    texts = _first_messages(pending, database_url)
    guess = detect(opening(texts)) if texts else None
    if guess is None or (stored, source) == (guess, "detected"):
        return language_code(stored)
    return _commit(pending.conversation_id, guess, "detected", database_url)


def _first_messages(pending: Pending, database_url: str | None) -> list[str]:
    """The first DETECT_MESSAGES customer messages' texts, or [] once this message
    is past them (the guess can no longer change, so it is not made again). On the
    driver cursor, as the worker's other per-turn statements (`bot/driver_sql.py`)."""
    with driver_sql.transaction(database_url) as cursor:
        rows = cursor.execute(
            "SELECT id, text FROM messages WHERE conversation_id = ? AND author = 'customer' "
            "ORDER BY id LIMIT ?", (pending.conversation_id, DETECT_MESSAGES)).all()
    return [text or "" for _, text in rows] if any(i == pending.id for i, _ in rows) else []


def _commit(conversation_id: str, language: str, source: str,
            database_url: str | None) -> str:
    """Store `language` unless a stronger source holds the row; the language in force."""
    weaker = ", ".join("?" * len(REPLACES[source]))
    with driver_sql.transaction(database_url) as cursor:
        changed = cursor.execute(
            "UPDATE conversations SET language = ?, language_source = ? WHERE id = ? AND "
            f"(language_source IS NULL OR language_source IN ({weaker}))",
            (language, source, conversation_id, *REPLACES[source])).rowcount
        if changed:
            return language
        row = cursor.execute("SELECT language FROM conversations WHERE id = ?",
                             (conversation_id,)).one()
        return language_code(row[0] if row else None)


# -- the desk ------------------------------------------------------------------------
def choose(conversation_id: str, language: str, agent_id: int, agent_name: str,
           ticket_id: int | None = None, database_url: str | None = None
           ) -> ConversationLanguage:
    """An agent sets the conversation's language; nothing overrides it afterwards.
    Recorded in the transcript (who, when) and published to the desks."""
    if language not in LANGUAGES:
        raise ValueError(f"no replies in {language!r}; choose one of {', '.join(LANGUAGES)}")
    with session_scope(database_url) as session:
        conversation = session.execute(
            select(Conversation).where(Conversation.id == conversation_id).with_for_update()
        ).scalar_one_or_none()
        if conversation is None:
            raise LookupError(f"no conversation {conversation_id}")
        conversation.language, conversation.language_source = language, "agent"
        add_message(session, conversation_id, "system",
                    f"Language set to {NAMES.get(language, language)} by {agent_name}",
                    ticket_id=ticket_id, agent_id=agent_id, delivery="none")
        events.publish(session, "ticket_updated", ticket_id=ticket_id,
                       conversation_id=conversation_id, language=language,
                       language_source="agent")
    return ConversationLanguage(language, "agent")


def of_conversations(conversation_ids: list[str], database_url: str | None = None
                     ) -> dict[str, ConversationLanguage]:
    """Each conversation's language as replies use it, and its source."""
    if not conversation_ids:
        return {}
    with session_scope(database_url) as session:
        rows = session.execute(
            select(Conversation.id, Conversation.language, Conversation.language_source)
            .where(Conversation.id.in_(set(conversation_ids)))).all()
    found = {cid: ConversationLanguage(language_code(lang), source) for cid, lang, source in rows}
    return {cid: found.get(cid, ConversationLanguage(DEFAULT_LANGUAGE, None))
            for cid in conversation_ids}


def of_conversation(conversation_id: str, database_url: str | None = None) -> str:
    """The language replies to this conversation use (notices sent from outside a turn)."""
    return of_conversations([conversation_id], database_url)[conversation_id].language
