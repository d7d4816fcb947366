"""A project's settings (parley.yml), and `parley init` / `parley check` on small projects.

In-process and fast; tests/test_adopt_framework.py does the whole journey from
the wheel with training and real servers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from parley.bot import contract, project_check, project_init
from parley.bot.settings import load_settings
from tests import REPO_ROOT

MINIMAL_DOMAIN = """\
version: "3.1"

intents:
  - greet   # people say hello

responses:
  utter_greet:
    - text: "Hello from the florist!"
"""


def minimal(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "domain.yml").write_text(MINIMAL_DOMAIN)
    (root / "config.yml").write_text("recipe: default.v1\nlanguage: en\npipeline:\npolicies:\n")
    (root / "data" / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello\n')
    return root


def problems(root: Path) -> list[str]:
    return [str(p) for p in project_check.check(load_settings(env={}, root=root))]


def test_settings_come_from_the_project_not_from_where_parley_is(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    (project / "sub").mkdir(parents=True)
    (project / "parley.yml").write_text(
        "brand: Florist & Co\nreplies: texts/replies.yml\nvar_dir: state\n"
        "database_url: sqlite:///state/db.sqlite\nchannels: [webchat, sms]\n"
        "contact: {email: hi@florist.example}\nactions: shop_actions\n"
        "placeholders:\n  bouquet: {about: the bouquet ordered, sample: Roses}\n")
    settings = load_settings(env={}, cwd=project / "sub")  # found by walking up
    assert settings.project_root == project.resolve()
    assert settings.brand == "Florist & Co"
    assert settings.replies_file == (project / "texts" / "replies.yml").resolve()
    assert settings.var_dir == (project / "state").resolve()
    assert settings.database_url == f"sqlite:///{(project / 'state' / 'db.sqlite').resolve()}"
    assert settings.channels == ("webchat", "sms")
    assert settings.actions_package == "shop_actions"
    assert settings.placeholders["bouquet"].sample == "Roses"
    assert REPO_ROOT not in settings.replies_file.parents
    env = {"PARLEY_DATABASE_URL": "postgresql://x@h/db", "PARLEY_REPLIES": "/r.yml"}
    overridden = load_settings(env=env, root=project)
    assert overridden.database_url == "postgresql://x@h/db"
    assert overridden.replies_file == Path("/r.yml")


@pytest.mark.parametrize(("text", "message"), [
    ("brnad: typo\n", "unknown setting(s) brnad"),
    ("channels: webchat\n", "`channels` must be a list"),
    ("contact: [a, b]\n", "`contact` must be a mapping"),
    ("support_hours: 9\n", "`support_hours` must be a mapping or a file name"),
    ("actions: 'my actions'\n", "`actions` must be a Python package name"),
    ("brand: [unclosed\n", "not valid YAML"),
])
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, text: str,
                                                message: str) -> None:
    (tmp_path / "parley.yml").write_text(text)
    with pytest.raises(ValueError, match=r"parley\.yml") as raised:
        load_settings(env={}, root=tmp_path)
    assert message in str(raised.value)


def test_the_demo_project_passes_the_check() -> None:
    assert problems(REPO_ROOT) == []


def test_check_names_the_file_and_what_to_add(tmp_path: Path) -> None:
    found = problems(minimal(tmp_path))
    assert "parley.yml: missing: run `parley init` to create it with the defaults" in found
    assert "domain.yml: add intent `human_handoff` under `intents:`" in found
    assert "domain.yml: add action `action_handoff` under `actions:`" in found
    assert any(p.startswith("data/parley_rules.yml: add a rule: intent `nlu_fallback` then "
                            "action `action_fallback`") for p in found)
    assert "data/parley_nlu.yml: intent `human_handoff` has 0 example(s); give it at least 5 " \
           "(in any data file with `nlu:`)" in found
    for reply in contract.REPLIES:
        assert any(p.startswith(f"data/responses.yml: add reply `{reply.name}`") for p in found)
    assert any(p.startswith("config.yml: `pipeline:` is empty") for p in found)
    assert any(p.startswith("endpoints.yml: set `nlg:") for p in found)
    assert any(p.startswith("actions/__init__.py: add `import parley.bot.actions") for p in found)
    files = {p.split(": ", 1)[0] for p in found}  # every line starts with a file
    assert files == {"parley.yml", "domain.yml", "data/parley_nlu.yml", "data/parley_rules.yml",
                     "data/responses.yml", "config.yml", "endpoints.yml", "credentials.yml",
                     "actions/__init__.py"}


def test_init_adds_only_whats_missing_and_twice_changes_nothing(tmp_path: Path) -> None:
    root = minimal(tmp_path)
    result = project_init.init(load_settings(env={}, root=root))
    changes, left = result.changes, result.left_alone
    assert left == []
    assert "parley.yml: created (brand, contact, support hours, channels, replies, actions); " \
           "edit it to suit" in changes
    assert problems(root) == []
    domain = (root / "domain.yml").read_text()
    assert "# people say hello" in domain and "Hello from the florist!" in domain
    assert domain.index("- greet") < domain.index("- human_handoff") < domain.index("responses:")
    config = (root / "config.yml").read_text()
    assert "DIETClassifier" in config  # Rasa's default pipeline, written out
    assert config.index("FallbackClassifier") < config.index(contract.KEYWORD_COMPONENT)
    assert "import parley.bot.actions" in (root / "actions" / "__init__.py").read_text()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    again = project_init.init(load_settings(env={}, root=root))
    assert again.changes == [] and again.left_alone == []
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    # What init wrote is what Rasa reads: the replies, rules and examples themselves.
    replies = yaml.safe_load((root / "data" / "responses.yml").read_text())["responses"]
    assert set(replies) == contract.REPLY_NAMES
    assert any("{queue_position}" in v["text"] for v in replies[contract.HANDOFF_QUEUED])
    rules = yaml.safe_load((root / "data" / "parley_rules.yml").read_text())["rules"]
    assert [[s for s in r["steps"]] for r in rules] == [
        [{"intent": "human_handoff"}, {"action": "action_handoff"}],
        [{"intent": "nlu_fallback"}, {"action": "action_fallback"}]]
    domain = yaml.safe_load((root / "domain.yml").read_text())
    assert domain["slots"]["handoff_reason"]["mappings"] == [{"type": "custom"}]
    endpoints = yaml.safe_load((root / "endpoints.yml").read_text())
    assert endpoints["nlg"] == {"type": contract.NLG_CLASS}
    # the action server's secret, as Rasa will read it (expanded from the environment)
    from rasa.core.utils import read_endpoint_config

    with pytest.MonkeyPatch.context() as env:
        env.setenv("PARLEY_ACTION_TOKEN", "s3cret-token")
        action = read_endpoint_config(str(root / "endpoints.yml"), "action_endpoint")
    assert action is not None and action.headers == {"X-Parley-Action-Token": "s3cret-token"}


def test_check_names_channels_that_go_around_the_gate(tmp_path: Path) -> None:
    root = minimal(tmp_path)
    project_init.init(load_settings(env={}, root=root))
    credentials = root / "credentials.yml"
    credentials.write_text(credentials.read_text() + "rest:\nsocketio:\n")
    endpoints = root / "endpoints.yml"
    endpoints.write_text(endpoints.read_text().replace("X-Parley-Action-Token", "X-Other"))
    found = problems(root)
    assert [p.split(":", 2)[1].strip() for p in found if "around Parley's inbox" in p] == [
        "remove `rest", "remove `socketio"]
    assert any(p.startswith("endpoints.yml: add `headers: {X-Parley-Action-Token: "
                            "${PARLEY_ACTION_TOKEN}}`") for p in found)
    again = project_init.init(load_settings(env={}, root=root))
    assert sum("credentials.yml: removed `" in c for c in again.changes) == 2
    assert problems(root) == []
    assert "rest" not in (yaml.safe_load(credentials.read_text()) or {})


def test_init_never_overwrites_a_choice_the_project_made(tmp_path: Path) -> None:
    root = minimal(tmp_path)
    (root / "endpoints.yml").write_text("nlg:\n  type: my.own.Generator  # ours\n")
    (root / "config.yml").write_text(
        "language: en\npipeline:\n  - name: WhitespaceTokenizer\n  - name: CountVectorsFeaturizer\n"
        f"  - name: {contract.KEYWORD_COMPONENT}\n  - name: DIETClassifier\n"
        "  - name: FallbackClassifier\n    threshold: 0.5\npolicies:\n  - name: TEDPolicy\n")
    result = project_init.init(load_settings(env={}, root=root))
    changes = result.changes
    assert [c for c in result.left_alone if c.startswith("endpoints.yml: `nlg:` is set")]
    assert "my.own.Generator  # ours" in (root / "endpoints.yml").read_text()
    assert "config.yml: added RulePolicy" in changes
    config = (root / "config.yml").read_text()
    assert "threshold: 0.5" in config and config.count("FallbackClassifier") == 1
    left = problems(root)
    assert any(p.startswith("endpoints.yml: set `nlg:") for p in left)
    assert any(p.startswith(f"config.yml: move {contract.KEYWORD_COMPONENT} after") for p in left)


@pytest.mark.parametrize("classifier, threshold", [
    ("DIETClassifier", contract.FALLBACK_SETTINGS["threshold"]),
    (contract.SENTENCE_CLASSIFIER, contract.SENTENCE_FALLBACK_SETTINGS["threshold"]),
])
def test_the_fallback_threshold_suits_the_projects_classifier(
        tmp_path: Path, classifier: str, threshold: float) -> None:
    """Parley's classifier scores probability x familiarity, lower than DIET's
    softmax: DIET's 0.6 would send nearly every message to the fallback."""
    root = minimal(tmp_path)
    (root / "config.yml").write_text(
        "language: en\npipeline:\n  - name: WhitespaceTokenizer\n"
        f"  - name: {classifier}\npolicies:\n  - name: RulePolicy\n")
    result = project_init.init(load_settings(env={}, root=root))
    assert f"config.yml: added FallbackClassifier (threshold {threshold})" in result.changes
    pipeline = yaml.safe_load((root / "config.yml").read_text())["pipeline"]
    [fallback] = [c for c in pipeline if c["name"] == "FallbackClassifier"]
    assert fallback["threshold"] == threshold
    assert [c["name"] for c in pipeline].index("FallbackClassifier") == 2  # after it


