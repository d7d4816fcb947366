"""The satisfaction survey: its tables, and the flow built on them.

A survey is asked after a resolved conversation, one question at a time, inside
the platform's messaging window. A survey with a ticket was handled by a person
(`agent_id`); one without was the bot's alone. Answers are stored per question,
one row each; a skipped question has none.

When one starts
- A person handled it: when the agent resolves the ticket (`handoff.resolve`), in
  the same transaction, its first question queued right behind the "handed back"
  notice. `agent_id` is the resolving agent.
- The bot alone: right after the bot's goodbye or "you're welcome" (the replies in
  `BOT_ONLY_AFTER`), if the conversation has had no ticket and no survey in the
  last 24 hours and the customer wrote at least twice in that time (a greeting
  then "bye" is no conversation to rate). So at most one survey a day per
  conversation, whoever handled it. The "agent" question is left out.
Which questions, in which order, or none: parley.yml `survey:` (settings).

How it goes (the gate calls `take` for every customer message while no ticket is
open): a score 1-5 ("4", "4/5", a pressed button whose payload is the score)
answers a scored question; any text answers the free-text one, except "skip" (its
button's payload) which finishes without an answer; "skip" on a scored question
moves on. Anything else stops the survey (state `stopped`) and goes to the bot
as usual: the customer has moved on. A new handoff stops it too.

The messaging window: Messenger, Instagram and WhatsApp take free-form messages
only within 24 hours of the customer's last one. No question is queued once the
window has closed: the survey is `expired` instead, and an answer arriving after
`window_until` is not taken. The connectors expire a survey whose question they
could not send for the same reason. Telegram and the web chat have no window; a
survey there is not answered a day after it started.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.orm import Session

from parley.bot import contract, events, responses
from parley.bot.agents import Agent
from parley.bot.conversations import Conversation, Message, add_message
from parley.bot.handoff.tickets import Ticket
from parley.bot.responses import channels
from parley.bot.settings import load_settings
from parley.bot.storage import Base, UTCDateTime, session_scope, utcnow

STATES = ("asking", "done", "expired", "stopped")


class Survey(Base):
    __tablename__ = "surveys"
    __table_args__ = (Index("ix_surveys_conversation_state", "conversation_id", "state"),
                      Index("ix_surveys_started_at", "started_at"))

    id = Column(Integer, primary_key=True, autoincrement=True)
    conversation_id = Column(String(200), ForeignKey("conversations.id"), nullable=False)
    ticket_id = Column(Integer, nullable=True, index=True)  # None: the bot's alone
    agent_id = Column(Integer, nullable=True)  # who handled the ticket
    language = Column(String(16), nullable=True)
    questions = Column(JSON, nullable=False, default=list)  # asked in this order
    position = Column(Integer, nullable=False, default=0)  # the question awaiting an answer
    state = Column(String(16), nullable=False, default="asking")
    started_at = Column(UTCDateTime, nullable=False, default=utcnow)
    finished_at = Column(UTCDateTime, nullable=True)
    window_until = Column(UTCDateTime, nullable=True)  # the platform's window closes


class SurveyAnswer(Base):
    __tablename__ = "survey_answers"
    __table_args__ = (UniqueConstraint("survey_id", "question"),)

    id = Column(Integer, primary_key=True, autoincrement=True)
    survey_id = Column(Integer, ForeignKey("surveys.id"), nullable=False)
    question = Column(String(16), nullable=False)  # settings.SURVEY_QUESTIONS
    score = Column(Integer, nullable=True)  # 1-5 for the scored questions
    text = Column(Text, nullable=True)  # the free-text answer ("improve")
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


# -- the flow ------------------------------------------------------------------------

REPLIES = {"answer": contract.SURVEY_ANSWER, "time": contract.SURVEY_TIME,
           "agent": contract.SURVEY_AGENT, "improve": contract.SURVEY_IMPROVE}
SCORED = ("answer", "time", "agent")
PERSON_ONLY = ("agent",)
# Free-form sends are allowed this long after the customer's last message
# (connectors/meta.py refuses later ones); other channels have no window.
WINDOWS = {name: timedelta(hours=24) for name in ("messenger", "instagram", "whatsapp")}
ANSWER_WITHIN = timedelta(hours=24)  # on channels without a window
BOT_ONLY_AFTER = ("utter_goodbye", "utter_you_are_welcome")
BOT_ONLY_EVERY = timedelta(hours=24)
BOT_ONLY_MIN_MESSAGES = 2
TEXT_LIMIT = 2000  # characters of the free-text answer kept

SCORE = re.compile(r"^\W*([1-5])\s*(?:/\s*5|(?:out\s+)?of\s+5|de\s+5|stars?|estrelas?|⭐+)?"
                   r"\s*[.!]*\s*$", re.IGNORECASE)
SKIP = re.compile(r"^\W*(skip|no|nope|nothing|none|n/a|no thanks|pass|saltar|pular|ignorar|"
                  r"n[ãa]o|nada|n[ãa]o obrigad[oa])\W*$", re.IGNORECASE)
# The whole message is a keyword (AGENT): a request, not feedback mentioning an agent.
KEYWORDS = [re.compile(rf"\W*{re.escape(word)}\W*", re.IGNORECASE)
            for word in contract.KEYWORD_SETTINGS["keywords"]]


def questions_for(person: bool, configured: tuple[str, ...] | None = None) -> list[str]:
    """The deployment's questions in order; the agent's only when a person handled it."""
    chosen = load_settings().survey if configured is None else configured
    return [q for q in chosen if person or q not in PERSON_ONLY]


def window_until(conversation: Conversation, now: datetime) -> datetime | None:
    """When the platform's messaging window closes (None: the channel has none)."""
    window = WINDOWS.get(conversation.channel)
    if window is None:
        return None
    return (conversation.last_customer_at or now - window) + window


