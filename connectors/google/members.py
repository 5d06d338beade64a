"""What one member becomes at Google: its hashed identifiers, the identity we store, and its consent.

**Identity**: ``EMAIL,PHONE:<sha256 of the email>|<sha256 of the +E.164 phone>``, one slot per key
of the mapping, empty where the member has nothing usable (the shape of Meta's rows). It holds every
hash we send, so a removal is rebuilt from the identity alone, and it changes when an identifier
does (the engine then removes the old identity and adds the new one).

**Normalization** (api-contracts.md §5.6, §5.8; CONTRACT.md §5): the email trimmed and lowercased,
the phone in E.164 *with* the ``+``, each hashed once as lowercase SHA-256 hex (``encoding: HEX``).
At most two identifiers per member, well under Google's ten. Names and country are not sent: Google
matches an address only as given name, family name, region and postal code together, and a member
carries no postal code.

**Consent** (``adUserData`` / ``adPersonalization``): we know one thing, the email marketing state.

- ``SUBSCRIBED``: both ``CONSENT_GRANTED``, set on the member (a member's consent overrides the
  request's, CONTRACT.md §7); only a request whose members all share one consent carries it once, at
  the request level (:func:`hoist_consent`), which Google reads the same way.
- ``UNSUBSCRIBED`` (an opt-out) or ``REDACTED`` (an erased customer): not sent at all; a member we
  hold is then removed by the engine.
- anything else (never asked, pending, unknown) is consent we do not have, and is never sent as
  granted. For users in the EEA, the UK and Switzerland, Google's EU user consent policy needs both
  signals granted for Customer Match, and data without them "is not processed" (support.google.com
  /google-ads/answer/14310715): sending it anyway would hand Google personal data it may not use,
  so those members are **left out** (``no_consent``). Elsewhere consent signals are not required,
  and the members are sent with both fields **unspecified** (omitted: ``CONSENT_STATUS_UNSPECIFIED``
  means "not set", CONTRACT.md §7), which claims nothing. A member's region is its country, else its
  phone number's, else the store's default region (the one phone numbers are parsed with).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any, Literal

import phonenumbers

from connectors.kernel.identifiers import (
    is_sha256_hex,
    normalize_country,
    normalize_email,
    normalize_phone,
    phone_for_platform,
    sha256_hex,
)
from connectors.kernel.records import Consent, Member

Key = Literal["EMAIL", "PHONE"]
KEYS: tuple[Key, ...] = ("EMAIL", "PHONE")
FIELDS: dict[str, str] = {"EMAIL": "emailAddress", "PHONE": "phoneNumber"}
Row = tuple[str, ...]

GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}
#: the EEA (EU, Iceland, Liechtenstein, Norway), the UK and Switzerland: Google's EU user consent policy
_EU = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE"
CONSENT_REGIONS = frozenset(f"{_EU} IS LI NO GB CH".split(" "))


class PhoneHashes:
    """Hashed ``+E.164`` phones for the process, by a digest of (region, raw number).

    The engine asks for every member's identity on every run (and again as it sends them), and parsing
    and validating a number costs about 65 µs (3 s per 50,000 members, most of building identities).
    Keys are digests, so no raw number is kept. Two generations of at most ``size / 2`` entries each
    (about 17 MB in all at the default): a number used since the last turnover survives the next one.
    """

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._new: dict[bytes, bytes] = {}
        self._old: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def get(self, raw: str | None, region: str) -> str:
        if not raw:
            return ""
        key = hashlib.blake2b(f"{region}\x00{raw}".encode(), digest_size=16).digest()
        with self._lock:
            found = self._new.get(key)
            if found is None:
                found = self._old.get(key)
                if found is not None:
                    self._keep(key, found)
        if found is None:
            e164 = normalize_phone(raw, region)
            found = hashlib.sha256(phone_for_platform(e164, "google").encode()).digest() if e164 else b""
            with self._lock:
                self._keep(key, found)
        return found.hex()

    def _keep(self, key: bytes, value: bytes) -> None:
        self._new[key] = value
        if len(self._new) >= self.size // 2:
            self._old, self._new = self._new, {}

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


PHONES = PhoneHashes()


def row(member: Member, keys: Sequence[str], default_region: str) -> Row:
    """One lowercase SHA-256 hex per key, ``""`` where the member has nothing usable."""
    region = (normalize_country(member.country) or default_region).upper()
    out: list[str] = []
    for key in keys:
        if key == "EMAIL":
            email = normalize_email(member.email)
            out.append(sha256_hex(email) if email else "")
        else:
            out.append(PHONES.get(member.phone, region))
    return tuple(out)


def encode_identity(keys: Sequence[str], values: Row) -> str:
    return ",".join(keys) + ":" + "|".join(values)


def decode_identity(identity: str) -> tuple[tuple[str, ...], Row] | None:
    """Keys and hashes back from an identity; None unless it is one of ours with something to send."""
    schema, sep, rest = identity.partition(":")
    keys, values = tuple(schema.split(",")), tuple(rest.split("|"))
    if not sep or len(keys) != len(values) or len(set(keys)) != len(keys) or not set(keys) <= set(KEYS):
        return None
    if not any(values) or not all(v == "" or is_sha256_hex(v) for v in values):
        return None
    return keys, values


def user_data(keys: Sequence[str], values: Row) -> dict[str, Any]:
    return {"userData": {"userIdentifiers": [{FIELDS[k]: v} for k, v in zip(keys, values, strict=True) if v]}}


def region_of(member: Member, default_region: str) -> str:
    country = normalize_country(member.country)
    if country:
        return country.upper()
    e164 = normalize_phone(member.phone, default_region)
    if e164:
        found = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
        if found:
            return str(found).upper()
    return default_region.upper()


def consent_refusal(member: Member, default_region: str) -> str | None:
    """Why consent keeps ``member`` from Google (``opted_out``, ``redacted``, ``no_consent``), or None."""
    if member.email_consent == Consent.UNSUBSCRIBED:
        return "opted_out"
    if member.email_consent == Consent.REDACTED:
        return "redacted"
    if member.email_consent != Consent.SUBSCRIBED and region_of(member, default_region) in CONSENT_REGIONS:
        return "no_consent"
    return None


def hoist_consent(members: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """Members and the request-level consent: the shared consent once when every member carries the
    same, else each member's own and none for the request (an unspecified member must not inherit
    another's grant)."""
    first = members[0].get("consent") if members else None
    if first is None or any(m.get("consent") != first for m in members):
        return list(members), None
    return [{k: v for k, v in m.items() if k != "consent"} for m in members], dict(first)


def audience_member(member: Member, keys: Sequence[str], values: Row) -> dict[str, Any]:
    """The ``AudienceMember`` to ingest: identifiers, and consent only where it was given."""
    body = user_data(keys, values)
    if member.email_consent == Consent.SUBSCRIBED:
        body["consent"] = dict(GRANTED)
    return body
