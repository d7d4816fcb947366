"""`parley init`: add what Parley's handoff needs to an existing Rasa project.

Adds only what is missing (never changes or removes what is there), keeps the
project's comments and layout, prints each change, and so changes nothing when
run twice. What "needed" means is `bot/contract.py`; `parley check` verifies it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import LiteralScalarString

from parley.bot import contract
from parley.bot.action_server import TOKEN_ENV, TOKEN_HEADER
from parley.bot.project import ACTIONS_IMPORT, Project, YamlFile, component_names, names, seq
from parley.bot.project_check import MIN_EXAMPLES, NLU_FILE, RULES_FILE
from parley.bot.settings import PROJECT_FILE, Settings, load_settings

CLASSIFIERS = (contract.SENTENCE_CLASSIFIER, "DIETClassifier", "LogisticRegressionClassifier",
               "SklearnIntentClassifier", "KeywordIntentClassifier", "MitieIntentClassifier",
               "ResponseSelector")

SETTINGS_TEMPLATE = """\
# Parley's settings for this Rasa project. Paths are relative to this file;
# PARLEY_* environment variables override (see Parley's README).

brand: {brand}

# Other ways customers can reach you: offered outside support hours, and
# available to replies as {{support_email}}, {{support_phone}}, {{support_webchat}}.
contact:
  email: support@example.com

# When agents are at the desk, in the team's time zone.
support_hours:
  timezone: UTC
  weekly:
    mon: "09:00-17:00"
    tue: "09:00-17:00"
    wed: "09:00-17:00"
    thu: "09:00-17:00"
    fri: "09:00-17:00"
  holidays: []

# The channels replies are written and checked for.
channels: [webchat, telegram, messenger, instagram, whatsapp]

# The writer-owned reply file Parley serves live (Rasa reads it from data/ too).
replies: {replies}

# {{placeholders}} your own actions fill: name: {{about: …, sample: …}}
placeholders: {{}}

# Your Rasa SDK action package.
actions: {actions}

