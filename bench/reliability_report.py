"""The fault tests' figures as the table in docs/reliability.md.

    make test-full                              # writes results/faults/<scenario>.json
    .venv/bin/python -m bench.reliability_report

Only the part of docs/reliability.md between the two `reliability-figures` markers is
rewritten; the prose around it is kept.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from bench import REPO_ROOT

RESULTS = REPO_ROOT / "results" / "faults"
DOC = REPO_ROOT / "docs" / "reliability.md"
START, END = "<!-- reliability-figures:start -->", "<!-- reliability-figures:end -->"

# Scenario file -> what was broken, in the order the table shows them.
FAULTS = {
    "steady_load": "none (100 conversations x 20 messages)",
    "rasa_killed": "kill -9 of one of two Rasa processes",
    "action_server_killed": "kill -9 of the action server, restarted",
    "desk_killed": "kill -9 of the desk while agents reply, restarted",
    "postgres_restarted": "PostgreSQL restarted",
}
COLUMNS = ("sent", "accepted", "answered", "lost", "doubled", "refused")


def load(results: Path) -> dict[str, dict[str, Any]]:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    order = [name for name in FAULTS if name in found] + \
        [name for name in found if name not in FAULTS]
    return {name: found[name] for name in order}


def _notes(data: dict[str, Any]) -> str:
    notes = []
    for key, label in (("handed_over", "handed to a person"), ("out_of_order",
                       "conversations out of order"), ("wrong_replies", "wrong replies"),
                       ("unsent", "still unsent"), ("doubled_turns", "answered by two turns")):
        if data.get(key):
            notes.append(f"{data[key]} {label}")
    extra = data.get("extra") or {}
    if data.get("scenario") == "desk_killed":
        notes.append(f"{extra.get('tickets_assigned', '?')}/{extra.get('tickets', '?')} "
                     "tickets assigned, "
                     f"{extra.get('tickets_with_two_claims_accepted', '?')} double-assigned")
    if extra.get("settled") is False:
        notes.append("did not settle")
    return "; ".join(notes)


def table(results: dict[str, dict[str, Any]]) -> str:
    head = ["fault", *COLUMNS, "seconds", "notes", "code", "command"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, data in results.items():
        row = [FAULTS.get(name, name), *(str(data.get(c, "")) for c in COLUMNS),
               f"{data.get('seconds', 0):.0f}", _notes(data), data.get("code", ""),
               f"`{data.get('command', 'make test-full')}`"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def render(results: dict[str, dict[str, Any]], doc_text: str) -> str:
    block = f"{START}\n{table(results)}\n{END}"
    if START in doc_text and END in doc_text:
        pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
        return pattern.sub(lambda _m: block, doc_text)
    return doc_text.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    results = load(args.results)
    if not results:
        parser.error(f"no results in {args.results}: run `make test-full` first")
    text = args.doc.read_text() if args.doc.exists() else "# Reliability\n"
    args.doc.write_text(render(results, text))
    print(f"{args.doc}: {len(results)} scenario(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
