"""The built-in sandbox: ``sandbox`` as a URL in the config starts the matching contract emulator.

This is how ``audience-sync run`` and the demo work with no credentials: a synthetic Shopify store
and local destination emulators, real HTTP on 127.0.0.1, the same connectors as production.
Emulators register themselves below by connector name; the sandbox knows no vendor beyond that.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from types import TracebackType
from typing import Any

from pydantic import SecretStr

from connectors.emulators.server import EmulatorServer
from connectors.emulators.synthetic import SyntheticStore
from worker.config import AppConfig
from worker.settings import Settings

SANDBOX = "sandbox"

#: connector name -> (module, factory) building (emulator, secret) for the sandbox
EMULATORS: dict[str, tuple[str, str]] = {
    "mailchimp": ("connectors.emulators.mailchimp", "sandbox_emulator"),
    "meta": ("connectors.emulators.meta", "sandbox_emulator"),
}


def needs_sandbox(config: AppConfig) -> bool:
    urls = [getattr(config.source, "shop_url", None)]
    urls += [getattr(d, "base_url", None) for d in config.destinations.values()]
    return SANDBOX in urls


class Sandbox:
    """Starts emulators on demand and rewrites a config's ``sandbox`` URLs to them."""

    def __init__(
        self,
        now: datetime,
        *,
        store: SyntheticStore | None = None,
        customers: int = 5000,
        seed: int = 2026,
        restore_rate: float = 5000.0,
    ) -> None:
        self.store = store or SyntheticStore(seed=seed, customers=customers, now=now, malformed=True)
        self.restore_rate = restore_rate
        self.emulators: dict[str, EmulatorServer] = {}
        self.secrets: dict[str, str] = {}

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for emulator in self.emulators.values():
            emulator.stop()

    def _shopify(self) -> tuple[str, str]:
        from connectors.emulators.shopify import DEFAULT_TOKEN, ShopifyEmulator

        if "shopify" not in self.emulators:
            # a large plan's restore rate keeps the demo quick; the throttle itself is tested elsewhere
            emulator = ShopifyEmulator(self.store, restore_rate=self.restore_rate, bucket_size=20000)
            emulator.start()
            self.emulators["shopify"] = emulator
        return self.emulators["shopify"].url, DEFAULT_TOKEN

    def _destination(self, kind: str) -> tuple[EmulatorServer, str]:
        key = f"dest:{kind}"
        if key not in self.emulators:
            try:
                module, factory = EMULATORS[kind]
            except KeyError:
                raise ValueError(f"no sandbox emulator for destination type {kind!r}") from None
            emulator, secret = getattr(importlib.import_module(module), factory)()
            emulator.start()
            self.emulators[key] = emulator
            self.secrets[key] = secret
        return self.emulators[key], self.secrets[key]

    def emulator(self, kind: str) -> EmulatorServer | None:
        return self.emulators.get(f"dest:{kind}") or self.emulators.get(kind)

    def resolve(self, config: AppConfig, settings: Settings) -> tuple[AppConfig, Settings]:
        updates: dict[str, Any] = {}
        source = config.source
        if getattr(source, "shop_url", None) == SANDBOX:
            url, token = self._shopify()
            source = source.model_copy(update={"shop_url": url})
            updates["shopify_access_token"] = SecretStr(token)
        destinations = dict(config.destinations)
        for name, dest in config.destinations.items():
            if getattr(dest, "base_url", None) != SANDBOX:
                continue
            emulator, secret = self._destination(dest.type)
            destinations[name] = dest.model_copy(update={"base_url": emulator.url, "secret": SecretStr(secret)})
        resolved = config.model_copy(update={"source": source, "destinations": destinations})
        return resolved, settings.model_copy(update=updates)
