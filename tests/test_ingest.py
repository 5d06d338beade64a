"""One validation rule set for every source: what is stored, what is refused, and why."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from connectors.kernel.records import Consent, CustomerRecord, OrderRecord
from worker.ingest import validate_customers, validate_orders

T = datetime(2026, 5, 1, tzinfo=UTC)


def order(order_id: str, **changes: object) -> OrderRecord:
    fields: dict[str, object] = {
        "order_id": order_id,
        "source": "test",
        "customer_id": None,
        "email": "buyer@example.com",
        "created_at": T,
        "updated_at": T,
        "total": Decimal("10"),
        "currency": "EUR",
    }
    fields.update(changes)
    return OrderRecord(**fields)  # type: ignore[arg-type]


def test_each_bad_order_is_refused_with_its_reason_and_the_rest_are_kept() -> None:
    result = validate_orders(
        [
            order("ok"),
            order("no-email", email=None),
            order("bad-email", email="not-an-email"),
            order("negative", total=Decimal("-5")),
            order("currency", currency="XXX"),
            order("ok", total=Decimal("12")),
            order("registered-bad-email", customer_id="c1", email="nope@"),
        ]
    )
    assert [o["order_id"] for o in result.orders] == ["ok", "registered-bad-email"]
    assert dict(result.rejected) == {
        "no-email": "order has neither customer id nor email",
        "bad-email": "guest order without a valid email",
        "negative": "negative total",
        "currency": "unknown currency 'XXX'",
    }
    assert result.orders[0]["total"] == 12.0  # the later copy of a duplicate wins, as the README says
    assert result.warnings == [
        ("ok", "duplicate id in the same batch: kept the latest copy (newest updatedAt, then the later one)"),
        ("registered-bad-email", "invalid email ignored; order kept for its customer"),
    ]
    assert result.orders[1]["email"] is None


def test_reasons_never_carry_the_email_address() -> None:
    result = validate_orders([order("x", email="jane.doe@@example.com"), order("y", currency="ZZZ")])
    assert all("jane" not in reason for _, reason in result.rejected)


def test_customer_identifiers_are_normalized() -> None:
    result = validate_customers(
        [
            CustomerRecord(
                customer_id="c1",
                source="test",
                email="  Jane@Example.COM ",
                updated_at=T,
                email_consent=Consent.SUBSCRIBED,
                phone="(212) 565-0000",
                country="us",
            ),
            CustomerRecord(customer_id="c2", source="test", email="x", updated_at=T, phone="12"),
        ]
    )
    first, second = result.customers
    assert (first["email"], first["phone"], first["country"]) == ("jane@example.com", "+12125650000", "US")
    assert (second["email"], second["phone"]) == (None, None)
    assert result.warnings == [("c2", "invalid email ignored"), ("c2", "invalid phone ignored")]


def test_a_duplicate_customer_id_keeps_the_newest_copy_and_is_reported() -> None:
    older = CustomerRecord(customer_id="c1", source="test", email="old@example.com", updated_at=T)
    newer = CustomerRecord(customer_id="c1", source="test", email="new@example.com", updated_at=T.replace(day=2))
    result = validate_customers([newer, older])
    assert [c["email"] for c in result.customers] == ["new@example.com"]
    assert result.warnings == [
        ("c1", "duplicate id in the same batch: kept the latest copy (newest updatedAt, then the later one)")
    ]
