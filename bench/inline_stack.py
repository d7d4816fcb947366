"""The previous commit's Telegram path (the turn ran inside the webhook, which
answered 200 only after the reply was sent), started for `bench.webhook_latency`.

Not run by hand: the benchmark extracts that commit's tree and runs this file with
PYTHONPATH set so that `parley` resolves to the old code, in this and every child
process. Argument: one JSON object (`root`, `database_url`, `channels`,
`endpoint_overrides`). Prints one JSON line (`rasa_url`, the services' pids), then
runs until its standard input closes.
"""

from __future__ import annotations

import inspect
import json
import socket
import sys
import tempfile
from pathlib import Path

import yaml

from parley.bot import launcher
from parley.bot.support_hours import DAYS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    config = json.loads(sys.argv[1])
    state = Path(tempfile.mkdtemp(prefix="parley-bench-inline-"))
    hours = state / "hours.yml"
    hours.write_text(yaml.safe_dump({"timezone": "UTC",
                                     "weekly": dict.fromkeys(DAYS, "00:00-24:00")}))
    kwargs: dict[str, object] = {}
    # A commit whose launcher takes endpoint overrides (any durable-path commit, for a
    # side-by-side trial) gets them so; the inline path's launcher is patched.
    takes_overrides = "endpoint_overrides" in inspect.signature(launcher.Stack).parameters
    if takes_overrides:
        kwargs["endpoint_overrides"] = config["endpoint_overrides"]
    stack = launcher.Stack(Path(config["root"]), rasa_port=free_port(),
                           action_port=free_port(), desk_port=free_port(), var_dir=state,
                           env={"PARLEY_SUPPORT_HOURS": str(hours)},
                           channels=config["channels"], database_url=config["database_url"],
                           **kwargs)  # type: ignore[arg-type]
    plain = stack.runtime_endpoints

    def runtime_endpoints() -> Path:  # that commit's launcher has no endpoint_overrides
        path = plain()
        endpoints = yaml.safe_load(path.read_text())
        endpoints.update(config["endpoint_overrides"])
        path.write_text(yaml.safe_dump(endpoints, sort_keys=False))
        return path

    if not takes_overrides:
        stack.runtime_endpoints = runtime_endpoints  # type: ignore[method-assign]
    stack.start(timeout=600)
    try:
        print(json.dumps({"rasa_url": stack.rasa_url, "log_dir": str(stack.log_dir),
                          "pids": {n: p.pid for n, p in stack.processes.items()}}),
              flush=True)
        sys.stdin.read()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
