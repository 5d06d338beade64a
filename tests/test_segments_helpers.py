"""Builders of small input frames for the segment tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from worker.segments import empty_customers, empty_lines, empty_orders

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


def ago(days: int, hour: int = 12) -> datetime:
    """A time on the UTC day ``days`` before NOW's day."""
    day = NOW.date() - timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def orders(*rows: dict[str, Any]) -> pd.DataFrame:
    if not rows:
        return empty_orders()
    defaults: dict[str, Any] = {
        "customer_id": None,
        "email": None,
        "total": 10.0,
        "currency": "USD",
        "cancelled": False,
        "test": False,
        "has_discount": False,
        "channel": None,
    }
    data = [{"order_id": f"o{i}", **defaults, **row} for i, row in enumerate(rows)]
    frame = pd.DataFrame(data)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    for column in ("order_id", "customer_id", "email", "currency", "channel"):
        frame[column] = frame[column].astype("object")
    if "accepts_marketing" in frame.columns:
        frame["accepts_marketing"] = frame["accepts_marketing"].astype("boolean")
    return frame


def customers(*rows: dict[str, Any]) -> pd.DataFrame:
    if not rows:
        return empty_customers()
    defaults: dict[str, Any] = {
        "email": None,
        "phone": None,
        "first_name": None,
        "last_name": None,
        "country": None,
        "email_consent": "UNKNOWN",
        "last_engaged_at": None,
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows])
    frame["last_engaged_at"] = pd.to_datetime(frame["last_engaged_at"], utc=True)
    for column in ("customer_id", "email", "phone", "first_name", "last_name", "country"):
        frame[column] = frame[column].astype("object")
    return frame


def lines(*rows: tuple[str, str | None, str | None, int]) -> pd.DataFrame:
    if not rows:
        return empty_lines()
    frame = pd.DataFrame(rows, columns=["order_id", "product_id", "sku", "quantity"], dtype="object")
    frame["quantity"] = frame["quantity"].astype("int64")
    return frame
