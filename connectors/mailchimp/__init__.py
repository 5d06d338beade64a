"""Mailchimp Marketing API v3: an email list, membership kept as a static segment (tag)."""

from connectors.kernel.vendor import Vendor

VENDOR = Vendor(
    name="mailchimp",
    destination="connectors.mailchimp.destination:MailchimpDestination",
    engagement="connectors.mailchimp.activity:MailchimpActivity",
    secrets={"secret": "AUDIENCE_SYNC_MAILCHIMP_API_KEY"},
    sandbox="connectors.mailchimp.emulator:sandbox_emulator",
    specs=("marketing-3.0.55.UNOFFICIAL-openapi-generator.yaml.gz",),
    contract="connectors.mailchimp.contract:MailchimpContract",
    summary="email list (consented contacts only), membership as a static segment",
)
