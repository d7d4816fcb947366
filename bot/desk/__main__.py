"""`python -m parley.bot.desk --port 5006`: run the agent desk."""

from __future__ import annotations

import argparse
import os

from parley.bot.desk.app import create_app
from parley.bot.settings import load_settings


def main() -> None:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m parley.bot.desk")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.desk_port)
    args = parser.parse_args()
    app = create_app(settings.database_url,
                     secure_cookies=os.environ.get("PARLEY_SECURE_COOKIES") == "1",
                     follow_up_hours=settings.follow_up_hours)
    app.run(host=args.host, port=args.port, access_log=False, workers=1)


if __name__ == "__main__":
    main()
