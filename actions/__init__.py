"""Rasa SDK custom actions; run with `rasa run actions --actions actions`."""

from actions.fallback import ActionFallback
from actions.handoff import ActionHandoff
from actions.orders import ActionOrderStatus, ValidateOrderForm

__all__ = ["ActionFallback", "ActionHandoff", "ActionOrderStatus", "ValidateOrderForm"]
