"""`parley …` (or `python -m parley.bot.cli …`): set up, check, train and run a project.

Every command works on the Rasa project it runs in (see `bot/settings.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import secrets
import subprocess
import sys
from pathlib import Path

from parley.bot import agents, launcher, model_freshness, storage
from parley.bot.settings import Settings, load_settings


def _root(args: argparse.Namespace) -> Path:
    return args.root if getattr(args, "root", None) else load_settings().project_root


def cmd_train(args: argparse.Namespace) -> int:
    root = _root(args)
    if not args.force and not model_freshness.is_stale(root):
        print(f"Model is up to date: {model_freshness.model_path(root)}")
        return 0
    print("Training the Rasa model (data or config changed)…", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "rasa", "train", "--fixed-model-name",
         model_freshness.MODEL_NAME, "--out", str(root / "models")],
        cwd=root,
    )
    if result.returncode != 0:
        print("Training failed; the previous model (if any) is unchanged.", file=sys.stderr)
        return result.returncode
    model_freshness.record_training(root)
    return 0


def cmd_is_stale(args: argparse.Namespace) -> int:
    """Exit 0 when training is needed, 1 when the model is current (for shell `if`)."""
    stale = model_freshness.is_stale(_root(args))
    print("stale" if stale else "fresh")
    return 0 if stale else 1


def cmd_init_db(_args: argparse.Namespace) -> int:
    storage.create_schema()
    print(f"Database ready: {_masked(load_settings().database_url)}")
    return 0


def _masked(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_init(_args: argparse.Namespace) -> int:
    from parley.bot import project_init

    result = project_init.init(_init_settings())
    for change in result.changes:
        print(change)
    for todo in result.left_alone:
        print(f"left as is: {todo}")
    if result.changes:
        print(f"{len(result.changes)} change(s). Next: `parley check`, then `parley train`.")
    elif not result.left_alone:
        print("Nothing to change: the project already has everything Parley needs.")
    return 1 if result.left_alone else 0


def _init_settings() -> Settings:
    """The Rasa project in this folder, even inside another project's tree."""
    cwd = Path.cwd()
    if not os.environ.get("PARLEY_PROJECT") and any(
            (cwd / name).exists() for name in ("domain.yml", "domain", "config.yml")):
        return load_settings(root=cwd)
    return load_settings()


def cmd_check(_args: argparse.Namespace) -> int:
    from parley.bot import contract, project_check

    problems = project_check.check()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s); `parley init` adds what is missing.")
        return 1
    print(f"The project has what Parley needs: {len(contract.REPLIES)} replies, the handoff "
          "intent, slot, actions, rules, pipeline, NLG endpoint and channel.")
    return 0


def first_admin(settings: Settings) -> str:
    """On a fresh database, create `admin` with a random password so the desk can
    be opened at once; the password is kept in var/ (mode 0600) and shown."""
    storage.create_schema(settings.database_url)
    path = settings.var_dir / "desk-admin-password.txt"
    if agents.count_users(settings.database_url) == 0:
        password = secrets.token_urlsafe(12)
        agents.create_user("admin", password, "admin", "Admin", settings.database_url)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
    if path.exists():
        return f"(log in as admin / {path.read_text().strip()})"
    return "(log in with a user from `parley create-user`)"


def cmd_run(_args: argparse.Namespace) -> int:
    settings = load_settings()
    hint = first_admin(settings)
    return launcher.serve_forever(launcher.stack_from_settings(settings), hint)


