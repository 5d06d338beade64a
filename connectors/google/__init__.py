"""Google Customer Match through the Data Manager API: discovery-document validator and contract emulator."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="google",
    destination="connectors.google.destination:GoogleDestination",
    secrets={"secret": "AUDIENCE_SYNC_GOOGLE_CREDENTIALS"},
    sandbox="connectors.google.emulator:sandbox_emulator",
    specs=("datamanager.v1.json.gz",),
    contract="connectors.google.contract:GoogleContract",
    summary="Customer Match list via the Data Manager API, hashed email and phone, consent per member",
)
