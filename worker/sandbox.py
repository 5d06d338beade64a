"""The built-in sandbox: ``sandbox`` as a URL in the config starts the matching contract emulator.

This is how ``audience-sync run`` and the demo work with no credentials: a synthetic Shopify store
and local destination emulators, real HTTP on 127.0.0.1, the same connectors as production.

The sandbox is one world that lasts between commands: with a state directory, the synthetic shop is
rebuilt from its recipe (seed, size, creation time, and every advance since) and each destination
emulator's audiences are saved when the sandbox closes and loaded when it opens again. So `run`, `erase`
or `preview` after the demo see the demo's shop and the audiences the demo pushed, and time that
passed between commands brings new orders, as a real shop would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import SecretStr

from connectors.kernel.emulator import EmulatorServer
from connectors.kernel.emulator_state import load_json, save_json
from connectors.kernel.vendor import vendors
from connectors.shopify.synthetic import Changes, SyntheticStore
from worker.config import AppConfig
from worker.settings import Settings

SANDBOX = "sandbox"
#: a sandbox shop sells about one order per eight customers a month
ORDERS_PER_CUSTOMER_DAY = 1 / 8 / 30


def needs_sandbox(config: AppConfig) -> bool:
    urls = [getattr(config.source, "shop_url", None), getattr(config.source, "base_url", None)]
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
        state_dir: Path | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.recipe: dict[str, Any] | None = None
        self.caught_up: Changes | None = None
        if store is not None:
            self.store = store
        elif state_dir is not None and (state_dir / "shop.json").exists():
            self.store = self._rebuild_shop(now)
        else:
            self.store = SyntheticStore(seed=seed, customers=customers, now=now, malformed=True)
            if state_dir is not None:
                self.recipe = {"seed": seed, "customers": customers, "created": self.store.now, "advances": []}
                save_json(state_dir / "shop.json", self.recipe)
        self.restore_rate = restore_rate
        self.emulators: dict[str, EmulatorServer] = {}
        self.secrets: dict[str, str] = {}

    # -- the shop's recipe -------------------------------------------------------------------
    def _rebuild_shop(self, now: datetime) -> SyntheticStore:
        assert self.state_dir is not None
        self.recipe = load_json(self.state_dir / "shop.json")
        recipe = self.recipe
        shop = SyntheticStore(seed=recipe["seed"], customers=recipe["customers"], now=recipe["created"], malformed=True)
        for days, orders in recipe["advances"]:
            shop.advance(days, orders)
        elapsed = (now.astimezone(UTC) - shop.now) / timedelta(days=1)
        orders = round(recipe["customers"] * ORDERS_PER_CUSTOMER_DAY * elapsed)
        if orders > 0:  # the shop kept selling while nobody looked
            self.store = shop
            self.caught_up = self.advance(elapsed, orders)
        return shop

    def advance(self, days: float, new_orders: int) -> Changes:
        """Move the shop's clock on (and remember it, so a later sandbox rebuilds the same shop)."""
        changes = self.store.advance(days, new_orders)
        if self.recipe is not None and self.state_dir is not None:
            self.recipe["advances"].append([days, new_orders])
            save_json(self.state_dir / "shop.json", self.recipe)
        return changes

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for kind, emulator in self.emulators.items():
            if self.state_dir is not None and emulator.state_attributes:
                save_json(self.state_dir / f"{kind}.json", emulator.export_state())
            emulator.stop()

    def _emulator(self, kind: str) -> tuple[EmulatorServer, str]:
        """The vendor's sandbox emulator, started once, with its saved state when there is one."""
        if kind not in self.emulators:
            declared = vendors().get(kind)
            if declared is None or declared.sandbox is None:
                raise ValueError(f"no sandbox emulator for type {kind!r}")
            emulator, secret = declared.part("sandbox")(self)
            saved = self.state_dir / f"{kind}.json" if self.state_dir is not None else None
            if saved is not None and saved.exists() and emulator.state_attributes:
                emulator.import_state(load_json(saved))
            emulator.start()
            self.emulators[kind] = emulator
            self.secrets[kind] = secret
        return self.emulators[kind], self.secrets[kind]

    def emulator(self, kind: str) -> EmulatorServer | None:
        return self.emulators.get(kind)

    def resolve(self, config: AppConfig, settings: Settings) -> tuple[AppConfig, Settings]:
        """``sandbox`` URLs (a source's or a destination's ``base_url``, Shopify's ``shop_url``) become
        the vendor's emulator, with the emulator's credential as the secret."""
        source = config.source
        url_field = next((f for f in ("base_url", "shop_url") if getattr(source, f, None) == SANDBOX), None)
        if url_field is not None:
            emulator, secret = self._emulator(source.type)
            source = source.model_copy(update={url_field: emulator.url, "secret": SecretStr(secret)})
        destinations = dict(config.destinations)
        for name, dest in config.destinations.items():
            if getattr(dest, "base_url", None) != SANDBOX:
                continue
            emulator, secret = self._emulator(dest.type)
            destinations[name] = dest.model_copy(update={"base_url": emulator.url, "secret": SecretStr(secret)})
        resolved = config.model_copy(update={"source": source, "destinations": destinations})
        return resolved, settings