def open_survey(session: Session, conversation_id: str) -> Survey | None:
    return session.execute(
        select(Survey).where(Survey.conversation_id == conversation_id,
                             Survey.state == "asking")
        .order_by(Survey.id.desc()).limit(1).with_for_update()
    ).scalar_one_or_none()


def stop_open(session: Session, conversation_id: str, state: str = "stopped",
              now: datetime | None = None) -> int:
    """End the conversation's asking survey (a new handoff, a new survey, a closed
    window); how many were ended."""
    return int(session.execute(
        update(Survey).where(Survey.conversation_id == conversation_id,
                             Survey.state == "asking")
        .values(state=state, finished_at=now or utcnow())
        .execution_options(synchronize_session=False)).rowcount or 0)


def expire_open(conversation_id: str, database_url: str | None = None) -> int:
    """The platform refused a send because its window closed: no question of an
    asking survey can reach the customer any more."""
    with session_scope(database_url) as session:
        return stop_open(session, conversation_id, "expired")


def start(session: Session, conversation: Conversation, *, ticket_id: int | None,
          agent_id: int | None, delivery: str, reply_to: int | None = None,
          agent_name: str | None = None, database_url: str | None = None,
          now: datetime | None = None) -> Survey | None:
    """Start a survey and queue its first question (in the caller's transaction);
    None when the deployment asks nothing. Outside the window it is recorded as
    `expired`, and nothing is queued."""
    questions = questions_for(person=ticket_id is not None)
    if not questions:
        return None
    now = now or utcnow()
    stop_open(session, conversation.id, now=now)
    survey = Survey(conversation_id=conversation.id, ticket_id=ticket_id, agent_id=agent_id,
                    language=channels.language_code(conversation.language),
                    questions=questions, position=0, state="asking", started_at=now,
                    window_until=window_until(conversation, now))
    session.add(survey)
    session.flush()
    _ask(session, conversation, survey, delivery, reply_to, agent_name, database_url, now)
    return survey


def start_for_ticket(session: Session, ticket: Ticket, agent_id: int,
                     database_url: str | None = None) -> Survey | None:
    """An agent resolved the ticket: ask about it (pushed like other notices)."""
    conversation = session.get(Conversation, ticket.conversation_id)
    if conversation is None:
        return None
    return start(session, conversation, ticket_id=ticket.id, agent_id=agent_id,
                 delivery="push", agent_name=_agent_name(session, agent_id),
                 database_url=database_url)


def after_bot_answer(session: Session, message: Message, reply_names: list[str],
                     delivery: str, database_url: str | None = None) -> Survey | None:
    """The bot answered `message`; after its goodbye (or "you're welcome"), start a
    bot-only survey if the conversation is due one (see the module)."""
    if not any(name in BOT_ONLY_AFTER for name in reply_names):
        return None
    conversation = session.get(Conversation, message.conversation_id)
    if conversation is None:
        return None
    now = utcnow()
    since = now - BOT_ONLY_EVERY
    recent_survey = session.execute(
        select(Survey.id).where(Survey.conversation_id == conversation.id,
                                Survey.started_at >= since).limit(1)).first()
    recent_ticket = session.execute(
        select(Ticket.id).where(Ticket.conversation_id == conversation.id,
                                Ticket.created_at >= since).limit(1)).first()
    if recent_survey is not None or recent_ticket is not None:
        return None
    written = session.execute(
        select(Message.id).where(Message.conversation_id == conversation.id,
                                 Message.author == "customer", Message.created_at >= since)
        .limit(BOT_ONLY_MIN_MESSAGES)).all()
    if len(written) < BOT_ONLY_MIN_MESSAGES:
        return None
    return start(session, conversation, ticket_id=None, agent_id=None, delivery=delivery,
                 reply_to=message.id, database_url=database_url, now=now)


