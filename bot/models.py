"""Imports every table module so `Base.metadata` is complete (migrations, tests)."""

from parley.bot import agents, audit, conversations, events, handoff, spikes, survey  # noqa: F401
from parley.bot.responses import revisions  # noqa: F401
