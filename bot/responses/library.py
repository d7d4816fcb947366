"""The live reply library: writer-owned YAML with published revisions on top.

Every process (Rasa servers, the desk) keeps the merged set in memory and asks
the database for one integer, the library version, at most every
`REFRESH_SECONDS`; only when it changed does it reload. A published edit is so
live everywhere within that interval plus one query, with no retrain and no
HTTP call per reply.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.exc import OperationalError, ProgrammingError

from parley.bot.responses import revisions
from parley.bot.settings import load_settings

REFRESH_SECONDS = 0.5
Replies = dict[str, list[dict[str, Any]]]


def read_yaml(path: Path) -> Replies:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict(loaded.get("responses") or {})


@dataclass(frozen=True)
class Snapshot:
    version: int
    replies: Replies
    baseline: Replies
    overridden: frozenset[str] = field(default_factory=frozenset)


class Library:
    """One per process, file and database (see `library()`)."""

    def __init__(self, path: Path, database_url: str | None = None,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.path = path
        self.database_url = database_url
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._mtime = -1.0

    def due(self) -> bool:
        return self._snapshot is None or time.monotonic() - self._checked >= self.refresh_seconds

    def current(self) -> Snapshot:
        """The merged set, refreshed first when due (a blocking database read)."""
        if self.due():
            self.refresh()
        assert self._snapshot is not None
        return self._snapshot

    def refresh(self, force: bool = False) -> Snapshot:
        with self._lock:
            if not force and not self.due():
                assert self._snapshot is not None
                return self._snapshot
            mtime = self.path.stat().st_mtime
            try:
                version = revisions.library_version(self.database_url)
            except (OperationalError, ProgrammingError):  # no schema yet: the YAML alone
                version = -1
            old = self._snapshot
            if force or old is None or version != old.version or mtime != self._mtime:
                baseline = read_yaml(self.path) if old is None or mtime != self._mtime \
                    else old.baseline
                published: Replies = {}
                if version >= 0:
                    version, published = revisions.published(self.database_url)
                self._snapshot = Snapshot(version, {**baseline, **published}, baseline,
                                          frozenset(published))
                self._mtime = mtime
            self._checked = time.monotonic()
            return self._snapshot


_libraries: dict[tuple[Path, str | None], Library] = {}
_libraries_lock = threading.Lock()


def library(path: Path | None = None, database_url: str | None = None) -> Library:
    """The project's library (`replies:` in parley.yml) unless told another file."""
    path = path or load_settings().replies_file
    with _libraries_lock:
        key = (path, database_url)
        if key not in _libraries:
            _libraries[key] = Library(path, database_url)
        return _libraries[key]


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as people write Rasa YAML by hand."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def yaml_text(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False,
                     width=10**6, default_flow_style=False, indent=2)


def dump(replies: Replies) -> str:
    """The YAML writers keep in git: the file `export` writes and the checks read."""
    lines = yaml_text({"responses": replies}).splitlines()
    spaced = [line if not (line.startswith("  ") and not line.startswith("   ")) or i < 2
              else "\n" + line for i, line in enumerate(lines)]
    return HEADER + "\n".join(spaced) + "\n"


HEADER = """version: "3.1"

# The bot's canned replies: owned by content writers, one place only. Edit them in the
# desk's reply library (published revisions live in the database on top of this file) and
# run `parley replies export` to write the published set back here for git.
# Per-channel variants: `channel: whatsapp`; per-language: `metadata: {language: pt}`.
# {placeholders}: `parley replies placeholders` lists them. Checks: `parley replies check`.

"""


def export(path: Path | None = None, database_url: str | None = None) -> int:
    """Write the published set back to the YAML; returns how many replies changed."""
    path = path or load_settings().replies_file
    snapshot = library(path, database_url).refresh(force=True)
    changed = sum(1 for name in snapshot.replies
                  if snapshot.baseline.get(name) != snapshot.replies[name])
    path.write_text(dump(snapshot.replies), encoding="utf-8")
    library(path, database_url).refresh(force=True)
    return changed
