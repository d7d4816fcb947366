"""Keep platform secrets out of logs.

The Bot API puts the token in every URL (`/bot<token>/sendMessage`) and httpx
logs request URLs at INFO; Graph API calls carry `access_token=` in queries.
"""

from __future__ import annotations

import logging
import re

SECRET_PATTERNS = [
    (re.compile(r"/bot\d+:[A-Za-z0-9_-]+"), "/bot<redacted>"),
    (re.compile(r"(access_token=)[^&\s\"']+"), r"\1<redacted>"),
]
NOISY_HTTP_LOGGERS = ("httpx", "httpcore")


def redact(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install() -> None:
    """Idempotent: quiet the HTTP client loggers and redact what they still say."""
    for name in (*NOISY_HTTP_LOGGERS, "telegram", "telegram.ext"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
    for name in NOISY_HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # With max_retries=0 PTB's limiter logs every 429 as an ERROR with a traceback;
    # our sender retries those, and logs the ones that finally fail.
    logging.getLogger("telegram.ext.AIORateLimiter").setLevel(logging.CRITICAL)
