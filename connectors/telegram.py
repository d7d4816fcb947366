"""Telegram: a Rasa channel over python-telegram-bot's `Update` and `Bot`.

Webhook mode for production (register it with `python -m parley.bot.cli telegram-webhook`),
long-polling for local development (`python -m parley.bot.cli telegram-poll`), which
feeds updates to the same webhook handler. Register in credentials.yml:

    parley.connectors.telegram.TelegramInput:
      access_token: ${TELEGRAM_TOKEN}
      webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}
      paid_broadcast: false  # true: up to 1000 messages/s, billed by Telegram
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

import httpx
from sanic.request import Request
from sanic.response import HTTPResponse
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import FloodLimit
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import AIORateLimiter, ExtBot

from parley.bot.outbox import Send
from parley.bot.responses.channels import CHANNELS
from parley.connectors import gate, redact, shapes
from parley.connectors.base import DeliveryFailed, ParleyInput
from parley.connectors.outbound import Limits, Retryable, Sender
from parley.connectors.requests import DEFAULT_MAX_BODY, RejectedRequest
from parley.connectors.telegram_request import AiohttpRequest
from parley.connectors.text import split_text

CHANNEL = "telegram"
SHOWS = CHANNELS[CHANNEL]  # the limits the reply checks hold replies to
SECRET_HEADER = "x-telegram-bot-api-secret-token"
DEFAULT_API = "https://api.telegram.org"
# Bot-wide 30/s is PTB's AIORateLimiter; ~1/s per chat (short bursts allowed) is ours.
LIMITS = Limits(per_second=1000, per_conversation=1.0, conversation_burst=3)
logger = logging.getLogger(__name__)


def conversation_id(chat_id: int | str) -> str:
    return f"{CHANNEL}:{chat_id}"


def chat_of(conversation: str) -> int:
    chat = conversation.split(":", 1)[1]
    if not chat.lstrip("-").isdigit():
        raise DeliveryFailed(f"{conversation!r} is not a Telegram chat")
    return int(chat)


def verify(headers: Mapping[str, str], secret: str) -> bool:
    """Telegram echoes the webhook's secret_token in a header; compare in constant time."""
    sent = headers.get(SECRET_HEADER) or ""
    return bool(secret) and hmac.compare_digest(sent.encode(), secret.encode())


def parse(payload: dict[str, Any], bot: ExtBot | None = None) -> list[gate.Inbound]:
    """Customer messages in one update (text, or a pressed inline button).
    Other updates (edits, stickers, member changes …) are ignored: []."""
    if not isinstance(payload.get("update_id"), int):
        raise RejectedRequest(400, "not a Telegram update: 'update_id' missing")
    try:
        update = Update.de_json(payload, bot)
    except (KeyError, TypeError, ValueError) as exc:
        raise RejectedRequest(400, f"malformed Telegram update ({exc.__class__.__name__})") \
            from None
    message, query = update.message, update.callback_query
    if message is not None and message.text and message.chat.type == "private":
        user = message.from_user
        return [gate.Inbound(conversation_id(message.chat.id), message.text,
                             platform_message_id=str(update.update_id),
                             display_name=user.full_name if user else "",
                             metadata={"chat_id": message.chat.id,
                                       "language": user.language_code if user else None})]
    if query is not None and query.data and query.message is not None:
        return [gate.Inbound(conversation_id(query.message.chat.id), query.data,
                             platform_message_id=str(update.update_id),
                             display_name=query.from_user.full_name,
                             metadata={"chat_id": query.message.chat.id,
                                       "callback_query_id": query.id,
                                       "language": query.from_user.language_code})]
    logger.debug("ignored Telegram update %s (no customer text)", update.update_id)
    return []


