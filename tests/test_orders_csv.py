"""The orders CSV reader and the CSV -> segments pipeline."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from worker.orders_csv import (
    CsvFormatError,
    order_lines_frame,
    orders_frame,
    read_orders_csv,
    segments_from_csv,
)

HEADER = "order_id,customer_id,email,created_at,total,currency,cancelled,accepts_marketing,note\n"


def read(text: str | bytes):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return read_orders_csv(io.BytesIO(data))


def problems(text: str | bytes) -> dict[str, str]:
    return {p.ref: p.reason for p in read(text).problems}


def test_good_rows_parse_with_utc_times_and_booleans() -> None:
    result = read(
        HEADER
        + "1,c1,Ann@Example.com,2026-01-01T23:30:00-05:00,12.50,usd,no,yes,hi\n"
        + "2,,bob@example.com,2026-01-02 10:00:00,0,EUR,TRUE,0,\n"
        + "3,c3,,2026-01-03T00:00:00Z,7,JPY,,,\n"
    )
    assert result.problems == []
    first, second, third = result.orders
    assert first.created_at == datetime(2026, 1, 2, 4, 30, tzinfo=UTC)
    assert first.total == Decimal("12.50") and first.currency == "USD" and first.source == "csv"
    assert first.cancelled is False and first.accepts_marketing is True
    assert second.customer_id is None and second.cancelled is True and second.accepts_marketing is False
    assert second.created_at == datetime(2026, 1, 2, 10, tzinfo=UTC)  # naive = UTC
    assert third.email is None and third.accepts_marketing is None
    frame = orders_frame(result.orders)
    assert frame["email"].tolist()[:2] == ["ann@example.com", "bob@example.com"]
    assert str(frame["created_at"].dtype) == "datetime64[ns, UTC]"
    assert frame["accepts_marketing"].tolist()[:2] == [True, False] and pd.isna(frame["accepts_marketing"][2])
    assert order_lines_frame(result.orders).empty


def test_bad_rows_are_reported_by_line_and_the_rest_are_used() -> None:
    text = (
        HEADER  # line 1
        + "1,c1,a@x.io,2026-01-01,10,USD,,,\n"  # 2 ok
        + "2,c2,a@x.io,yesterday,10,USD,,,\n"  # 3 bad date
        + "3,c3,a@x.io,2026-01-01,ten,USD,,,\n"  # 4 non-numeric total
        + "4,c4,a@x.io,2026-01-01,-1,USD,,,\n"  # 5 negative total
        + "5,c5,a@x.io,2026-01-01,1,ABC,,,\n"  # 6 unknown currency
        + "6,,not-an-email,2026-01-01,1,USD,,,\n"  # 7 invalid email, no customer id
        + "7,,,2026-01-01,1,USD,,,\n"  # 8 neither
        + "1,c9,z@x.io,2026-01-05,1,USD,,,\n"  # 9 duplicate of line 2
        + "8,c8,,2026-01-01,1,USD,maybe,,\n"  # 10 bad boolean
        + "\n"  # 11 blank: skipped
        + '9,c9,,2026-01-01,1,USD,,,"multi\nline note"\n'  # 12-13 ok
        + "10,c10,,2026-01-01,1,USD\n"  # 14 too few fields
        + "11,c11,bad-email,2026-01-01,1,USD,,,\n"  # 15 ok: has a customer id
        + "12,c12,,2026-01-01,NaN,USD,,,\n"  # 16 NaN total
    )
    found = problems(text)
    assert set(found) == {f"line {n}" for n in (3, 4, 5, 6, 7, 8, 9, 10, 14, 16)}
    assert "created_at" in found["line 3"]
    assert "total is not a number" in found["line 4"]
    assert "negative" in found["line 5"]
    assert "currency" in found["line 6"]
    assert "invalid email" in found["line 7"]
    assert "missing both email and customer_id" in found["line 8"]
    assert "duplicate order_id" in found["line 9"] and "line 2" in found["line 9"]
    assert "cancelled" in found["line 10"]
    assert "fields" in found["line 14"]
    assert "not a number" in found["line 16"]
    used = read(text).orders
    assert [o.order_id for o in used] == ["1", "9", "11"]
    assert used[0].customer_id == "c1"  # the first of the duplicates is kept
    assert all("@" not in reason for reason in found.values())  # no PII in reasons


def test_non_utf8_rows_are_reported_not_fatal() -> None:
    data = (HEADER + "1,c1,,2026-01-01,1,USD,,,\n").encode() + b"2,c2,,2026-01-01,1,USD,,,caf\xe9\n"
    data += b"3,c3,,2026-01-01,1,USD,,,ok\n"
    result = read(data)
    assert {p.ref: p.reason for p in result.problems} == {"line 3": "not valid UTF-8"}
    assert [o.order_id for o in result.orders] == ["1", "3"]


def test_broken_quoting_is_reported_and_reading_goes_on() -> None:
    text = (
        "order_id,customer_id,created_at,total,currency\n"
        "1,c1,2026-01-01,1,USD\n"
        '2,"c2"x,2026-01-01,1,USD\n'  # line 3: text after a closing quote
        "3,c3,2026-01-01,1,USD\n"
    )
    result = read(text)
    assert [(p.ref, "quoting" in p.reason) for p in result.problems] == [("line 3", True)]
    assert [o.order_id for o in result.orders] == ["1", "3"]


def test_header_quirks_bom_case_spaces_and_extra_columns() -> None:
    text = "\ufeff Order_ID ,EMAIL,Created_At,Total,Currency,Extra\n1,a@x.io,2026-01-01,1,USD,whatever\n"
    result = read(text)
    assert result.problems == [] and result.orders[0].email == "a@x.io"
    text_io = io.StringIO("order_id,email,created_at,total,currency\n1,a@x.io,2026-01-01,1,usd\n")
    assert read_orders_csv(text_io).orders[0].currency == "USD"


@pytest.mark.parametrize("missing", ["order_id", "created_at", "total", "currency"])
def test_missing_required_column_is_named(missing: str) -> None:
    columns = [c for c in ["order_id", "customer_id", "email", "created_at", "total", "currency"] if c != missing]
    with pytest.raises(CsvFormatError, match=f"'{missing}'"):
        read(",".join(columns) + "\n")


def test_identity_column_and_empty_file() -> None:
    with pytest.raises(CsvFormatError, match="customer_id"):
        read("order_id,created_at,total,currency\n1,2026-01-01,1,USD\n")
    with pytest.raises(CsvFormatError, match="empty"):
        read("")


def test_segments_from_csv_end_to_end(tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_text(
        "order_id,customer_id,email,created_at,total,currency,cancelled,accepts_marketing\n"
        # 2026-01-01T23:30-05:00 is 2026-01-02 UTC: age 29 on 2026-01-31, so engaged
        "1,,late@example.com,2026-01-01T23:30:00-05:00,20,USD,false,true\n"
        "2,c1,Ann@Example.com,2025-10-01T10:00:00Z,50,USD,false,false\n"
        "3,,ann@example.com,2025-09-01T10:00:00Z,30,USD,false,\n"  # guest, merged into c1
        "4,c2,,2025-12-01T10:00:00Z,10,USD,true,\n"  # cancelled only: not a buyer
        "5,c3,,2026-02-10T10:00:00Z,10,USD,false,\n"  # after as-of: ignored
        "6,c4,,not a date,10,USD,false,\n"  # bad row, line 7
        "7,,guest@example.com,2025-12-02T23:59:59+00:00,10,USD,,\n"  # age 60: lapsed
    )
    out = tmp_path / "segments.csv"
    report = segments_from_csv(source, date(2026, 1, 31), out)
    assert [(p.ref, "created_at" in p.reason) for p in report.problems] == [("line 7", True)]
    assert report.orders_after_as_of == 1 and report.orders_used == 5 and report.currencies == ["USD"]
    lines = out.read_text().splitlines()
    assert lines[0] == "segment,customer_key"
    assert lines[1:] == sorted(lines[1:])
    rows = {tuple(line.split(",")) for line in lines[1:]}
    assert ("engaged_30d", "late@example.com") in rows
    assert ("lapsed_60_180", "guest@example.com") in rows
    # c1's last order (2025-10-01) is 122 days old; the guest order joined c1, no key of its own
    assert ("lapsed_60_180", "c1") in rows and "ann@example.com" not in {r[1] for r in rows}
    assert {r[1] for r in rows if r[0] == "buyers"} == {"late@example.com", "c1", "guest@example.com"}
    assert {r[1] for r in rows if r[0] == "newsletter_subscribers"} == {"late@example.com"}
    assert report.counts["buyers"] == 3 and report.customers == 4


def test_empty_csv_with_header_gives_empty_segments(tmp_path: Path) -> None:
    source = tmp_path / "orders.csv"
    source.write_text("order_id,email,created_at,total,currency\n")
    out = tmp_path / "out.csv"
    report = segments_from_csv(source, datetime(2026, 1, 31, tzinfo=UTC), out)
    assert out.read_text() == "segment,customer_key\n"
    assert report.counts["buyers"] == 0 and report.problems == []
