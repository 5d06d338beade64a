"""Contract-suite hooks for the WooCommerce source: the synthetic shop served by the WooCommerce emulator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connectors.kernel.contract import SourceHooks
from connectors.kernel.emulator import Faults
from connectors.shopify.synthetic import SyntheticStore
from connectors.woocommerce.emulator import DEFAULT_CREDENTIALS, WooCommerceEmulator
from connectors.woocommerce.records import customer_ref, order_ref
from connectors.woocommerce.source import WooCommerceConfig
from connectors.woocommerce.synthetic import customer_id, order_id, wc_id


@dataclass
class WooCommerceWorld:
    shop: SyntheticStore
    emulator: WooCommerceEmulator


def ref(shop: SyntheticStore, gid: str) -> str:
    """Our id for a synthetic node's gid (``gid://shopify/Order/…`` → ``woocommerce:order:1042``)."""
    node = shop.node(gid)
    return customer_ref(wc_id(node)) if "/Customer/" in gid else order_ref(wc_id(node))


class WooCommerceContract(SourceHooks):
    secret = DEFAULT_CREDENTIALS

    def make_world(self, *, clock: Any = None, faults: Faults | None = None, **options: Any) -> WooCommerceWorld:
        """``clock`` is not needed: a host's firewall says how long to wait (Retry-After), it keeps no bucket."""
        shop = SyntheticStore(seed=31, customers=150, now=datetime(2026, 5, 1, tzinfo=UTC), malformed=True)
        return WooCommerceWorld(shop, WooCommerceEmulator(shop, faults=faults, **options))

    def make_config(self, world: WooCommerceWorld) -> WooCommerceConfig:
        # pages of 50 so that even the 150 customers take several requests
        return WooCommerceConfig(type="woocommerce", base_url=world.emulator.url, page_size=50)

    def expected_ids(self, world: WooCommerceWorld, stream: str) -> set[str]:
        if stream == "customers":
            return {customer_ref(customer_id(n)) for n in world.shop.customers}
        return {order_ref(order_id(n)) for n in world.shop.orders}

    def advance(self, world: WooCommerceWorld) -> dict[str, set[str]]:
        changes = world.shop.advance(5, new_orders=25)
        return {
            "orders": {ref(world.shop, g) for g in [*changes.new_orders, *changes.updated_orders]},
            "customers": {ref(world.shop, g) for g in [*changes.new_customers, *changes.updated_customers]},
        }

    def throttle(self, world: WooCommerceWorld) -> None:
        """The next three requests meet the host's firewall: 429 with Retry-After, 503 with, 503 without."""
        world.emulator.faults.throttle_storm = 3
