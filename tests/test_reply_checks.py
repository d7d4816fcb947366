"""The reply checks catch each kind of problem and say what to change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from parley.bot import contract
from parley.bot.responses import checks
from parley.bot.responses.channels import CHANNELS, configured
from parley.bot.responses.library import dump
from parley.bot.settings import load_settings
from tests import REPO_ROOT as PROJECT_ROOT

ALL = list(CHANNELS.values())
FIVE = configured()


def only(problems: list[checks.Problem], channel: str = "") -> list[str]:
    return [str(p) for p in problems if not channel or p.channel == channel]


def test_text_over_each_channels_limit() -> None:
    body = [{"text": "x" * 2001}]
    problems = checks.check_reply("utter_long", body, FIVE)
    assert {p.channel for p in problems} == {"messenger", "instagram"}
    messenger = only(problems, "messenger")[0]
    assert "utter_long" in messenger and "Messenger" in messenger
    assert "2001 characters" in messenger and "at most 2000" in messenger
    assert "add a `channel: messenger` variant" in messenger
    assert only(checks.check_reply("utter_long", [{"text": "x" * 4097}], FIVE), "telegram")
    assert only(checks.check_reply("utter_long", [{"text": "x" * 4097}], FIVE), "whatsapp")
    # A channel's own variant takes its limit off the generic text.
    fixed = [*body, {"text": "short", "channel": "messenger"},
             {"text": "short", "channel": "instagram"}]
    assert checks.check_reply("utter_long", fixed, FIVE) == []


def test_sms_and_x_limits_apply_where_configured() -> None:
    text = [{"text": "y" * 300}]
    assert not only(checks.check_reply("utter_r", text, FIVE), "sms")
    sms = only(checks.check_reply("utter_r", text, [CHANNELS["sms"]]))
    assert sms and "at most 160" in sms[0]
    x_public = only(checks.check_reply("utter_r", text, [CHANNELS["x_public"]]))
    assert x_public and "at most 280" in x_public[0]
    assert not checks.check_reply("utter_r", text, [CHANNELS["x"]])  # 10,000 in DMs
    buttons = [{"text": "Pick", "buttons": [{"title": "A", "payload": "/a"}]}]
    no_buttons = only(checks.check_reply("utter_r", buttons, [CHANNELS["sms"]]))
    assert no_buttons and "cannot show buttons" in no_buttons[0]


def test_whatsapp_buttons() -> None:
    def body(n: int, title: str = "Option") -> list[dict]:
        return [{"text": "Pick one", "buttons": [{"title": f"{title} {i}", "payload": f"/o{i}"}
                                                 for i in range(n)]}]
    assert not only(checks.check_reply("utter_b", body(3), FIVE), "whatsapp")
    long_title = only(checks.check_reply("utter_b", body(3, "A very long button title"),
                                         FIVE), "whatsapp")
    assert long_title and "cuts button titles at 20" in long_title[0]
    # 4 to 10 go out as a list message, whose rows allow 24 characters.
    assert len("Twenty-two chars!!!! 0") == 22
    as_list = [p for p in checks.check_reply("utter_b", body(5, "Twenty-two chars!!!!"), FIVE)
               if p.channel == "whatsapp"]
    assert [p.severity for p in as_list] == ["warning"]
    assert "at most 3 reply buttons, so it goes out as a list" in str(as_list[0])
    assert only(checks.check_reply("utter_b", body(3, "Twenty-two chars!!!!"), FIVE),
                "whatsapp")
    eleven = only(checks.check_reply("utter_b", body(11), FIVE), "whatsapp")
    assert eleven and "has 11 buttons" in eleven[0] and "at most 3 reply buttons" in eleven[0]
    payload = [{"text": "x", "buttons": [{"title": "Go", "payload": "/" + "p" * 70}]}]
    assert "payload" in only(checks.check_reply("utter_b", payload, FIVE), "telegram")[0]


def messages_sent(channel: str, text: str) -> int:
    """How many messages the channel's sender makes of a text (nothing is sent)."""
    from parley.connectors import messenger, telegram, whatsapp

    if channel == "telegram":
        return len(telegram.Telegram("1:t")._calls(1, {"text": text}))
    if channel == "whatsapp":
        return len(whatsapp.payloads("1", {"text": text}))
    platform = messenger.InstagramPlatform if channel == "instagram" else messenger.Platform
    return len(messenger.Meta(platform, "t").payloads("P", {"text": text}, None))


