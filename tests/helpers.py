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
    """What the destination holds for a mapping, as identities in our own format (the vendor's hooks)."""
    from connectors.kernel.vendor import vendor

    mapping = config.mappings[mapping_name]
    dest = config.destinations[mapping.destination]
    hooks = vendor(dest.type).part("contract")()
    workdir = getattr(dest, "directory", Path("."))
    members: set[str] = hooks.members_in(
        sandbox.emulator(dest.type), mapping.audience, config.options[mapping_name], workdir
    )
    return members


def write_config(
    path: Path, body: str, *, shop_url: str = "https://example.myshopify.com", source_options: str = ""
) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""
            [source]
            type = "shopify"
            shop_url = "{shop_url}"
            """
        )
        + (source_options + "\n" if source_options else "")
        + textwrap.dedent(body),
        encoding="utf-8",
    )
    return path
