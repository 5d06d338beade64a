"""Process-wide handles (store, Redis, config), created lazily so forked workers open their own."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import redis

from connectors.kernel.runtime import Runtime
from worker.config import AppConfig, load_config
from worker.factory import make_runtime
from worker.settings import Settings, get_settings
from worker.store import Store, open_store


@dataclass
class Context:
    settings: Settings

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings.database_url)

    @cached_property
    def config(self) -> AppConfig:
        return load_config(self.settings.config)

    @cached_property
    def redis(self) -> redis.Redis[bytes]:
        return redis.Redis.from_url(self.settings.redis_url)

    @cached_property
    def runtime(self) -> Runtime:
        return make_runtime(self.settings, self.redis)


_CONTEXT: Context | None = None


def context() -> Context:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = Context(get_settings())
    return _CONTEXT
