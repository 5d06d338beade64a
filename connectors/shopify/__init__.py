"""Shopify Admin GraphQL: orders and customers (with consent), incrementally, cost-throttle aware."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="shopify",
    source="connectors.shopify.source:ShopifySource",
    secrets={"secret": "AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN"},
    sandbox="connectors.shopify.emulator:sandbox_emulator",
    specs=("admin_2026-04.json.gz",),
    contract="connectors.shopify.contract:ShopifyContract",
    summary="orders and customers from the Admin GraphQL API",
)