# database_url: postgresql://user@host/db   (default: SQLite in var/)
# var_dir: var
"""


@dataclass
class Result:
    changes: list[str] = field(default_factory=list)  # what init added
    left_alone: list[str] = field(default_factory=list)  # what the project must change itself


class Init:
    def __init__(self, settings: Settings) -> None:
        self.project = Project(settings)
        self.result = Result()
        self.changes = self.result.changes
        self._dirty: dict[Path, YamlFile] = {}

    def note(self, what: str) -> None:
        self.changes.append(what)

    def leave(self, what: str) -> None:
        self.result.left_alone.append(what)

    def file(self, path: Path) -> YamlFile:
        if path not in self._dirty:
            self._dirty[path] = YamlFile.load(path)
        return self._dirty[path]

    def save(self) -> None:
        for yaml_file in self._dirty.values():
            yaml_file.save()

    # -- each part ---------------------------------------------------------
    def domain(self) -> None:
        target = self.project.domain_target()
        current = self.project.domain()
        rel = self.project.rel(target)
        for intent in contract.INTENTS:
            if intent not in current["intents"]:
                self._append(target, "intents", intent)
                self.note(f"{rel}: added intent {intent}")
        for slot, spec in contract.SLOTS.items():
            if slot not in current["slots"]:
                data = self.file(target).mapping()
                if data.get("slots") is None:
                    data["slots"] = CommentedMap()
                data["slots"][slot] = _commented(spec)
                self.note(f"{rel}: added slot {slot}")
        for action in contract.ACTIONS:
            if action not in current["actions"]:
                self._append(target, "actions", action)
                self.note(f"{rel}: added action {action}")
        if self._dirty.get(target) is not None:
            self._dirty[target].mapping().setdefault("version", "3.1")

    def _append(self, path: Path, key: str, value: Any) -> None:
        data = self.file(path).mapping()
        if data.get(key) is None:
            data[key] = seq()
        if value not in names(data[key]):
            _append_keeping_layout(data[key], value)

    def nlu(self) -> None:
        for intent in contract.INTENTS:
            if self.project.intent_examples(intent) >= MIN_EXAMPLES:
                continue
            data = self.file(self.project.root / NLU_FILE).mapping()
            data.setdefault("version", "3.1")
            if data.get("nlu") is None:
                data["nlu"] = seq()
            examples = "".join(f"- {e}\n" for e in contract.HANDOFF_EXAMPLES)
            data["nlu"].append(CommentedMap(
                [("intent", intent), ("examples", LiteralScalarString(examples))]))
            self.note(f"{NLU_FILE}: added {len(contract.HANDOFF_EXAMPLES)} examples of "
                      f"{intent} (English and Portuguese)")

    def rules(self) -> None:
        for rule in contract.RULES:
            if self.project.has_rule(rule):
                continue
            conflicts = self.project.conflicts(rule)
            if conflicts:  # never change the project's own flows: say what to change
                self.leave(f"{conflicts[0]}; change it to {rule.action} (Rasa will not train "
                           "with both), then run `parley init` again")
                continue
            data = self.file(self.project.root / RULES_FILE).mapping()
            data.setdefault("version", "3.1")
            if data.get("rules") is None:
                data["rules"] = seq()
            data["rules"].append(CommentedMap([("rule", rule.title), ("steps", seq([
                CommentedMap([("intent", rule.intent)]),
                CommentedMap([("action", rule.action)])]))]))
            self.note(f"{RULES_FILE}: added rule {rule.title!r}")

    def replies(self) -> None:
        existing = self.project.replies()
        path = self.project.settings.replies_file
        rel = self.project.rel(path)
        for reply in contract.REPLIES:
            if reply.name in existing:
                continue
            data = self.file(path).mapping()
            data.setdefault("version", "3.1")
            if data.get("responses") is None:
                data["responses"] = CommentedMap()
            data["responses"][reply.name] = _commented(list(reply.variations))
            self.note(f"{rel}: added reply {reply.name}")

    def config(self) -> None:
        path = self.project.root / "config.yml"
        before = len(self.changes)
        data = self.file(path).mapping()
        if not data.get("pipeline"):
            data["pipeline"] = _commented(_rasa_default("pipeline"))
            self.note("config.yml: the pipeline was empty; wrote Rasa's default one")
        pipeline = data["pipeline"]
        present = component_names(pipeline)
        if contract.FALLBACK_CLASSIFIER not in present:
            at = max((i + 1 for i, name in enumerate(present) if name in CLASSIFIERS),
                     default=len(pipeline))
            settings = contract.SENTENCE_FALLBACK_SETTINGS \
                if contract.SENTENCE_CLASSIFIER in present else contract.FALLBACK_SETTINGS
            pipeline.insert(at, _commented({"name": contract.FALLBACK_CLASSIFIER, **settings}))
            self.note(f"config.yml: added {contract.FALLBACK_CLASSIFIER} "
                      f"(threshold {settings['threshold']})")
        if contract.KEYWORD_COMPONENT not in present:
            pipeline.append(_commented({"name": contract.KEYWORD_COMPONENT,
                                        **contract.KEYWORD_SETTINGS}))
            self.note(f"config.yml: added {contract.KEYWORD_COMPONENT} (AGENT always "
                      "reaches a person)")
        policies = data.get("policies")
        if policies and "RulePolicy" not in component_names(policies):
            policies.append(CommentedMap([("name", "RulePolicy")]))
            self.note("config.yml: added RulePolicy")
        if len(self.changes) == before:
            self._dirty.pop(path)

    def endpoints(self) -> None:
        path = self.project.root / "endpoints.yml"
        data = self.file(path).mapping()
        nlg = data.get("nlg") or {}
        changed = False
        if not nlg:
            data["nlg"] = CommentedMap([("type", contract.NLG_CLASS)])
            self.note(f"endpoints.yml: replies now come from Parley's live library "
                      f"(nlg: {contract.NLG_CLASS})")
            changed = True
        elif nlg.get("type") != contract.NLG_CLASS:
            self.leave(f"endpoints.yml: `nlg:` is set to something else; set `type: "
                       f"{contract.NLG_CLASS}` yourself to use the reply library")
        if not (data.get("action_endpoint") or {}).get("url"):
            data["action_endpoint"] = CommentedMap([("url", "http://localhost:5055/webhook")])
            self.note("endpoints.yml: added the action server endpoint")
            changed = True
        action = data["action_endpoint"]
        if TOKEN_HEADER not in (action.get("headers") or {}):
            headers = action.get("headers") or CommentedMap()
            headers[TOKEN_HEADER] = f"${{{TOKEN_ENV}}}"  # written plain (project.py)
            action["headers"] = headers
            self.note(f"endpoints.yml: the action server call carries {TOKEN_HEADER} "
                      f"(${TOKEN_ENV}); Parley's action server refuses calls without it")
            changed = True
        if not changed:
            self._dirty.pop(path)

    def credentials(self) -> None:
        path = self.project.root / "credentials.yml"
        data = self.file(path).mapping()
        before = len(self.changes)
        for key in [k for k in data if str(k) in contract.BYPASSING_CHANNELS]:
            if str(key) in contract.REMOVABLE_CHANNELS:
                del data[key]
                self.note(f"credentials.yml: removed `{key}:` (Rasa's own channel reaches "
                          "the bot around Parley's inbox and ownership gate; "
                          "parley.connectors.script.ScriptInput is the scripting channel)")
            else:
                self.leave(f"credentials.yml: `{key}:` is Rasa's own connector and goes "
                           "around Parley's gate; replace it with Parley's (README, "
                           "\"Adding a channel's credentials\")")
        if any(str(key).startswith("parley.connectors.") for key in data):
            if len(self.changes) == before:
                self._dirty.pop(path)
            return
        data[contract.WEBCHAT_CHANNEL] = None
        self.note(f"credentials.yml: added {contract.WEBCHAT_CHANNEL} (the web chat at "
                  "/webhooks/webchat/)")

    def actions(self) -> None:
        if self.project.registers_actions():
            return
        entry = self.project.actions_entry()
        entry.parent.mkdir(parents=True, exist_ok=True)
        before = entry.read_text(encoding="utf-8") if entry.exists() else ""
        line = (f"import {contract.ACTIONS_MODULE}  # noqa: F401  (Parley: action_handoff, "
                "action_fallback)\n")
        entry.write_text(before + ("\n" if before and not before.endswith("\n") else "")
                         + line, encoding="utf-8")
        assert ACTIONS_IMPORT.search(entry.read_text(encoding="utf-8"))
        self.note(f"{self.project.rel(entry)}: registers Parley's actions")

    def settings_file(self) -> None:
        path = self.project.settings.settings_file
        if path.exists():
            return
        root = self.project.root
        replies = "data/responses.yml"
        path.write_text(SETTINGS_TEMPLATE.format(
            brand=_quoted(root.name.replace("-", " ").replace("_", " ").title()),
            replies=replies, actions=self.project.settings.actions_package), encoding="utf-8")
        self.note(f"{PROJECT_FILE}: created (brand, contact, support hours, channels, "
                  "replies, actions); edit it to suit")


def init(settings: Settings | None = None) -> Result:
    """Add what is missing; says each change, and what it left for the project to do."""
    settings = settings or load_settings()
    step = Init(settings)
    step.settings_file()
    if step.changes:  # the new file may name another reply file or action package
        step.project = Project(load_settings(root=settings.project_root))
    for part in (step.domain, step.nlu, step.rules, step.replies, step.config,
                 step.endpoints, step.credentials, step.actions):
        part()
    step.save()
    return step.result


def _append_keeping_layout(items: Any, value: Any) -> None:
    """Append after the last item, not after the blank line or comment that
    follows it (ruamel keeps those on the last item)."""
    trailing = items.ca.items.pop(len(items) - 1, None) if len(items) else None
    items.append(value)
    if trailing is not None:
        items.ca.items[len(items) - 1] = trailing


def _commented(value: Any) -> Any:
    """Plain data as ruamel's round-trip types, so it dumps in block style."""
    if isinstance(value, dict):
        return CommentedMap((k, _commented(v)) for k, v in value.items())
    if isinstance(value, list):
        return seq([_commented(v) for v in value])
    return copy.deepcopy(value)


def _rasa_default(key: str) -> list[dict[str, Any]]:
    import yaml

    text = resources.files("rasa.engine.recipes").joinpath(
        "config_files", "default_config.yml").read_text("utf-8")
    return list(yaml.safe_load(text)[key])


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
