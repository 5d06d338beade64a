"""Alembic's environment and revisions of the store's schema (see :mod:`worker.store.migrations`)."""
