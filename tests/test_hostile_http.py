"""Hostile webhook traffic against one real stack on PostgreSQL (issue 11).

Thousands of generated bodies per webhook, with a valid secret or signature:
valid-looking updates with wrong JSON types, lone surrogates, NUL, integers past
64 bits, deep nesting, raw bodies that are barely JSON; plus forged and missing
signatures and oversize bodies (whole, and chunked without a length). Whatever
arrives: never a 5xx, never a stack trace, and a refused request stores nothing.
Each webhook gets its own thread sending one request at a time, so the customer
rows of its channel counted before and after a refusal tell whether it stored any.

PARLEY_HOSTILE_BODIES sets the generated bodies per webhook (default 500).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from parley.bot import launcher
from parley.connectors.meta import generate_signature
from tests.conftest import postgres_schema
from tests.fakes.graph_api import FakeGraph
from tests.fakes.graph_api import serve as serve_graph
from tests.fakes.stack import start_stack
from tests.fakes.telegram_api import FakeTelegram, serve, stop
from tests.test_shapes import (
    META_KEYS,
    TG_KEYS,
    WA_KEYS,
    WEBCHAT_POST,
    hostile,
    meta_call,
    raw_body,
    telegram_update,
    whatsapp_call,
)

# Minutes of traffic: with the fault tests in `make test-full`, not in every `make test`.
pytestmark = [pytest.mark.servers, pytest.mark.faults]
SECRET = "hostile-webhook-secret"
APP_SECRET = "hostile-app-secret"
BODIES = int(os.environ.get("PARLEY_HOSTILE_BODIES", "500"))  # per webhook
RAW_BODIES = max(50, BODIES // 8)  # barely-JSON bodies per webhook, on top
OVER_LIMIT = 64 * 1024 + 1


@dataclass
class Webhook:
    channel: str  # the conversation id prefix its messages are stored under
    url: str
    headers: Callable[[bytes, str], dict[str, str]]  # body, "valid"/"forged"/"missing"
    bodies: list[bytes]
    accepted_example: bytes  # a body that is accepted when signed


@dataclass
class Result:
    channel: str
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` reproducible draws (derandomized), as the property tests make them."""
    drawn: list[Any] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example, HealthCheck.filter_too_much])
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


def encode(payload: Any, index: int) -> bytes:
    """JSON as a careless sender writes it: NaN allowed, lone surrogates either
    escaped (\\ud800) or encoded raw (bytes that are not UTF-8), deep nesting."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # the generated nesting, not the server's
    try:
        text = json.dumps(payload, ensure_ascii=index % 2 == 0)
    finally:
        sys.setrecursionlimit(limit)
    return text.encode("utf-8", "surrogatepass")


def generated(strategy: st.SearchStrategy[Any], count: int = BODIES) -> list[bytes]:
    bodies = [encode(p, i) for i, p in enumerate(examples(strategy, count))]
    return bodies + examples(raw_body(), RAW_BODIES)


def telegram_headers(_body: bytes, how: str) -> dict[str, str]:
    secret = {"valid": SECRET, "forged": SECRET + "x", "missing": None}[how]
    return {"Content-Type": "application/json",
            **({"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {})}


def meta_headers(body: bytes, how: str) -> dict[str, str]:
    secret = {"valid": APP_SECRET, "forged": "not-the-secret", "missing": None}[how]
    return {"Content-Type": "application/json",
            **({"X-Hub-Signature-256": generate_signature(body, secret)} if secret else {})}


def webchat_headers(_body: bytes, _how: str) -> dict[str, str]:
    return {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A fresh schema in the real PostgreSQL for this module (tests/conftest.py's
    pg_url is per test; one stack serves the whole module)."""
    with postgres_schema() as url:
        yield url


@pytest.fixture(scope="module")
def stack(database_url: str) -> Iterator[launcher.Stack]:
    telegram, graph = FakeTelegram(), FakeGraph()
    tg_server, tg_url = serve(telegram)
    graph_server, graph_url = serve_graph(graph)
    meta = {"app_secret": APP_SECRET, "verify_token": "verify", "graph_base_url": graph_url}
    running = start_stack("hostile", {
        "parley.connectors.telegram.TelegramInput": {
            "access_token": telegram.token, "webhook_secret": SECRET, "api_base_url": tg_url},
        "parley.connectors.messenger.MessengerInput": {
            "page_access_token": graph.token, "app_id": "4242", **meta},
        "parley.connectors.messenger.InstagramInput": {
            "page_access_token": graph.token, "app_id": "4242", **meta},
        "parley.connectors.whatsapp.WhatsAppInput": {
            "access_token": graph.token, "phone_number_id": "PNID", **meta},
    }, database_url=database_url)
    try:
        yield running
    finally:
        running.stop()
        stop(tg_server)
        stop(graph_server)


