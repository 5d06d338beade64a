"""Small builders shared by the tests (data only; no stand-ins for our own code)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from connectors.kernel.records import Consent
from worker.config import AppConfig
from worker.sandbox import Sandbox
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


def audience_now(sandbox: Sandbox, config: AppConfig, mapping_name: str) -> set[str]:
    """What the destination holds for a mapping, as identities in our own format."""
    from connectors.file.destination import audience_path, read_audience
    from connectors.mailchimp.emulator import MailchimpEmulator
    from connectors.meta.destination import encode_identity
    from connectors.meta.emulator import MetaEmulator

    mapping = config.mappings[mapping_name]
    dest = config.destinations[mapping.destination]
    emulator = sandbox.emulator(dest.type)
    if isinstance(emulator, MailchimpEmulator):
        segment = emulator.segment_by_name(mapping.audience, mapping.options["tag"])
        return set() if segment is None else emulator.segment_members(mapping.audience, segment)
    if isinstance(emulator, MetaEmulator):
        return {
            encode_identity([k for k, _ in row], tuple(v for _, v in row))
            for row in emulator.audience(mapping.audience)
        }
    return read_audience(audience_path(dest.directory, mapping.audience))  # type: ignore[attr-defined]


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
