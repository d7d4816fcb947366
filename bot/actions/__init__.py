"""Parley's own Rasa SDK actions: the handoff and the two-step fallback.

A project registers them with one line in its own action package:

    import parley.bot.actions  # noqa: F401  (action_handoff, action_fallback)

The Rasa SDK registers every `Action` subclass it has imported when it loads
the project's package (`rasa run actions --actions actions`).
"""

from parley.bot.actions.fallback import ActionFallback
from parley.bot.actions.handoff import ActionHandoff

__all__ = ["ActionFallback", "ActionHandoff"]