def test_a_conflicting_fallback_rule_is_named_not_overwritten(tmp_path: Path) -> None:
    root = minimal(tmp_path)
    (root / "data" / "rules.yml").write_text(
        'version: "3.1"\nrules:\n- rule: fallback\n  steps:\n  - intent: nlu_fallback\n'
        "  - action: utter_default\n")
    result = project_init.init(load_settings(env={}, root=root))
    assert result.left_alone == ["data/rules.yml: 'fallback' answers nlu_fallback with "
                                 "utter_default; change it to action_fallback (Rasa will not "
                                 "train with both), then run `parley init` again"]
    assert "utter_default" in (root / "data" / "rules.yml").read_text()
    rules = yaml.safe_load((root / "data" / "parley_rules.yml").read_text())["rules"]
    assert [r["steps"][0]["intent"] for r in rules] == ["human_handoff"]  # not the fallback
    assert [p for p in problems(root) if p.startswith("data/rules.yml: 'fallback' answers")]


def test_init_keeps_the_files_indentation(tmp_path: Path) -> None:
    root = minimal(tmp_path)
    (root / "domain.yml").write_text('version: "3.1"\nintents:\n    - greet\nslots:\n'
                                     "    mood:\n        type: text\n        mappings:\n"
                                     "            - type: custom\n")
    project_init.init(load_settings(env={}, root=root))
    lines = (root / "domain.yml").read_text().splitlines()
    assert lines[:5] == ['version: "3.1"', "intents:", "    - greet", "    - human_handoff",
                         "slots:"]
    assert "    handoff_reason:" in lines and "        type: categorical" in lines


def test_replies_kept_in_the_domain_count_as_defined(tmp_path: Path) -> None:
    from parley.bot.responses import checks

    root = minimal(tmp_path)
    project_init.init(load_settings(env={}, root=root))
    (root / "data" / "rules.yml").write_text(
        'version: "3.1"\nrules:\n- rule: hi\n  steps:\n  - intent: greet\n'
        "  - action: utter_greet\n  - action: utter_missing\n")
    settings = load_settings(env={}, root=root)
    replies = yaml.safe_load(settings.replies_file.read_text())["responses"]
    missing = [p.reply for p in checks.check_library(replies, settings)
               if "library has no such reply" in p.message]
    assert missing == ["utter_missing"]  # utter_greet lives in domain.yml: served, not missing
