"""TikTok Business API (custom audiences through the Segment API): request schemas, emulator and contract notes."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="tiktok",
    destination="connectors.tiktok.destination:TikTokDestination",
    secrets={"secret": "AUDIENCE_SYNC_TIKTOK_ACCESS_TOKEN"},
    sandbox="connectors.tiktok.emulator:sandbox_emulator",
    contract="connectors.tiktok.contract:TikTokContract",
    summary="Custom Audience (Segment API, Partner audience), hashed email and phone",
)
