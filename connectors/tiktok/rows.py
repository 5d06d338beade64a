"""TikTok ``segment/mapping`` rows: our normalization, the identity we store, and the checks made before sending.

A row holds one SHA-256 hex value per ``id_schema`` column (``""`` where the person has none; it goes out
as ``{}``). The identity is the column list and the row, ``EMAIL_SHA256,PHONE_SHA256:<hex>|<hex>``, so a
delete can be rebuilt from the identity alone: TikTok removes a row only when it is sent the same ids it
was added with (CONTRACT.md §2.3). One bad id refuses the whole batch, so every row is checked here first.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

from connectors.kernel.identifiers import (
    normalize_country,
    normalize_email,
    normalize_phone,
    phone_for_platform,
    sha256_hex,
)
from connectors.kernel.records import Member
from connectors.tiktok.schemas import ID_TYPES, OUR_ID_TYPES

TikTokKey = Literal["EMAIL", "PHONE"]
DEFAULT_KEYS: tuple[TikTokKey, ...] = ("EMAIL", "PHONE")
#: our option names and TikTok's column types
COLUMNS: dict[str, str] = {"EMAIL": "EMAIL_SHA256", "PHONE": "PHONE_SHA256"}
Row = tuple[str, ...]
_HEX = re.compile(r"[0-9a-f]+")


def id_schema(keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(COLUMNS[k] for k in keys)


def tiktok_phone(raw: str | None, region: str) -> str | None:
    """Digits with the country code and no ``+`` (``12125550100``), or ``None`` when not a valid number."""
    e164 = normalize_phone(raw, region)
    return phone_for_platform(e164, "tiktok") if e164 else None


def phone_region(member: Member, default_region: str) -> str:
    """Where a national number is read from: the member's country, else the worker's default."""
    return (normalize_country(member.country) or default_region).upper()


class PhoneHashes:
    """The hashed TikTok form of raw phone numbers, remembered between runs of a worker process.

    Parsing a number is most of what an identity costs, and every run recomputes every member's identity
    (the plan), then again for the ones it adds. Kept by a digest of the raw value, so the cache holds no
    phone number: only hashes, as the acknowledged identities in the store do. Least recently used go first.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._known: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, raw: str | None, region: str) -> str:
        if raw is None or not raw.strip():
            return ""
        key = hashlib.sha256(f"{region}\x00{raw}".encode()).digest()
        with self._lock:
            known = self._known.get(key)
            if known is not None:
                self._known.move_to_end(key)
                return known
        phone = tiktok_phone(raw, region)
        value = sha256_hex(phone) if phone else ""
        with self._lock:
            self._known[key] = value
            if len(self._known) > self.size:
                self._known.popitem(last=False)
        return value


#: enough for a store of 65,536 people with a phone (an LRU scanned in order helps nobody when it is smaller)
PHONE_HASHES = PhoneHashes(1 << 16)


def hashed_row(member: Member, keys: Sequence[str], default_region: str) -> Row:
    """One SHA-256 hex value per key, ``""`` where the member has nothing usable."""
    values: list[str] = []
    for key in keys:
        if key == "EMAIL":
            email = normalize_email(member.email)
            values.append(sha256_hex(email) if email else "")
        else:
            values.append(PHONE_HASHES(member.phone, phone_region(member, default_region)))
    return tuple(values)


def encode_identity(schema: Sequence[str], row: Row) -> str:
    return ",".join(schema) + ":" + "|".join(row)


def decode_identity(identity: str) -> tuple[tuple[str, ...], Row] | None:
    """The column list and row of an identity; ``None`` when it is not one of ours."""
    columns, sep, values = identity.partition(":")
    schema = tuple(columns.split(","))
    row = tuple(values.split("|"))
    if not sep or len(schema) != len(row) or len(set(schema)) != len(schema):
        return None
    if not all(column in OUR_ID_TYPES for column in schema):
        return None
    return schema, row


def problem(schema: Sequence[str], row: Row) -> str | None:
    """Why TikTok would refuse ``row`` (and with it the whole batch), or ``None`` when it may be sent."""
    if len(row) != len(schema):
        return f"{len(row)} values for {len(schema)} columns"
    if not any(row):
        return f"none of {', '.join(schema)} is usable"
    for column, value in zip(schema, row, strict=True):
        if value and not (len(value) == ID_TYPES.get(column, -1) and _HEX.fullmatch(value)):
            return f"the {column} value is not a lowercase hex hash"
    return None


def cells(row: Row, audience: str) -> list[dict[str, Any]]:
    """One cell per column, ``{}`` for a missing value (TikTok lines the cells up with ``id_schema``)."""
    return [{"id": value, "audience_ids": [audience]} if value else {} for value in row]


def mapping_body(
    advertiser_id: str, action: str, schema: Sequence[str], rows: Sequence[Row], audience: str
) -> dict[str, Any]:
    return {
        "advertiser_ids": [advertiser_id],
        "action": action,
        "id_schema": list(schema),
        "batch_data": [cells(row, audience) for row in rows],
    }
