"""Audience files: the current members of each audience as a CSV file (an export, and the sandbox's)."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="file",
    destination="connectors.file.destination:FileDestination",
    contract="connectors.file.contract:FileContract",
    summary="a CSV file per audience, rewritten atomically: an export for platforms without a connector",
)