def take(session: Session, conversation: Conversation, message: Message, delivery: str,
         database_url: str | None = None) -> bool:
    """The customer's message as the answer to the asking survey's question, if it
    is one: stored, and the next question (or the thanks) queued. False when the
    message is for the bot (no survey, a late answer, or something else: then the
    survey stops)."""
    survey = open_survey(session, conversation.id)
    if survey is None:
        return False
    now = utcnow()
    arrived = message.created_at or now
    if _late(survey, arrived):
        _finish(survey, "expired", now)
        _tell_desk(session, survey)
        return False
    questions = list(survey.questions or [])
    if survey.position >= len(questions):  # (a survey whose questions ran out)
        _finish(survey, "done", now)
        return False
    question = questions[survey.position]
    text = (message.text or "").strip()
    answer: dict[str, Any] | None
    if SKIP.fullmatch(text):
        answer = None
    elif question in SCORED:
        score = SCORE.fullmatch(text)
        if score is None:
            _finish(survey, "stopped", now)
            _tell_desk(session, survey)
            return False
        answer = {"score": int(score.group(1))}
    elif not text or text.startswith("/") or any(k.fullmatch(text) for k in KEYWORDS):
        _finish(survey, "stopped", now)  # a button of the bot's, or a request for a person
        _tell_desk(session, survey)
        return False
    else:
        answer = {"text": text[:TEXT_LIMIT]}
    if answer is not None:
        session.add(SurveyAnswer(survey_id=survey.id, question=question, created_at=now,
                                 **answer))
    message.ticket_id = survey.ticket_id
    survey.position += 1
    survey.window_until = window_until(conversation, now)
    agent_name = _agent_name(session, survey.agent_id) if survey.agent_id else None
    _ask(session, conversation, survey, delivery, message.id, agent_name, database_url, now)
    _tell_desk(session, survey)
    return True


def _tell_desk(session: Session, survey: Survey) -> None:
    """An open ticket view shows the answers as they come (a person-handled survey)."""
    if survey.ticket_id is not None:
        events.publish(session, "ticket_updated", ticket_id=survey.ticket_id,
                       conversation_id=survey.conversation_id, survey=survey.state)


def _late(survey: Survey, arrived: datetime) -> bool:
    if survey.window_until is not None:
        return arrived > survey.window_until
    return arrived > survey.started_at + ANSWER_WITHIN


def _ask(session: Session, conversation: Conversation, survey: Survey, delivery: str,
         reply_to: int | None, agent_name: str | None, database_url: str | None,
         now: datetime) -> None:
    """Queue the question at `position`, or the thanks after the last one."""
    questions = list(survey.questions or [])
    if survey.position >= len(questions):
        _finish(survey, "done", now)
        _say(session, conversation, survey, contract.SURVEY_THANKS, delivery, reply_to,
             database_url)
        return
    if survey.window_until is not None and now >= survey.window_until:
        _finish(survey, "expired", now)  # the platform would refuse it
        return
    _say(session, conversation, survey, REPLIES[questions[survey.position]], delivery,
         reply_to, database_url, agent_name=agent_name or "")


def _finish(survey: Survey, state: str, now: datetime) -> None:
    survey.state = state
    survey.finished_at = now


def _agent_name(session: Session, agent_id: int | None) -> str | None:
    if agent_id is None:
        return None
    return session.execute(select(Agent.display_name).where(Agent.id == agent_id)).scalar()


def _say(session: Session, conversation: Conversation, survey: Survey, name: str,
         delivery: str, reply_to: int | None, database_url: str | None,
         **values: Any) -> None:
    """A writer-owned reply in the survey's language, for the channel to send."""
    rendered = responses.render(name, channels.of_conversation(conversation.id),
                                survey.language or "", database_url=database_url,
                                display_name=conversation.display_name, **values)
    extra = {k: v for k, v in rendered.items() if k != "text"}
    add_message(session, conversation.id, "system", rendered.get("text") or "",
                ticket_id=survey.ticket_id, payload=extra or None, delivery=delivery,
                reply_to=reply_to, reply_name=name)


# -- for the desk --------------------------------------------------------------------

def for_ticket(ticket_id: int, database_url: str | None = None) -> list[dict[str, Any]]:
    """The ticket's surveys, oldest first, with their answers (the desk's ticket view)."""
    with session_scope(database_url) as session:
        surveys = session.execute(select(Survey).where(Survey.ticket_id == ticket_id)
                                  .order_by(Survey.id)).scalars().all()
        answers: dict[int, list[SurveyAnswer]] = {}
        if surveys:
            for row in session.execute(
                    select(SurveyAnswer).where(SurveyAnswer.survey_id.in_([s.id for s in surveys]))
                    .order_by(SurveyAnswer.id)).scalars():
                answers.setdefault(row.survey_id, []).append(row)
        return [_as_json(s, answers.get(s.id, [])) for s in surveys]


def _as_json(survey: Survey, answers: list[SurveyAnswer]) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"id": survey.id, "ticket_id": survey.ticket_id, "agent_id": survey.agent_id,
            "language": survey.language, "questions": list(survey.questions or []),
            "state": survey.state, "started_at": when(survey.started_at),
            "finished_at": when(survey.finished_at),
            "window_until": when(survey.window_until),
            "answers": [{"question": a.question, "score": a.score, "text": a.text,
                         "created_at": when(a.created_at)} for a in answers]}
