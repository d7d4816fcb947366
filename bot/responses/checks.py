"""Checks on the reply library: what would break or be cut off on a channel.

Run on the project's reply file by `parley replies check` (part of `make test`) and on every
edit in the desk's editor. Each problem names the reply, the channel and what
to change, in words a writer can act on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from parley.bot import contract
from parley.bot.project import Project
from parley.bot.responses import placeholders
from parley.bot.responses.channels import CHANNELS, LANGUAGES, Channel, configured
from parley.bot.responses.variants import language_of
from parley.bot.settings import Settings, load_settings

ALLOWED_KEYS = {"id", "text", "image", "custom", "buttons", "button_type", "quick_replies",
                "attachment", "elements", "channel", "metadata", "condition"}
# Rasa sends these itself when its default actions run.
RASA_DEFAULTS = {"utter_default", "utter_ask_rephrase"}
NOT_REPLIES = {"utter_action", "utter_message"}  # Rasa API names, not replies
YAML_REFERENCE = re.compile(r"\b(utter_[a-z0-9_]+)\b")
CODE_REFERENCE = re.compile(r"""["'](utter_[a-z0-9_]+)["']""")
CODE_PREFIX = re.compile(r"""f["'](utter_[a-z0-9_]+)\{""")  # f"utter_order_{status}"

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    reply: str
    channel: str  # "" when it concerns every channel
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = CHANNELS[self.channel].label if self.channel in CHANNELS else \
            self.channel or "all channels"
        return f"{self.severity}: {self.reply} [{where}]: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class References:
    names: frozenset[str]  # replies the bot's flows and code send
    prefixes: frozenset[str]  # f"utter_order_{…}": any reply with the prefix
    where: dict[str, str]  # a name → one file that mentions it

    def uses(self, name: str) -> bool:
        return name in self.names or any(name.startswith(p) for p in self.prefixes)


def references(settings: Settings | None = None) -> References:
    """Where the project's stories, rules, domain, test stories and actions send
    replies, plus the replies Parley itself sends (`contract`)."""
    project = Project(settings or load_settings())
    names: set[str] = set(contract.REPLY_NAMES)
    prefixes: set[str] = {contract.TOPIC_PREFIX}
    where: dict[str, str] = dict.fromkeys(contract.REPLY_NAMES, "Parley")
    replies_file = project.settings.replies_file.resolve()
    for path in [*project.domain_files(), *project.data_files(tests=True)]:
        if not path.exists() or path.resolve() == replies_file:
            continue
        for name in YAML_REFERENCE.findall(path.read_text(encoding="utf-8")):
            names.add(name)
            where.setdefault(name, project.rel(path))
    for form, spec in project.domain()["forms"].items():
        for slot in (spec or {}).get("required_slots") or []:  # Rasa asks with these
            prefixes.update({f"utter_ask_{slot}", f"utter_ask_{form}_{slot}"})
    for path in project.action_files():
        text = path.read_text(encoding="utf-8")
        for name in CODE_REFERENCE.findall(text):
            names.add(name)
            where.setdefault(name, project.rel(path))
        prefixes.update(CODE_PREFIX.findall(text))
    names -= NOT_REPLIES
    return References(frozenset(names), frozenset(prefixes), where)


def _sample_length(text: str) -> int:
    """Length as the customer sees it, with placeholders at their sample values."""
    return len(placeholders.fill(text, placeholders.samples()))


def _served_channels(variation: dict[str, Any], variations: list[dict[str, Any]],
                     channels: list[Channel]) -> list[Channel]:
    """The channels this variation can reach: its own, or every configured channel
    that has no variation of its own in the same language."""
    own = variation.get("channel")
    if own:
        return [CHANNELS[own]] if own in CHANNELS else []
    language = language_of(variation)
    covered = {v.get("channel") for v in variations
               if v.get("channel") and language_of(v) == language}
    return [c for c in channels if c.name not in covered]


def _shape(name: str, variations: Any) -> list[Problem]:
    if not isinstance(variations, list) or not variations:
        return [Problem(name, "", "needs at least one variation (a list of `- text: …`)")]
    problems = []
    for i, v in enumerate(variations, 1):
        if not isinstance(v, dict):
            problems.append(Problem(name, "", f"variation {i} must be a mapping like "
                                              "`text: …`"))
            continue
        unknown = sorted(set(v) - ALLOWED_KEYS)
        if unknown:
            problems.append(Problem(name, "", f"variation {i} has unknown key(s) "
                                              f"{', '.join(unknown)}; allowed: "
                                              f"{', '.join(sorted(ALLOWED_KEYS))}"))
        if not any(v.get(k) for k in ("text", "image", "custom", "buttons", "attachment")):
            problems.append(Problem(name, "", f"variation {i} is empty: give it a text"))
        if v.get("channel") and v["channel"] not in CHANNELS:
            problems.append(Problem(name, str(v["channel"]),
                                    f"variation {i} is for unknown channel {v['channel']!r}; "
                                    f"use one of {', '.join(CHANNELS)}"))
        if language_of(v) not in LANGUAGES:
            problems.append(Problem(name, "", f"variation {i} has language "
                                              f"{language_of(v)!r}; use one of "
                                              f"{', '.join(LANGUAGES)}"))
        buttons = v.get("buttons")
        if buttons is not None and (not isinstance(buttons, list) or not all(
                isinstance(b, dict) and b.get("title") and b.get("payload") is not None
                for b in buttons)):
            problems.append(Problem(name, "", f"variation {i}: every button needs a title "
                                              "and a payload"))
    return problems


def _channel_limits(name: str, variation: dict[str, Any], channel: Channel,
                    label: str) -> list[Problem]:
    problems = []
    text = str(variation.get("text") or "")
    length = _sample_length(text)
    fix = (f"shorten it, or add a `channel: {channel.name}` variant"
           if not variation.get("channel") else "shorten it")
    if length > channel.text_limit:
        problems.append(Problem(name, channel.name, f"{label}text is {length} characters; "
                                f"{channel.label} shows at most {channel.text_limit}: {fix}"))
    buttons = variation.get("buttons") or []
    if not buttons:
        return problems
    if channel.max_buttons == 0:
        problems.append(Problem(name, channel.name, f"{label}has buttons, but "
                                f"{channel.label} cannot show buttons: add a "
                                f"`channel: {channel.name}` variant that spells the "
                                "options out in the text"))
        return problems
    title_limit = channel.button_title_limit
    if len(buttons) > channel.max_buttons:
        if channel.list_rows and len(buttons) <= channel.list_rows:
            title_limit = channel.list_title_limit  # sent as a list message
            problems.append(Problem(name, channel.name, f"{label}has {len(buttons)} buttons; "
                                    f"{channel.label} shows at most {channel.max_buttons} "
                                    "reply buttons, so it goes out as a list the customer "
                                    "opens first: keep it if that is fine, or cut to "
                                    f"{channel.max_buttons}", "warning"))
        else:
            most = (f"{channel.max_buttons} reply buttons (or {channel.list_rows} as a list)"
                    if channel.list_rows else f"{channel.max_buttons} buttons")
            problems.append(Problem(name, channel.name, f"{label}has {len(buttons)} buttons; "
                                    f"{channel.label} shows at most {most}: remove some "
                                    f"or add a `channel: {channel.name}` variant"))
    for b in buttons:
        title = placeholders.fill(str(b.get("title") or ""), placeholders.samples())
        if len(title) > title_limit:
            problems.append(Problem(name, channel.name, f"{label}button {title!r} is "
                                    f"{len(title)} characters; {channel.label} cuts button "
                                    f"titles at {title_limit}: shorten it"))
        payload = str(b.get("payload") or "")
        if channel.payload_limit and len(payload.encode()) > channel.payload_limit:
            problems.append(Problem(name, channel.name, f"{label}button {b.get('title')!r} "
                                    f"has a {len(payload.encode())}-byte payload; "
                                    f"{channel.label} allows {channel.payload_limit}: use a "
                                    "shorter intent or payload"))
    return problems


def _label(variation: dict[str, Any], index: int, many: bool) -> str:
    bits = [b for b in (variation.get("channel"),
                        language_of(variation) if language_of(variation) != "en" else "")
            if b]
    if not many:
        return ""
    return f"variation {index}{' (' + ', '.join(bits) + ')' if bits else ''}: "


def check_reply(name: str, variations: Any, channels: list[Channel],
                slots: Iterable[str] = ()) -> list[Problem]:
    """Everything about one reply; the editor calls this on every keystroke pause."""
    problems = _shape(name, variations)
    if not isinstance(variations, list):
        return problems
    good = [v for v in variations if isinstance(v, dict)]
    known = set(placeholders.known()) | set(slots)
    default = next((v for v in good if not v.get("channel") and language_of(v) == "en"
                    and not v.get("condition")), None)
    expected = placeholders.found(default) if default else set()
    for i, v in enumerate(good, 1):
        label = _label(v, i, len(good) > 1)
        for channel in _served_channels(v, good, channels):
            problems += _channel_limits(name, v, channel, label)
        used = placeholders.found({k: v.get(k) for k in ("text", "buttons", "image")})
        for unknown in sorted(used - known):
            problems.append(Problem(name, v.get("channel") or "", f"{label}{{{unknown}}} is "
                                    "not a placeholder anything fills: fix the spelling; "
                                    f"known ones: {', '.join(sorted(known))}"))
        if v is not default:
            for missing in sorted(expected - used):
                problems.append(Problem(name, v.get("channel") or "", f"{label}leaves out "
                                        f"{{{missing}}}, which the default text has: add "
                                        "it so this variant says the same"))
    return problems


def slot_names(settings: Settings | None = None) -> set[str]:
    return set(Project(settings or load_settings()).domain()["slots"])


def check_library(replies: dict[str, Any], settings: Settings | None = None,
                  channels: list[Channel] | None = None) -> list[Problem]:
    """Every reply, plus replies the bot sends that are missing, and ones never sent."""
    settings = settings or load_settings()
    channels = channels if channels is not None else configured(settings)
    project = Project(settings)
    domain = project.domain()
    slots = set(domain["slots"])
    problems: list[Problem] = []
    for name, variations in replies.items():
        problems += check_reply(name, variations, channels, slots)
    refs = references(settings)
    reply_file = project.rel(settings.replies_file)
    # Replies kept in domain.yml are served too (Rasa hands them to the NLG).
    for name in sorted(refs.names - set(replies) - set(domain["responses"])):
        problems.append(Problem(name, "", f"{refs.where.get(name, 'the bot')} sends this "
                                "reply, but the library has no such reply: add it to "
                                f"{reply_file} (`parley init` adds Parley's own) or fix "
                                "the name"))
    for name in sorted(replies):
        variations = replies[name] if isinstance(replies[name], list) else []
        canned = any(isinstance(v, dict) and isinstance(v.get("metadata"), dict)
                     and v["metadata"].get("canned") for v in variations)
        if not refs.uses(name) and name not in RASA_DEFAULTS and not canned:
            problems.append(Problem(name, "", "no story, rule or action sends this reply: "
                                    "use it, delete it, or mark it `metadata: {canned: true}` "
                                    "if it is for agents only"))
    return problems

