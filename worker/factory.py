"""Builds connectors from the validated config; secrets come from settings, never from the file."""

from __future__ import annotations

from typing import Any

import redis
from pydantic import SecretStr

from connectors.destinations.base import Destination, DestinationConfig
from connectors.registry import destination_class, source_class
from connectors.runtime import Runtime
from connectors.sources.base import Source, SourceConfig
from worker.settings import Settings


def _secret_for(settings: Settings, kind: str) -> SecretStr | None:
    """``AUDIENCE_SYNC_<TYPE>_ACCESS_TOKEN`` or ``…_API_KEY``, by the connector's registry name."""
    for suffix in ("access_token", "api_key"):
        value = getattr(settings, f"{kind}_{suffix}", None)
        if isinstance(value, SecretStr):
            return value
    return None


def make_runtime(settings: Settings, redis_client: redis.Redis[bytes] | None = None, **overrides: Any) -> Runtime:
    values: dict[str, Any] = {
        "redis": redis_client,
        "key_prefix": settings.key_prefix,
        "default_phone_region": settings.default_phone_region,
        "retry_attempts": settings.retry_attempts,
        "retry_max_seconds": settings.retry_max_seconds,
    }
    return Runtime(**{**values, **overrides})


def build_source(config: SourceConfig, settings: Settings, runtime: Runtime) -> Source:
    cls = source_class(config.type)
    secret = _secret_for(settings, config.type)
    source: Source = cls(config, runtime, secret.get_secret_value() if secret else None)
    return source


def build_destination(name: str, config: DestinationConfig, settings: Settings, runtime: Runtime) -> Destination:
    if "secret" in type(config).model_fields and getattr(config, "secret", None) is None:
        secret = _secret_for(settings, config.type)
        if secret is not None:
            config = config.model_copy(update={"secret": secret})
    cls = destination_class(config.type)
    destination: Destination = cls(name, config, runtime)
    return destination
