"""Rasa's NLG plug point, served from the live reply library in-process.

    # endpoints.yml
    nlg:
      type: parley.bot.responses.nlg.LibraryNLG

Rasa asks for each `utter_*` (from stories, rules and the action server); we
answer from the library, which follows published edits within a second, so
writers never need a retrain or a restart.
"""

from __future__ import annotations

from typing import Any

from rasa.core.nlg.response import TemplatedNaturalLanguageGenerator
from rasa.shared.core.domain import Domain
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig

from parley.bot.responses import conversation_values, variants
from parley.bot.responses.channels import language_code
from parley.bot.responses.library import Library, library
from parley.bot.storage import off_loop


class LibraryNLG(TemplatedNaturalLanguageGenerator):
    """A templated generator to Rasa, so the agent hands it the trained domain's
    replies (`self.responses`) once the model is loaded: the fallback for a reply
    the library lacks, such as a project's own replies kept in domain.yml."""

    def __init__(self, endpoint_config: EndpointConfig | None = None,
                 domain: Domain | None = None) -> None:
        super().__init__(dict(domain.responses) if domain else {})
        extra = (endpoint_config.kwargs if endpoint_config else {}) or {}
        if extra.get("file"):  # one reply file for Rasa, the desk and the checks
            raise ValueError("endpoints.yml: the nlg `file:` option is gone; set `replies:` "
                             "in parley.yml (or PARLEY_REPLIES) instead")
        self.library: Library = library()

    async def generate(self, utter_action: str, tracker: DialogueStateTracker,
                       output_channel: str, **kwargs: Any) -> dict[str, Any] | None:
        if self.library.due():  # one small query at most every REFRESH_SECONDS
            await off_loop(self.library.refresh)
        snapshot = self.library.current()
        variations = snapshot.replies.get(utter_action) or self.responses.get(utter_action)
        if not variations:
            return None
        metadata = (tracker.latest_message.metadata if tracker.latest_message else None) or {}
        slots = tracker.current_slot_values()
        language = language_code(metadata.get("language") or slots.get("language"))
        values = {**conversation_values(metadata.get("display_name"), output_channel, language),
                  **slots, **{k: v for k, v in kwargs.items() if v is not None}}
        return variants.choose(variations, output_channel, language, slots, values)
