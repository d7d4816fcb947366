"""The ingest process: platform webhooks acknowledged where no Rasa turn runs.

    parley ingest [--port 5007] [--credentials credentials.yml]
    (or python -m parley.connectors.ingest …)

For the scale-out topology (compose.yaml; the load balancer routes /webhooks/ here).
In a Rasa process a webhook's acknowledgement shares the GIL with Rasa's NLU and
policies, which compute for tens of milliseconds without a pause; under load its p95
went from ~20 ms to hundreds (docs/benchmarks.md). This process serves the same
routes from the same channel classes (`credentials.yml`: verify, size limit, shape
check, parse, mask, store in the inbox, 2xx), with the same code
(`ParleyInput.ingest_blueprint`), and starts no Rasa agent and no worker. The Rasa
processes keep the per-conversation workers and the outbox; the inbox is the
hand-off, and a PostgreSQL NOTIFY after each store (`parley.bot.inbox_wake`) wakes
their workers at once. Nothing more can be lost than before: the store commits
before the 2xx, whichever process answers it.

Channels that are not Parley's (Rasa's own `rest`, `socketio`) need a Rasa agent
and are refused at start-up. The web chat works here too, but its answer waits for
another process's worker, which it learns of by polling the message's state.
`make run` does not use this: one machine, the Rasa server serves the webhooks.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from rasa.constants import ENV_SANIC_BACKLOG
from rasa.core.constants import DEFAULT_KEEP_ALIVE_TIMEOUT
from rasa.shared.utils.common import class_from_module_path
from rasa.shared.utils.io import read_config_file
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from parley.bot.settings import load_settings
from parley.connectors.base import ParleyInput

DEFAULT_PORT = 5007
WEBHOOKS = "/webhooks/"  # where the Rasa server mounts its channels: the same URLs here
logger = logging.getLogger(__name__)


def channels_from(credentials: Path) -> list[ParleyInput]:
    """The channels of a credentials.yml (its ${VARS} filled in, as Rasa does)."""
    configured: dict[str, Any] = read_config_file(credentials) or {}
    channels = []
    for path, settings in configured.items():
        try:  # Rasa's own channels go by a bare name ("rest"): not a class path
            cls = class_from_module_path(path) if "." in path else None
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{path}: no such channel class ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, ParleyInput)):
            raise ValueError(f"{path} is not a Parley channel: it needs a Rasa agent, so "
                             "the Rasa server must serve it, not the ingest process")
        channels.append(cls.from_credentials(settings))
    if not channels:
        raise ValueError(f"{credentials} configures no channel")
    return channels


def create_app(channels: list[ParleyInput]) -> Sanic:
    app = Sanic("parley_ingest")
    # As the Rasa server has it (Sanic's own is 5 s): a platform's, or nginx's, idle
    # connection stays open between deliveries instead of being reopened for each.
    app.config.KEEP_ALIVE_TIMEOUT = DEFAULT_KEEP_ALIVE_TIMEOUT
    for channel in channels:
        app.blueprint(channel.ingest_blueprint(),
                      url_prefix=f"{WEBHOOKS}{channel.url_prefix()}")

    @app.route("/health", methods=["GET"])
    async def health(_request: Request) -> HTTPResponse:
        return response.json({"status": "ok", "channels": [c.name() for c in channels]})

    return app


def main(argv: list[str] | None = None) -> None:
    os.umask(0o077)  # anything written: the owner's only
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="parley ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--credentials", type=Path,
                        default=settings.project_root / "credentials.yml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s "
                        "%(message)s")
    app = create_app(channels_from(args.credentials))
    app.run(host=args.host, port=args.port, access_log=False, workers=1,
            backlog=int(os.environ.get(ENV_SANIC_BACKLOG, "100")))  # as Rasa reads it


if __name__ == "__main__":
    main()
