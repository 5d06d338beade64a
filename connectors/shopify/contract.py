"""Contract-suite hooks for the Shopify source: a synthetic shop served by the emulator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connectors.kernel.contract import SourceHooks
from connectors.shopify.emulator import DEFAULT_TOKEN, ShopifyEmulator
from connectors.shopify.source import ShopifyConfig
from connectors.shopify.synthetic import SyntheticStore


@dataclass
class ShopifyWorld:
    shop: SyntheticStore
    emulator: ShopifyEmulator


class ShopifyContract(SourceHooks):
    secret = DEFAULT_TOKEN

    def make_world(self, **emulator_options: Any) -> ShopifyWorld:
        shop = SyntheticStore(seed=31, customers=150, now=datetime(2026, 5, 1, tzinfo=UTC), malformed=True)
        options = {"restore_rate": 10_000.0, "bucket_size": 20_000.0, **emulator_options}
        return ShopifyWorld(shop, ShopifyEmulator(shop, **options))

    def make_config(self, world: ShopifyWorld) -> ShopifyConfig:
        return ShopifyConfig(type="shopify", shop_url=world.emulator.url)

    def expected_ids(self, world: ShopifyWorld, stream: str) -> set[str]:
        nodes = world.shop.customers if stream == "customers" else world.shop.orders
        return {str(n["id"]) for n in nodes}

    def advance(self, world: ShopifyWorld) -> dict[str, set[str]]:
        changes = world.shop.advance(5, new_orders=25)
        return {
            "orders": set(changes.new_orders) | set(changes.updated_orders),
            "customers": set(changes.new_customers) | set(changes.updated_customers),
        }

    def throttle(self, world: ShopifyWorld) -> None:
        world.emulator.faults.throttle_storm = 3