def _seconds(value: int | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def _call(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    """One Bot API call, its errors sorted into retryable and permanent."""
    try:
        return await coro_factory()
    except RetryAfter as exc:
        raise Retryable("telegram: too many requests", _seconds(exc.retry_after)) from exc
    except (BadRequest, Forbidden):
        raise  # permanent: wrong chat, blocked by the user, bad markup …
    except NetworkError as exc:  # timeouts, 5xx, connection errors
        raise Retryable(f"telegram: {exc.message}") from exc


class ReplyBot(ExtBot):
    """PTB's ExtBot (its request layer, rate limiter, error mapping and retry hints),
    with a text send that returns the Bot API's raw result: building a `Message`
    from every answer, which nothing reads, was a third of a send's CPU."""

    async def send_text(self, chat_id: int, text: str,
                        reply_markup: InlineKeyboardMarkup | None = None,
                        allow_paid_broadcast: bool | None = None) -> Any:
        return await self._post("sendMessage", {
            "chat_id": chat_id, "text": text, "reply_markup": reply_markup,
            "allow_paid_broadcast": allow_paid_broadcast})


class Telegram:
    """The outbound side for one bot: shared by the Rasa channel and the desk."""

    def __init__(self, token: str, api_base_url: str = DEFAULT_API,
                 paid_broadcast: bool = False) -> None:
        redact.install()
        base = api_base_url.rstrip("/")
        # Telegram takes ~30 messages/s per bot; with paid broadcasts (billed per
        # message in Stars) up to 1000/s. Above that the API answers 429.
        per_second = (FloodLimit.PAID_MESSAGES_PER_SECOND if paid_broadcast
                      else FloodLimit.MESSAGES_PER_SECOND)
        self.paid_broadcast = True if paid_broadcast else None
        self.bot = ReplyBot(token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
                            request=AiohttpRequest(),
                            rate_limiter=AIORateLimiter(overall_max_rate=per_second,
                                                        max_retries=0))
        self.sender = Sender(LIMITS)
        self._ready = asyncio.Lock()
        self._initialized = False

    async def _init(self) -> None:
        async with self._ready:
            if not self._initialized:
                await self.bot.initialize()
                self._initialized = True

    def _calls(self, chat: int, message: dict[str, Any]) -> list[Callable[[], Awaitable[Any]]]:
        calls: list[Callable[[], Awaitable[Any]]] = []
        chunks = split_text(message.get("text") or "", SHOWS.text_limit)
        buttons = message.get("buttons") or []
        keep = SHOWS.payload_limit  # bytes to Telegram; the checks flag longer payloads
        markup = InlineKeyboardMarkup(
            [[InlineKeyboardButton(b["title"], callback_data=str(b["payload"])[:keep])]
             for b in buttons]) if buttons else None
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            calls.append(lambda c=chunk, m=markup if last else None: _call(
                lambda: self.bot.send_text(chat, c, m, self.paid_broadcast)))
        if message.get("image"):
            calls.append(lambda: _call(lambda: self.bot.send_photo(
                chat, message["image"], allow_paid_broadcast=self.paid_broadcast)))
        return calls

    async def deliver(self, conversation: str, message: dict[str, Any]) -> None:
        """Send one reply (text split at the channel's limit, buttons, image) in order."""
        if not self._initialized:
            await self._init()
        await self.sender.send_all(conversation, self._calls(chat_of(conversation), message))

    async def acknowledge(self, conversation: str, callback_query_id: str) -> None:
        """Answer a button press; a failure is nothing for the customer (a stale
        press, Telegram unreachable): logged, never raised."""
        try:
            await self._init()
            await self.sender.send(conversation, lambda: _call(
                lambda: self.bot.answer_callback_query(callback_query_id)))
        except TelegramError as exc:
            logger.debug("callback answer failed: %s", exc.message)
        except Retryable as exc:
            logger.info("callback answer gave up: %s", exc)

    async def shutdown(self) -> None:
        if self._initialized:
            await self.bot.shutdown()


class TelegramInput(ParleyInput):
    @classmethod
    def name(cls) -> str:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> TelegramInput:
        credentials = credentials or {}
        token, secret = credentials.get("access_token"), credentials.get("webhook_secret")
        if not token or not secret:
            raise ValueError("telegram needs 'access_token' and 'webhook_secret' in credentials")
        paid = credentials.get("paid_broadcast", False)
        if not isinstance(paid, bool):
            raise ValueError("telegram 'paid_broadcast' must be true or false")
        return cls(str(token), str(secret),
                   str(credentials.get("api_base_url") or DEFAULT_API),
                   int(credentials.get("max_body_bytes") or DEFAULT_MAX_BODY), paid)

    def __init__(self, token: str, webhook_secret: str, api_base_url: str = DEFAULT_API,
                 max_body_bytes: int = DEFAULT_MAX_BODY, paid_broadcast: bool = False) -> None:
        self.telegram = Telegram(token, api_base_url, paid_broadcast)
        self.webhook_secret = webhook_secret
        self._acknowledging: set[asyncio.Task[None]] = set()  # referenced until done
        self.max_body_bytes = max_body_bytes

    def verify(self, request: Request) -> None:
        if not verify(request.headers, self.webhook_secret):
            raise RejectedRequest(403, "secret token missing or wrong")

    def check(self, payload: dict[str, Any]) -> None:
        shapes.check_telegram(payload)

    def parse(self, payload: dict[str, Any]) -> list[gate.Inbound]:
        return parse(payload, self.telegram.bot)

    async def answer(self, request: Request, items: list[gate.Inbound]) -> HTTPResponse:
        """Stored, then each button press answered (Telegram's spinner stops) in
        the background, whoever answers the press: the bot, or the gate (a survey
        score, a queue update)."""
        acknowledged = await super().answer(request, items)
        for item in items:
            query = item.metadata.get("callback_query_id")
            if query:
                task = asyncio.get_running_loop().create_task(
                    self.telegram.acknowledge(item.conversation_id, str(query)))
                self._acknowledging.add(task)
                task.add_done_callback(self._acknowledging.discard)
        return acknowledged

    async def deliver(self, send: Send) -> None:
        await self.telegram.deliver(send.conversation_id, send.message)

    def refusal(self, error: Exception) -> str:
        if isinstance(error, TelegramError):
            return f"Telegram refused it: {error.message}"
        return super().refusal(error)


async def register_webhook(token: str, url: str, secret: str,
                           api_base_url: str = DEFAULT_API) -> None:
    """Point Telegram at our webhook, with the secret it must echo back."""
    async with ExtBot(token, base_url=f"{api_base_url.rstrip('/')}/bot") as bot:
        await bot.set_webhook(url, secret_token=secret,
                              allowed_updates=["message", "callback_query"])


async def poll(token: str, secret: str, local_webhook: str, api_base_url: str = DEFAULT_API,
               rounds: int | None = None, timeout: int = 30) -> int:
    """Local development without a public URL: long-poll getUpdates and hand each
    update to our own webhook, so both modes run the same code. Returns how many
    updates were forwarded."""
    forwarded, offset, done = 0, None, 0
    async with ExtBot(token, base_url=f"{api_base_url.rstrip('/')}/bot") as bot:
        await bot.delete_webhook()
        async with httpx.AsyncClient(timeout=timeout + 60) as client:
            while rounds is None or done < rounds:
                updates = await bot.get_updates(offset=offset, timeout=timeout,
                                                allowed_updates=["message", "callback_query"])
                for update in updates:
                    await client.post(local_webhook, json=update.to_dict(),
                                      headers={SECRET_HEADER: secret})
                    offset = update.update_id + 1
                    forwarded += 1
                done += 1
    return forwarded
