"""Orders from a plain CSV file, and the whole CSV -> segments pipeline the CLI runs.

Columns (header names are trimmed and case-insensitive; extra columns are ignored): ``order_id``,
``created_at`` (ISO 8601; without an offset it is UTC), ``total`` (current total, >= 0),
``currency`` (ISO 4217), and ``customer_id`` and/or ``email`` (at least one of the two columns;
each row needs a customer_id or a valid email). Optional: ``cancelled``, ``accepts_marketing``
(true/false/1/0/yes/no). Bad rows become :class:`Problem` ``("line N", reason)`` with the 1-based
line of the file where the row starts (the header is line 1); every other row is still used.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO

import pandas as pd

from connectors.kernel.identifiers import normalize_email, normalize_phone
from connectors.kernel.records import OrderRecord, Problem
from worker.segments import SegmentsConfig, build_customer_table, compute_segments, empty_customers
from worker.segments.frames import LINE_COLUMNS, ORDER_COLUMNS, empty_lines

REQUIRED_COLUMNS = ("order_id", "created_at", "total", "currency")
IDENTITY_COLUMNS = ("customer_id", "email")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

#: ISO 4217 active codes (2024 list) plus HRK (replaced by EUR in 2023, still in order histories);
#: XXX (no currency) and XTS (testing) are not accepted.
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU
    MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD
    RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
    TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD
    XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL
    """.split()  # noqa: SIM905 - a compact table of codes
)

Source = str | os.PathLike[str] | IO[bytes] | IO[str]


class CsvFormatError(ValueError):
    """The file as a whole cannot be read as an orders CSV (no header, a required column missing)."""


