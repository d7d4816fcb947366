"""The demo store's orders table (the reference project's own, not Parley's)."""

from __future__ import annotations

from datetime import date

import pytest

from actions import store as orders
from parley.bot import storage


@pytest.mark.parametrize(("raw", "expected"), [
    ("10234", "10234"), (" #10234 ", "10234"), (10234, "10234"),
    ("1023", None), ("102345", None), ("", None), (None, None), ("10 234", None),
])
def test_normalize_order_number(raw: object, expected: str | None) -> None:
    assert orders.normalize_order_number(raw) == expected


def test_seeding_is_idempotent(db_url: str) -> None:
    assert orders.find_order("10234", db_url) is not None  # created and seeded on first use
    assert orders.seed_demo_orders(db_url) == 0


def test_seed_dates_are_relative_to_today(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    storage.create_schema(url)
    added = orders.seed_demo_orders(url, today=date(2026, 1, 5))
    assert added == len(orders.demo_orders(date.today()))
    shipped = orders.find_order("10234", url)
    assert shipped is not None and shipped.eta == "Wed 07 Jan"


def test_every_demo_status_is_a_known_status() -> None:
    assert {o.status for o in orders.demo_orders(date.today())} <= set(orders.STATUSES)
