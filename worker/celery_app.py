"""The Celery app, built from settings (see celery-redis-reliability.md for why each option is set)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery, signals

from worker.settings import Settings, get_settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("audience_sync", broker=settings.redis_url, include=["worker.tasks"])
    transport = {
        # the longest a task may run unacknowledged, and the longest countdown we ever use
        "visibility_timeout": settings.visibility_timeout_seconds,
        # every key (queues, unacked index) under our prefix: never collide with another app
        "global_keyprefix": f"{settings.key_prefix}:celery:",
        # restore a dead worker's unacked tasks soon after the visibility timeout, not ~90 s later
        "unacked_restore_interval": 2,
        "unacked_restore_throttle": 1,
        # a worker killed while it holds the restore mutex (every 2 s, above) would block every
        # restore for kombu's default 300 s; a sweep takes milliseconds, and a message restored twice
        # is harmless here (task locks and fences end the duplicate as "busy")
        "unacked_mutex_expire": 15,
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # on a deploy's SIGTERM (remapped to SIGQUIT in docker-compose.yml) finish or requeue in-flight work
        worker_soft_shutdown_timeout=30.0,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
        beat_schedule={
            "cycle": {"task": "audience_sync.cycle", "schedule": timedelta(minutes=settings.cycle_minutes)},
            "daily-reconcile": {
                "task": "audience_sync.cycle",
                "schedule": timedelta(days=1),
                "kwargs": {"reread_hours": 48},
            },
        },
    )
    return app


app = make_celery(get_settings())
_heartbeats: list[Any] = []


@signals.worker_init.connect
def _log_our_lines(**_: Any) -> None:
    """Our own loggers (``worker.*``, ``connectors.*``) to the worker's output, redacted like every line."""
    import logging
    import sys

    from connectors.kernel.redact import install_log_redaction

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    install_log_redaction("celery", "celery.app.trace", "celery.worker")


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """Say we are alive, so a resync request can tell "queued" from "queued, but nobody listens"."""
    import redis

    from worker.queue import Heartbeat

    settings = get_settings()
    beat = Heartbeat(redis.Redis.from_url(settings.redis_url), settings.key_prefix, settings.queue, sender.hostname)
    beat.start()
    _heartbeats.append(beat)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    for beat in _heartbeats:
        beat.stop()
