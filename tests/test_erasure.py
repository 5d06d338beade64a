"""An erasure request removes the person from the store and from every destination."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from connectors.destinations.file import audience_path, read_audience
from connectors.emulators.synthetic import SyntheticStore
from connectors.identifiers import sha256_hex
from tests.conftest import make_settings
from tests.test_cycle_e2e import _sandbox_config
from worker.cycle import pull
from worker.erasure import erase
from worker.factory import make_runtime
from worker.runner import run_cycle
from worker.sandbox import Sandbox
from worker.store import open_store, schema

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_erasure_removes_a_subscribed_buyer_everywhere_and_keeps_them_out(sqlite_url: str, tmp_path: Path) -> None:
    shop = SyntheticStore(seed=3, customers=200, now=NOW)
    settings = make_settings(database_url=sqlite_url)
    with Sandbox(NOW, store=shop) as sandbox:
        config, resolved = sandbox.resolve(_sandbox_config(tmp_path), settings)
        store = open_store(sqlite_url)
        run_cycle(store, config, resolved, now=NOW)
        buyers = store.members(store.segment_keys("buyers"))
        newsletter = store.segment_keys("newsletter_subscribers")
        person = next(m for k, m in sorted(buyers.items()) if k in newsletter and m.email)
        assert person.email is not None
        files = tmp_path / "aud"
        assert sha256_hex(person.email) in read_audience(audience_path(files, "buyers"))
        assert person.email in read_audience(audience_path(files, "newsletter_subscribers"))

        report = erase(store, config, resolved, make_runtime(resolved), person.email.upper(), NOW)

        assert report.complete and report.orders_deleted > 0
        assert sha256_hex(person.email) not in read_audience(audience_path(files, "buyers"))
        assert person.email not in read_audience(audience_path(files, "newsletter_subscribers"))
        with store.engine.connect() as conn:
            assert (
                conn.execute(select(schema.customers).where(schema.customers.c.email == person.email)).first() is None
            )
            assert conn.execute(select(schema.orders).where(schema.orders.c.email == person.email)).first() is None
            audit = conn.execute(select(schema.erasures)).one()
        assert audit.email_sha256 == sha256_hex(person.email) and audit.completed_at is not None
        assert person.email not in audit.detail  # the audit keeps the hash, never the address

        # a later re-read of the whole history does not bring them back
        again = pull(store, config, resolved, make_runtime(resolved), reread_hours=24 * 365 * 3, now=NOW)
        assert again.suppressed > 0
        with store.engine.connect() as conn:
            assert (
                conn.execute(select(schema.customers).where(schema.customers.c.email == person.email)).first() is None
            )
        store.dispose()
