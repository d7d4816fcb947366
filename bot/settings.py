"""A project's settings: `parley.yml` at the project's root, then `PARLEY_*` variables.

The project is the Rasa project a command runs in (`PARLEY_PROJECT`, else the
nearest folder upwards from the working directory that holds `parley.yml`, else
the working directory), never the place Parley is installed. Every path in the
file is relative to the file. Everything has a working default, so a project
runs on SQLite with no settings at all; an invalid value fails at start-up with
the file and the key in the message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_FILE = "parley.yml"
DEFAULT_CHANNELS = ("webchat", "telegram", "messenger", "instagram", "whatsapp")
KEYS = {
    "brand": "the name customers know you by (web chat title)",
    "contact": "other ways to reach you: email, phone, webchat, …",
    "support_hours": "when agents are in: a mapping (timezone, weekly, holidays) or a file",
    "channels": "the channels replies are written and checked for",
    "replies": "the writer-owned reply file (default data/responses.yml)",
    "placeholders": "{placeholders} your actions fill: name: {about: …, sample: …}",
    "actions": "your Rasa SDK action package (default actions)",
    "database_url": "Parley's database (default SQLite in the var dir)",
    "var_dir": "local state: SQLite files, logs, run files (default var)",
    "survey": "questions after a resolved conversation: [answer, time, agent, improve] or off",
    "alerts": "inbound spike alerts: {factor: 3, minimum: 20, webhook: https://…}",
    "personal_data": "{mask: [card, iban, email, phone] or off, retention_days: 365}",
}
MASKABLE = ("card", "iban", "email", "phone")
SURVEY_QUESTIONS = ("answer", "time", "agent", "improve")


@dataclass(frozen=True)
class Placeholder:
    about: str  # who fills it, for writers
    sample: str  # the value the editor's preview shows


@dataclass(frozen=True)
class Settings:
    project_root: Path
    brand: str
    contact: dict[str, str]
    support_hours: dict[str, Any]  # inline timezone/weekly/holidays
    support_hours_file: Path | None  # or a file with the same keys
    channels: tuple[str, ...]
    replies_file: Path
    placeholders: dict[str, Placeholder]
    actions_package: str
    database_url: str
    var_dir: Path  # databases, logs and runtime config of a local run
    rasa_port: int
    action_port: int
    desk_port: int
    host: str
    follow_up_hours: float  # 0: no follow-up message
    lease_seconds: float  # how long a dead worker's conversations and sends stay taken
    turns_in_flight: int  # Rasa turns one process runs at once (keeps webhook acks fast)
    # How long a thread holding the GIL (a Rasa turn) runs before one waiting for it (a
    # webhook's acknowledgement) gets it: Python's sys.setswitchinterval, in ms.
    gil_switch_ms: float
    # Threads one message's numeric work may use (the encoder's OpenMP, NumPy's BLAS):
    # bot/nlu/encoder.py reads the same variable.
    turn_threads: int
    request_max_bytes: int  # Sanic refuses larger bodies before reading them
    survey: tuple[str, ...] = SURVEY_QUESTIONS  # in order; () turns the survey off
    spike_factor: float = 3.0  # inbound this many times the usual for the hour of week
    spike_minimum: int = 20  # and at least this many messages in 10 minutes
    alert_webhook: str | None = None  # called (HMAC-SHA256 signed) when a spike starts
    alert_secret: str | None = None  # PARLEY_ALERT_SECRET only: never in the project file
    mask: tuple[str, ...] = MASKABLE  # personal data masked before anything is stored
    retention_days: int | None = None  # transcripts older than this are erased; None: kept

    @property
    def settings_file(self) -> Path:
        return self.project_root / PROJECT_FILE


def find_project(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("PARLEY_PROJECT"):
        return Path(env["PARLEY_PROJECT"]).resolve()
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return start


def _port(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{key} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{key} must be between 1 and 65535, got {port}")
    return port


def _hours(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, str(default))
    try:
        hours = float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number of hours (0 turns it off), got {raw!r}") from None
    if hours < 0:
        raise ValueError(f"{key} cannot be negative")
    return hours


def _positive(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{key} must be more than 0, got {raw!r}")
    return value


def _whole(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, str(default)).strip()
    if not raw.isdecimal() or int(raw) < 1:
        raise ValueError(f"{key} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def read_project_file(path: Path) -> dict[str, Any]:
    """The file's mapping, with unknown keys and wrong types refused by name."""
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of settings such as `brand: …`")
    unknown = sorted(set(loaded) - set(KEYS))
    if unknown:
        known = "\n".join(f"  {k}: {about}" for k, about in KEYS.items())
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; known:\n{known}")
    return loaded


