"""The frames the store hands to the segment engine: column schemas, empty frames and a validator.

Text columns may be ``object`` or ``str`` dtype (missing = None/NaN/NA); timestamps are
timezone-aware (converted to UTC; any resolution, ``ns`` is what the store produces); numeric columns
may arrive as ``object`` from a database driver and are converted. Emails are already normalized
(``connectors.kernel.identifiers.normalize_email``) or missing.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from connectors.kernel.records import Consent

#: one row per order (``order_id`` unique). ``customer_id`` missing = guest checkout; ``total`` is the
#: current post-refund total; ``channel`` the first-visit "utm_source / utm_medium" or source name.
ORDER_COLUMNS: Mapping[str, str] = {
    "order_id": "str",
    "customer_id": "str",
    "email": "str",
    "created_at": "datetime",
    "total": "float64",
    "currency": "str",
    "cancelled": "bool",
    "test": "bool",
    "has_discount": "bool",
    "channel": "str",
}
#: optional order columns: ``accepts_marketing`` (nullable boolean, the CSV path's consent) and
#: ``phone`` (E.164) used when the customers frame has no row for the customer.
OPTIONAL_ORDER_COLUMNS: Mapping[str, str] = {"accepts_marketing": "boolean", "phone": "str"}

#: one row per order line; lines of unknown orders are ignored.
LINE_COLUMNS: Mapping[str, str] = {"order_id": "str", "product_id": "str", "sku": "str", "quantity": "int64"}

#: one row per store customer (``customer_id`` unique). ``last_engaged_at``: last email open or click.
CUSTOMER_COLUMNS: Mapping[str, str] = {
    "customer_id": "str",
    "email": "str",
    "phone": "str",
    "first_name": "str",
    "last_name": "str",
    "country": "str",
    "email_consent": "str",
    "last_engaged_at": "datetime",
}

CONSENT_VALUES: frozenset[str] = frozenset(c.value for c in Consent)


class FrameSchemaError(ValueError):
    """A frame handed to the engine does not match its documented schema."""


def _empty(columns: Mapping[str, str]) -> pd.DataFrame:
    data: dict[str, pd.Series] = {}
    for name, kind in columns.items():
        if kind == "datetime":
            data[name] = pd.Series([], dtype="datetime64[ns, UTC]")
        else:
            data[name] = pd.Series([], dtype=kind)
    return pd.DataFrame(data)


def empty_orders() -> pd.DataFrame:
    return _empty(ORDER_COLUMNS)


def empty_lines() -> pd.DataFrame:
    return _empty(LINE_COLUMNS)


def empty_customers() -> pd.DataFrame:
    return _empty(CUSTOMER_COLUMNS)


def _coerce(frame: pd.DataFrame, name: str, column: str, kind: str) -> pd.Series:
    series = frame[column]
    where = f"{name}.{column}"
    if kind == "datetime":
        if not isinstance(series.dtype, pd.DatetimeTZDtype):
            if series.isna().all():
                return pd.Series(pd.NaT, index=series.index, dtype="datetime64[ns, UTC]")
            raise FrameSchemaError(f"{where} must be timezone-aware UTC datetimes, got {series.dtype}")
        converted: pd.Series = series.dt.tz_convert("UTC")
        return converted
    if kind == "str":
        if series.dtype == object or isinstance(series.dtype, pd.StringDtype) or series.isna().all():
            return series  # left as given: converting millions of strings costs more than it checks
        raise FrameSchemaError(f"{where} must hold strings, got {series.dtype}")
    if kind in ("bool", "boolean"):
        if series.dtype == bool:
            return series
        if kind == "boolean" or not series.isna().any():
            try:
                return series.astype("boolean" if kind == "boolean" else bool)
            except (TypeError, ValueError) as exc:
                raise FrameSchemaError(f"{where} must be booleans, got {series.dtype}") from exc
        raise FrameSchemaError(f"{where} must be booleans without missing values")
    if kind in ("float64", "int64"):
        if series.dtype == object:  # e.g. rows from a database driver (Decimal, int)
            try:
                series = pd.to_numeric(series, errors="raise")
            except (TypeError, ValueError) as exc:
                raise FrameSchemaError(f"{where} must be numeric") from exc
        if not pd.api.types.is_numeric_dtype(series.dtype) or series.dtype == bool:
            raise FrameSchemaError(f"{where} must be numeric, got {series.dtype}")
        if series.isna().any():
            raise FrameSchemaError(f"{where} has missing values")
        return series.astype("float64") if kind == "float64" else series.astype("int64")
    raise AssertionError(kind)  # pragma: no cover


def validate_frame(
    frame: pd.DataFrame,
    columns: Mapping[str, str],
    name: str,
    optional: Mapping[str, str] | None = None,
    unique: str | None = None,
) -> pd.DataFrame:
    """Check a frame against its schema and return a copy with the documented dtypes.

    Raises :class:`FrameSchemaError` naming the frame and column. Extra columns are dropped.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FrameSchemaError(f"{name} frame is missing column(s): {', '.join(missing)}")
    wanted = dict(columns)
    for column, kind in (optional or {}).items():
        if column in frame.columns:
            wanted[column] = kind
    out = pd.DataFrame({column: _coerce(frame, name, column, kind) for column, kind in wanted.items()}).reset_index(
        drop=True
    )
    if unique is not None:
        if out[unique].isna().any():
            raise FrameSchemaError(f"{name}.{unique} has missing values")
        if out[unique].duplicated().any():
            raise FrameSchemaError(f"{name}.{unique} has duplicate values")
    return out


def validate_orders(orders: pd.DataFrame) -> pd.DataFrame:
    return validate_frame(orders, ORDER_COLUMNS, "orders", OPTIONAL_ORDER_COLUMNS, unique="order_id")


def validate_lines(lines: pd.DataFrame) -> pd.DataFrame:
    return validate_frame(lines, LINE_COLUMNS, "order_lines")


def validate_customers(customers: pd.DataFrame) -> pd.DataFrame:
    out = validate_frame(customers, CUSTOMER_COLUMNS, "customers", unique="customer_id")
    bad = out["email_consent"].notna() & ~out["email_consent"].isin(CONSENT_VALUES)
    if bad.any():
        raise FrameSchemaError(
            f"customers.email_consent has unknown values; allowed: {', '.join(sorted(CONSENT_VALUES))}"
        )
    out["email_consent"] = out["email_consent"].fillna(Consent.UNKNOWN.value)
    return out
