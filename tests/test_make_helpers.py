"""The helpers behind the Make targets: Python discovery, training freshness, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from parley.bot import model_freshness
from parley.bot.settings import load_settings
from tests import REPO_ROOT as PROJECT_ROOT

FIND_PYTHON = PROJECT_ROOT / "scripts" / "find-python.sh"


def run_find_python(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(FIND_PYTHON)], env=env, capture_output=True, text=True)


def test_find_python_returns_a_310_interpreter() -> None:
    result = run_find_python(dict(os.environ))
    assert result.returncode == 0, result.stderr
    version = subprocess.run([result.stdout.strip(), "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("Python 3.10")


def test_find_python_explains_what_to_do_when_310_is_missing(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path)}
    if Path("/usr/bin/python3.10").exists():
        pytest.skip("this machine has a system python3.10")
    result = run_find_python(env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Python 3.10 is needed" in result.stderr and "pyenv install 3.10" in result.stderr


def test_find_python_rejects_a_wrong_version_given_explicitly(tmp_path: Path) -> None:
    other = shutil.which("python3.11") or "/usr/bin/python3"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path),
           "PYTHON": other}
    result = run_find_python(env)
    assert result.stdout.strip() != other


def make_project(root: Path) -> None:
    (root / "data" / "tests").mkdir(parents=True)
    (root / "config.yml").write_text("pipeline: []\n")
    (root / "domain.yml").write_text("intents: [greet]\n")
    (root / "data" / "nlu.yml").write_text("nlu: []\n")
    (root / "data" / "tests" / "test_stories.yml").write_text("stories: []\n")


def fake_training(root: Path) -> None:
    """What `rasa train` leaves behind, for the freshness logic alone."""
    model_freshness.model_path(root).parent.mkdir(exist_ok=True)
    model_freshness.model_path(root).write_bytes(b"model")
    model_freshness.record_training(root)


def test_no_model_means_stale(tmp_path: Path) -> None:
    make_project(tmp_path)
    assert model_freshness.is_stale(tmp_path)


def test_recorded_model_is_fresh_until_training_data_changes(tmp_path: Path) -> None:
    make_project(tmp_path)
    fake_training(tmp_path)
    assert not model_freshness.is_stale(tmp_path)
    (tmp_path / "data" / "nlu.yml").write_text("nlu: [changed]\n")
    assert model_freshness.is_stale(tmp_path)


@pytest.mark.parametrize("path", ["config.yml", "domain.yml", "data/new_rules.yml"])
def test_any_training_input_change_makes_it_stale(tmp_path: Path, path: str) -> None:
    make_project(tmp_path)
    fake_training(tmp_path)
    (tmp_path / path).write_text("changed: true\n")
    assert model_freshness.is_stale(tmp_path)


def test_test_stories_do_not_trigger_training(tmp_path: Path) -> None:
    make_project(tmp_path)
    fake_training(tmp_path)
    (tmp_path / "data" / "tests" / "test_stories.yml").write_text("stories: [x]\n")
    assert not model_freshness.is_stale(tmp_path)


def test_reply_text_does_not_trigger_training_but_new_reply_names_do(tmp_path: Path) -> None:
    make_project(tmp_path)
    replies = tmp_path / "data" / "responses.yml"
    replies.write_text("responses:\n  utter_hi:\n    - text: Hi\n")
    fake_training(tmp_path)
    replies.write_text("responses:\n  utter_hi:\n    - text: Hello there, welcome!\n")
    assert not model_freshness.is_stale(tmp_path)  # the live library serves the text
    replies.write_text("responses:\n  utter_hi:\n    - text: Hi\n  utter_bye:\n"
                       "    - text: Bye\n")
    assert model_freshness.is_stale(tmp_path)


def test_corrupt_fingerprint_means_stale(tmp_path: Path) -> None:
    make_project(tmp_path)
    fake_training(tmp_path)
    (tmp_path / "models" / model_freshness.FINGERPRINT_FILE).write_text("{not json")
    assert model_freshness.is_stale(tmp_path)


def test_recording_without_a_model_fails(tmp_path: Path) -> None:
    make_project(tmp_path)
    with pytest.raises(FileNotFoundError, match="did training fail"):
        model_freshness.record_training(tmp_path)


def test_cli_is_stale_exit_codes(tmp_path: Path) -> None:
    make_project(tmp_path)
    cmd = [sys.executable, "-m", "parley.bot.cli", "is-stale", "--root", str(tmp_path)]
    assert subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True).returncode == 0
    fake_training(tmp_path)
    assert subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True).returncode == 1


def test_the_repository_model_is_current() -> None:
    """`make test` trains first, so the model it tests is the one the data describes."""
    assert not model_freshness.is_stale(PROJECT_ROOT)
    stamp = json.loads((PROJECT_ROOT / "models" / model_freshness.FINGERPRINT_FILE).read_text())
    assert stamp["fingerprint"] == model_freshness.fingerprint(PROJECT_ROOT)


def test_cli_init_db_creates_parleys_tables_only(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    env = {**os.environ, "PARLEY_DATABASE_URL": f"sqlite:///{database}"}
    cmd = [sys.executable, "-m", "parley.bot.cli", "init-db"]
    first = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    second = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "Database ready" in first.stdout
    assert second.returncode == 0
    tables = set(inspect(create_engine(f"sqlite:///{database}")).get_table_names())
    assert {"tickets", "messages", "conversations", "agents"} <= tables
    assert "orders" not in tables  # the demo store's table is the demo's own business


def test_cli_reports_bad_settings_clearly() -> None:
    env = {**os.environ, "PARLEY_RASA_PORT": "fifty"}
    result = subprocess.run([sys.executable, "-m", "parley.bot.cli", "run"], cwd=PROJECT_ROOT,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "PARLEY_RASA_PORT must be a port number" in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = load_settings({})
    assert defaults.rasa_port == 5005 and defaults.action_port == 5055
    assert defaults.database_url == f"sqlite:///{PROJECT_ROOT / 'var' / 'parley.db'}"
    custom = load_settings({"PARLEY_VAR_DIR": str(tmp_path), "PARLEY_ACTION_PORT": "6000"})
    assert custom.database_url == f"sqlite:///{tmp_path / 'parley.db'}"
    assert custom.action_port == 6000


@pytest.mark.parametrize("value", ["0", "70000", "-1"])
def test_settings_reject_out_of_range_ports(value: str) -> None:
    with pytest.raises(ValueError, match="between 1 and 65535"):
        load_settings({"PARLEY_RASA_PORT": value})


def test_follow_up_hours_setting() -> None:
    assert load_settings({}).follow_up_hours == 24.0
    assert load_settings({"PARLEY_FOLLOWUP_HOURS": "0"}).follow_up_hours == 0.0
    with pytest.raises(ValueError, match="number of hours"):
        load_settings({"PARLEY_FOLLOWUP_HOURS": "daily"})


def test_both_command_names_work_in_the_checkout() -> None:
    """`parley …` is the installed command; `python -m bot.cli …` keeps working here."""
    for cmd in ([str(Path(sys.executable).parent / "parley"), "check"],
                [sys.executable, "-m", "bot.cli", "check"]):
        result = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "has what Parley needs" in result.stdout
