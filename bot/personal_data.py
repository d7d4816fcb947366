"""Personal data in customer messages, masked before anything stores or shows it.

Customers paste card numbers, IBANs, email addresses and phone numbers into DMs.
`mask` replaces each with a typed placeholder (`[card]`, `[iban]`, `[email]`,
`[phone]`) where a customer message enters Parley (`parley.connectors.base`), so the
transcript, the desk, the ticket context, the logs, Rasa's NLU and its tracker store
only ever see the placeholder: intents still work ("my card [card] was charged twice").
Which kinds are masked is the project's choice (`personal_data: {mask: [...] | off}`).

Each masked value also gets a keyed hash (HMAC-SHA256) of its normalised form, kept
with the message, so two values can be compared later (a phone typed in a chat and a
WhatsApp number) without either being stored. The key is `PARLEY_MASK_SECRET`, else
a random key made once per install in the var dir (`mask.key`, mode 0600): replicas
on separate machines must share `PARLEY_MASK_SECRET` for their hashes to match.

What counts, precision first (a masked order number breaks the order lookup; a phone
missed is a smaller harm than a bot that cannot read an order number):

- card: 13-19 digits, single spaces or dashes allowed between them, starting 2-6
  (the issuer ranges of payment cards: Mastercard, Amex, Visa, Discover, Maestro,
  UnionPay, JCB ...), Luhn-valid, not touching letters, `+` or further digits. A longer
  run split by separators is searched for such a window ("4111 1111 1111 1111 5555 ...").
- iban: a country code with a known IBAN length, 2 check digits, then exactly that many
  letters and digits (single spaces allowed, as in groups of 4), mod-97 valid; any case.
- email: local@domain.tld, an RFC 5322 subset (no quoted local parts, no IP literals).
- phone, and only these shapes:
  - international: `+` or `00`, then 8-15 digits with spaces, dots, dashes or
    parentheses (`+351 912 345 678`, `+1 (555) 123-4567`); the `00` form needs a
    separator (`00351 912 345 678`), so zero-padded codes stay;
  - Portuguese mobiles: 9 digits starting 91, 92, 93 or 96, plain or grouped 3-3-3 by
    spaces or dashes (`912 345 678`);
  - Brazilian: area code (11-99) in parentheses or followed by a space or dash, then
    a 9-digit mobile (`(11) 91234-5678`, `11 9 1234-5678`) or, in parentheses, an
    8-digit landline (`(11) 3456-7890`);
  - North American: `(555) 123-4567`, or `555-123-4567` / `555.123.4567` (the same
    separator twice, area code 2-9xx), optionally after `1-` or `+1`.
  Not a phone: anything else, and any of the above right after `#`, "order",
  "encomenda", "pedido", "tracking", "rastreio", "ref" (an order or tracking number),
  next to a currency (`R$ 912 345 678`, `912 345 678 €`) or a decimal part; dates,
  times, prices, 5-8 digit order numbers and digit runs of other lengths never match
  (a 10-digit number without separators is not a phone here: it is as likely an id).
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

KINDS = ("card", "iban", "email", "phone")  # also the order in which overlaps are won
SECRET_ENV = "PARLEY_MASK_SECRET"
KEY_FILE = "mask.key"
PLACEHOLDER = re.compile(r"\[(?:card|iban|email|phone)\]")


def placeholder(kind: str) -> str:
    return f"[{kind}]"


@dataclass(frozen=True)
class Masked:
    """The text with placeholders, and (kind, keyed hash) per distinct value masked."""

    text: str
    found: tuple[tuple[str, str], ...] = ()

    def as_payload(self) -> list[dict[str, str]]:
        return found_payload(self.found)


def found_payload(found: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """What a message's payload keeps under "masked": each (kind, hash) once."""
    return [{"kind": kind, "hash": digest} for kind, digest in dict.fromkeys(found)]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str
    value: str  # normalised: what the hash is of


