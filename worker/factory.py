"""Builds connectors from the validated config; secrets come from the vendor's declared variables."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import redis

from connectors.kernel.destination import Destination, DestinationConfig
from connectors.kernel.runtime import Runtime
from connectors.kernel.source import Source, SourceConfig
from connectors.kernel.vendor import destination_class, source_class, vendors
from worker.secrets import read_secret
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.store import Store


def make_runtime(settings: Settings, redis_client: redis.Redis[bytes] | None = None, **overrides: Any) -> Runtime:
    values: dict[str, Any] = {
        "redis": redis_client,
        "key_prefix": settings.key_prefix,
        "default_phone_region": settings.default_phone_region,
        "retry_attempts": settings.retry_attempts,
        "retry_max_seconds": settings.retry_max_seconds,
    }
    return Runtime(**{**values, **overrides})


def _with_secrets(config: Any, settings: Settings) -> Any:
    """The config with each declared secret filled from its variable, unless already given."""
    declared = vendors()[config.type].secrets
    updates = {
        field: secret
        for field, variable in declared.items()
        if field in type(config).model_fields
        and getattr(config, field, None) is None
        and (secret := read_secret(settings, variable)) is not None
    }
    return config.model_copy(update=updates) if updates else config


def build_source(config: SourceConfig, settings: Settings, runtime: Runtime, store: Store | None = None) -> Source:
    """The source; with ``store``, rotating tokens are kept there (encrypted with the secret key)."""
    cls = source_class(config.type)
    if store is not None and runtime.credentials is None:
        from worker.credentials import SqlCredentials

        runtime = dataclasses.replace(runtime, credentials=SqlCredentials(store, settings.secret_key))
    source: Source = cls(_with_secrets(config, settings), runtime)
    return source


def build_destination(name: str, config: DestinationConfig, settings: Settings, runtime: Runtime) -> Destination:
    cls = destination_class(config.type)
    destination: Destination = cls(name, _with_secrets(config, settings), runtime)
    return destination