def webhooks(stack: launcher.Stack) -> list[Webhook]:
    base = f"{stack.rasa_url}/webhooks"
    tg_ok = {"update_id": 1, "message": {
        "message_id": 1, "date": 1_700_000_000, "text": "hi",
        "chat": {"id": 77, "type": "private"},
        "from": {"id": 77, "is_bot": False, "first_name": "Ana"}}}

    def fb_ok(obj: str) -> dict[str, Any]:
        return {"object": obj, "entry": [{"id": "P", "time": 1, "messaging": [{
            "sender": {"id": "77"}, "recipient": {"id": "P"}, "timestamp": 1,
            "message": {"mid": f"m_{obj}_ok", "text": "hi"}}]}]}

    wa_ok = {"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [{
        "field": "messages", "value": {
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "77"}],
            "messages": [{"from": "77", "id": "wamid.ok", "timestamp": "1", "type": "text",
                          "text": {"body": "hi"}}]}}]}]}
    return [
        Webhook("telegram", f"{base}/telegram/webhook", telegram_headers,
                generated(hostile(telegram_update(), TG_KEYS)), json.dumps(tg_ok).encode()),
        Webhook("messenger", f"{base}/messenger/webhook", meta_headers,
                generated(hostile(meta_call("page"), META_KEYS)),
                json.dumps(fb_ok("page")).encode()),
        Webhook("instagram", f"{base}/instagram/webhook", meta_headers,
                generated(hostile(meta_call("instagram"), META_KEYS)),
                json.dumps(fb_ok("instagram")).encode()),
        Webhook("whatsapp", f"{base}/whatsapp/webhook", meta_headers,
                generated(hostile(whatsapp_call(), WA_KEYS)), json.dumps(wa_ok).encode()),
        Webhook("webchat", f"{base}/webchat/webhook", webchat_headers,
                generated(hostile(WEBCHAT_POST, ["sender", "message"]), BODIES // 4),
                b'{"sender": "hostile-ok", "message": "hi"}'),
    ]


def requests_for(hook: Webhook) -> Iterable[tuple[str, bytes | Iterator[bytes], dict[str, str],
                                                  set[int] | None]]:
    """(what, body, headers, the statuses it must get or None for "any but 5xx").
    Status 0 in the summary: the server closed the connection on an oversize body."""
    signed = hook.channel != "webchat"
    if signed:
        for how in ("forged", "missing"):
            yield (f"{how} signature", hook.accepted_example,
                   hook.headers(hook.accepted_example, how), {401, 403})
    for size in (OVER_LIMIT, 1024 * 1024):
        big = b'{"x": "' + b"y" * size + b'"}'
        yield f"{size}-byte body", big, hook.headers(big, "valid"), {413}
    chunked = b'{"x": "' + b"y" * OVER_LIMIT + b'"}'
    yield ("chunked oversize body", iter([chunked[i:i + 8192]
                                          for i in range(0, len(chunked), 8192)]),
           hook.headers(chunked, "valid"), {413})
    for body in hook.bodies:
        yield "generated body", body, hook.headers(body, "valid"), None
    yield "accepted example", hook.accepted_example, hook.headers(hook.accepted_example,
                                                                  "valid"), {200}


def hammer(hook: Webhook, database_url: str) -> Result:
    """One request at a time to one webhook, with the channel's customer rows
    counted around each, so a refusal that stored something is caught."""
    result = Result(hook.channel)
    engine = sa.create_engine(database_url, future=True)
    count = sa.text("SELECT count(*) FROM messages WHERE author = 'customer' "
                    "AND conversation_id LIKE :prefix")

    def customer_rows() -> int:
        with engine.connect() as conn:
            return int(conn.execute(count, {"prefix": f"{hook.channel}:%"}).scalar_one())

    with httpx.Client(timeout=120) as client:
        for what, body, headers, expected in requests_for(hook):
            before = customer_rows()
            try:
                resp = client.post(hook.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                # Refusing an oversize body before reading it may close the connection
                # under the sender: that is a refusal too, if nothing was stored.
                stored = customer_rows() - before
                result.statuses[0] += 1
                if expected != {413} or stored:
                    result.failures.append(f"{what}: no answer ({exc!r}), {stored} row(s) "
                                           f"stored; body {_show(body)}")
                continue
            stored = customer_rows() - before
            result.statuses[resp.status_code] += 1
            problem = None
            if resp.status_code >= 500:
                problem = f"{resp.status_code}"
            elif expected is not None and resp.status_code not in expected:
                problem = f"{resp.status_code}, expected {sorted(expected)}"
            elif resp.status_code >= 400 and stored:
                problem = f"{resp.status_code} but {stored} customer row(s) stored"
            elif "Traceback" in resp.text:
                problem = f"{resp.status_code} with a stack trace"
            if problem:
                result.failures.append(f"{what}: {problem}; answer {resp.text[:200]!r}; "
                                       f"body {_show(body)}")
    engine.dispose()
    return result


def _show(body: bytes | Iterator[bytes]) -> str:
    if not isinstance(body, bytes):
        return "<chunked>"
    return repr(body[:400]) + (f"… ({len(body)} bytes)" if len(body) > 400 else "")


def test_hostile_bodies_never_get_a_5xx_and_refusals_store_nothing(
        stack: launcher.Stack, database_url: str) -> None:
    hooks = webhooks(stack)
    with ThreadPoolExecutor(len(hooks)) as pool:
        results = list(pool.map(lambda hook: hammer(hook, database_url), hooks))
    for result in results:
        print(f"{result.channel}: {sum(result.statuses.values())} requests, "
              f"statuses {dict(sorted(result.statuses.items()))}, "
              f"{len(result.failures)} failures")
    assert all(stack.running().values()), f"a service died: {stack.running()}"
    failures = [f"{r.channel}: {f}" for r in results for f in r.failures]
    log = stack.log_dir / "rasa.log"
    assert not failures, (f"{len(failures)} failures, first ones:\n" + "\n".join(failures[:15])
                          + f"\n(server log: {log})")
