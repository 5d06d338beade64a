"""Contract-suite hooks for Meta custom audiences: rows of hashed keys; a poisoned hash is refused."""

from __future__ import annotations

from pathlib import Path

from connectors.kernel.contract import DestinationHooks
from connectors.kernel.destination import MappingOptions
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.records import Member
from connectors.meta.destination import MAX_ROWS, MetaConfig, MetaOptions, encode_identity
from connectors.meta.emulator import MetaEmulator


class MetaContract(DestinationHooks):
    audience = "23850000000000001"
    secret = "EAAtesttoken0123456789abcdef"
    request_limit = MAX_ROWS
    batch_paths = ("/users",)
    throttle_statuses = (400,)  # Graph errors: code 80003 with HTTP 400

    def make_emulator(self) -> MetaEmulator:
        return MetaEmulator(access_token=self.secret)

    def prepare(self, emulator: MetaEmulator) -> None:
        emulator.create_audience(self.audience)

    def make_config(self, emulator: MetaEmulator, secret: str, workdir: Path) -> MetaConfig:
        return MetaConfig(base_url=emulator.base_url, secret=secret, requests_per_second=1e6, burst=1e6)

    def options(self) -> MetaOptions:
        return MetaOptions(keys=["EMAIL", "PHONE", "FN", "LN", "COUNTRY"])

    def members_in(self, emulator: MetaEmulator, audience: str, options: MappingOptions, workdir: Path) -> set[str]:
        return {encode_identity([k for k, _ in row], tuple(v for _, v in row)) for row in emulator.audience(audience)}

    def refused_member(self, emulator: MetaEmulator) -> Member:
        emulator.poisoned.add(sha256_hex("refused@example.com"))
        return Member(key="r", email="refused@example.com", country="US")

    def refusing(self, emulator: MetaEmulator, member: Member) -> Member:
        assert member.email is not None
        emulator.poisoned.add(sha256_hex(member.email))
        return member
