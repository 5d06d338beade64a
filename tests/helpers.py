"""Small builders shared by the tests (data only; no stand-ins for our own code)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from connectors.records import Consent
from worker.store import Store


def seed_segment(
    store: Store, segment: str, count: int, *, consent: Consent = Consent.SUBSCRIBED, start: int = 0
) -> list[str]:
    """Profiles ``c{n}`` with ``member{n}@example.com`` in ``segment``; returns their keys."""
    keys = [f"c{n}" for n in range(start, start + count)]
    store.replace_profiles(
        [
            {
                "customer_key": k,
                "email": f"member{k[1:]}@example.com",
                "phone": None,
                "first_name": None,
                "last_name": None,
                "country": None,
                "email_consent": consent.value,
            }
            for k in keys
        ]
    )
    store.replace_segments({segment: keys})
    return keys


def write_config(path: Path, body: str, *, shop_url: str = "https://example.myshopify.com") -> Path:
    path.write_text(
        textwrap.dedent(
            f"""
            [source]
            type = "shopify"
            shop_url = "{shop_url}"
            """
        )
        + textwrap.dedent(body),
        encoding="utf-8",
    )
    return path
