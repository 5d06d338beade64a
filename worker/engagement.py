"""Email engagement ingestion: last open/click per email, kept on the customer row.

Incremental like orders: a watermark per engagement reader, advanced to the newest event seen.
Engagement is matched to customers by normalized email; a guest checkout has no customer row, so
its opens are not kept (its orders still count for recency).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, or_, update

from connectors.kernel.runtime import Runtime
from connectors.kernel.vendor import engagement_class
from worker.config import AppConfig
from worker.factory import build_destination
from worker.settings import Settings
from worker.store import Store, schema

STREAM = "email_activity"


def record_engagement(store: Store, latest: dict[str, datetime]) -> int:
    """Raise ``last_engaged_at`` to each email's newest open/click; returns customer rows touched."""
    c = schema.customers.c
    statement = (
        update(schema.customers)
        .where(c.email == bindparam("e"), or_(c.last_engaged_at.is_(None), c.last_engaged_at < bindparam("t")))
        .values(last_engaged_at=bindparam("t"), ingest_seq=bindparam("seq"))
    )
    if not latest:
        return 0
    with store.engine.begin() as conn:
        # stamped like any ingest, so the columnar snapshot picks the change up incrementally
        seq, _ = store.reserve_ingest(conn, 0)
        result = conn.execute(statement, [{"e": email, "t": at, "seq": seq} for email, at in latest.items()])
    return int(result.rowcount or 0)


def pull_engagement(store: Store, config: AppConfig, settings: Settings, runtime: Runtime, now: datetime) -> int:
    """Read new opens/clicks from every configured engagement source; returns events applied."""
    applied = 0
    for name in config.engagement:
        dest_config = config.destinations[name]
        reader_cls = engagement_class(dest_config.type)
        if reader_cls is None:
            continue
        destination = build_destination(name, dest_config, settings, runtime)
        try:
            reader = reader_cls(destination)
            source = f"engagement:{name}"
            since = store.get_watermark(source, STREAM)
            newest = since
            for page in reader.last_engaged(since, now):
                applied += record_engagement(store, page)
                top = max(page.values())
                if newest is None or top > newest:
                    newest = top
            if newest is not None and newest != since:
                store.set_watermark(source, STREAM, newest)
        finally:
            destination.close()
    return applied
