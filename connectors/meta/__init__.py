"""Meta Marketing API custom audiences (customer file), multi-key rows of SHA-256 hashes."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="meta",
    destination="connectors.meta.destination:MetaDestination",
    secrets={"secret": "AUDIENCE_SYNC_META_ACCESS_TOKEN"},
    sandbox="connectors.meta.emulator:sandbox_emulator",
    contract="connectors.meta.contract:MetaContract",
    summary="Custom Audience (customer file), hashed keys, native replace",
)
