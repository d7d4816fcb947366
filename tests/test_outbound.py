"""The shared outbound sender and text splitting."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from parley.connectors.outbound import Limits, Retryable, Sender
from parley.connectors.text import split_text


@pytest.mark.parametrize("limit", [5, 20, 4096])
def test_split_keeps_every_word_within_the_limit(limit: int) -> None:
    text = ("Standard shipping takes 3-5 business days.\n\nExpress is 1-2 days. " * 200).strip()
    chunks = split_text(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    if limit >= 20:
        assert " ".join(chunks).split() == text.split()  # no word cut or lost


def test_split_prefers_paragraphs_and_hard_cuts_only_giant_words() -> None:
    assert split_text("aaa bbb\n\nccc", 9) == ["aaa bbb", "ccc"]
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]
    assert split_text("short", 4096) == ["short"]
    assert split_text("   ", 10) == []


def run(coro):
    return asyncio.run(coro)


def test_retries_honour_retry_after_then_succeed() -> None:
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise Retryable("429", retry_after=0.3)
        return "ok"

    sender = Sender(Limits(per_second=100, per_conversation=100))
    assert run(sender.send("c1", flaky)) == "ok"
    assert len(calls) == 3
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(calls))


def test_permanent_errors_are_not_retried() -> None:
    calls = 0

    async def forbidden() -> None:
        nonlocal calls
        calls += 1
        raise PermissionError("bot was blocked by the user")

    sender = Sender(Limits(per_second=100, per_conversation=100))
    with pytest.raises(PermissionError):
        run(sender.send("c1", forbidden))
    assert calls == 1


def test_gives_up_after_max_attempts() -> None:
    async def down() -> None:
        raise Retryable("502", retry_after=0.01)

    sender = Sender(Limits(per_second=100, per_conversation=100, max_attempts=3))
    with pytest.raises(Retryable):
        run(sender.send("c1", down))


def test_order_is_kept_per_conversation_under_retries() -> None:
    delivered: list[str] = []
    failed_once: set[str] = set()

    def attempt(label: str):
        async def call() -> None:
            if label.endswith("0") and label not in failed_once:
                failed_once.add(label)
                raise Retryable("429", retry_after=0.05)
            delivered.append(label)
        return call

    async def scenario() -> None:
        sender = Sender(Limits(per_second=1000, per_conversation=1000))
        await asyncio.gather(
            sender.send_all("a", [attempt(f"a{i}") for i in range(5)]),
            sender.send_all("b", [attempt(f"b{i}") for i in range(5)]),
        )

    run(scenario())
    assert [x for x in delivered if x[0] == "a"] == [f"a{i}" for i in range(5)]
    assert [x for x in delivered if x[0] == "b"] == [f"b{i}" for i in range(5)]


def test_rate_limits_are_respected() -> None:
    stamps: list[float] = []

    async def record() -> None:
        stamps.append(time.monotonic())

    async def scenario() -> None:
        sender = Sender(Limits(per_second=10, per_conversation=100))
        await asyncio.gather(*(sender.send(f"c{i}", record) for i in range(25)))

    run(scenario())
    stamps.sort()
    # 25 sends at 10/s (burst 10) need at least ~1.5 s; any 1 s window holds <= 10 + burst slack
    assert stamps[-1] - stamps[0] >= 1.3
    per_conv_stamps: list[float] = []

    async def one_chat() -> None:
        sender = Sender(Limits(per_second=100, per_conversation=2, conversation_burst=1))

        async def rec() -> None:
            per_conv_stamps.append(time.monotonic())

        await sender.send_all("chat", [rec] * 4)

    run(one_chat())
    assert per_conv_stamps[-1] - per_conv_stamps[0] >= 1.3  # 2/s without burst
