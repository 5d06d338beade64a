"""Contract-suite hooks for Mailchimp: a list whose tag segment is the audience."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from connectors.kernel.contract import DestinationHooks
from connectors.kernel.destination import MappingOptions
from connectors.kernel.records import Consent, Member
from connectors.mailchimp.destination import MAX_MEMBERS, MailchimpConfig, MailchimpOptions
from connectors.mailchimp.emulator import MailchimpEmulator

LIST = "list0001"


class MailchimpContract(DestinationHooks):
    audience = LIST
    secret = "0123456789abcdef0123456789abcdef-us1"
    request_limit = MAX_MEMBERS
    batch_paths = (f"/lists/{LIST}",)

    def make_emulator(self) -> MailchimpEmulator:
        return MailchimpEmulator(api_key=self.secret)

    def prepare(self, emulator: MailchimpEmulator) -> None:
        emulator.create_list(LIST)

    def make_config(self, emulator: MailchimpEmulator, secret: str, workdir: Path) -> MailchimpConfig:
        return MailchimpConfig(base_url=emulator.base_url, secret=secret)

    def options(self) -> MailchimpOptions:
        return MailchimpOptions(tag="vip")

    def members_in(
        self, emulator: MailchimpEmulator, audience: str, options: MappingOptions, workdir: Path
    ) -> set[str]:
        assert isinstance(options, MailchimpOptions)
        segment = options.segment_id or (emulator.segment_by_name(audience, options.tag) if options.tag else None)
        return set() if segment is None else emulator.segment_members(audience, segment)

    def refused_member(self, emulator: MailchimpEmulator) -> Member:
        return Member(key="fake", email="someone@nowhere.invalid", email_consent=Consent.SUBSCRIBED)

    def refusing(self, emulator: MailchimpEmulator, member: Member) -> Member:
        return replace(member, email=f"{member.key}@example.invalid")  # a fake address, refused
