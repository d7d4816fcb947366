"""When people are at the desk, and what to tell customers when they are not.

Configured under `support_hours:` in the project's `parley.yml` (weekly hours in
the team's time zone, holidays), or in a file it names; the other channels
customers can use come from `contact:`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from parley.bot.settings import Settings, load_settings

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The words the descriptions use, per reply language (`responses.channels.LANGUAGES`);
# an unknown language gets English.
WORDS: dict[str, dict[str, Any]] = {
    "en": {"days": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
           "months": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                      "Nov", "Dec"),
           "zone": "({zone} time)", "never": "by appointment", "asap": "as soon as possible",
           "today": "today at {clock}", "tomorrow": "tomorrow at {clock}",
           "on": "{day} {date} {month} at {clock}"},
    "pt": {"days": ("seg", "ter", "qua", "qui", "sex", "sáb", "dom"),
           "months": ("jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out",
                      "nov", "dez"),
           "zone": "(hora de {zone})", "never": "por marcação", "asap": "assim que possível",
           "today": "hoje às {clock}", "tomorrow": "amanhã às {clock}",
           "on": "{day} {date} {month} às {clock}"},
}


def words(language: str) -> dict[str, Any]:
    return WORDS.get(language) or WORDS["en"]


@dataclass(frozen=True)
class SupportHours:
    timezone: ZoneInfo
    weekly: dict[int, list[tuple[time, time]]]  # weekday -> open intervals
    holidays: frozenset[date]
    channels: dict[str, str]  # email, phone, web chat …

    def is_open(self, when: datetime) -> bool:
        local = when.astimezone(self.timezone)
        if local.date() in self.holidays:
            return False
        return any(start <= local.time() < end for start, end in self.weekly.get(
            local.weekday(), []))

    def next_opening(self, when: datetime) -> datetime | None:
        """The next moment someone is at the desk (now if open); None if never."""
        if self.is_open(when):
            return when
        local = when.astimezone(self.timezone)
        for offset in range(0, 366):
            day = local.date() + timedelta(days=offset)
            if day in self.holidays:
                continue
            for start, _end in sorted(self.weekly.get(day.weekday(), [])):
                candidate = datetime.combine(day, start, tzinfo=self.timezone)
                if candidate > local:
                    return candidate
        return None

    def describe_week(self, language: str = "en") -> str:
        """E.g. 'Mon–Fri 09:00–18:00, Sat 10:00–14:00 (Europe/Lisbon time)', in the
        reply's language ('seg–sex 09:00–18:00, … (hora de Europe/Lisbon)')."""
        w = words(language)
        groups: list[tuple[list[int], str]] = []
        for day in range(7):
            hours = ", ".join(f"{a:%H:%M}–{b:%H:%M}" for a, b in sorted(self.weekly.get(day, [])))
            if hours and groups and groups[-1][1] == hours and groups[-1][0][-1] == day - 1:
                groups[-1][0].append(day)
            elif hours:
                groups.append(([day], hours))
        if not groups:
            return str(w["never"])
        days = w["days"]
        parts = [(days[d[0]] if len(d) == 1 else f"{days[d[0]]}–{days[d[-1]]}") + f" {hours}"
                 for d, hours in groups]
        return f"{', '.join(parts)} " + w["zone"].format(zone=self.timezone.key)

    def describe_opening(self, when: datetime, language: str = "en") -> str:
        """E.g. 'today at 09:00', 'tomorrow at 09:00', 'Mon 27 Apr at 09:00' (local
        time), in the reply's language ('amanhã às 09:00')."""
        w = words(language)
        opening = self.next_opening(when)
        if opening is None:
            return str(w["asap"])
        today = when.astimezone(self.timezone).date()
        clock = opening.strftime("%H:%M")
        if opening.date() == today:
            return str(w["today"]).format(clock=clock)
        if opening.date() == today + timedelta(days=1):
            return str(w["tomorrow"]).format(clock=clock)
        return str(w["on"]).format(day=w["days"][opening.weekday()], date=f"{opening.day:02d}",
                                   month=w["months"][opening.month - 1], clock=clock)


def _parse_interval(text: str, where: str) -> tuple[time, time]:
    try:
        start_s, end_s = (part.strip() for part in text.split("-"))
        start = time.fromisoformat(start_s)
        end = time.max if end_s == "24:00" else time.fromisoformat(end_s)
    except ValueError:
        raise ValueError(
            f"{where}: expected 'HH:MM-HH:MM' (end may be 24:00), got {text!r}") from None
    if start >= end:
        raise ValueError(f"{where}: {text!r} ends before it starts")
    return start, end


def parse(config: dict[str, Any], source: str = "support hours") -> SupportHours:
    try:
        zone = ZoneInfo(str(config.get("timezone", "UTC")))
    except (KeyError, ValueError):
        raise ValueError(f"{source}: unknown timezone {config.get('timezone')!r}") from None
    weekly: dict[int, list[tuple[time, time]]] = {}
    for day, spans in (config.get("weekly") or {}).items():
        key = str(day).lower()[:3]
        if key not in DAYS:
            raise ValueError(f"{source}: unknown day {day!r} (use mon … sun)")
        spans = [spans] if isinstance(spans, str) else (spans or [])
        weekly[DAYS.index(key)] = [_parse_interval(s, f"{source}: {day}") for s in spans]
    holidays = set()
    for item in config.get("holidays") or []:
        try:
            holidays.add(item if isinstance(item, date) else date.fromisoformat(str(item)))
        except ValueError:
            raise ValueError(f"{source}: holiday {item!r} is not YYYY-MM-DD") from None
    channels = {str(k): str(v) for k, v in (config.get("channels") or {}).items()}
    return SupportHours(zone, weekly, frozenset(holidays), channels)


def load(path: Path) -> SupportHours:
    return _load(path, path.stat().st_mtime)


@lru_cache(maxsize=8)
def _load(path: Path, _mtime: float) -> SupportHours:
    return parse(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, str(path))


@lru_cache(maxsize=8)
def _inline(config: str, source: str) -> SupportHours:
    return parse(json.loads(config), source)


def current(settings: Settings | None = None) -> SupportHours:
    """The project's hours, with its `contact:` channels (a file's own win)."""
    settings = settings or load_settings()
    if settings.support_hours_file is not None:
        hours = load(settings.support_hours_file)
    elif not settings.support_hours:  # none set: nobody said when the team is away
        hours = _inline(json.dumps({"weekly": dict.fromkeys(DAYS, "00:00-24:00")}), "always")
    else:
        hours = _inline(json.dumps(settings.support_hours, sort_keys=True, default=str),
                        f"{settings.settings_file}: support_hours")
    if not settings.contact:
        return hours
    return replace(hours, channels={**settings.contact, **hours.channels})
