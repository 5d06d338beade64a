"""Klaviyo (API revision 2026-07-15): the contract emulator and its notes (``CONTRACT.md``)."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="klaviyo",
    destination="connectors.klaviyo.destination:KlaviyoDestination",
    engagement="connectors.klaviyo.activity:KlaviyoActivity",
    secrets={"secret": "AUDIENCE_SYNC_KLAVIYO_API_KEY"},
    sandbox="connectors.klaviyo.emulator:sandbox_emulator",
    specs=("stable.json.gz",),
    contract="connectors.klaviyo.contract:KlaviyoContract",
    summary="email list (profiles subscribed at Klaviyo only), membership by profile id",
)