@pytest.mark.parametrize("channel", ["telegram", "messenger", "instagram", "whatsapp"])
def test_senders_split_exactly_where_the_checks_complain(channel: str) -> None:
    """One table for both: a text at the limit goes out whole and passes; one
    character more is split in two and flagged."""
    limit = CHANNELS[channel].text_limit
    at_limit, over = "x" * limit, "x" * (limit + 1)
    assert messages_sent(channel, at_limit) == 1
    assert not checks.check_reply("utter_r", [{"text": at_limit}], [CHANNELS[channel]])
    assert messages_sent(channel, over) == 2
    [problem] = checks.check_reply("utter_r", [{"text": over}], [CHANNELS[channel]])
    assert f"at most {limit}" in str(problem)


def test_unknown_and_missing_placeholders() -> None:
    typo = checks.check_reply("utter_p", [{"text": "Order {ordr_number} is late"}], FIVE)
    assert len(typo) == 1 and "{ordr_number} is not a placeholder" in str(typo[0])
    assert not checks.check_reply("utter_p", [{"text": "Order {order_number}"}], FIVE)
    assert not checks.check_reply("utter_p", [{"text": "{my_slot}"}], FIVE, slots={"my_slot"})
    body = [{"text": "Order {order_number} ships {eta}"},
            {"text": "Encomenda enviada", "metadata": {"language": "pt"}}]
    missing = [str(p) for p in checks.check_reply("utter_p", body, FIVE)]
    assert len(missing) == 2
    assert all("(pt)" in m and "leaves out" in m for m in missing)
    assert any("{eta}" in m for m in missing) and any("{order_number}" in m for m in missing)


def test_shape_errors_say_how_to_fix_them() -> None:
    assert "at least one variation" in str(checks.check_reply("utter_s", [], FIVE)[0])
    assert "unknown key(s) txt" in str(checks.check_reply("utter_s", [{"txt": "hi"}], FIVE)[0])
    assert any("unknown channel 'fax'" in str(p) for p in checks.check_reply(
        "utter_s", [{"text": "hi", "channel": "fax"}], FIVE))
    assert any("language 'xx'" in str(p) for p in checks.check_reply(
        "utter_s", [{"text": "hi", "metadata": {"language": "xx"}}], FIVE))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "actions").mkdir()
    (tmp_path / "domain.yml").write_text("version: '3.1'\nslots:\n  order_number:\n"
                                         "    type: text\nforms:\n  order_form:\n"
                                         "    required_slots: [order_number]\n")
    (tmp_path / "data" / "stories.yml").write_text(
        "stories:\n- story: s\n  steps:\n  - intent: greet\n  - action: utter_greet\n"
        "  - action: utter_gone\n")
    (tmp_path / "actions" / "a.py").write_text(
        'dispatcher.utter_message(response="utter_from_code")\n'
        'dispatcher.utter_message(response=f"utter_status_{status}")\n')
    return tmp_path


def test_references_missing_and_unused(project: Path) -> None:
    replies = {"utter_greet": [{"text": "Hi"}], "utter_from_code": [{"text": "x"}],
               "utter_status_shipped": [{"text": "Shipped"}],
               "utter_ask_order_number": [{"text": "Which order?"}],
               "utter_lonely": [{"text": "Nobody sends me"}],
               "utter_for_agents": [{"text": "Thanks!", "metadata": {"canned": True}}]}
    parleys = {r.name: list(r.variations) for r in contract.REPLIES}
    settings = load_settings(env={}, root=project)
    problems = [str(p) for p in checks.check_library({**replies, **parleys}, settings, FIVE)
                if p.reply not in parleys]
    assert problems == [
        "error: utter_gone [all channels]: data/stories.yml sends this reply, but the library "
        "has no such reply: add it to data/responses.yml (`parley init` adds Parley's own) or "
        "fix the name",
        "error: utter_lonely [all channels]: no story, rule or action sends this reply: use it, "
        "delete it, or mark it `metadata: {canned: true}` if it is for agents only",
    ]
    without_parleys = [p.reply for p in checks.check_library(replies, settings, FIVE)
                       if "library has no such reply" in p.message]
    assert set(without_parleys) == {"utter_gone", *contract.REPLY_NAMES}  # sent by Parley


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parley.bot.cli", "replies", "check", *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


def test_cli_passes_on_the_project_and_fails_on_a_bad_file(tmp_path: Path) -> None:
    ok = run_check()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 error(s)" in ok.stdout
    bad = tmp_path / "responses.yml"
    bad.write_text(dump({"utter_greet": [{"text": "Hi {frist_name}"}]}), encoding="utf-8")
    failed = run_check("--file", str(bad))
    assert failed.returncode == 1
    assert "utter_greet [all channels]: {frist_name} is not a placeholder" in failed.stdout
    assert "but the library has no such reply" in failed.stdout  # the rest went missing
