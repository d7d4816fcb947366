"""The Northwind demo store's own Rasa SDK actions (order status).

`rasa run actions --actions actions` loads this package; the import below
registers Parley's handoff and fallback actions beside the store's own.
"""

import parley.bot.actions  # noqa: F401  (action_handoff, action_fallback)
from actions.orders import ActionOrderStatus, ValidateOrderForm

__all__ = ["ActionOrderStatus", "ValidateOrderForm"]