def _mapping(raw: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: `{key}` must be a mapping")
    return value


def _placeholders(raw: dict[str, Any], where: Path) -> dict[str, Placeholder]:
    out = {}
    for name, spec in _mapping(raw, "placeholders", where).items():
        spec = spec if isinstance(spec, dict) else {"about": str(spec or "")}
        out[str(name)] = Placeholder(str(spec.get("about") or "set by your actions"),
                                     str(spec.get("sample") or name))
    return out


def _survey(raw: dict[str, Any], where: Path) -> tuple[str, ...]:
    value = raw.get("survey", list(SURVEY_QUESTIONS))
    if value in (False, "off", None, []):
        return ()
    if not isinstance(value, list) or not all(q in SURVEY_QUESTIONS for q in value) \
            or len(set(value)) != len(value):
        raise ValueError(f"{where}: `survey` must be off or a list of distinct questions "
                         f"from {', '.join(SURVEY_QUESTIONS)}")
    return tuple(value)


def _alerts(raw: dict[str, Any], env: Mapping[str, str], where: Path
            ) -> tuple[float, int, str | None]:
    alerts = _mapping(raw, "alerts", where)
    unknown = sorted(set(alerts) - {"factor", "minimum", "webhook"})
    if unknown:
        raise ValueError(f"{where}: unknown `alerts` key(s) {', '.join(unknown)}; "
                         "known: factor, minimum, webhook")
    factor, minimum = alerts.get("factor", 3.0), alerts.get("minimum", 20)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 1:
        raise ValueError(f"{where}: `alerts.factor` must be a number above 1, got {factor!r}")
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise ValueError(f"{where}: `alerts.minimum` must be a whole number of at least 1, "
                         f"got {minimum!r}")
    webhook = env.get("PARLEY_ALERT_WEBHOOK") or alerts.get("webhook") or None
    if webhook is not None and (not isinstance(webhook, str)
                                or not webhook.startswith(("http://", "https://"))):
        raise ValueError(f"{where}: `alerts.webhook` must be an http(s) URL, got {webhook!r}")
    return float(factor), minimum, webhook


def _personal_data(raw: dict[str, Any], where: Path) -> tuple[tuple[str, ...], int | None]:
    section = _mapping(raw, "personal_data", where)
    unknown = sorted(set(section) - {"mask", "retention_days"})
    if unknown:
        raise ValueError(f"{where}: unknown `personal_data` key(s) {', '.join(unknown)}; "
                         "known: mask, retention_days")
    mask = section.get("mask", list(MASKABLE))
    if mask in (False, "off", None, []):
        mask = []
    if not isinstance(mask, list) or not all(kind in MASKABLE for kind in mask):
        raise ValueError(f"{where}: `personal_data.mask` must be off or a list from "
                         f"{', '.join(MASKABLE)}")
    days = section.get("retention_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
        raise ValueError(f"{where}: `personal_data.retention_days` must be a whole number of "
                         f"days (at least 1), got {days!r}")
    return tuple(dict.fromkeys(mask)), days


def _sqlite_relative_to(url: str, root: Path) -> str:
    """`sqlite:///var/x.db` in a settings file means var/x.db in the project."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not Path(url.removeprefix(prefix)).is_absolute():
        return prefix + str(root / url.removeprefix(prefix))
    return url


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  root: Path | None = None) -> Settings:
    """The current project's settings (or those of the project at `root`); the file
    is read once per change."""
    env = dict(os.environ if env is None else env)
    root = root.resolve() if root is not None else find_project(env, cwd)
    path = root / PROJECT_FILE
    mtime = path.stat().st_mtime if path.is_file() else 0.0
    parley_env = tuple(sorted((k, v) for k, v in env.items() if k.startswith("PARLEY_")))
    return _load(root, mtime, parley_env)


@lru_cache(maxsize=16)
def _load(root: Path, _mtime: float, parley_env: tuple[tuple[str, str], ...]) -> Settings:
    env = dict(parley_env)
    path = root / PROJECT_FILE
    raw = read_project_file(path)

    def rel(value: Any, key: str) -> Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ValueError(f"{path}: `{key}` must be a path")
        return (root / str(value)).resolve()

    var_dir = Path(env["PARLEY_VAR_DIR"]).resolve() if env.get("PARLEY_VAR_DIR") else \
        rel(raw.get("var_dir", "var"), "var_dir")
    hours_raw = raw.get("support_hours")
    hours_file = None
    if env.get("PARLEY_SUPPORT_HOURS"):
        hours_file = Path(env["PARLEY_SUPPORT_HOURS"]).resolve()
    elif isinstance(hours_raw, str):
        hours_file = rel(hours_raw, "support_hours")
    elif hours_raw is not None and not isinstance(hours_raw, dict):
        raise ValueError(f"{path}: `support_hours` must be a mapping or a file name")
    channels = raw.get("channels", list(DEFAULT_CHANNELS))
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ValueError(f"{path}: `channels` must be a list such as [webchat, telegram]")
    actions = raw.get("actions", "actions")
    if not isinstance(actions, str) or not actions.replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"{path}: `actions` must be a Python package name such as actions")
    database_url = env.get("PARLEY_DATABASE_URL") or (
        _sqlite_relative_to(str(raw["database_url"]), root) if raw.get("database_url")
        else f"sqlite:///{var_dir / 'parley.db'}")
    spike_factor, spike_minimum, alert_webhook = _alerts(raw, env, path)
    if alert_webhook and not env.get("PARLEY_ALERT_SECRET"):
        raise ValueError(f"{path}: `alerts.webhook` is set but PARLEY_ALERT_SECRET is not: "
                         "spike alerts are always signed (HMAC-SHA256); set the secret the "
                         "receiver checks")
    mask, retention_days = _personal_data(raw, path)
    return Settings(
        project_root=root,
        brand=str(raw.get("brand") or ""),
        contact={str(k): str(v) for k, v in _mapping(raw, "contact", path).items()},
        support_hours=hours_raw if isinstance(hours_raw, dict) else {},
        support_hours_file=hours_file,
        channels=tuple(channels),
        replies_file=Path(env["PARLEY_REPLIES"]).resolve() if env.get("PARLEY_REPLIES") else
        rel(raw.get("replies", "data/responses.yml"), "replies"),
        placeholders=_placeholders(raw, path),
        actions_package=actions,
        database_url=database_url,
        var_dir=var_dir,
        rasa_port=_port(env, "PARLEY_RASA_PORT", 5005),
        action_port=_port(env, "PARLEY_ACTION_PORT", 5055),
        desk_port=_port(env, "PARLEY_DESK_PORT", 5006),
        host=env.get("PARLEY_HOST", "127.0.0.1"),
        follow_up_hours=_hours(env, "PARLEY_FOLLOWUP_HOURS", 24.0),
        lease_seconds=_positive(env, "PARLEY_LEASE_SECONDS", 30.0),
        turns_in_flight=_whole(env, "PARLEY_TURNS_IN_FLIGHT", 4),
        gil_switch_ms=_positive(env, "PARLEY_GIL_SWITCH_MS", 5.0),
        turn_threads=_whole(env, "PARLEY_TURN_THREADS", 1),
        request_max_bytes=int(_positive(env, "PARLEY_REQUEST_MAX_BYTES", 1024 * 1024)),
        survey=_survey(raw, path),
        spike_factor=spike_factor,
        spike_minimum=spike_minimum,
        alert_webhook=alert_webhook,
        alert_secret=env.get("PARLEY_ALERT_SECRET") or None,
        mask=mask,
        retention_days=retention_days,
    )
