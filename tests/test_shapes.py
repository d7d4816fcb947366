"""Hostile payloads against the shape checks and the parsers behind them (issue 11).

Property: whatever a webhook carries, `check_*` followed by the platform's parse
either refuses it (RejectedRequest, a 4xx) or yields messages the database can
store. Payloads start as valid-looking updates and then have fields replaced by
wrong types, hostile strings (lone surrogates, NUL, oversize), integers beyond
64 bits and deep nesting, keys deleted, and known or unknown keys added. Runs are
derandomized so CI sees the same examples every time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from parley.connectors import messenger, shapes, telegram, webchat, whatsapp
from parley.connectors.gate import Inbound
from parley.connectors.requests import INT64, RejectedRequest, read_json_object, unstorable

FUZZ = dict(derandomize=True, database=None, deadline=None, print_blob=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                   HealthCheck.large_base_example])
# 10,500 generated payloads across the platforms, plus 1,500 raw bodies.
EXAMPLES = {"telegram": 3000, "messenger": 2000, "instagram": 1000, "whatsapp": 2500,
            "webchat": 2000, "body": 1500}
APP_ID = "4242"

# -- building blocks ------------------------------------------------------------------

SAFE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
WORDS = st.text(SAFE_CHARS, min_size=1, max_size=30)
IDS = st.from_regex(r"[0-9]{1,20}", fullmatch=True)
BAD_TEXT = st.sampled_from(["\ud800", "ok\udfffok", "\udc00\ud800", "nul\x00", "\x00", "",
                            "x" * 5000, "y" * 25_000, " "])
HUGE_INT = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**40), 2**63 - 1])
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                   st.text(max_size=12), BAD_TEXT, HUGE_INT)


def nested(depth: int, kind: str) -> Any:
    node: Any = "leaf"
    for _ in range(depth):
        node = [node] if kind == "list" else {"a": node}
    return node


DEEP = st.builds(nested, st.integers(20, 1500), st.sampled_from(["list", "dict"]))
WRONG = st.one_of(SCALAR, DEEP, st.lists(SCALAR, max_size=3),
                  st.dictionaries(st.text(max_size=6), SCALAR, max_size=3))


def paths(payload: Any, max_depth: int = 16) -> list[tuple[Any, ...]]:
    """Every place in a payload below the root, down to `max_depth` (iteratively:
    payloads may nest past Python's recursion limit)."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), payload)]
    while stack:
        prefix, node = stack.pop()
        if prefix:
            found.append(prefix)
        if len(prefix) >= max_depth:
            continue
        if isinstance(node, dict):
            stack.extend(((*prefix, key), value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend(((*prefix, i), value) for i, value in enumerate(node))
    return found


def copied(node: Any) -> Any:
    """A copy of part of the payload to put elsewhere (a message as `edited_message`,
    a user as a chat …); one too deep to copy is placed as a marker instead."""
    try:
        return copy.deepcopy(node)
    except RecursionError:
        return "too deep to copy"


def mutated(draw: st.DrawFn, payload: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Up to four edits: replace a value, delete it, or add a (known or odd) key
    holding a wrong value or a copy of another part of the payload."""
    for _ in range(draw(st.integers(0, 4), label="edits")):
        places = paths(payload)
        if not places:
            break
        path = draw(st.sampled_from(places), label="path")
        parent = payload
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]), label="action")
        value = draw(st.one_of(WRONG, st.sampled_from(places).map(
            lambda p: copied(_at(payload, p)))), label="value")
        if action == "replace":
            parent[path[-1]] = value
        elif action == "delete":
            del parent[path[-1]]
        else:
            target = _at(payload, path)
            if isinstance(target, dict):
                key = draw(st.sampled_from(keys) | st.text(max_size=8), label="key")
                target[key] = value
            elif isinstance(target, list):
                target.append(value)
    return payload


@st.composite
def hostile(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]], keys: list[str]
            ) -> dict[str, Any]:
    """A valid-looking payload from `base`, then mutated."""
    return mutated(draw, draw(base, label="payload"), keys)


def _at(payload: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        payload = payload[step]
    return payload


def assert_storable(item: Inbound) -> None:
    """What the inbox writes: text columns without NUL/surrogates, within their sizes."""
    channel, _, platform_id = item.conversation_id.partition(":")
    assert channel and platform_id, item.conversation_id
    assert isinstance(item.text, str) and item.text and unstorable(item.text) is None
    for value, limit in ((item.conversation_id, 200), (item.display_name, 200),
                         (item.platform_message_id or "-", 200)):
        assert isinstance(value, str) and len(value) <= limit and unstorable(value) is None
    assert_json_storable(item.metadata)


def assert_json_storable(value: Any) -> None:
    json.dumps(value, allow_nan=False)
    if isinstance(value, dict):
        for key, inner in value.items():
            assert_json_storable(key)
            assert_json_storable(inner)
    elif isinstance(value, list):
        for inner in value:
            assert_json_storable(inner)
    elif isinstance(value, str):
        assert unstorable(value) is None
    elif isinstance(value, int):
        assert value in INT64


def refused_or_storable(check: Callable[[], None], parse: Callable[[], list[Inbound]]
                        ) -> list[Inbound] | None:
    """None when refused with a 4xx; the parsed items (all storable) otherwise."""
    try:
        check()
        items = parse()
    except RejectedRequest as rejected:
        assert rejected.status in (400, 413) and rejected.reason
        event(f"refused {rejected.status}")
        return None
    event("accepted, something to store" if items else "accepted, nothing to store")
    for item in items:
        assert_storable(item)
    return items


# -- Telegram -------------------------------------------------------------------------

TG_KEYS = ["message", "edited_message", "channel_post", "callback_query", "inline_query",
           "poll", "my_chat_member", "text", "chat", "from", "date", "message_id", "id",
           "type", "first_name", "last_name", "language_code", "is_bot", "data",
           "chat_instance", "sticker", "photo", "entities", "reply_to_message",
           "reply_markup", "forward_origin", "sender_chat", "new_chat_members",
           "pinned_message", "external_reply", "quote", "successful_payment", "api_kwargs"]


@st.composite
def telegram_update(draw: st.DrawFn) -> dict[str, Any]:
    chat_id = draw(st.integers(-(2**63), 2**63 - 1) | st.integers(1, 10**10))
    user: dict[str, Any] = {"id": chat_id, "is_bot": False, "first_name": draw(WORDS)}
    if draw(st.booleans()):
        user["last_name"] = draw(WORDS)
    if draw(st.booleans()):
        user["language_code"] = draw(st.sampled_from(["en", "pt-br", "pt"]))
    chat = {"id": chat_id, "type": draw(st.sampled_from(["private", "private", "group"]))}
    message: dict[str, Any] = {"message_id": draw(st.integers(1, 2**31)),
                               "date": draw(st.integers(0, 2**32)), "chat": chat,
                               "from": user, "text": draw(WORDS)}
    if draw(st.booleans()):
        message["entities"] = [{"type": "bold", "offset": 0, "length": 1}]
    if draw(st.booleans()):
        message["reply_to_message"] = {"message_id": 1, "date": 1, "chat": dict(chat),
                                       "text": "earlier"}
    kind = draw(st.sampled_from(["message", "callback_query", "edited_message"]))
    update: dict[str, Any] = {"update_id": draw(st.integers(0, 2**31))}
    if kind == "callback_query":
        update[kind] = {"id": draw(IDS), "from": user, "chat_instance": draw(IDS),
                        "data": draw(WORDS),
                        "message": message if draw(st.booleans()) else
                        {"message_id": 1, "date": 0, "chat": chat}}
    else:
        update[kind] = message
    return update


@settings(max_examples=EXAMPLES["telegram"], **FUZZ)
@given(hostile(telegram_update(), TG_KEYS))
def test_telegram_refuses_or_parses_to_storable(payload: dict[str, Any]) -> None:
    refused_or_storable(lambda: shapes.check_telegram(payload),
                        lambda: telegram.parse(payload))


# -- Messenger and Instagram ----------------------------------------------------------

META_KEYS = ["object", "entry", "messaging", "standby", "sender", "recipient", "id",
             "timestamp", "message", "postback", "mid", "text", "quick_reply", "payload",
             "is_echo", "app_id", "attachments", "read", "delivery", "reaction", "title",
             "referral"]


@st.composite
def meta_event(draw: st.DrawFn) -> dict[str, Any]:
    user, page = draw(IDS), draw(IDS)
    kind = draw(st.sampled_from(["text", "quick_reply", "postback", "echo", "read",
                                 "attachment"]))
    event: dict[str, Any] = {"sender": {"id": page if kind == "echo" else user},
                             "recipient": {"id": user if kind == "echo" else page},
                             "timestamp": draw(st.integers(0, 2**42))}
    mid = f"m_{draw(st.from_regex(r'[A-Za-z0-9_-]{1,180}', fullmatch=True))}"
    if kind == "text":
        event["message"] = {"mid": mid, "text": draw(WORDS)}
    elif kind == "quick_reply":
        event["message"] = {"mid": mid, "text": draw(WORDS),
                            "quick_reply": {"payload": draw(WORDS)}}
    elif kind == "postback":
        event["postback"] = {"title": draw(WORDS), "payload": draw(WORDS)}
        if draw(st.booleans()):
            event["postback"]["mid"] = mid
    elif kind == "echo":
        event["message"] = {"mid": mid, "is_echo": True, "text": draw(WORDS),
                            "app_id": draw(st.sampled_from([int(APP_ID), APP_ID, 77]))}
    elif kind == "read":
        event["read"] = {"watermark": draw(st.integers(0, 2**42))}
    else:
        event["message"] = {"mid": mid, "attachments": [
            {"type": "image", "payload": {"url": "https://example.com/a.png"}}]}
    return event


@st.composite
def meta_call(draw: st.DrawFn, webhook_object: str) -> dict[str, Any]:
    entries = []
    for _ in range(draw(st.integers(1, 2))):
        entry: dict[str, Any] = {"id": draw(IDS), "time": 1,
                                 "messaging": draw(st.lists(meta_event(), min_size=1,
                                                            max_size=3))}
        if draw(st.booleans()):
            entry["standby"] = draw(st.lists(meta_event(), max_size=2))
        entries.append(entry)
    return {"object": webhook_object, "entry": entries}


def _meta_property(payload: dict[str, Any], platform: type[messenger.Platform]) -> None:
    human: list[tuple[str, str]] = []

    def parse() -> list[Inbound]:
        inbound, held = messenger.parse(payload, platform, APP_ID)
        human.extend(held)
        return inbound

    if refused_or_storable(lambda: shapes.check_meta(payload, platform.webhook_object),
                           parse) is not None:
        for conversation, text in human:  # hold_externally stores both
            assert_storable(Inbound(conversation, text))


@settings(max_examples=EXAMPLES["messenger"], **FUZZ)
@given(hostile(meta_call("page"), META_KEYS))
def test_messenger_refuses_or_parses_to_storable(payload: dict[str, Any]) -> None:
    _meta_property(payload, messenger.Platform)


@settings(max_examples=EXAMPLES["instagram"], **FUZZ)
@given(hostile(meta_call("instagram"), META_KEYS))
def test_instagram_refuses_or_parses_to_storable(payload: dict[str, Any]) -> None:
    _meta_property(payload, messenger.InstagramPlatform)


# -- WhatsApp -------------------------------------------------------------------------

WA_KEYS = ["object", "entry", "changes", "field", "value", "contacts", "messages",
           "statuses", "profile", "name", "wa_id", "from", "id", "type", "text", "body",
           "interactive", "button_reply", "list_reply", "button", "payload", "title",
           "metadata", "timestamp"]


@st.composite
def whatsapp_message(draw: st.DrawFn, user: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "interactive", "button", "image"]))
    message: dict[str, Any] = {"from": user, "id": f"wamid.{draw(IDS)}",
                               "timestamp": "1", "type": kind}
    if kind == "text":
        message["text"] = {"body": draw(WORDS)}
    elif kind == "interactive":
        which = draw(st.sampled_from(["button_reply", "list_reply"]))
        message["interactive"] = {"type": which, which: {"id": draw(WORDS),
                                                         "title": draw(WORDS)}}
    elif kind == "button":
        message["button"] = {"payload": draw(WORDS), "text": draw(WORDS)}
    else:
        message["image"] = {"id": "1", "mime_type": "image/jpeg"}
    return message


@st.composite
def whatsapp_call(draw: st.DrawFn) -> dict[str, Any]:
    user = draw(IDS)
    changes: list[dict[str, Any]] = [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PNID"},
        "contacts": [{"profile": {"name": draw(WORDS)}, "wa_id": user}],
        "messages": draw(st.lists(whatsapp_message(user), min_size=1, max_size=3))}}]
    if draw(st.booleans()):
        changes.append({"field": "messages", "value": {"statuses": [
            {"id": "wamid.1", "status": "delivered", "recipient_id": user}]}})
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA",
                                                              "changes": changes}]}


@settings(max_examples=EXAMPLES["whatsapp"], **FUZZ)
@given(hostile(whatsapp_call(), WA_KEYS))
def test_whatsapp_refuses_or_parses_to_storable(payload: dict[str, Any]) -> None:
    refused_or_storable(lambda: shapes.check_whatsapp(payload),
                        lambda: whatsapp.parse(payload))


# -- the web chat ---------------------------------------------------------------------


def webchat_items(payload: dict[str, Any]) -> list[Inbound]:
    sender, text = webchat.parse_message(payload)
    return [Inbound(webchat.conversation_id(sender), text)]


WEBCHAT_POST = st.fixed_dictionaries({
    "sender": st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True) | st.text(max_size=70),
    "message": WORDS | st.text()})


@settings(max_examples=EXAMPLES["webchat"], **FUZZ)
@given(hostile(WEBCHAT_POST, ["sender", "message"]))
def test_webchat_refuses_or_parses_to_storable(payload: dict[str, Any]) -> None:
    refused_or_storable(lambda: shapes.check_webchat(payload),
                        lambda: webchat_items(payload))


# -- raw bodies -----------------------------------------------------------------------

JSONISH = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=5) | BAD_TEXT, inner, max_size=3),
                       max_leaves=12)


@st.composite
def raw_body(draw: st.DrawFn) -> bytes:
    """JSON as platforms would never send it: NaN, 1e999-style overflow, escaped or
    encoded lone surrogates, huge integers, deep nesting, broken UTF-8, truncation."""
    if draw(st.integers(0, 4)) == 0:  # nesting past the recursion limit, as bytes
        depth, brackets = draw(st.integers(20, 30_000)), draw(st.sampled_from(["[]", "{}"]))
        opener = b"[" if brackets == "[]" else b'{"a":'
        closer = brackets[1].encode()
        body = b'{"deep":' + opener * depth + b"1" + closer * depth + b"}"
    else:
        body = json.dumps(draw(JSONISH), ensure_ascii=draw(st.booleans()),
                          allow_nan=True).encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is", "as is", "truncate", "garble", "bytes"]))
    if how == "truncate":
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif how == "garble":
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at + 1:]
    elif how == "bytes":
        body = draw(st.binary(max_size=200))
    return body


@settings(max_examples=EXAMPLES["body"], **FUZZ)
@given(raw_body())
def test_any_body_is_an_object_or_a_rejection(body: bytes) -> None:
    try:
        payload = read_json_object(SimpleNamespace(body=body))  # type: ignore[arg-type]
    except RejectedRequest as rejected:
        assert rejected.status in (400, 413) and rejected.reason
        return
    assert isinstance(payload, dict)
    assert_json_storable(payload)  # nothing NUL, lone surrogate, non-finite or > 64-bit


# -- hand-written: each must be refused, each must be accepted --------------------------


def tg_text(**changes: Any) -> dict[str, Any]:
    message = {"message_id": 7, "date": 1_700_000_000, "text": "hi",
               "chat": {"id": 42, "type": "private"},
               "from": {"id": 42, "is_bot": False, "first_name": "Maria", "last_name": "Lopes"}}
    return {"update_id": 9, "message": {**message, **changes}}


def reply_chain(length: int) -> dict[str, Any]:
    update = tg_text()
    for _ in range(length):
        update = tg_text(reply_to_message=update["message"])
    return update


def tg_button(**changes: Any) -> dict[str, Any]:
    query = {"id": "cb1", "chat_instance": "1", "data": "/shipping_times",
             "from": {"id": 42, "is_bot": False, "first_name": "Maria"},
             "message": {"message_id": 1, "date": 1, "chat": {"id": 42, "type": "private"}}}
    return {"update_id": 10, "callback_query": {**query, **changes}}


def fb(event_changes: dict[str, Any] | None = None, message: dict[str, Any] | None = None,
       obj: str = "page") -> dict[str, Any]:
    event = {"sender": {"id": "PSID1"}, "recipient": {"id": "PAGE"}, "timestamp": 1,
             "message": {"mid": "m_1", "text": "hi", **(message or {})},
             **(event_changes or {})}
    return {"object": obj, "entry": [{"id": "PAGE", "time": 1, "messaging": [event]}]}


def wa(message: dict[str, Any] | None = None, value: dict[str, Any] | None = None
       ) -> dict[str, Any]:
    msg = {"from": "15551234567", "id": "wamid.1", "type": "text", "text": {"body": "hi"},
           **(message or {})}
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": "15551234567"}],
            "messages": [msg], **(value or {})}}]}]}


REFUSED: list[tuple[str, Callable[[dict[str, Any]], None], dict[str, Any], str]] = [
    ("tg update_id missing", shapes.check_telegram, {"message": {}}, "update_id: is required"),
    ("tg update_id true", shapes.check_telegram, {"update_id": True}, "update_id: must be an"),
    ("tg chat not an object", shapes.check_telegram, tg_text(chat=1), "message.chat: must be"),
    ("tg text a number", shapes.check_telegram, tg_text(text=5), "message.text: must be a str"),
    ("tg lone surrogate", shapes.check_telegram, tg_text(text="a\ud800"), "lone surrogate"),
    ("tg NUL in a name", shapes.check_telegram,
     tg_text(**{"from": {"id": 1, "is_bot": False, "first_name": "a\x00"}}),
     "message.from.first_name: contains a NUL"),
    ("tg chat id beyond 64 bits", shapes.check_telegram,
     tg_text(chat={"id": 2**64, "type": "private"}), "message.chat.id: is out of range"),
    ("tg chat id a string", shapes.check_telegram, tg_text(chat={"id": "42", "type": "private"}),
     "message.chat.id: must be an integer"),
    ("tg date past datetime", shapes.check_telegram, tg_text(date=10**15), "message.date"),
    ("tg sticker a number", shapes.check_telegram, tg_text(sticker=5),
     "message: python-telegram-bot cannot read it"),
    ("tg edited_message a string", shapes.check_telegram, {"update_id": 1, "edited_message": "x"},
     "edited_message: python-telegram-bot cannot read it"),
    ("tg reply chain past the recursion limit", shapes.check_telegram,
     reply_chain(2000), "message: python-telegram-bot cannot read it (RecursionError)"),
    ("tg button without from", shapes.check_telegram, tg_button(**{"from": None}),
     "callback_query.from: is required"),
    ("tg button data a list", shapes.check_telegram, tg_button(data=["x"]),
     "callback_query.data: must be a string"),
    ("tg text too long", shapes.check_telegram, tg_text(text="x" * 4097), "the limit is 4096"),
    ("tg last name too long", shapes.check_telegram,
     tg_text(**{"from": {"id": 1, "is_bot": False, "first_name": "a", "last_name": "b" * 100}}),
     "message.from.last_name: is 100 characters"),
    ("fb wrong object", lambda p: shapes.check_meta(p, "page"), fb(obj="instagram"),
     "object: must be 'page'"),
    ("fb entry an object", lambda p: shapes.check_meta(p, "page"),
     {"object": "page", "entry": {}}, "entry: must be a list"),
    ("fb messaging a number", lambda p: shapes.check_meta(p, "page"),
     {"object": "page", "entry": [{"messaging": 5}]}, "entry[0].messaging: must be a list"),
    ("fb sender id a dict", lambda p: shapes.check_meta(p, "page"),
     fb({"sender": {"id": {"a": 1}}}), "entry[0].messaging[0].sender.id: must be a string"),
    ("fb empty sender id", lambda p: shapes.check_meta(p, "page"), fb({"sender": {"id": ""}}),
     "sender.id: must not be empty"),
    ("fb recipient a string", lambda p: shapes.check_meta(p, "page"),
     fb({"recipient": "PAGE"}, {"is_echo": True}), "recipient: must be an object"),
    ("fb quick reply a string", lambda p: shapes.check_meta(p, "page"),
     fb(message={"quick_reply": "x"}), "message.quick_reply: must be an object"),
    ("fb text a list", lambda p: shapes.check_meta(p, "page"), fb(message={"text": ["hi"]}),
     "message.text: must be a string"),
    ("fb mid too long", lambda p: shapes.check_meta(p, "page"), fb(message={"mid": "m" * 201}),
     "message.mid: is 201 characters"),
    ("fb timestamp huge", lambda p: shapes.check_meta(p, "page"),
     fb({"timestamp": 2**70, "postback": {"payload": "/x"}}), "timestamp: is out of range"),
    ("ig text with NUL", lambda p: shapes.check_meta(p, "instagram"),
     fb(message={"text": "\x00"}, obj="instagram"), "contains a NUL"),
    ("wa wrong object", shapes.check_whatsapp, {"object": "page", "entry": []},
     "object: must be 'whatsapp_business_account'"),
    ("wa entry a string", shapes.check_whatsapp,
     {"object": "whatsapp_business_account", "entry": ["x"]}, "entry[0]: must be an object"),
    ("wa change null", shapes.check_whatsapp,
     {"object": "whatsapp_business_account", "entry": [{"changes": [None]}]},
     "entry[0].changes[0]: must be an object"),
    ("wa text a string", shapes.check_whatsapp, wa({"text": "hi"}), "text: must be an object"),
    ("wa body a number", shapes.check_whatsapp, wa({"text": {"body": 5}}),
     "text.body: must be a string"),
    ("wa from a list", shapes.check_whatsapp, wa({"from": ["1"]}), "from: must be a string"),
    ("wa profile name null", shapes.check_whatsapp,
     wa(value={"contacts": [{"wa_id": "1", "profile": {"name": None}}]}),
     "profile.name: is required"),
    ("wa wa_id a list", shapes.check_whatsapp,
     wa(value={"contacts": [{"wa_id": ["1"], "profile": {"name": "K"}}]}),
     "wa_id: must be a string"),
    ("wa button reply surrogate", shapes.check_whatsapp,
     wa({"type": "interactive", "interactive": {"button_reply": {"id": "\udfff"}}}),
     "button_reply.id: contains a lone surrogate"),
    ("webchat sender with newline", shapes.check_webchat, {"sender": "abc\n", "message": "hi"},
     "sender: must be 1-64"),
    ("webchat message a number", shapes.check_webchat, {"sender": "abc", "message": 5},
     "message: must be a string"),
    ("webchat surrogate", shapes.check_webchat, {"sender": "abc", "message": "\ud83d"},
     "message: contains a lone surrogate"),
]


@pytest.mark.parametrize(("name", "check", "payload", "reason"), REFUSED,
                         ids=[case[0] for case in REFUSED])
def test_hand_written_payloads_are_refused(name: str, check: Callable[[dict[str, Any]], None],
                                           payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(RejectedRequest) as refused:
        check(payload)
    assert refused.value.status == 400
    assert reason in refused.value.reason


ACCEPTED: list[tuple[str, Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], list],
                     dict[str, Any], int]] = [
    ("tg text", shapes.check_telegram, telegram.parse, tg_text(), 1),
    ("tg emoji and accents", shapes.check_telegram, telegram.parse,
     tg_text(text="olá 👋🏽 \U0001f600"), 1),
    ("tg largest ids", shapes.check_telegram, telegram.parse,
     tg_text(chat={"id": -(2**63), "type": "private"}, message_id=2**63 - 1), 1),
    ("tg text at the limit", shapes.check_telegram, telegram.parse, tg_text(text="x" * 4096), 1),
    ("tg button", shapes.check_telegram, telegram.parse, tg_button(), 1),
    ("tg button on an old message", shapes.check_telegram, telegram.parse,
     tg_button(message={"message_id": 1, "date": 0, "chat": {"id": 42, "type": "private"}}), 1),
    ("tg edited message ignored", shapes.check_telegram, telegram.parse,
     {"update_id": 3, "edited_message": tg_text()["message"]}, 0),
    ("tg sticker ignored", shapes.check_telegram, telegram.parse,
     tg_text(text=None, sticker={"file_id": "f", "file_unique_id": "u", "type": "regular",
                                 "width": 1, "height": 1, "is_animated": False,
                                 "is_video": False}), 0),
    ("tg unknown future field", shapes.check_telegram, telegram.parse,
     {**tg_text(), "brand_new_kind": {"x": [1, {"y": None}]}}, 1),
    ("tg group message ignored", shapes.check_telegram, telegram.parse,
     tg_text(chat={"id": -100, "type": "supergroup", "title": "g"}), 0),
    ("fb text", lambda p: shapes.check_meta(p, "page"),
     lambda p: messenger.parse(p, messenger.Platform)[0], fb(), 1),
    ("fb quick reply", lambda p: shapes.check_meta(p, "page"),
     lambda p: messenger.parse(p, messenger.Platform)[0],
     fb(message={"quick_reply": {"payload": "/greet"}}), 1),
    ("fb postback without mid", lambda p: shapes.check_meta(p, "page"),
     lambda p: messenger.parse(p, messenger.Platform)[0],
     fb({"message": None, "postback": {"payload": "/greet", "title": "Hi"}}), 1),
    ("fb echo with numeric app_id", lambda p: shapes.check_meta(p, "page"),
     lambda p: messenger.parse(p, messenger.Platform, APP_ID)[0],
     fb(message={"is_echo": True, "app_id": 4242}), 0),
    ("fb read receipt", lambda p: shapes.check_meta(p, "page"),
     lambda p: messenger.parse(p, messenger.Platform)[0],
     fb({"message": None, "read": {"watermark": 1}}), 0),
    ("ig long mid", lambda p: shapes.check_meta(p, "instagram"),
     lambda p: messenger.parse(p, messenger.InstagramPlatform)[0],
     fb(message={"mid": "aWdf" * 50}, obj="instagram"), 1),
    ("wa text", shapes.check_whatsapp, whatsapp.parse, wa(), 1),
    ("wa list reply", shapes.check_whatsapp, whatsapp.parse,
     wa({"type": "interactive", "text": None,
         "interactive": {"type": "list_reply", "list_reply": {"id": "/x", "title": "X"}}}), 1),
    ("wa status only", shapes.check_whatsapp, whatsapp.parse,
     {"object": "whatsapp_business_account", "entry": [{"changes": [{
         "field": "messages", "value": {"statuses": [{"id": "wamid.1", "status": "read"}]}}]}]},
     0),
    ("wa other field with any value", shapes.check_whatsapp, whatsapp.parse,
     {"object": "whatsapp_business_account", "entry": [{"changes": [{
         "field": "account_update", "value": "anything"}]}]}, 0),
    ("webchat", shapes.check_webchat, webchat_items, {"sender": "abc-1_X", "message": "hi"}, 1),
]


@pytest.mark.parametrize(("name", "check", "parse", "payload", "count"), ACCEPTED,
                         ids=[case[0] for case in ACCEPTED])
def test_hand_written_payloads_are_accepted(name: str, check: Callable[[dict[str, Any]], None],
                                            parse: Callable[[dict[str, Any]], list],
                                            payload: dict[str, Any], count: int) -> None:
    check(payload)
    items = parse(payload)
    assert len(items) == count
    for item in items:
        assert_storable(item)


BAD_BODIES = [
    (b"[" * 30_000 + b"]" * 30_000, "nests deeper"),  # RecursionError in json
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nests deeper than 32"),
    (b'{"t": "\\ud800"}', "lone surrogate"),
    (b'{"t\\u0000": 1}', "a key in the body contains a NUL"),
    (b'{"n": NaN}', "NaN"),
    (b'{"n": -Infinity}', "-Infinity"),
    (b'{"n": 1e999}', "too large for a float"),
    (b'{"n": 18446744073709551616}', "beyond signed 64 bits"),
    (b'{"n": ' + b"9" * 5000 + b"}", "beyond signed 64 bits"),
    (b'{"t": "\xed\xa0\x80"}', "not valid UTF-8"),  # an encoded surrogate
    (b"\xff\xfe{\x00}\x00", "not valid UTF-8"),
    (b'{"a": 1', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"", "empty"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES,
                         ids=[body[:24].decode("latin-1") for body, _ in BAD_BODIES])
def test_hand_written_bodies_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(RejectedRequest) as refused:
        read_json_object(SimpleNamespace(body=body))  # type: ignore[arg-type]
    assert refused.value.status == 400 and reason in refused.value.reason


def test_bodies_over_the_limit_are_413() -> None:
    with pytest.raises(RejectedRequest) as refused:
        read_json_object(SimpleNamespace(body=b"{}" + b" " * 100), max_bytes=50)  # type: ignore[arg-type]
    assert refused.value.status == 413


@pytest.mark.parametrize("body", [
    b'{"t": "\\ud83d\\ude00 ol\xc3\xa1", "n": -9223372036854775808, "f": 1.5e300}',
    b'{"a":' * 31 + b"[1]" + b"}" * 31,
    b'{"update_id": 9223372036854775807}',
])
def test_hand_written_bodies_are_read(body: bytes) -> None:
    assert isinstance(read_json_object(SimpleNamespace(body=body)), dict)  # type: ignore[arg-type]
