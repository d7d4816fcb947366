"""The whole bot on free ports with extra channels pointed at fake platforms,
support hours always open, and a throw-away state directory."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import yaml

from parley.bot import launcher
from parley.bot.support_hours import DAYS
from tests import REPO_ROOT as PROJECT_ROOT


def start_stack(prefix: str, channels: dict[str, dict[str, Any]],
                database_url: str | None = None) -> launcher.Stack:
    state = Path(tempfile.mkdtemp(prefix=f"parley-{prefix}-"))
    hours = state / "hours.yml"
    hours.write_text(yaml.safe_dump({"timezone": "UTC",
                                     "weekly": dict.fromkeys(DAYS, "00:00-24:00")}))
    stack = launcher.Stack(PROJECT_ROOT, rasa_port=free_port(), action_port=free_port(),
                           desk_port=free_port(), var_dir=state,
                           env={"PARLEY_SUPPORT_HOURS": str(hours)}, channels=channels,
                           database_url=database_url or "")
    stack.start()
    return stack


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now (for tests and benchmarks that start their own stack)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
