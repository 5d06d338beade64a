"""Contract-suite hooks for TikTok custom audiences: rows of hashed email and phone in a Partner audience.

``refuses_members`` is False: TikTok answers a ``segment/mapping`` call as a whole and says nothing per
row (one bad id refuses the batch, CONTRACT.md §2.3). The connector checks every row before sending and
rejects unusable members itself, so there is no member the platform can be made to refuse alone; that
local rejection is tested in ``tests/test_tiktok.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from connectors.kernel.contract import DestinationHooks
from connectors.kernel.destination import MappingOptions
from connectors.kernel.emulator import Request, Response
from connectors.tiktok.destination import MAPPING_PATH, TikTokConfig, TikTokOptions
from connectors.tiktok.emulator import TikTokEmulator
from connectors.tiktok.rows import encode_identity, id_schema
from connectors.tiktok.schemas import MAX_MAPPING_ROWS

ADVERTISER = "7000000000000000042"
#: how the suite's emulator logs a 40100 answer (the wire still carries HTTP 200; see ContractEmulator)
THROTTLE_LOGGED_AS = 429


class ContractEmulator(TikTokEmulator):
    """The emulator as the generated suites see it: its own quota is off (the suites' fake sleep moves no
    clock), throttle storms answer 40100 envelopes as TikTok does.

    The suite counts throttle answers by the status in the harness log, where a TikTok throttle (HTTP 200)
    looks like any success; so a 40100 answer is logged under ``THROTTLE_LOGGED_AS``. Only the log says so.
    """

    def __init__(self, access_token: str) -> None:
        super().__init__(access_token, advertiser_ids=(ADVERTISER,), requests_per_second=10**9)
        self._local = threading.local()

    def throttled(self, request: Request) -> Response:
        self._local.throttled = True
        return super().throttled(request)

    def record(self, request: Request, status: int, items: int | None = None) -> None:
        if getattr(self._local, "throttled", False):
            self._local.throttled = False
            status = THROTTLE_LOGGED_AS
        super().record(request, status, items)


class TikTokContract(DestinationHooks):
    #: the first id the emulator hands out (``prepare`` checks it)
    audience = "7300000000000000001"
    secret = "tt-contract-token-0123456789abcdef"
    request_limit = MAX_MAPPING_ROWS
    batch_paths = (MAPPING_PATH,)
    throttle_statuses = (THROTTLE_LOGGED_AS,)
    refuses_members = False

    def make_emulator(self) -> ContractEmulator:
        return ContractEmulator(self.secret)

    def prepare(self, emulator: TikTokEmulator) -> None:
        created = emulator.create_audience(ADVERTISER, "contract suite")
        assert created == self.audience, f"the emulator handed out {created}, not {self.audience}"

    def make_config(self, emulator: TikTokEmulator, secret: str, workdir: Path) -> TikTokConfig:
        return TikTokConfig(
            base_url=emulator.base_url, secret=secret, advertiser_id=ADVERTISER, requests_per_second=1e6, burst=1e6
        )

    def options(self) -> TikTokOptions:
        return TikTokOptions()

    def members_in(self, emulator: TikTokEmulator, audience: str, options: MappingOptions, workdir: Path) -> set[str]:
        """Each stored row (its ``(type, hash)`` pairs) in our identity format, ``""`` for a missing column."""
        assert isinstance(options, TikTokOptions)
        schema = id_schema(options.keys)
        held: set[str] = set()
        for row in emulator.audience(audience):
            values = dict(row)
            assert set(values) <= set(schema), f"a row with columns we never send: {sorted(values)}"
            held.add(encode_identity(schema, tuple(values.get(column, "") for column in schema)))
        return held