@dataclass
class CsvReadResult:
    orders: list[OrderRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _read_text(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        data: bytes | str = Path(source).read_bytes()
    else:
        data = source.read()
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    # surrogateescape keeps going past bad bytes; rows that hold them are reported, not used
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")


def _has_bad_bytes(values: Iterable[str]) -> bool:
    return any("\udc80" <= ch <= "\udcff" for value in values for ch in value)


def _bool(value: str, column: str, reasons: list[str]) -> bool | None:
    text = value.strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    reasons.append(f"{column} is not a boolean (true/false/1/0/yes/no)")
    return None


def _timestamp(value: str, reasons: list[str]) -> datetime | None:
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        reasons.append("created_at is missing" if not text else "created_at is not an ISO 8601 date-time")
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _total(value: str, reasons: list[str]) -> Decimal | None:
    try:
        total = Decimal(value.strip())
    except InvalidOperation:
        reasons.append("total is missing" if not value.strip() else "total is not a number")
        return None
    if not total.is_finite():
        reasons.append("total is not a number")
        return None
    if total < 0:
        reasons.append("total is negative")
        return None
    return total


def _rows(text: str) -> Iterator[tuple[int, list[str] | None]]:
    """(first line of the record, fields) per record; fields None when the CSV syntax is broken."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:  # the reader has consumed the broken record's lines; carry on after it
            yield start, None
            continue
        yield start, row


def read_orders_csv(source: Source) -> CsvReadResult:
    """Parse and validate an orders CSV; raises :class:`CsvFormatError` only for whole-file problems."""
    rows = _rows(_read_text(source))
    header: list[str] | None = None
    for _, fields in rows:
        if fields:
            header = [name.strip().lower() for name in fields]
            break
    if header is None:
        raise CsvFormatError("orders CSV is empty: expected a header line")
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise CsvFormatError(
                f"orders CSV is missing required column {column!r} "
                f"(required: {', '.join(REQUIRED_COLUMNS)}, and customer_id and/or email)"
            )
    if not any(column in header for column in IDENTITY_COLUMNS):
        raise CsvFormatError("orders CSV needs a 'customer_id' or an 'email' column (or both)")
    position = {name: i for i, name in reversed(list(enumerate(header)))}

    result = CsvReadResult()
    seen: dict[str, int] = {}
    for line, fields in rows:
        if fields is None:
            result.problems.append(
                Problem(f"line {line}", "malformed CSV quoting; the record starting here was skipped")
            )
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if len(fields) > len(header) and not any(f.strip() for f in fields[len(header) :]):
            fields = fields[: len(header)]
        if len(fields) != len(header):
            reason = f"has {len(fields)} fields, the header has {len(header)}"
            result.problems.append(Problem(f"line {line}", reason))
            continue
        if _has_bad_bytes(fields):
            result.problems.append(Problem(f"line {line}", "not valid UTF-8"))
            continue
        record, reasons = _parse_row(fields, position, seen)
        if record is None:
            result.problems.append(Problem(f"line {line}", "; ".join(reasons)))
        else:
            seen[record.order_id] = line
            result.orders.append(record)
    return result


def _parse_row(
    fields: list[str], position: dict[str, int], seen: dict[str, int]
) -> tuple[OrderRecord | None, list[str]]:
    def get(column: str) -> str:
        return fields[position[column]] if column in position else ""

    reasons: list[str] = []
    order_id = get("order_id").strip()
    if not order_id:
        reasons.append("order_id is missing")
    elif order_id in seen:
        reasons.append(f"duplicate order_id (first kept, line {seen[order_id]})")
    customer_id = get("customer_id").strip() or None
    email = get("email").strip() or None
    if customer_id is None:
        if email is None:
            reasons.append("missing both email and customer_id")
        elif normalize_email(email) is None:
            reasons.append("invalid email and no customer_id")
    created_at = _timestamp(get("created_at"), reasons)
    total = _total(get("total"), reasons)
    currency = get("currency").strip().upper()
    if currency not in ISO_4217:
        reasons.append("currency is missing" if not currency else "unknown currency code (ISO 4217)")
    cancelled = _bool(get("cancelled"), "cancelled", reasons)
    accepts = _bool(get("accepts_marketing"), "accepts_marketing", reasons)
    if reasons or created_at is None or total is None:
        return None, reasons
    record = OrderRecord(
        order_id=order_id,
        source="csv",
        customer_id=customer_id,
        email=email,
        created_at=created_at,
        updated_at=created_at,
        total=total,
        currency=currency,
        cancelled=bool(cancelled),
        accepts_marketing=accepts,
    )
    return record, []


def orders_frame(records: Iterable[OrderRecord]) -> pd.DataFrame:
    """Validated records as the engine's orders frame (emails normalized, times UTC)."""
    rows = list(records)
    frame = pd.DataFrame(
        {
            "order_id": pd.Series([r.order_id for r in rows], dtype="str"),
            "customer_id": pd.Series([r.customer_id for r in rows], dtype="object"),
            "email": pd.Series([normalize_email(r.email) for r in rows], dtype="object"),
            "created_at": pd.to_datetime(pd.Series([r.created_at for r in rows], dtype="object"), utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            "total": pd.Series([float(r.total) for r in rows], dtype="float64"),
            "currency": pd.Series([r.currency for r in rows], dtype="str"),
            "cancelled": pd.Series([r.cancelled for r in rows], dtype="bool"),
            "test": pd.Series([r.test for r in rows], dtype="bool"),
            "has_discount": pd.Series([bool(r.discount_codes) for r in rows], dtype="bool"),
            "channel": pd.Series([r.channel for r in rows], dtype="object"),
            "accepts_marketing": pd.Series([r.accepts_marketing for r in rows], dtype="boolean"),
            "phone": pd.Series([normalize_phone(r.phone) for r in rows], dtype="object"),
        }
    )
    for column in ("customer_id", "email", "channel", "phone"):
        frame[column] = frame[column].astype("str").where(frame[column].notna())
    assert set(ORDER_COLUMNS) <= set(frame.columns)
    return frame


def order_lines_frame(records: Iterable[OrderRecord]) -> pd.DataFrame:
    """The order lines of the records as the engine's order_lines frame."""
    data = [(r.order_id, li.product_id, li.sku, li.quantity) for r in records for li in r.lines]
    if not data:
        return empty_lines()
    frame = pd.DataFrame(data, columns=list(LINE_COLUMNS), dtype="object")
    frame["quantity"] = frame["quantity"].astype("int64")
    for column in ("order_id", "product_id", "sku"):
        frame[column] = frame[column].astype("str").where(frame[column].notna())
    return frame


@dataclass
class SegmentsReport:
    """What a CSV segments run produced: members per segment and the rows it could not use."""

    counts: dict[str, int]
    problems: list[Problem]
    orders_used: int
    #: orders dated after the as-of day, left out so the run sees the store as it was that day
    orders_after_as_of: int
    customers: int
    currencies: list[str]

    @property
    def sizes(self) -> dict[str, int]:
        """Members per segment (the same as ``counts``)."""
        return self.counts


def segments_from_csv(
    in_path: Source,
    as_of: date | datetime,
    out_path: str | os.PathLike[str],
    config: SegmentsConfig | None = None,
) -> SegmentsReport:
    """Read an orders CSV, compute segments at ``as_of`` and write ``segment,customer_key`` rows, sorted.

    A date ``as_of`` means that UTC day (ages are whole UTC days, so the time of day does not matter).
    The output file is replaced atomically.
    """
    if isinstance(as_of, datetime):
        now = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    else:
        now = datetime.combine(as_of, time(0), UTC)
    read = read_orders_csv(in_path)
    orders = orders_frame(read.orders)
    day = now.astimezone(UTC).date()
    late = (orders["created_at"].dt.date > day).to_numpy(dtype=bool)
    orders = orders[~late].reset_index(drop=True)
    table = build_customer_table(orders, empty_customers())
    segments = compute_segments(table, now, config)

    out = Path(out_path)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed before the rename below
        "w", encoding="utf-8", newline="", dir=out.parent, prefix=f".{out.name}.", delete=False
    )
    try:
        with handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["segment", "customer_key"])
            for name in sorted(segments):
                writer.writerows((name, key) for key in segments[name])
        os.replace(handle.name, out)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return SegmentsReport(
        counts={name: len(segments[name]) for name in sorted(segments)},
        problems=read.problems,
        orders_used=len(orders),
        orders_after_as_of=int(late.sum()),
        customers=len(table),
        currencies=sorted(set(orders["currency"])),
    )
