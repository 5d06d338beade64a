"""Contract-suite hooks for Klaviyo: a list whose members are profiles subscribed at Klaviyo.

The account is seeded as a shop's Klaviyo account would be: everyone the suites send already has a
SUBSCRIBED profile (Klaviyo's store integration records consent; we never do). A member is refused
by making their profile UNSUBSCRIBED at Klaviyo.
"""

from __future__ import annotations

from pathlib import Path

from connectors.kernel.contract import DestinationHooks
from connectors.kernel.destination import MappingOptions
from connectors.kernel.records import Consent, Member
from connectors.klaviyo.destination import MAX_LIST_MEMBERS, KlaviyoConfig, KlaviyoOptions
from connectors.klaviyo.emulator import UNSUBSCRIBED, KlaviyoEmulator, Limits

LIST = "Y6nRLr"
#: profiles seeded SUBSCRIBED: every ``member(i)`` the generated suites send (at scale: 55,000)
SEEDED = 60_000
#: the emulator's windows never throttle here: throttling comes from the suites' storms only
NO_LIMITS = Limits(burst=10**9, steady=10**9)


class KlaviyoContract(DestinationHooks):
    audience = LIST
    secret = "pk_contract_0123456789abcdef01234567"
    request_limit = MAX_LIST_MEMBERS
    batch_paths = ("/relationships/profiles",)
    throttle_statuses = (429,)

    def make_emulator(self) -> KlaviyoEmulator:
        return KlaviyoEmulator(api_key=self.secret, limits=NO_LIMITS)

    def prepare(self, emulator: KlaviyoEmulator) -> None:
        emulator.create_list("Contract suite", LIST)
        emulator.seed_profiles(f"person{i}@example.com" for i in range(SEEDED))

    def make_config(self, emulator: KlaviyoEmulator, secret: str, workdir: Path) -> KlaviyoConfig:
        # the suites' runtime sleeps without time passing: our own buckets must never run dry
        return KlaviyoConfig(base_url=emulator.url, secret=secret, rate_scale=1e6)

    def options(self) -> KlaviyoOptions:
        return KlaviyoOptions()

    def members_in(self, emulator: KlaviyoEmulator, audience: str, options: MappingOptions, workdir: Path) -> set[str]:
        return emulator.list_members(audience)

    def refused_member(self, emulator: KlaviyoEmulator) -> Member:
        emulator.add_profile("unsubscribed@example.com", UNSUBSCRIBED)
        return Member(key="u", email="unsubscribed@example.com", email_consent=Consent.SUBSCRIBED)

    def refusing(self, emulator: KlaviyoEmulator, member: Member) -> Member:
        """Subscribed in our data, unsubscribed at Klaviyo: Klaviyo's word wins."""
        assert member.email is not None
        emulator.add_profile(member.email, UNSUBSCRIBED)
        return member
