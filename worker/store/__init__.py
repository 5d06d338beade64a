"""The durable store: SQL schema, versioned migrations and the queries the worker needs."""

from worker.store import schema
from worker.store.db import (
    ErasureProgress,
    ErasureRequest,
    FenceLost,
    InFlight,
    Marked,
    RunRow,
    Store,
    SyncRequest,
    Webhook,
    as_utc,
    open_store,
    utcnow,
)

__all__ = [
    "ErasureProgress",
    "ErasureRequest",
    "FenceLost",
    "InFlight",
    "Marked",
    "RunRow",
    "Store",
    "SyncRequest",
    "Webhook",
    "as_utc",
    "open_store",
    "schema",
    "utcnow",
]
