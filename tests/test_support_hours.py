"""Support hours: open/closed, holidays, and when the next person is available."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from parley.bot import support_hours
from parley.bot.settings import load_settings
from tests import REPO_ROOT as PROJECT_ROOT

LISBON_SHOP = {
    "timezone": "Europe/Lisbon",
    "weekly": {"mon": "09:00-18:00", "tue": "09:00-18:00", "wed": "09:00-18:00",
               "thu": "09:00-18:00", "fri": ["09:00-12:30", "13:30-18:00"],
               "sat": "10:00-14:00"},
    "holidays": ["2026-12-25"],
    "channels": {"email": "help@example.com"},
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture
def hours() -> support_hours.SupportHours:
    return support_hours.parse(LISBON_SHOP)


def test_open_and_closed_in_the_teams_time_zone(hours) -> None:
    assert hours.is_open(utc(2026, 11, 23, 9, 0))  # Monday 09:00 Lisbon (UTC+0 in winter)
    assert not hours.is_open(utc(2026, 11, 23, 18, 0))  # closing time is exclusive
    assert hours.is_open(utc(2026, 7, 6, 8, 30))  # Monday 09:30 Lisbon in summer (UTC+1)
    assert not hours.is_open(utc(2026, 11, 27, 12, 45))  # Friday lunch break
    assert not hours.is_open(utc(2026, 11, 29, 11, 0))  # Sunday


def test_holidays_are_closed(hours) -> None:
    assert not hours.is_open(utc(2026, 12, 25, 11, 0))  # a Friday, but Christmas
    assert hours.next_opening(utc(2026, 12, 25, 11, 0)) == datetime(
        2026, 12, 26, 10, 0, tzinfo=hours.timezone)


def test_next_opening_and_how_it_is_said(hours) -> None:
    friday_evening = utc(2026, 11, 27, 19, 0)
    assert hours.describe_opening(friday_evening) == "tomorrow at 10:00"
    saturday_evening = utc(2026, 11, 28, 15, 0)
    assert hours.describe_opening(saturday_evening) == "Mon 30 Nov at 09:00"
    early_monday = utc(2026, 11, 30, 7, 0)
    assert hours.describe_opening(early_monday) == "today at 09:00"
    assert hours.next_opening(utc(2026, 11, 30, 10, 0)) == utc(2026, 11, 30, 10, 0)


def test_hours_are_said_in_the_conversations_language(hours) -> None:
    """A Portuguese reply gets Portuguese days and words, not English inside it."""
    assert hours.describe_opening(utc(2026, 11, 27, 19, 0), "pt") == "amanhã às 10:00"
    assert hours.describe_opening(utc(2026, 11, 28, 15, 0), "pt") == "seg 30 nov às 09:00"
    assert hours.describe_opening(utc(2026, 11, 30, 7, 0), "pt") == "hoje às 09:00"
    assert hours.describe_week() == ("Mon–Thu 09:00–18:00, Fri 09:00–12:30, 13:30–18:00, "
                                     "Sat 10:00–14:00 (Europe/Lisbon time)")
    assert hours.describe_week("pt") == ("seg–qui 09:00–18:00, sex 09:00–12:30, 13:30–18:00, "
                                         "sáb 10:00–14:00 (hora de Europe/Lisbon)")
    closed = support_hours.parse({"timezone": "UTC", "weekly": {}})
    assert closed.describe_week("pt") == "por marcação"
    assert closed.describe_opening(utc(2026, 1, 1), "pt") == "assim que possível"


def test_never_open_has_no_next_opening() -> None:
    closed = support_hours.parse({"timezone": "UTC", "weekly": {}})
    assert closed.next_opening(utc(2026, 1, 1)) is None
    assert closed.describe_opening(utc(2026, 1, 1)) == "as soon as possible"


def test_24_00_means_end_of_day() -> None:
    always = support_hours.parse({"timezone": "UTC", "weekly": {d: "00:00-24:00"
                                                               for d in support_hours.DAYS}})
    assert always.is_open(utc(2026, 11, 23, 23, 59, 59))


@pytest.mark.parametrize(("config", "message"), [
    ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ({"weekly": {"funday": "09:00-17:00"}}, "unknown day"),
    ({"weekly": {"mon": "9 to 5"}}, "expected 'HH:MM-HH:MM'"),
    ({"weekly": {"mon": "18:00-09:00"}}, "ends before it starts"),
    ({"holidays": ["Christmas"]}, "is not YYYY-MM-DD"),
])
def test_bad_configuration_is_explained(config, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        support_hours.parse(config)


def test_the_demo_projects_hours_load_with_its_contact_channels() -> None:
    shipped = support_hours.current(load_settings(env={}, root=PROJECT_ROOT))
    assert {"email", "phone", "webchat"} <= set(shipped.channels)
    assert shipped.weekly


def test_a_portuguese_reply_gets_its_hours_in_portuguese(db_url: str) -> None:
    """The library's `{support_hours}` is filled in the reply's own language."""
    from parley.bot import responses

    def hours(language: str) -> str:
        return responses.render("utter_support_hours", "telegram", language,
                                database_url=db_url)["text"]

    english, portuguese = hours("en"), hours("pt")
    assert "Mon–Fri" in english and "time)" in english
    assert "seg–sex" in portuguese and "hora de Europe/Lisbon" in portuguese
    assert "Mon" not in portuguese and "time)" not in portuguese
