"""A Rasa project's files as `parley init` and `parley check` see them.

Reads with ruamel's round-trip loader so that `init` can add what Parley needs
and write the file back with the project's comments, order and indentation.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.util import load_yaml_guess_indent

from parley.bot import contract
from parley.bot.settings import Settings

ACTIONS_IMPORT = re.compile(
    r"^\s*(import\s+parley\.bot\.actions\b|from\s+parley\.bot\.actions\s+import\b"
    r"|from\s+parley\.bot\s+import\s+[^\n]*\bactions\b)", re.MULTILINE)


@dataclass
class YamlFile:
    """One YAML file, loaded for reading and, if changed, writing back."""

    path: Path
    data: Any
    indent: tuple[int, int, int] = (2, 2, 0)  # mapping, sequence, the dash's offset

    @classmethod
    def load(cls, path: Path) -> YamlFile:
        if not path.is_file():
            return cls(path, None)
        text = path.read_text(encoding="utf-8")
        try:
            _guessed, indent, offset = load_yaml_guess_indent(text)
            data = _yaml().load(text)  # again, keeping the project's quotes
        except Exception as exc:  # ruamel raises several error types
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
        # ruamel guesses the sequence indent and the dash's offset; mappings are
        # indented like the dash (`  - x` with 2-space keys) or, flush, by 2.
        sequence, offset = indent or 2, offset or 0
        return cls(path, data, (offset or sequence, sequence, offset))

    def mapping(self) -> CommentedMap:
        """The top-level mapping, created if the file is new or empty."""
        if self.data is None:
            self.data = CommentedMap()
        if not isinstance(self.data, dict):
            raise ValueError(f"{self.path}: expected a mapping at the top level")
        return self.data

    def text(self) -> str:
        yaml = _yaml()
        mapping, sequence, offset = self.indent
        yaml.indent(mapping=mapping, sequence=max(sequence, offset + 2), offset=offset)
        out = io.StringIO()
        yaml.dump(self.data, out)
        # Environment references stay plain, as Rasa expands only plain `${VAR}`: once
        # Rasa is imported, its resolver on ruamel's loader makes the dumper quote them.
        return ENV_REFERENCE_QUOTED.sub(r"\1", out.getvalue())

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.text(), encoding="utf-8")


ENV_REFERENCE_QUOTED = re.compile(r"""(?<=: )['"](\$\{[A-Za-z_][A-Za-z0-9_]*\})['"](?=\s*$)""",
                                  re.MULTILINE)


def _yaml() -> YAML:
    yaml = YAML()  # round trip: comments and key order survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def seq(items: list[Any] | None = None) -> CommentedSeq:
    return CommentedSeq(items or [])


def names(entries: Any) -> list[str]:
    """Intent or action names from a domain list (`- greet` or `- greet: {…}`)."""
    out = []
    for entry in entries or []:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            out.extend(str(k) for k in entry)
    return out


