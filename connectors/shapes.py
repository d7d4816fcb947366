"""Shape checks for webhook payloads, run before anything is parsed or stored.

Each check raises `RejectedRequest(400, "<path>: <what is wrong>")` when a field
that parsing reads has the wrong JSON type, a string holds what the database
cannot store or is longer than its column, or a number is out of range; a payload
that passes is safe to parse. The shapes are tables of small checks: only the
fields our parsers read are listed, anything else may hold anything.

Optional fields may be absent or null (parsers read `.get()`); required ones must
be there and not null. Telegram updates are additionally read by
python-telegram-bot, whose `Update.de_json` parses every kind of update and some
sixty sub-objects of a message; rather than copy its schema, `check_telegram`
lets it try and refuses what it cannot read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from parley.connectors.requests import INT64, RejectedRequest, unstorable

Check = Callable[[str, Any], None]  # (path, value); raises RejectedRequest

# Limits, in characters (PostgreSQL's VARCHAR(n) counts characters too).
ID = 128  # a platform's user id; conversation ids are "<channel>:<id>" in VARCHAR(200)
MESSAGE_ID = 200  # messages.platform_message_id is VARCHAR(200); Instagram mids are ~170
NAME = 99  # a first and a last name make a display name within VARCHAR(200)
CODE = 64  # chat types, message kinds, language codes
PAYLOAD = 1000  # button and quick-reply payloads: Meta's own limit
TEXT = 20_000  # customer text from Meta (bodies are capped at 64 KiB anyway)
TELEGRAM_TEXT = 4096  # Telegram counts UTF-16 units: a valid text has no more characters
UNIX_TIME = range(0, 253_402_300_800)  # up to 9999-12-31, what datetime holds
WEBCHAT_SENDER = re.compile(r"[A-Za-z0-9_-]{1,64}")  # fullmatch: no trailing newline


def _refuse(path: str, what: str) -> NoReturn:
    raise RejectedRequest(400, f"{path or 'body'}: {what}")


def _join(path: str, name: str) -> str:
    """Top-level fields are named bare: "entry[0].sender", not ".entry[0].sender"."""
    return f"{path}.{name}" if path else name


# -- the checks tables are made of ----------------------------------------------


def text(limit: int | None, min_length: int = 0) -> Check:
    """A string the database can store, of `min_length` to `limit` characters."""

    def check(path: str, value: Any) -> None:
        if not isinstance(value, str):
            _refuse(path, "must be a string")
        if len(value) < min_length:
            _refuse(path, "must not be empty")
        if limit is not None and len(value) > limit:
            _refuse(path, f"is {len(value)} characters; the limit is {limit}")
        if problem := unstorable(value):
            _refuse(path, problem)

    return check


def integer(allowed: range = INT64) -> Check:
    """An integer (not a boolean, not a float) within `allowed`."""

    def check(path: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            _refuse(path, "must be an integer")
        if value not in allowed:
            _refuse(path, "is out of range" if allowed != INT64
                    else "is out of range (signed 64 bits)")

    return check


def ident(limit: int = ID) -> Check:
    """An id that names a conversation or a message: empty would merge them all."""
    return text(limit, min_length=1)


def boolean(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        _refuse(path, "must be true or false")


def text_or_integer(limit: int) -> Check:
    """Ids Meta sends as a string in one place and a number in another (app_id)."""
    as_text, as_integer = text(limit), integer()
    return lambda path, value: (as_integer if isinstance(value, int) else as_text)(path, value)


def obj(fields: Mapping[str, Check], required: Iterable[str] = ()) -> Check:
    """A JSON object whose listed fields, where present and not null, pass their checks."""
    needed = tuple(required)

    def check(path: str, value: Any) -> None:
        if not isinstance(value, dict):
            _refuse(path, "must be an object")
        for name in needed:
            if value.get(name) is None:
                _refuse(_join(path, name), "is required")
        for name, field in fields.items():
            if value.get(name) is not None:
                field(_join(path, name), value[name])

    return check


def array(item: Check) -> Check:
    def check(path: str, value: Any) -> None:
        if not isinstance(value, list):
            _refuse(path, "must be a list")
        for i, element in enumerate(value):
            item(f"{path}[{i}]", element)

    return check


# -- Telegram: what parse() reads, and what python-telegram-bot needs present ----

# An empty first_name makes PTB's full_name None, and a display name must be text.
_USER = obj({"id": integer(), "is_bot": boolean, "first_name": text(NAME, min_length=1),
             "last_name": text(NAME), "language_code": text(CODE)},
            required=("id", "is_bot", "first_name"))
_CHAT = obj({"id": integer(), "type": text(CODE)}, required=("id", "type"))
_MESSAGE = obj({"message_id": integer(), "date": integer(UNIX_TIME), "chat": _CHAT,
                "from": _USER, "text": text(TELEGRAM_TEXT)},
               required=("message_id", "date", "chat"))
_CALLBACK_QUERY = obj({"id": ident(), "from": _USER, "chat_instance": text(ID),
                       "data": text(PAYLOAD), "message": _MESSAGE},
                      required=("id", "from", "chat_instance"))
_UPDATE = obj({"update_id": integer(range(0, 2**63)), "message": _MESSAGE,
               "callback_query": _CALLBACK_QUERY}, required=("update_id",))


def check_telegram(payload: dict[str, Any]) -> None:
    """A Telegram update: `message` and `callback_query` field by field; updates of
    other kinds only as far as python-telegram-bot must read them (parse ignores them)."""
    _UPDATE("", payload)
    if (problem := _unreadable_by_ptb(payload)) is not None:
        # Name the field: the kinds of update are parsed independently of each other.
        field = next((key for key in payload if key != "update_id" and _unreadable_by_ptb(
            {"update_id": payload["update_id"], key: payload[key]})), "update")
        _refuse(field, f"python-telegram-bot cannot read it ({problem})")


def _unreadable_by_ptb(payload: dict[str, Any]) -> str | None:
    """The exception PTB's `Update.de_json` raises on this update, by name, or None."""
    from telegram import Update  # here: Meta and web chat need not import PTB

    try:
        Update.de_json(payload, None)
    except Exception as exc:  # PTB's constructors raise whatever the data provokes
        return exc.__class__.__name__
    return None


