#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter (Rasa 3.6 supports 3.8-3.10 only).
# Looks at $PYTHON, python3.10 on PATH, then pyenv's installed versions.
set -u
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
command -v python3.10 >/dev/null 2>&1 && candidates+=("$(command -v python3.10)")
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
for dir in "$pyenv_root"/versions/3.10*/bin; do
  [ -x "$dir/python3.10" ] && candidates+=("$dir/python3.10")
done
[ -x /usr/bin/python3.10 ] && candidates+=(/usr/bin/python3.10)

for py in "${candidates[@]}"; do
  # pyenv shims exist even when 3.10 is not selected: check the interpreter runs.
  if "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; then
    echo "$py"
    exit 0
  fi
done
cat >&2 <<'MSG'
error: Python 3.10 is needed (Rasa 3.6 runs on Python 3.8-3.10, not newer).
  Install it, then run the command again:
    pyenv install 3.10          # with pyenv
    apt-get install python3.10  # or your system's package manager
  Or point to one:  make run PYTHON=/path/to/python3.10
MSG
exit 1
