"""Deployment settings, read once from the environment.

Everything an operator may change lives here with a working default, so a fresh
checkout runs on SQLite with no configuration at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    database_url: str
    var_dir: Path  # databases, logs and runtime config of a local run
    rasa_port: int
    action_port: int
    desk_port: int
    host: str
    support_hours_file: Path
    follow_up_hours: float  # 0: no follow-up message


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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read `PARLEY_*` variables; an invalid value fails loudly at start-up."""
    env = os.environ if env is None else env
    var_dir = Path(env.get("PARLEY_VAR_DIR") or PROJECT_ROOT / "var")
    return Settings(
        database_url=env.get("PARLEY_DATABASE_URL") or f"sqlite:///{var_dir / 'parley.db'}",
        var_dir=var_dir,
        rasa_port=_port(env, "PARLEY_RASA_PORT", 5005),
        action_port=_port(env, "PARLEY_ACTION_PORT", 5055),
        desk_port=_port(env, "PARLEY_DESK_PORT", 5006),
        host=env.get("PARLEY_HOST", "127.0.0.1"),
        support_hours_file=Path(env.get("PARLEY_SUPPORT_HOURS")
                                or PROJECT_ROOT / "support_hours.yml"),
        follow_up_hours=_hours(env, "PARLEY_FOLLOWUP_HOURS", 24.0),
    )
