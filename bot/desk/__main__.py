"""`python -m parley.bot.desk --port 5006`: run the agent desk.

PARLEY_DESK_URL is the desk's address as people reach it (behind a proxy), for
the link in spike alerts; by default http://<host>:<port>/.
"""

from __future__ import annotations

import argparse
import os

from parley.bot import alert_webhook, spikes, support_hours
from parley.bot.desk.app import RETENTION_CHECK_SECONDS, SPIKE_CHECK_SECONDS, create_app
from parley.bot.settings import load_settings


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600")
    return value


def main() -> None:
    os.umask(0o077)  # logs, SQLite files, anything written: the owner's only
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m parley.bot.desk")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.desk_port)
    parser.add_argument("--spike-check-seconds", type=_seconds, default=SPIKE_CHECK_SECONDS,
                        help="how often inbound spikes are checked (default: every minute)")
    parser.add_argument("--retention-check-seconds", type=_seconds,
                        default=RETENTION_CHECK_SECONDS,
                        help="how often old transcripts are deleted, when parley.yml sets "
                        "personal_data: retention_days (default: hourly)")
    args = parser.parse_args()
    rule = spikes.Rule(settings.spike_factor, settings.spike_minimum,
                       support_hours.current(settings).timezone)
    desk_url = os.environ.get("PARLEY_DESK_URL") or f"http://{args.host}:{args.port}/"
    target = alert_webhook.Target(settings.alert_webhook, settings.alert_secret, desk_url) \
        if settings.alert_webhook else None
    app = create_app(settings.database_url,
                     secure_cookies=os.environ.get("PARLEY_SECURE_COOKIES") == "1",
                     follow_up_hours=settings.follow_up_hours, spike_rule=rule,
                     alert_target=target, spike_check_seconds=args.spike_check_seconds,
                     retention_days=settings.retention_days,
                     retention_check_seconds=args.retention_check_seconds)
    app.run(host=args.host, port=args.port, access_log=False, workers=1)


if __name__ == "__main__":
    main()
