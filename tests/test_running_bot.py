"""Real conversations through the servers `make run` starts, over HTTP.

Starts `python -m parley.bot.cli run` once for this module (Rasa server with the trained
model, action server, web chat) and stops it with Ctrl-C at the end.
"""

from __future__ import annotations

import signal
import socket
import uuid

import httpx
import pytest

from tests.conftest import RunningBot

pytestmark = pytest.mark.servers


def new_sender() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def texts(replies: list[dict]) -> list[str]:
    return [r["text"] for r in replies if "text" in r]


def test_banner_prints_where_to_chat(running_bot: RunningBot) -> None:
    assert running_bot.webchat_url in running_bot.banner
    assert f"{running_bot.desk_url}/" in running_bot.banner
    password = (running_bot.state / "desk-admin-password.txt").read_text().strip()
    assert f"admin / {password}" in running_bot.banner  # first run made an admin
    assert "Ctrl-C" in running_bot.banner


def test_order_status_conversation(running_bot: RunningBot) -> None:
    sender = new_sender()
    greeting = running_bot.say(sender, "hi")
    assert any("AGENT" in t for t in texts(greeting))
    assert all(r["recipient_id"] == f"webchat:{sender}" for r in greeting)

    ask = texts(running_bot.say(sender, "where is my order?"))
    assert any("order number" in t for t in ask)

    status = " ".join(texts(running_bot.say(sender, "its 10234")))
    assert "10234" in status and "DHL" in status and "track.example" in status

    assert any("welcome" in t.lower() for t in texts(running_bot.say(sender, "thanks!")))


def test_unknown_and_mistyped_order_numbers(running_bot: RunningBot) -> None:
    sender = new_sender()
    running_bot.say(sender, "track my order")
    retry = " ".join(texts(running_bot.say(sender, "its 123")))
    assert "5 digits" in retry
    missing = " ".join(texts(running_bot.say(sender, "99999")))
    assert "couldn't find order 99999" in missing


def test_order_number_in_first_message(running_bot: RunningBot) -> None:
    reply = " ".join(texts(running_bot.say(new_sender(), "where is order 10451")))
    assert "10451" in reply and "being packed" in reply


def test_two_low_confidence_messages_hand_off(running_bot: RunningBot) -> None:
    sender = new_sender()
    first = running_bot.say(sender, "xqzvk blorptangle frumious")
    assert any("another way" in t for t in texts(first))
    buttons = [b for r in first for b in r.get("buttons", [])]
    assert len(buttons) == 2 and all(b["payload"].startswith("/") for b in buttons)
    second = " ".join(texts(running_bot.say(sender, "wubba lubba snorkel grape")))
    assert "bringing in a person" in second and "in the queue" in second


@pytest.mark.parametrize("text", ["AGENT", "agent", "can I get an Agent please",
                                  "your agent was rude to me"])
def test_agent_keyword_always_queues(running_bot: RunningBot, text: str) -> None:
    reply = " ".join(texts(running_bot.say(new_sender(), text)))
    assert "in the queue" in reply and "Type BOT" in reply



def test_web_chat_page_is_served_and_renders_text_inert(running_bot: RunningBot) -> None:
    resp = httpx.get(running_bot.webchat_url, timeout=10)
    assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
    page = resp.text
    assert "textContent" in page and "innerHTML" not in page
    assert 'fetch("webhook"' in page


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"message": "hi"}', 400, "sender: is required"),
    (b'{"sender": "../../etc", "message": "hi"}', 400, "sender: must be 1-64"),
    (b'{"sender": "abc", "message": "   "}', 400, "'message'"),
    (b'{"sender": "abc", "message": 42}', 400, "message: must be a string"),
    (b'{"sender": "abc", "message": "' + b"x" * 5000 + b'"}', 413, "limit is 4096"),
    (b'{"sender": "abc", "message": "' + b"x" * 70000 + b'"}', 413, "bytes"),
])
def test_bad_input_gets_a_clear_4xx(running_bot: RunningBot, body: bytes, status: int,
                                    reason: str) -> None:
    resp = httpx.post(f"{running_bot.webchat_url}webhook", content=body,
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == status
    assert reason in resp.json()["error"]


@pytest.mark.parametrize(("query", "reason"), [
    ({"sender": "abc", "after": "ten"}, "'after' must be an integer"),
    ({"sender": "../x"}, "'sender'"),
    ({}, "'sender'"),
])
def test_updates_bad_input_gets_a_clear_4xx(running_bot: RunningBot, query: dict,
                                            reason: str) -> None:
    resp = httpx.get(f"{running_bot.webchat_url}updates", params=query, timeout=10)
    assert resp.status_code == 400 and reason in resp.json()["error"]


def test_updates_start_with_a_cursor_and_return_pushed_messages(running_bot: RunningBot
                                                                ) -> None:
    from parley.bot import handoff

    sender = new_sender()
    running_bot.say(sender, "AGENT")
    url = f"{running_bot.webchat_url}updates"
    cursor = httpx.get(url, params={"sender": sender}, timeout=10).json()["cursor"]
    assert cursor > 0
    handoff.push_notice(f"webchat:{sender}", "An agent is looking at it",
                        database_url=running_bot.database_url)
    body = httpx.get(url, params={"sender": sender, "after": cursor}, timeout=30).json()
    assert [m["text"] for m in body["messages"]] == ["An agent is looking at it"]
    assert body["cursor"] == body["messages"][0]["id"]


def test_wrong_method_is_not_a_server_error(running_bot: RunningBot) -> None:
    resp = httpx.get(f"{running_bot.webchat_url}webhook", timeout=10)
    assert resp.status_code == 405


def test_ctrl_c_stops_every_server(running_bot: RunningBot) -> None:
    """Runs last in this module: the stack is gone afterwards."""
    running_bot.process.send_signal(signal.SIGINT)
    assert running_bot.process.wait(timeout=60) == 0
    for url in (running_bot.rasa_url, running_bot.action_url, running_bot.desk_url):
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as sock, pytest.raises(OSError):
            sock.connect(("127.0.0.1", port))
