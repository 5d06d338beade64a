"""Shopify store webhooks on the control API: ``orders/*``, ``customers/*`` and consent changes.

A delivery is size-capped, HMAC-verified (:func:`~worker.webhooks.valid_shopify_hmac`), kept in the
``webhook_inbox`` table unique by ``X-Shopify-Webhook-Id`` and answered 200 at once; nothing before the
answer needs Redis. After the answer it asks for a small cycle (:func:`worker.inbox.webhook_cycle`),
debounced so a burst of deliveries becomes a few cycles: when a Celery worker is alive, one task per
``DEBOUNCE_SECONDS`` window (a Redis ``SET NX`` key coalesces the rest); without one (embedded mode),
in this process, one cycle at a time, the deliveries of a burst gathered into the next one. Whatever
happens to that request, the inbox says what is owed and the periodic cycle drains it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from fastapi import APIRouter, BackgroundTasks, Request

from connectors.kernel.identifiers import normalize_email, sha256_hex
from worker.config import AppConfig
from worker.inbox import CONSENT_TOPIC, STORE_TOPICS, webhook_cycle
from worker.queue import live_workers
from worker.settings import Settings
from worker.store import Store
from worker.webhooks import ANSWERS, _shop_host, verified_json

log = logging.getLogger(__name__)

#: how long a burst is gathered before its cycle starts (and the least time between two cycles)
DEBOUNCE_SECONDS = 2.0
#: how long "a worker is alive" (or "none is") is believed before Redis is asked again
WORKERS_SEEN_SECONDS = 10.0


def debounce_key(settings: Settings) -> str:
    return f"{settings.key_prefix}:webhook-cycle"


def _who(topic: str, payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """(email SHA-256, customer gid) a delivery is about, so an erasure can drop it before it is processed."""
    if topic.startswith("orders/"):
        customer = payload.get("customer") if isinstance(payload.get("customer"), dict) else {}
        email, ident = payload.get("email") or (customer or {}).get("email"), (customer or {}).get("id")
    elif topic == CONSENT_TOPIC:
        email, ident = payload.get("email_address"), payload.get("customer_id")
    else:
        email, ident = payload.get("email"), payload.get("id")
    normalized = normalize_email(email) if isinstance(email, str) else None
    gid = f"gid://shopify/Customer/{ident}" if isinstance(ident, int | str) and str(ident).isdigit() else None
    return (sha256_hex(normalized) if normalized else None), gid


class Debouncer:
    """Runs ``run`` on its own thread, one at a time: the first kick starts a wait of ``delay``, and
    every kick during the wait or the run is gathered into the next run. The thread ends when idle."""

    def __init__(self, run: Callable[[], object], delay: float = DEBOUNCE_SECONDS, idle: float = 30.0) -> None:
        self.run, self.delay, self.idle = run, delay, idle
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.cycles = 0

    def kick(self) -> None:
        with self._lock:
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="audience-sync webhook cycles", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            if not self._wake.wait(self.idle):
                with self._lock:
                    if not self._wake.is_set():
                        self._thread = None
                        return
            time.sleep(self.delay)  # gather the burst
            self._wake.clear()
            try:
                self.run()
            except Exception as exc:  # the inbox keeps what was not processed; the next cycle drains it
                from worker.pull import describe_error

                log.error("webhook cycle failed: %s; the next cycle processes what is left", describe_error(exc))
            self.cycles += 1


class WebhookCycles:
    """Asks for the cycle a delivery triggers: to the Celery workers when one is alive, else here."""

    def __init__(self, settings: Settings, store: Store, config: AppConfig, delay: float | None = None) -> None:
        self.settings, self.store, self.config = settings, store, config
        self.delay = DEBOUNCE_SECONDS if delay is None else delay
        self.local = Debouncer(self._run_here, self.delay)
        self._seen: tuple[float, bool] | None = None
        self._client: redis.Redis[bytes] | None = None

    def _run_here(self) -> None:
        from worker.cycle import sync_mapping
        from worker.factory import make_runtime

        runtime = make_runtime(self.settings)
        webhook_cycle(
            self.store,
            self.config,
            self.settings,
            runtime,
            lambda name: sync_mapping(self.store, self.config, self.settings, runtime, name),
        )

    def _workers_alive(self) -> bool:
        now = time.monotonic()
        if self._seen is not None and now - self._seen[0] < WORKERS_SEEN_SECONDS:
            return self._seen[1]
        alive = False
        with contextlib.suppress(redis.RedisError, OSError):
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self.settings.redis_url, socket_timeout=1, socket_connect_timeout=0.5
                )
            alive = live_workers(self._client, self.settings.key_prefix) > 0
        self._seen = (now, alive)
        return alive

    def _to_workers(self) -> bool:
        """True when the workers took it (or already have one coming in this window)."""
        if not self._workers_alive() or self._client is None:
            return False
        try:
            window = int(self.delay * 1000) + 1000
            if not self._client.set(debounce_key(self.settings), "1", nx=True, px=window):
                return True
            from worker.tasks import webhook_cycle_task

            webhook_cycle_task.apply_async(countdown=self.delay, retry=False)
            return True
        except Exception as exc:  # the broker is away: do it here
            log.warning("webhook cycle: the broker did not answer (%s); running it in this process", type(exc).__name__)
            self._seen = None
            return False

    def kick(self) -> None:
        if not self._to_workers():
            self.local.kick()


def store_webhook_router(settings: Settings, store: Store, config: AppConfig, cycles: WebhookCycles) -> APIRouter:
    router = APIRouter(prefix="/webhooks/shopify", tags=["webhooks"], responses=ANSWERS)
    secret = settings.shopify_webhook_secret
    ours = _shop_host(config)

    def endpoint(topic: str) -> Callable[..., Any]:
        async def receive(request: Request, background: BackgroundTasks) -> dict[str, Any]:
            raw, payload = await verified_json(request, topic, secret)
            shop = (request.headers.get("x-shopify-shop-domain") or "").strip().lower()
            if ours and shop and shop != ours:
                return {"received": False, "detail": "not this deployment's shop; nothing is kept"}
            # Shopify always sends an id; without one, the same body twice is the same delivery
            webhook_id = (request.headers.get("x-shopify-webhook-id") or "").strip()[:128]
            webhook_id = webhook_id or "body:" + hashlib.sha256(raw).hexdigest()[:64]
            email_sha256, customer_id = _who(topic, payload)
            text = raw.decode("utf-8", errors="replace")
            if not store.inbox_add(webhook_id, topic, text, email_sha256=email_sha256, customer_id=customer_id):
                return {"duplicate": True, "detail": "this delivery was received before"}
            background.add_task(cycles.kick)
            return {"received": True, "detail": "kept; audiences follow within a minute"}

        receive.__doc__ = f"Shopify's ``{topic}`` webhook: kept durably, answered at once, processed after."
        return receive

    for topic in STORE_TOPICS:
        router.add_api_route(f"/{topic}", endpoint(topic), methods=["POST"], name=f"webhook {topic}")
    return router