def cmd_create_user(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 2
    settings = load_settings()
    storage.create_schema(settings.database_url)
    try:
        user = agents.create_user(args.username, password, args.role, args.display_name,
                                  settings.database_url)
    except ValueError as exc:  # includes DuplicateUser
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Created {user.role} {user.username!r} ({user.display_name}).")
    return 0


def _customer_ids(values: list[str]) -> list[str]:
    from parley.bot import privacy

    return privacy.parse_ids(values)  # ValueError: main() prints it, exit 2


def cmd_export_customer(args: argparse.Namespace) -> int:
    """Everything stored about the conversations named, as JSON (the audit trail
    records it, actor `cli`)."""
    import json

    from parley.bot import audit, privacy

    ids = _customer_ids(args.ids)
    storage.create_schema()
    data = privacy.export(ids, audit.CLI)
    if not data["conversations"]:
        print(f"nothing is stored for {', '.join(ids)}", file=sys.stderr)
        return 1
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        launcher.write_private(args.out, text)  # personal data: the owner's only
        print(f"wrote {args.out} ({_summary(data['counts'])})", file=sys.stderr)
    for missing in data["not_found"]:
        print(f"nothing stored for {missing}", file=sys.stderr)
    return 0


def _summary(counts: dict[str, int | None]) -> str:
    return ", ".join(f"{value} {name.replace('_', ' ')}" for name, value in counts.items())


def cmd_erase_customer(args: argparse.Namespace) -> int:
    """Delete everything stored about the conversations named, Rasa's tracker too.
    Without --yes, only says what would go."""
    from parley.bot import audit, privacy

    ids = _customer_ids(args.ids)
    storage.create_schema()
    if not args.yes:
        print(f"would erase {_summary(privacy.preview(ids))} for {', '.join(ids)}; "
              "nothing erased: add --yes to erase (it cannot be undone)", file=sys.stderr)
        return 1
    try:
        result = privacy.erase(ids, audit.CLI)
    except (privacy.NotErased, privacy.TrackerNotErased) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"erased {_summary(result['erased'])} for {', '.join(ids)}")
    for missing in result["not_found"]:
        print(f"nothing was stored for {missing}", file=sys.stderr)
    return 0


def _telegram_env() -> tuple[str, str]:
    token = os.environ.get("TELEGRAM_TOKEN", "")
    secret = os.environ.get("TELEGRAM_WEBHOOK_SECRET", "")
    if not token or not secret:
        raise ValueError("set TELEGRAM_TOKEN and TELEGRAM_WEBHOOK_SECRET (any random string)")
    return token, secret


def cmd_telegram_webhook(args: argparse.Namespace) -> int:
    from parley.connectors import telegram

    token, secret = _telegram_env()
    if not args.url.startswith("https://"):
        raise ValueError("Telegram only calls https:// webhooks")
    asyncio.run(telegram.register_webhook(token, args.url, secret))
    print(f"Telegram will deliver updates to {args.url}")
    return 0


