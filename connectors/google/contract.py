"""Contract-suite hooks for Google Customer Match: a user list in one Google Ads account, reached with
authorized-user credentials the emulator issues tokens for; a record Google counts as invalid is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from connectors.google.destination import MAX_MEMBERS, GoogleConfig, GoogleOptions, ProductAccount
from connectors.google.emulator import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEFAULT_USER,
    REFRESH_TOKEN,
    GoogleDataManagerEmulator,
    MemberRecord,
)
from connectors.google.members import encode_identity
from connectors.kernel.contract import DestinationHooks
from connectors.kernel.destination import MappingOptions
from connectors.kernel.identifiers import normalize_email, sha256_hex
from connectors.kernel.records import Consent, Member

ACCOUNT = "1234567890"
LIST = "7001"
UNLIMITED = (10**9, 10**9)


def credentials_json(refresh_token: str) -> str:
    """Authorized-user info as google-auth reads it, for the emulator's OAuth client."""
    info = {"type": "authorized_user", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return json.dumps({**info, "refresh_token": refresh_token})


def record_identity(record: MemberRecord, keys: list[str]) -> str:
    """A stored member in our identity format; a member Google merged from several shows all their hashes."""
    prefixes = {"EMAIL": "email:", "PHONE": "phone:"}
    values = []
    for key in keys:
        prefix = prefixes[key]
        values.append("+".join(sorted(k.removeprefix(prefix) for k in record.keys if k.startswith(prefix))))
    return encode_identity(keys, tuple(values))


class GoogleContract(DestinationHooks):
    audience = LIST
    #: the part of the credentials the emulator checks (a wrong one is refused at the token endpoint);
    #: ``make_config`` wraps it in the authorized-user JSON the variable holds
    secret = REFRESH_TOKEN
    request_limit = MAX_MEMBERS
    batch_paths = ("/v1/audienceMembers:",)
    throttle_statuses = (429,)

    def make_emulator(self) -> GoogleDataManagerEmulator:
        # quotas off (the harness's throttle storms still answer Google's 429); one PROCESSING poll per request
        return GoogleDataManagerEmulator(processing_polls=1, mutate_quota=UNLIMITED, read_quota=UNLIMITED)

    def prepare(self, emulator: GoogleDataManagerEmulator) -> None:
        emulator.grant(DEFAULT_USER, ACCOUNT)
        emulator.create_user_list(ACCOUNT, LIST)

    def make_config(self, emulator: GoogleDataManagerEmulator, secret: str, workdir: Path) -> GoogleConfig:
        return GoogleConfig(
            base_url=emulator.base_url,
            token_uri=emulator.token_uri,
            secret=credentials_json(secret),
            operating_account=ProductAccount(account_id=ACCOUNT),
            terms_accepted=True,
            requests_per_minute=1e9,
            burst=1e9,
        )

    def options(self) -> GoogleOptions:
        return GoogleOptions()

    def members_in(
        self, emulator: GoogleDataManagerEmulator, audience: str, options: MappingOptions, workdir: Path
    ) -> set[str]:
        assert isinstance(options, GoogleOptions)
        keys = [str(k) for k in options.keys]
        return {record_identity(r, keys) for r in emulator.member_records(ACCOUNT, audience)}

    def refused_member(self, emulator: GoogleDataManagerEmulator) -> Member:
        member = Member(key="r", email="refused@example.com", country="US", email_consent=Consent.SUBSCRIBED)
        return self.refusing(emulator, member)

    def refusing(self, emulator: GoogleDataManagerEmulator, member: Member) -> Member:
        """Google accepts the request, then counts the record as PROCESSING_ERROR_REASON_INVALID_FORMAT."""
        email = normalize_email(member.email)
        assert email is not None
        emulator.poisoned.add(sha256_hex(email))
        return member

    def member(self, i: int) -> Member:
        """The suite's member with a phone number of its own: Google treats members sharing an identifier
        as one person (the emulator merges them), and the default numbers repeat every 10,000 members."""
        return replace(super().member(i), phone=f"+1212{200 + i // 10_000:03d}{i % 10_000:04d}")
