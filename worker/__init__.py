"""audience-sync worker: settings, store, segment engine, sync engine, Celery app, API and CLI."""