def cmd_telegram_poll(_args: argparse.Namespace) -> int:
    from parley.connectors import telegram

    token, secret = _telegram_env()
    local = f"http://127.0.0.1:{load_settings().rasa_port}/webhooks/telegram/webhook"
    print(f"Polling Telegram and forwarding updates to {local} (Ctrl-C to stop)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(telegram.poll(token, secret, local))
    return 0


def cmd_replies_check(args: argparse.Namespace) -> int:
    from parley.bot.responses import checks
    from parley.bot.responses.library import library, read_yaml

    path = (args.file or load_settings().replies_file).resolve()
    if args.published:
        storage.create_schema()
        replies = library(path).refresh(force=True).replies
    else:
        replies = read_yaml(path)
    problems = checks.check_library(replies)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    what = "published library" if args.published else path.name
    print(f"{len(replies)} replies in the {what}: {errors} error(s), "
          f"{len(problems) - errors} warning(s)")
    return 1 if errors else 0


def cmd_replies_export(args: argparse.Namespace) -> int:
    from parley.bot.responses import library

    storage.create_schema()
    path = (args.file or load_settings().replies_file).resolve()
    changed = library.export(path)
    print(f"wrote the published replies to {path} ({changed} changed); commit it to git")
    return 0


def cmd_replies_placeholders(_args: argparse.Namespace) -> int:
    from parley.bot.responses import placeholders

    for name, (about, sample) in sorted(placeholders.known().items()):
        print(f"{{{name}}}: {about} (e.g. {sample})")
    print("Slots from the domain work too, by name.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="add what Parley needs to this Rasa project (safe to "
                   "repeat: adds only what is missing)").set_defaults(func=cmd_init,
                                                                     project_files=True)
    sub.add_parser("check", help="check the project has what Parley needs, one line per "
                   "problem").set_defaults(func=cmd_check)
    train = sub.add_parser("train", help="train the model if its inputs changed")
    train.add_argument("--force", action="store_true", help="train even if up to date")
    train.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    train.set_defaults(func=cmd_train)
    stale = sub.add_parser("is-stale", help="exit 0 if the model needs training")
    stale.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    stale.set_defaults(func=cmd_is_stale)
    sub.add_parser("init-db", help="create or upgrade Parley's tables (run by `run` too)"
                   ).set_defaults(func=cmd_init_db)
    sub.add_parser("run", help="start Rasa, the action server and the desk; print the URLs"
                   ).set_defaults(func=cmd_run)
    user = sub.add_parser("create-user", help="add a desk user (agent, supervisor, admin, "
                                              "writer or manager)")
    user.add_argument("username")
    user.add_argument("--role", choices=agents.ROLES, default="agent")
    user.add_argument("--display-name", default=None)
    user.add_argument("--password-stdin", action="store_true",
                      help="read the password from standard input (for scripts)")
    user.set_defaults(func=cmd_create_user)
    hook = sub.add_parser("telegram-webhook", help="register the Telegram webhook (https URL)")
    hook.add_argument("url", help="e.g. https://bot.example.com/webhooks/telegram/webhook")
    hook.set_defaults(func=cmd_telegram_webhook)
    sub.add_parser("telegram-poll", help="local development: long-poll Telegram instead "
                   "of a webhook").set_defaults(func=cmd_telegram_poll)
    replies = sub.add_parser("replies", help="the canned-reply library").add_subparsers(
        dest="replies_command", required=True)
    check = replies.add_parser("check", help="check replies against each channel's limits, "
                               "placeholders and the flows that send them")
    check.add_argument("--published", action="store_true",
                       help="check what is live (the YAML plus published revisions)")
    check.set_defaults(func=cmd_replies_check)
    export = replies.add_parser("export", help="write the published replies back to the YAML")
    export.set_defaults(func=cmd_replies_export, project_files=True)
    for command in (check, export):
        command.add_argument("--file", type=Path, default=None,
                             help="the writer-owned YAML (default: `replies:` in parley.yml)")
    replies.add_parser("placeholders", help="list the {placeholders} replies may use"
                       ).set_defaults(func=cmd_replies_placeholders)
    customer = sub.add_parser("export-customer", help="write everything stored about a "
                              "customer's conversations as JSON (recorded in the audit trail)")
    customer.add_argument("ids", nargs="+", metavar="ID",
                          help="conversation ids, one per channel: telegram:123 whatsapp:351…")
    customer.add_argument("--out", type=Path, default=None,
                          help="write to this file (mode 0600) instead of standard output")
    customer.set_defaults(func=cmd_export_customer)
    erase = sub.add_parser("erase-customer", help="delete everything stored about a "
                           "customer's conversations, Rasa's tracker included")
    erase.add_argument("ids", nargs="+", metavar="ID",
                       help="conversation ids, one per channel: telegram:123 whatsapp:351…")
    erase.add_argument("--yes", action="store_true",
                       help="really erase (without it: only say what would be erased)")
    erase.set_defaults(func=cmd_erase_customer)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "project_files", False):
        # Databases, logs, exports, and every process `run` starts: the owner's only.
        # Not for the commands that write the project's own files (init, replies export).
        os.umask(launcher.PRIVATE_UMASK)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
