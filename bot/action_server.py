"""`python -m parley.bot.action_server --actions actions`: the Rasa SDK action server, closed.

`python -m rasa_sdk` listens on every interface and runs any action for whoever reaches
its port, and Parley's actions open tickets and read orders. This runs the same Rasa SDK
app (`rasa_sdk.endpoint.create_app`) on `PARLEY_HOST` only, and answers nothing but
`GET /health` and `GET /metrics` (`parley.bot.metrics`: numbers, no data) unless the
request carries the secret the Rasa server sends
(`X-Parley-Action-Token`, set through `headers:` under `action_endpoint` in
endpoints.yml). Without a secret in `PARLEY_ACTION_TOKEN` it does not start at all:
an open action server must be a choice, not an accident.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import sys
import time
import types
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Sanic loads only in the server itself, not in `parley` commands
    from sanic import Sanic
    from sanic.request import Request
    from sanic.response import HTTPResponse

TOKEN_ENV = "PARLEY_ACTION_TOKEN"
TOKEN_HEADER = "X-Parley-Action-Token"
OPEN_ROUTES = {("GET", "/health"), ("GET", "/metrics")}

logger = logging.getLogger(__name__)


def create_app(actions: str | types.ModuleType, token: str,
               cors_origins: str | list[str] | None = None, auto_reload: bool = False) -> Sanic:
    """Rasa SDK's app with every route but `GET /health` and `/metrics` behind the token."""
    if not token.strip():
        raise ValueError(f"{TOKEN_ENV} is empty: refusing to run an open action server")
    from rasa_sdk.endpoint import create_app as sdk_app
    from sanic import response

    from parley.bot import metrics

    app = sdk_app(actions, cors_origins=cors_origins, auto_reload=auto_reload)
    expected = token.encode()

    async def require_token(request: Request) -> HTTPResponse | None:
        if (request.method, request.path) in OPEN_ROUTES:
            return None
        given = request.headers.get(TOKEN_HEADER, "").encode()
        if hmac.compare_digest(given, expected):
            request.ctx.parley_started = time.perf_counter()
            return None
        logger.warning("refused %s %s from %s: missing or wrong %s", request.method,
                       request.path, request.ip, TOKEN_HEADER)
        return response.json({"error": f"missing or wrong {TOKEN_HEADER} header"}, status=401)

    def put_first(*_: object) -> None:
        # Sanic-Cors puts its request middleware, which answers OPTIONS by itself, at the
        # front when the server starts; this listener runs after it, so the token check
        # ends up first and no request reaches anything without the token.
        with contextlib.suppress(ValueError):
            app.request_middleware.remove(require_token)
        app.request_middleware.appendleft(require_token)

    async def count_action(request: Request, resp: HTTPResponse) -> None:
        started = getattr(request.ctx, "parley_started", None)  # set for Rasa's calls only
        if started is not None and request.path == "/webhook":
            metrics.action_ran(_action_name(request, resp.status), resp.status,
                               time.perf_counter() - started)

    put_first()
    app.register_listener(put_first, "before_server_start")
    app.register_middleware(count_action, "response")
    metrics.install(app, "actions")
    return app


def _action_name(request: Request, status: int) -> str:
    """The action Rasa asked for: a label, so only names the server knows (a 404 is
    "unknown") and never an error. The SDK already parsed a plain body (Sanic keeps
    it); a compressed one (Rasa's opt-in) is read again."""
    if status == 404:
        return "unknown"
    try:
        if request.headers.get("Content-Encoding") == "deflate":
            call = json.loads(zlib.decompress(request.body))
        else:
            call = request.json
        name = call.get("next_action")
    except Exception:  # (a body the SDK refused too: counted, not named)
        return "unknown"
    return name[:100] if isinstance(name, str) and name else "unknown"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from parley.bot.settings import load_settings

    os.umask(0o077)  # anything it writes (logs): the owner's only
    argv = sys.argv[1:] if argv is None else argv
    token = os.environ.get(TOKEN_ENV, "")
    if not token.strip() and not {"-h", "--help"} & set(argv):  # before loading anything heavy
        return _fail(f"{TOKEN_ENV} is not set: the action server only answers calls that "
                     f"carry it (`parley run` makes one for Rasa and the action server)")
    try:
        settings = load_settings()
    except ValueError as exc:
        return _fail(str(exc))

    from rasa_sdk import utils
    from rasa_sdk.constants import APPLICATION_ROOT_LOGGER_NAME
    from rasa_sdk.endpoint import create_argument_parser, create_ssl_context
    from rasa_sdk.plugin import plugin_manager

    parser = create_argument_parser()  # Rasa SDK's own options (ssl, cors, logging, …)
    parser.prog = "python -m parley.bot.action_server"
    parser.add_argument("--host", default=settings.host,
                        help="interface to listen on (default PARLEY_HOST, 127.0.0.1)")
    parser.set_defaults(port=settings.action_port, actions=settings.actions_package)
    args: argparse.Namespace = parser.parse_args(argv)

    utils.configure_colored_logging(args.loglevel)
    utils.configure_file_logging(logging.getLogger(APPLICATION_ROOT_LOGGER_NAME),
                                 args.log_file, args.loglevel, args.logging_config_file)
    utils.update_sanic_log_level()
    app = create_app(args.actions, token, cors_origins=args.cors, auto_reload=args.auto_reload)
    plugin_manager().hook.attach_sanic_app_extensions(app=app)
    ssl_context = create_ssl_context(args.ssl_certificate, args.ssl_keyfile, args.ssl_password)
    logger.info("Action server on %s://%s:%s", "https" if ssl_context else "http",
                args.host, args.port)
    app.run(args.host, args.port, ssl=ssl_context, workers=utils.number_of_sanic_workers())
    return 0


if __name__ == "__main__":
    sys.exit(main())
