"""The demo store's orders: what the order-status action looks up.

The store's own table, in Parley's database but on the project's own metadata
(Parley's migrations know nothing of it): created and seeded with a few demo
orders the first time the action server looks one up.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Column, Date, String, select
from sqlalchemy.orm import declarative_base

from parley.bot.storage import get_engine, session_scope

Base = declarative_base()

ORDER_NUMBER = re.compile(r"^\d{5}$")
STATUSES = ("processing", "shipped", "delivered", "cancelled")


class Order(Base):
    __tablename__ = "orders"

    number = Column(String(16), primary_key=True)
    status = Column(String(16), nullable=False)
    carrier = Column(String(40), nullable=True)
    tracking_url = Column(String(200), nullable=True)
    eta = Column(Date, nullable=True)


@dataclass(frozen=True)
class OrderView:
    """An order as replies show it: every value a placeholder can use."""

    number: str
    status: str
    carrier: str
    tracking_url: str
    eta: str

    def placeholders(self) -> dict[str, str]:
        return {
            "order_number": self.number,
            "order_id": self.number,  # writers know it by either name
            "carrier": self.carrier,
            "tracking_url": self.tracking_url,
            "eta": self.eta,
        }


def normalize_order_number(raw: object) -> str | None:
    """`#10234`, ` 10234 ` -> `10234`; anything that is not 5 digits -> None."""
    if not isinstance(raw, (str, int)):
        return None
    candidate = str(raw).strip().lstrip("#").strip()
    return candidate if ORDER_NUMBER.match(candidate) else None


def find_order(number: str, database_url: str | None = None) -> OrderView | None:
    """Blocking: call it from a thread in async code."""
    normalized = normalize_order_number(number)
    if normalized is None:
        return None
    ensure_demo_orders(database_url)
    with session_scope(database_url) as session:
        order = session.execute(
            select(Order).where(Order.number == normalized)
        ).scalar_one_or_none()
        if order is None:
            return None
        return OrderView(
            number=order.number,
            status=order.status,
            carrier=order.carrier or "",
            tracking_url=order.tracking_url or "",
            eta=order.eta.strftime("%a %d %b") if order.eta else "",
        )


def demo_orders(today: date) -> list[Order]:
    """A few orders in every status, dated relative to today so they read true."""
    return [
        Order(number="10234", status="shipped", carrier="DHL",
              tracking_url="https://track.example/DHL10234", eta=today + timedelta(days=2)),
        Order(number="10451", status="processing", eta=today + timedelta(days=4)),
        Order(number="10872", status="delivered", carrier="UPS",
              tracking_url="https://track.example/UPS10872", eta=today - timedelta(days=1)),
        Order(number="10399", status="cancelled"),
        Order(number="10550", status="shipped", carrier="CTT",
              tracking_url="https://track.example/CTT10550", eta=today + timedelta(days=1)),
    ]


_ready: set[str] = set()
_ready_lock = threading.Lock()


def ensure_demo_orders(database_url: str | None = None) -> None:
    """The table and its demo rows, once per database and process."""
    engine = get_engine(database_url)
    key = str(engine.url)
    with _ready_lock:
        if key not in _ready:
            seed_demo_orders(database_url)
            _ready.add(key)


def seed_demo_orders(database_url: str | None = None, today: date | None = None) -> int:
    """Create the table if needed and insert the demo orders that are missing;
    returns how many were added."""
    today = today or date.today()
    Base.metadata.create_all(get_engine(database_url), checkfirst=True)
    added = 0
    with session_scope(database_url) as session:
        existing = set(session.execute(select(Order.number)).scalars())
        for order in demo_orders(today):
            if order.number not in existing:
                session.add(order)
                added += 1
    return added
