"""The reply library: revisions and review, the merged live set, variants, export, NLG."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from rasa.core.nlg.generator import ResponseVariationFilter
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SlotSet, UserUttered
from rasa.shared.core.slots import TextSlot
from rasa.shared.core.trackers import DialogueStateTracker

from parley.bot import agents
from parley.bot.responses import placeholders, revisions, variants
from parley.bot.responses.channels import CHANNELS
from parley.bot.responses.library import Library, dump, export, library, read_yaml
from parley.bot.responses.nlg import LibraryNLG
from parley.bot.responses.revisions import ReviewError
from parley.bot.settings import load_settings

BASE = {"utter_hello": [{"text": "Hello {first_name}!"}],
        "utter_bye": [{"text": "Bye"}]}


def people(url: str) -> dict[str, agents.AgentView]:
    return {role: agents.create_user(name, f"{name}-password", role, name.title(), url)
            for name, role in (("wes", "writer"), ("ana", "agent"), ("root", "admin"))} | {
        "admin2": agents.create_user("zoe", "zoe-password", "admin", "Zoe", url)}


def yaml_file(tmp_path: Path, replies: dict = BASE) -> Path:
    path = tmp_path / "responses.yml"
    path.write_text(dump(replies), encoding="utf-8")
    return path


def test_review_workflow_and_roles(any_db: str, tmp_path: Path) -> None:
    who = people(any_db)
    lib = Library(yaml_file(tmp_path), any_db, refresh_seconds=0)
    assert lib.current().replies["utter_hello"] == BASE["utter_hello"]

    with pytest.raises(ReviewError) as refused:
        revisions.save_draft("utter_hello", [{"text": "Hi"}], who["agent"], any_db)
    assert refused.value.status == 403  # an agent cannot edit, let alone publish

    draft = revisions.save_draft("utter_hello", [{"text": "Hiya {first_name}"}],
                                 who["writer"], any_db)
    again = revisions.save_draft("utter_hello", [{"text": "Hey {first_name}"}],
                                 who["writer"], any_db)
    assert again.id == draft.id and again.body == [{"text": "Hey {first_name}"}]
    with pytest.raises(ReviewError):  # not submitted yet
        revisions.approve(draft.id, who["admin"], any_db)
    revisions.submit(draft.id, who["writer"], any_db)
    for actor in (who["writer"], who["agent"]):
        with pytest.raises(ReviewError) as refused:
            revisions.approve(draft.id, actor, any_db)
        assert refused.value.status == 403
    assert lib.current().replies["utter_hello"] == BASE["utter_hello"]  # not live yet

    published = revisions.approve(draft.id, who["admin"], any_db)
    assert published.state == "published" and published.reviewer_id == who["admin"].id
    live = lib.current()
    assert live.replies["utter_hello"] == [{"text": "Hey {first_name}"}]
    assert live.overridden == {"utter_hello"} and live.version == published.published_version

    # An admin's own draft needs another admin.
    own = revisions.save_draft("utter_bye", [{"text": "Ciao"}], who["admin"], any_db)
    revisions.submit(own.id, who["admin"], any_db)
    with pytest.raises(ReviewError, match="own draft"):
        revisions.approve(own.id, who["admin"], any_db)
    with pytest.raises(ReviewError, match="comment"):
        revisions.send_back(own.id, who["admin2"], "  ", any_db)
    back = revisions.send_back(own.id, who["admin2"], "Too Italian", any_db)
    assert back.state == "returned" and back.review_comment == "Too Italian"
    assert lib.current().replies["utter_bye"] == [{"text": "Bye"}]

    # Roll back to the baseline's successor and keep the whole history.
    second = revisions.save_draft("utter_hello", [{"text": "Yo"}], who["writer"], any_db)
    revisions.submit(second.id, who["writer"], any_db)
    revisions.approve(second.id, who["admin2"], any_db)
    assert lib.current().replies["utter_hello"] == [{"text": "Yo"}]
    with pytest.raises(ReviewError):
        revisions.rollback("utter_hello", draft.id, who["writer"], any_db)
    rolled = revisions.rollback("utter_hello", draft.id, who["admin"], any_db)
    assert lib.current().replies["utter_hello"] == [{"text": "Hey {first_name}"}]
    assert [r.id for r in revisions.history("utter_hello", any_db)] == [
        rolled.id, second.id, draft.id]
    diff = revisions.diff([{"text": "Yo"}], rolled.body, "utter_hello")
    assert "-  - text: Yo\n+  - text: Hey {first_name}\n" in diff


def test_a_publish_reaches_a_library_within_its_refresh_interval(db_url: str,
                                                                 tmp_path: Path) -> None:
    who = people(db_url)
    lib = Library(yaml_file(tmp_path), db_url, refresh_seconds=0.3)
    assert lib.current().replies["utter_bye"] == [{"text": "Bye"}]
    draft = revisions.save_draft("utter_bye", [{"text": "See you"}], who["writer"], db_url)
    revisions.submit(draft.id, who["writer"], db_url)
    revisions.approve(draft.id, who["admin"], db_url)
    assert lib.current().replies["utter_bye"] == [{"text": "Bye"}]  # cached: not due
    time.sleep(0.35)
    assert lib.current().replies["utter_bye"] == [{"text": "See you"}]


def test_the_library_follows_the_yaml_file_too(db_url: str, tmp_path: Path) -> None:
    path = yaml_file(tmp_path)
    lib = Library(path, db_url, refresh_seconds=0)
    assert "utter_new" not in lib.current().replies
    time.sleep(0.01)
    path.write_text(dump({**BASE, "utter_new": [{"text": "New"}]}), encoding="utf-8")
    assert lib.current().replies["utter_new"] == [{"text": "New"}]


def test_export_writes_the_published_set_back(db_url: str, tmp_path: Path) -> None:
    who = people(db_url)
    path = yaml_file(tmp_path)
    draft = revisions.save_draft("utter_bye", [{"text": "Bye 👋", "channel": "telegram"},
                                               {"text": "Bye"}], who["writer"], db_url)
    revisions.submit(draft.id, who["writer"], db_url)
    revisions.approve(draft.id, who["admin"], db_url)
    assert export(path, db_url) == 1
    assert read_yaml(path)["utter_bye"] == [{"text": "Bye 👋", "channel": "telegram"},
                                            {"text": "Bye"}]
    assert read_yaml(path)["utter_hello"] == BASE["utter_hello"]
    assert export(path, db_url) == 0  # idempotent


def test_the_committed_yaml_is_in_export_form() -> None:
    """So the first export after an edit changes only the edited reply in git."""
    shipped = load_settings().replies_file
    text = shipped.read_text(encoding="utf-8")
    assert dump(read_yaml(shipped)) == text


CASES = [
    ("telegram", {}),
    ("whatsapp", {}),
    ("webchat", {"tier": "gold"}),
    ("telegram", {"tier": "gold"}),
    ("messenger", {"tier": "silver"}),
]
VARIATIONS = [
    {"text": "plain A"},
    {"text": "plain B"},
    {"text": "tg", "channel": "telegram"},
    {"text": "gold", "condition": [{"type": "slot", "name": "tier", "value": "gold"}]},
    {"text": "gold tg", "channel": "telegram",
     "condition": [{"type": "slot", "name": "tier", "value": "gold"}]},
]


@pytest.mark.parametrize(("channel", "slots"), CASES)
def test_variant_choice_matches_rasas_rules(channel: str, slots: dict) -> None:
    ours = variants.suitable(VARIATIONS, channel, "en", slots)
    rasa = ResponseVariationFilter({"utter_x": VARIATIONS}).responses_for_utter_action(
        "utter_x", channel, slots)
    assert ours == rasa


def test_language_variants_fall_back_to_the_default_language() -> None:
    body = [{"text": "Hello"}, {"text": "Olá", "metadata": {"language": "pt"}},
            {"text": "Hello on WhatsApp", "channel": "whatsapp"}]
    assert variants.choose(body, "webchat", "pt") == {"text": "Olá"}
    assert variants.choose(body, "whatsapp", "en") == {"text": "Hello on WhatsApp"}
    assert variants.choose(body, "webchat", "de") == {"text": "Hello"}
    only_en = [{"text": "Hello"}]
    assert variants.choose(only_en, "telegram", "pt") == {"text": "Hello"}
    picks = {variants.choose([{"text": "a"}, {"text": "b"}], rng=random.Random(seed))["text"]
             for seed in range(20)}
    assert picks == {"a", "b"}  # random variations keep working


def test_placeholders_fill_known_values_and_leave_the_rest() -> None:
    filled = placeholders.fill({"text": "Order {order_number}: {eta}", "buttons": [
        {"title": "Track {order_number}", "payload": '/track{"order_number":"1"}'}]},
        {"order_number": "10234"})
    assert filled == {"text": "Order 10234: {eta}", "buttons": [
        {"title": "Track 10234", "payload": '/track{"order_number":"1"}'}]}
    assert placeholders.found(filled) == {"eta"}


def tracker(text: str, metadata: dict | None = None, **slots: str) -> DialogueStateTracker:
    events = [UserUttered(text, metadata=metadata or {})] + [
        SlotSet(k, v) for k, v in slots.items()]
    return DialogueStateTracker.from_events(
        "c1", events, [TextSlot(name, mappings=[{"type": "custom"}]) for name in slots])


def test_nlg_serves_the_live_library(db_url: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    who = people(db_url)
    path = yaml_file(tmp_path, {**BASE, "utter_order": [
        {"text": "Order {order_number} ships {eta}."},
        {"text": "Encomenda {order_number}: {eta}.", "metadata": {"language": "pt"}},
        {"text": "📦 {order_number}", "channel": "whatsapp"}]})
    from rasa.core.nlg.response import TemplatedNaturalLanguageGenerator
    from rasa.utils.endpoints import EndpointConfig

    monkeypatch.setenv("PARLEY_REPLIES", str(path))  # as `replies:` in parley.yml would
    config = EndpointConfig(type="parley.bot.responses.nlg.LibraryNLG")
    with pytest.raises(ValueError, match=r"parley\.yml"):  # one reply file for everyone
        LibraryNLG(EndpointConfig(type=config.type, file=str(path)), Domain.empty())
    nlg = LibraryNLG(config, Domain.empty())
    assert nlg.library.path == path
    nlg.library.database_url = db_url  # the test's own database
    nlg.library.refresh_seconds = 0

    async def say(action: str, channel: str, t: DialogueStateTracker, **kw: str) -> dict:
        return await nlg.generate(action, t, channel, **kw)

    hello = asyncio.run(say("utter_hello", "telegram", tracker("hi", {"display_name":
                                                                       "Ana Silva"})))
    assert hello == {"text": "Hello Ana!"}
    visitor = tracker("hi", {"display_name": "Web visitor 3f2a"})  # a name we made up
    assert asyncio.run(say("utter_hello", "webchat", visitor)) == {"text": "Hello there!"}
    plain = tracker("hi")
    assert asyncio.run(say("utter_hello", "rest", plain)) == {"text": "Hello there!"}
    t = tracker("where", {"language": "pt-BR"}, order_number="10234")
    assert asyncio.run(say("utter_order", "telegram", t, eta="amanhã")) == {
        "text": "Encomenda 10234: amanhã."}
    t = tracker("where", order_number="10234")
    assert asyncio.run(say("utter_order", "whatsapp", t)) == {"text": "📦 10234"}
    assert asyncio.run(say("utter_nothing", "telegram", t)) is None
    # Rasa's agent hands a templated generator the trained domain's replies after
    # loading the model: a project's replies kept in domain.yml still work.
    assert isinstance(nlg, TemplatedNaturalLanguageGenerator)
    nlg.responses = {"utter_nothing": [{"text": "From the domain, {first_name}"}]}
    assert asyncio.run(say("utter_nothing", "telegram", t)) == {"text": "From the domain, there"}

    draft = revisions.save_draft("utter_hello", [{"text": "Hey {first_name}, welcome!"}],
                                 who["writer"], db_url)
    revisions.submit(draft.id, who["writer"], db_url)
    revisions.approve(draft.id, who["admin"], db_url)
    assert asyncio.run(say("utter_hello", "rest", plain)) == {"text": "Hey there, welcome!"}


def test_render_for_code_outside_rasa_uses_the_published_text(db_url: str) -> None:
    from parley.bot import responses

    who = people(db_url)
    before = responses.render("utter_agent_joined", "telegram", database_url=db_url,
                              agent_name="Rita")
    assert before["text"] == "Rita from our team has joined the chat."
    draft = revisions.save_draft("utter_agent_joined", [
        {"text": "{agent_name} is here to help."}], who["writer"], db_url)
    revisions.submit(draft.id, who["writer"], db_url)
    revisions.approve(draft.id, who["admin"], db_url)
    library(database_url=db_url).refresh(force=True)
    assert responses.render("utter_agent_joined", database_url=db_url, agent_name="Rita") == {
        "text": "Rita is here to help."}
    with pytest.raises(KeyError):
        responses.render("utter_no_such_reply", database_url=db_url)


def test_each_connector_asks_for_replies_under_its_channel_name() -> None:
    """Rasa passes the output channel's name to the NLG; `channel:` variants match it.
    A worker collects each turn's replies under its input channel's name."""
    from parley.connectors.base import Collector
    from parley.connectors.messenger import InstagramInput, MessengerInput
    from parley.connectors.telegram import TelegramInput
    from parley.connectors.webchat import WebChatInput
    from parley.connectors.whatsapp import WhatsAppInput

    inputs = {"messenger": MessengerInput, "instagram": InstagramInput,
              "whatsapp": WhatsAppInput, "telegram": TelegramInput, "webchat": WebChatInput}
    outputs = {name: Collector(cls.name()) for name, cls in inputs.items()}
    assert {name: out.name() for name, out in outputs.items()} == {n: n for n in outputs}
    assert set(outputs) <= set(CHANNELS)
