"""The satisfaction survey: its tables (the flow is built on them below).

A survey is asked after a resolved conversation, one question at a time, inside
the platform's messaging window. A survey with a ticket was handled by a person
(`agent_id`); one without was the bot's alone. Answers are stored per question.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint

from parley.bot.storage import Base, UTCDateTime, utcnow

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