# -- Messenger and Instagram ------------------------------------------------------

_PARTY = obj({"id": ident()}, required=("id",))
_META_EVENT = obj({
    "sender": _PARTY, "recipient": _PARTY, "timestamp": integer(),
    "message": obj({"mid": ident(MESSAGE_ID), "text": text(TEXT), "is_echo": boolean,
                    "app_id": text_or_integer(ID),
                    "quick_reply": obj({"payload": text(PAYLOAD)})}),
    "postback": obj({"mid": ident(MESSAGE_ID), "payload": text(PAYLOAD),
                     "title": text(PAYLOAD)}),
}, required=("sender", "recipient"))
_META = obj({"object": text(CODE), "entry": array(obj({"messaging": array(_META_EVENT),
                                                      "standby": array(_META_EVENT)}))},
            required=("object", "entry"))


def check_meta(payload: dict[str, Any], webhook_object: str) -> None:
    """A Messenger or Instagram webhook call (`webhook_object` "page" or "instagram")."""
    if isinstance(payload, dict) and payload.get("object") != webhook_object:
        _refuse("object", f"must be '{webhook_object}'")
    _META("", payload)


# -- WhatsApp ---------------------------------------------------------------------

_WA_REPLY = obj({"id": text(PAYLOAD), "title": text(PAYLOAD)})
_WA_VALUE = obj({
    "contacts": array(obj({"wa_id": ident(),
                           "profile": obj({"name": text(NAME)}, required=("name",))},
                          required=("wa_id",))),
    "messages": array(obj({
        "from": ident(), "id": ident(MESSAGE_ID), "type": text(CODE),
        "text": obj({"body": text(TEXT)}),
        "interactive": obj({"type": text(CODE), "button_reply": _WA_REPLY,
                            "list_reply": _WA_REPLY}),
        "button": obj({"payload": text(PAYLOAD), "text": text(PAYLOAD)}),
    }, required=("from", "id"))),
})
_WA_CHANGE_FIELDS = obj({"field": text(CODE)})


def _wa_change(path: str, change: Any) -> None:
    """Only a "messages" change has a value parse reads (statuses are ignored)."""
    _WA_CHANGE_FIELDS(path, change)
    if change.get("field") == "messages" and change.get("value") is not None:
        _WA_VALUE(f"{path}.value", change["value"])


_WHATSAPP = obj({"object": text(CODE), "entry": array(obj({"changes": array(_wa_change)}))},
                required=("object", "entry"))


def check_whatsapp(payload: dict[str, Any]) -> None:
    """A WhatsApp Cloud API webhook call."""
    if isinstance(payload, dict) and payload.get("object") != "whatsapp_business_account":
        _refuse("object", "must be 'whatsapp_business_account'")
    _WHATSAPP("", payload)


# -- the web chat -----------------------------------------------------------------


def _webchat_sender(path: str, value: Any) -> None:
    if not isinstance(value, str) or not WEBCHAT_SENDER.fullmatch(value):
        _refuse(path, "must be 1-64 characters of letters, digits, '-' or '_'")


_WEBCHAT = obj({"sender": _webchat_sender, "message": text(None)},
               required=("sender", "message"))


def check_webchat(payload: dict[str, Any]) -> None:
    """A web chat or scripting channel post: {"sender", "message"}. The message's
    length is parse_message's to judge (413)."""
    _WEBCHAT("", payload)
