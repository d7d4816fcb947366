"""Imports every table module so `Base.metadata` is complete (migrations, tests)."""

from bot import agents, conversations, events, handoff, orders  # noqa: F401
from bot.responses import revisions  # noqa: F401
