"""The durable store: SQL schema, versioned migrations and the queries the worker needs."""

from worker.store.db import Store, open_store

__all__ = ["Store", "open_store"]
