"""Imports every table module so `Base.metadata` is complete (migrations, tests)."""

from parley.bot import (  # noqa: F401
    agents,
    audit,
    contacts,
    conversations,
    events,
    handoff,
    spikes,
    survey,
)
from parley.bot.responses import revisions  # noqa: F401
