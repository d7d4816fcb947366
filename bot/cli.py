"""`python -m bot.cli …`: the commands behind the Makefile targets."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bot import launcher, model_freshness, orders, storage
from bot.settings import PROJECT_ROOT, load_settings


def cmd_train(args: argparse.Namespace) -> int:
    root: Path = args.root
    if not args.force and not model_freshness.is_stale(root):
        print(f"Model is up to date: {model_freshness.model_path(root)}")
        return 0
    print("Training the Rasa model (data or config changed)…", flush=True)
    rasa = Path(sys.executable).parent / "rasa"
    result = subprocess.run(
        [str(rasa), "train", "--fixed-model-name", model_freshness.MODEL_NAME,
         "--out", str(root / "models")],
        cwd=root,
    )
    if result.returncode != 0:
        print("Training failed; the previous model (if any) is unchanged.", file=sys.stderr)
        return result.returncode
    model_freshness.record_training(root)
    return 0


def cmd_is_stale(args: argparse.Namespace) -> int:
    """Exit 0 when training is needed, 1 when the model is current (for shell `if`)."""
    stale = model_freshness.is_stale(args.root)
    print("stale" if stale else "fresh")
    return 0 if stale else 1


def cmd_init_db(_args: argparse.Namespace) -> int:
    storage.create_schema()
    added = orders.seed_demo_orders()
    print(f"Database ready ({added} demo orders added).")
    return 0


def cmd_run(_args: argparse.Namespace) -> int:
    return launcher.serve_forever(launcher.stack_from_settings(load_settings()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the model if its inputs changed")
    train.add_argument("--force", action="store_true", help="train even if up to date")
    train.add_argument("--root", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)
    train.set_defaults(func=cmd_train)
    stale = sub.add_parser("is-stale", help="exit 0 if the model needs training")
    stale.add_argument("--root", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)
    stale.set_defaults(func=cmd_is_stale)
    sub.add_parser("init-db", help="create tables and demo data").set_defaults(func=cmd_init_db)
    sub.add_parser("run", help="start the bot and print its URLs").set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