# -- cards ---------------------------------------------------------------------------
# A run of digits joined by single spaces or dashes, alone: no letter, `+` or digit
# before it, no letter or digit after it.
_DIGIT_RUN = re.compile(r"(?<![\w+])\d+(?:[ -]\d+)*(?![\w])")
_GROUP = re.compile(r"\d+")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card_number(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn(digits)


def _cards(text: str) -> Iterable[Span]:
    for run in _DIGIT_RUN.finditer(text):
        groups = [(g.start(), g.end()) for g in _GROUP.finditer(text, run.start(), run.end())]
        if sum(end - start for start, end in groups) < 13:
            continue
        i = 0
        while i < len(groups):
            if text[groups[i][0]] not in "23456":  # no card starts here
                i += 1
                continue
            windows, digits = [], ""
            for j in range(i, len(groups)):  # windows of at most 19 digits from group i
                digits += text[groups[j][0]:groups[j][1]]
                if len(digits) > 19:
                    break
                windows.append((j, digits))
            for j, number in reversed(windows):  # the longest first
                if _card_number(number):
                    yield Span(groups[i][0], groups[j][1], "card", number)
                    i = j
                    break
            i += 1


# -- IBANs ---------------------------------------------------------------------------
# Lengths from the SWIFT IBAN registry: a known country and its exact length, on top
# of mod-97, keep words that happen to start with two letters and two digits out.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}")


def iban_valid(iban: str) -> bool:
    """Mod-97 of the rearranged IBAN (ISO 13616), for an upper-case IBAN without spaces."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _ibans(text: str) -> Iterable[Span]:
    for start in _IBAN_START.finditer(text):
        length = IBAN_LENGTHS.get(start.group()[:2].upper())
        if length is None:
            continue
        chars, pos = [], start.start()
        while pos < len(text) and len(chars) < length:
            ch = text[pos]
            if ch.isascii() and ch.isalnum():
                chars.append(ch.upper())
            elif not (ch == " " and chars and pos + 1 < len(text) and text[pos + 1] != " "):
                break
            pos += 1
        if len(chars) != length or (pos < len(text) and text[pos].isalnum()):
            continue
        iban = "".join(chars)
        if iban_valid(iban):
            yield Span(start.start(), pos, "iban", iban)


# -- email addresses ---------------------------------------------------------------------
_LOCAL = r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
# Starts only where a local part can start (so a long run without `@` is read once).
_EMAIL = re.compile(rf"(?<![\w.!#$%&'*+/=?^`{{|}}~-]){_LOCAL}@(?:{_LABEL}\.)+[^\W\d_]{{2,63}}"
                    r"(?![\w-])")


def _emails(text: str) -> Iterable[Span]:
    for match in _EMAIL.finditer(text):
        if len(match.group()) <= 254:
            yield Span(match.start(), match.end(), "email", match.group().lower())


# -- phone numbers -----------------------------------------------------------------------
_BEFORE = r"(?<![\w+.,/#-])"
_AFTER = r"(?![\w]|[.,/-]\d)"
_PHONES = [
    # international: + or 00, then 8-15 digits (up to two separators between digits)
    ("intl", re.compile(rf"(?<![\w+])(?:\+|00)(?:[ .\-()]{{0,2}}\d){{8,15}}{_AFTER}")),
    ("pt", re.compile(rf"{_BEFORE}9[1236]\d(?:[ -]?\d{{3}}){{2}}{_AFTER}")),
    ("br", re.compile(rf"{_BEFORE}(?:\(\s?[1-9]{{2}}\s?\)\s?|[1-9]{{2}}[ -])"
                      rf"9[ -]?\d{{4}}[ -]?\d{{4}}{_AFTER}")),
    ("br", re.compile(rf"{_BEFORE}\(\s?[1-9]{{2}}\s?\)\s?[2-5]\d{{3}}-?\d{{4}}{_AFTER}")),
    ("us", re.compile(rf"{_BEFORE}(?:(?:\+?1[ .-]?)?\(\d{{3}}\)\s?\d{{3}}[-. ]\d{{4}}"
                      rf"|(?:1([-.]))?[2-9]\d{{2}}([-.])\d{{3}}\2\d{{4}}){_AFTER}")),
]
COUNTRY_CODES = {"pt": "351", "br": "55", "us": "1"}
# An order or tracking number, or an amount: never a phone.
_LABELLED = re.compile(
    r"(?:#|\b(?:order|encomenda|pedido|tracking|rastreio|ref)\w*\.?\s*"
    r"(?:(?:n[ºo°]|number|n[uú]mero|code|c[oó]digo)\.?\s*)?[:#]?)\s*$", re.IGNORECASE)
_CURRENCY_BEFORE = re.compile(r"(?:[€$£]|\b(?:R\$|EUR|USD|BRL|GBP))\s*$", re.IGNORECASE)
_CURRENCY_AFTER = re.compile(r"^\s*(?:[€$£]|(?:EUR|USD|BRL|GBP|euros?|reais|d[oó]lar)\b)",
                             re.IGNORECASE)


def _phones(text: str) -> Iterable[Span]:
    for shape, pattern in _PHONES:
        for match in pattern.finditer(text):
            number = match.group()
            before, after = text[max(0, match.start() - 40):match.start()], text[match.end():]
            if _LABELLED.search(before) or _CURRENCY_BEFORE.search(before) \
                    or _CURRENCY_AFTER.match(after):
                continue
            digits = re.sub(r"\D", "", number)
            if shape == "intl":
                if number.startswith("00"):
                    if not re.search(r"[ .\-()]", number):
                        continue  # 0012345678: a padded code, not a phone
                    digits = digits[2:]
                if not 8 <= len(digits) <= 15 or digits[0] == "0":
                    continue
                value = "+" + digits
            else:
                if shape == "us" and len(digits) == 11:
                    digits = digits[1:]
                value = f"+{COUNTRY_CODES[shape]}{digits}"
            yield Span(match.start(), match.end(), "phone", value)


def phone_value(number: str) -> str:
    """A phone number in the form its hash is made of (+ and digits), for a number a
    platform gives in full international form (WhatsApp's `wa_id`: "351912345678")."""
    digits = re.sub(r"\D", "", number)
    return "+" + (digits[2:] if number.strip().startswith("00") else digits)


# -- all together ------------------------------------------------------------------------
_FINDERS = {"email": _emails, "iban": _ibans, "card": _cards, "phone": _phones}


def find(text: str) -> list[Span]:
    """Every kind's values, without overlaps (the earlier kind in KINDS wins, then the
    longer match), in text order. Found whatever a project masks, so a card's digits are
    never taken for a phone's when cards are not masked."""
    starts: list[int] = []  # of the spans taken, kept sorted (they never overlap)
    taken: list[Span] = []
    for kind in KINDS:
        for span in sorted(_FINDERS[kind](text), key=lambda s: (s.start - s.end, s.start)):
            at = bisect.bisect_left(starts, span.start)
            if (at == 0 or taken[at - 1].end <= span.start) \
                    and (at == len(taken) or span.end <= taken[at].start):
                starts.insert(at, span.start)
                taken.insert(at, span)
    return taken


def mask(text: str, kinds: Iterable[str] = KINDS, key: bytes | None = None) -> Masked:
    """`text` with the values of `kinds` replaced by their placeholders, and each
    distinct value's keyed hash. `key` defaults to the install's (see `mask_key`)."""
    wanted = set(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"cannot mask {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    spans = [s for s in find(text) if s.kind in wanted] if wanted and text else []
    if not spans:
        return Masked(text)
    key = key if key is not None else mask_key()
    parts, last = [], 0
    found: dict[tuple[str, str], None] = {}
    for span in spans:
        parts += [text[last:span.start], placeholder(span.kind)]
        last = span.end
        found[(span.kind, digest(span.kind, span.value, key))] = None
    parts.append(text[last:])
    return Masked("".join(parts), tuple(found))


def digest(kind: str, value: str, key: bytes | None = None) -> str:
    """The keyed hash of a normalised value (`Span.value`, or `phone_value(...)` for a
    platform's own phone number): equal values give equal hashes on one install."""
    key = key if key is not None else mask_key()
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


# -- the key -----------------------------------------------------------------------------
_keys: dict[tuple[str, str], bytes] = {}
_key_lock = threading.Lock()


def mask_key(var_dir: Path | None = None, secret: str | None = None) -> bytes:
    """`PARLEY_MASK_SECRET`, else this install's random key in `<var dir>/mask.key`,
    made on first use (mode 0600; the first of several processes to write it wins)."""
    secret = os.environ.get(SECRET_ENV) if secret is None else secret
    if secret:
        return secret.encode()
    if var_dir is None:
        from parley.bot.settings import load_settings

        var_dir = load_settings().var_dir
    path = Path(var_dir) / KEY_FILE
    with _key_lock:
        cached = _keys.get(("file", str(path)))
        if cached is None:
            cached = _keys[("file", str(path))] = _read_or_make_key(path)
        return cached


def _read_or_make_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        try:
            os.link(draft, path)  # whole or not at all; never over another process's key
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    if path.stat().st_mode & 0o077:
        logger.warning("%s is readable by other users; it should be mode 0600", path)
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds no usable key; delete it to make a new one")
    return key.encode()
