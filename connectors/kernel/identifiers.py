"""Identifier normalization and hashing, per platform rules (api-contracts.md §0, §5.6, §6.4).

Normalize first, then hash once, as lowercase hex SHA-256. Values that are already hashed pass
through untouched only when the caller says so (``pre_hashed``): guessing would hash a hash.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache
from typing import Literal

import phonenumbers

Platform = Literal["meta", "google", "tiktok", "generic"]

# letters may be any script (internationalized addresses, RFC 6531); \w is Unicode-aware here
_EMAIL_RE = re.compile(r"^[\w.!#$%&'*+/=?^`{|}~\-]+@[^\W_](?:[\w\-]{0,61}[^\W_])?(?:\.[^\W_](?:[\w\-]{0,61}[^\W_])?)+$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def normalize_email(raw: str | None) -> str | None:
    """Trim and lowercase; ``None`` when what is left is not a plausible address.

    Dots in Gmail local parts are kept: Google says they are not required to be removed, and
    keeping them keeps the hash deterministic across platforms.
    """
    if raw is None:
        return None
    email = unicodedata.normalize("NFC", raw).strip().lower()
    if not email or len(email) > 254 or not _EMAIL_RE.match(email):
        return None
    local, _, domain = email.rpartition("@")
    if len(local) > 64 or ".." in email or local.startswith(".") or local.endswith("."):
        return None
    return f"{local}@{domain}"


@lru_cache(maxsize=262_144)
def normalize_phone(raw: str | None, default_region: str = "US") -> str | None:
    """E.164 with the leading ``+`` (``+12125650000``), or ``None`` when it is not a valid number.

    Cached (in this process's memory only): parsing is the slow part of building rows for ad platforms,
    and the same numbers come back every cycle."""
    if raw is None or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def phone_for_platform(e164: str, platform: Platform) -> str:
    """Google wants E.164 with ``+``; Meta and TikTok want the digits with country code, no ``+``."""
    return e164 if platform == "google" else e164.lstrip("+")


def normalize_name(raw: str | None) -> str | None:
    """Lowercase, NFC, letters only (UTF-8 letters kept, as Meta documents), no spaces or punctuation."""
    if raw is None:
        return None
    text = unicodedata.normalize("NFC", raw).strip().lower()
    kept = "".join(ch for ch in text if ch.isalpha())
    return kept or None


def normalize_country(raw: str | None) -> str | None:
    """ISO 3166-1 alpha-2, lowercase (Meta hashes it; Google sends it unhashed, uppercase)."""
    if raw is None:
        return None
    text = "".join(ch for ch in raw.strip().lower() if "a" <= ch <= "z")
    return text if len(text) == 2 else None


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_sha256_hex(value: str) -> bool:
    return bool(_SHA256_RE.match(value))


def hashed(value: str, *, pre_hashed: bool = False) -> str:
    """Hash a normalized value, or pass a declared pre-hashed value through (checked, lowercased)."""
    if pre_hashed:
        candidate = value.strip().lower()
        if not is_sha256_hex(candidate):
            raise ValueError("value declared pre-hashed is not a SHA-256 hex digest")
        return candidate
    return sha256_hex(value)


def match_key(
    raw: str, *, kind: Literal["email", "phone"], platform: Platform, default_region: str = "US"
) -> tuple[str, str] | None:
    """The normalized form a platform matches on and its hash, or ``None`` if invalid."""
    if kind == "email":
        normalized = normalize_email(raw)
    else:
        e164 = normalize_phone(raw, default_region)
        normalized = phone_for_platform(e164, platform) if e164 else None
    if normalized is None:
        return None
    return normalized, sha256_hex(normalized)
