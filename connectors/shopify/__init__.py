"""Shopify Admin GraphQL: orders and customers (with consent), incrementally, cost-throttle aware."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="shopify",
    source="connectors.shopify.source:ShopifySource",
    secrets={
        "secret": "AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN",
        # expiring offline tokens (connectors/shopify/tokens.py): the first refresh token and the app's secret
        "refresh_token": "AUDIENCE_SYNC_SHOPIFY_REFRESH_TOKEN",
        "client_secret": "AUDIENCE_SYNC_SHOPIFY_CLIENT_SECRET",
    },
    sandbox="connectors.shopify.emulator:sandbox_emulator",
    specs=("admin_2026-04.json.gz",),
    contract="connectors.shopify.contract:ShopifyContract",
    summary="orders and customers from the Admin GraphQL API",
)
