"""WooCommerce REST API v3: orders (incrementally, by modification date) and customers (with consent from a
consent plugin's meta key), with a contract emulator over the sandbox's synthetic shop."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="woocommerce",
    source="connectors.woocommerce.source:WooCommerceSource",
    #: one variable holds the consumer key and secret as ``ck_…:cs_…``
    secrets={"secret": "AUDIENCE_SYNC_WOOCOMMERCE_SECRET"},
    sandbox="connectors.woocommerce.emulator:sandbox_emulator",
    contract="connectors.woocommerce.contract:WooCommerceContract",
    summary="orders and customers from the WooCommerce REST API v3",
)