@dataclass
class Project:
    settings: Settings

    @property
    def root(self) -> Path:
        return self.settings.project_root

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # -- domain ------------------------------------------------------------
    def domain_files(self) -> list[Path]:
        """domain.yml, or every YAML file of a domain/ folder (Rasa merges them)."""
        folder = self.root / "domain"
        if not (self.root / "domain.yml").is_file() and folder.is_dir():
            return sorted(p for p in folder.rglob("*.yml") if p.is_file())
        return [self.root / "domain.yml"]

    def domain_target(self) -> Path:
        """Where `init` writes domain additions."""
        files = self.domain_files()
        return self.root / "domain" / "parley.yml" if files and files[0].parent.name == \
            "domain" and not (self.root / "domain.yml").is_file() else files[0]

    def domain(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"intents": [], "slots": {}, "actions": [], "responses": {},
                                  "forms": {}}
        for path in self.domain_files():
            data = YamlFile.load(path).data or {}
            merged["intents"] += names(data.get("intents"))
            merged["actions"] += names(data.get("actions"))
            merged["slots"].update(data.get("slots") or {})
            merged["responses"].update(data.get("responses") or {})
            merged["forms"].update(data.get("forms") or {})
        return merged

    # -- training data -----------------------------------------------------
    def data_files(self, tests: bool = False) -> list[Path]:
        """Training data under data/ (and, with `tests`, the test stories too)."""
        data = self.root / "data"
        if not data.is_dir():
            return []
        return sorted(p for p in data.rglob("*.yml")
                      if p.is_file() and (tests or "tests" not in p.relative_to(data).parts))

    def _data(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        for path in self.data_files():
            loaded = YamlFile.load(path).data
            if isinstance(loaded, dict):
                yield path, loaded

    def intent_examples(self, intent: str) -> int:
        count = 0
        for _path, data in self._data():
            for item in data.get("nlu") or []:
                if isinstance(item, dict) and item.get("intent") == intent:
                    examples = item.get("examples") or ""
                    count += sum(1 for line in str(examples).splitlines()
                                 if line.strip().startswith("- "))
        return count

    def _followers(self, intent: str) -> Iterator[tuple[Path, str, str, bool]]:
        """(file, title, action, plain) wherever `intent` is followed by an action;
        plain: an unconditional rule that starts with the intent."""
        for path, data in self._data():
            for kind in ("rules", "stories"):
                for item in data.get(kind) or []:
                    if not isinstance(item, dict):
                        continue
                    steps = item.get("steps") or []
                    title = str(item.get("rule") or item.get("story") or "")
                    for i, (before, after) in enumerate(itertools.pairwise(steps)):
                        if (isinstance(before, dict) and before.get("intent") == intent
                                and isinstance(after, dict) and after.get("action")):
                            plain = kind == "rules" and i == 0 and not item.get("condition")
                            yield path, title, str(after["action"]), plain

    def has_rule(self, rule: contract.Rule) -> bool:
        """A rule or story where the intent is followed at once by the action."""
        return any(action == rule.action for _p, _t, action, _ in self._followers(rule.intent))

    def conflicts(self, rule: contract.Rule) -> list[str]:
        """Plain rules that answer the intent with another action: Rasa refuses to
        train with both (e.g. `nlu_fallback` -> `utter_default`). Rules under a
        condition or later in a flow are more specific and may differ."""
        return [f"{self.rel(path)}: {title!r} answers {rule.intent} with {action}"
                for path, title, action, plain in self._followers(rule.intent)
                if plain and action != rule.action]

    # -- replies, config, endpoints, credentials ---------------------------
    def replies(self) -> dict[str, Any]:
        data = YamlFile.load(self.settings.replies_file).data or {}
        return dict(data.get("responses") or {}) if isinstance(data, dict) else {}

    def config(self) -> YamlFile:
        return YamlFile.load(self.root / "config.yml")

    def endpoints(self) -> YamlFile:
        return YamlFile.load(self.root / "endpoints.yml")

    def credentials(self) -> YamlFile:
        return YamlFile.load(self.root / "credentials.yml")

    # -- the action package ------------------------------------------------
    def actions_entry(self) -> Path:
        """The file Rasa SDK imports first: the package's __init__.py, or a module."""
        base = self.root / self.settings.actions_package.replace(".", "/")
        module = base.with_suffix(".py")
        return module if module.is_file() else base / "__init__.py"

    def action_files(self) -> list[Path]:
        """The project's action code: a module, or every file of a package."""
        base = self.root / self.settings.actions_package.replace(".", "/")
        if base.with_suffix(".py").is_file():
            return [base.with_suffix(".py")]
        return sorted(base.rglob("*.py")) if base.is_dir() else []

    def registers_actions(self) -> bool:
        return any(ACTIONS_IMPORT.search(p.read_text(encoding="utf-8"))
                   for p in self.action_files())


def component_names(pipeline: Any) -> list[str]:
    return [str(c.get("name")) for c in pipeline or [] if isinstance(c, dict)]
