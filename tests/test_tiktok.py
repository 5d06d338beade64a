"""TikTok custom audiences: what is TikTok's own, beyond the generated contract suite.

The bodies we send are checked against ``connectors/tiktok/schemas.py`` (TikTok publishes no machine-readable
spec); errors arrive as HTTP 200 envelopes with a non-zero ``code``; a bad id refuses a whole batch, so
unusable members are rejected before sending; phones go out as digits with the country code, no ``+``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest

from connectors.kernel.emulator import Request
from connectors.kernel.errors import (
    ConfigError,
    ConnectorError,
    LongPauseError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime
from connectors.kernel.vendor import destination_class, vendor
from connectors.tiktok.client import BLOCKED_WAIT, THROTTLE_WAIT, TikTokClient
from connectors.tiktok.destination import TikTokConfig, TikTokDestination, TikTokOptions
from connectors.tiktok.emulator import TikTokEmulator
from connectors.tiktok.rows import PhoneHashes, decode_identity, encode_identity, tiktok_phone
from connectors.tiktok.schemas import MAPPING_SCHEMA

TOKEN = "tt-unit-token-0123456789abcdef"
ADVERTISER = "7000000000000000042"
EMAIL, PHONE = "EMAIL_SHA256", "PHONE_SHA256"
BOTH = TikTokOptions()


class Clock:
    """Fake time: the destination's sleeps are recorded and move the emulator's quota window on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock: Clock) -> Iterator[TikTokEmulator]:
    with TikTokEmulator(TOKEN, advertiser_ids=[ADVERTISER], requests_per_second=1000, clock=lambda: clock.now) as emu:
        assert isinstance(emu, TikTokEmulator)
        yield emu


@pytest.fixture
def audience(emulator: TikTokEmulator) -> str:
    return emulator.create_audience(ADVERTISER, "repeat buyers")


def build(emulator: TikTokEmulator, clock: Clock, **config: Any) -> TikTokDestination:
    settings: dict[str, Any] = {
        "base_url": emulator.base_url,
        "secret": TOKEN,
        "advertiser_id": ADVERTISER,
        "requests_per_second": 1e6,
        "burst": 1e6,
        **config,
    }
    runtime = Runtime(sleep=clock.sleep, clock=lambda: clock.now, key_prefix=f"test-{uuid.uuid4().hex}")
    return TikTokDestination("tiktok", TikTokConfig(**settings), runtime)


@pytest.fixture
def destination(emulator: TikTokEmulator, clock: Clock) -> Iterator[TikTokDestination]:
    dest = build(emulator, clock)
    yield dest
    dest.close()


def person(i: int, **fields: Any) -> Member:
    values: dict[str, Any] = {"email": f"p{i}@example.com", "phone": f"+1212555{i:04d}", "country": "US", **fields}
    return Member(key=f"c{i}", email_consent=Consent.UNKNOWN, **values)


def held(emulator: TikTokEmulator, audience: str) -> set[str]:
    rows = [dict(row) for row in emulator.audience(audience)]
    return {encode_identity((EMAIL, PHONE), (row.get(EMAIL, ""), row.get(PHONE, ""))) for row in rows}


def mapping_bodies(emulator: TikTokEmulator) -> list[dict[str, Any]]:
    return [body for _, path, body in emulator.bodies if path.endswith("/segment/mapping/")]


# -- declaration ----------------------------------------------------------------------------------------
def test_the_vendor_is_declared_for_the_generated_suites_and_preview() -> None:
    declared = vendor("tiktok")
    assert destination_class("tiktok") is TikTokDestination
    assert declared.secrets == {"secret": "AUDIENCE_SYNC_TIKTOK_ACCESS_TOKEN"}
    assert declared.contract and declared.sandbox
    assert TikTokDestination.targeting_minimum == ("TikTok", 1000)
    assert TikTokDestination.audience_kind == "ads"
    assert TikTokConfig().base_url == "https://business-api.tiktok.com/open_api/v1.3"


# -- bodies ------------------------------------------------------------------------------------------
def test_bodies_match_the_schema_line_up_with_id_schema_and_carry_no_raw_pii(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str
) -> None:
    members = [person(1), person(2, phone=None), person(3, email=None), person(4, email="not an address")]
    added = destination.add(audience, members, BOTH)
    assert added.rejected == [] and len(added.accepted) == 4
    destination.remove(audience, added.accepted[:2], BOTH)
    bodies = mapping_bodies(emulator)
    assert [b["action"] for b in bodies] == ["add", "delete"]
    for body in bodies:
        jsonschema.validate(body, MAPPING_SCHEMA)
        assert body["advertiser_ids"] == [ADVERTISER] and body["id_schema"] == [EMAIL, PHONE]
        assert all(len(row) == 2 for row in body["batch_data"])
        text = json.dumps(body)
        assert "@" not in text and "212555" not in text
    first = bodies[0]["batch_data"]
    assert first[1] == [{"id": sha256_hex("p2@example.com"), "audience_ids": [audience]}, {}], "no phone: {}"
    assert first[2][0] == {} and first[3][0] == {}, "no usable email: {}"
    assert held(emulator, audience) == set(added.accepted[2:])


def test_the_token_goes_in_the_access_token_header_only(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str
) -> None:
    sent: list[httpx.Request] = []
    destination.client.client.event_hooks["request"].append(sent.append)
    destination.add(audience, [person(1)], BOTH)
    (request,) = sent
    assert request.headers["Access-Token"] == TOKEN and "authorization" not in request.headers
    assert TOKEN not in str(request.url) and not request.url.query
    assert str(request.url) == f"{emulator.base_url}/segment/mapping/"


# -- the envelope and the taxonomy ---------------------------------------------------------------------
def envelope(code: int, message: str = "boom", status: int = 200, request_id: str = "202612011200000000000A1") -> Any:
    body = {"code": code, "message": message, "request_id": request_id, "data": {}}
    return httpx.Response(status, json=body, request=httpx.Request("POST", "https://tt/open_api/v1.3/segment/mapping/"))


@pytest.mark.parametrize(
    ("code", "message", "expected", "text"),
    [
        (40100, "Too many requests.", RateLimitedError, "40100"),
        (40132, "Request frequency limited.", RateLimitedError, "40132"),
        (40105, "Access token is incorrect or has been revoked.", ConfigError, "re-authorise"),
        (40102, "Access token has expired.", ConfigError, "re-authorise"),
        (40104, "Access token is null, please check.", ConfigError, "re-authorise"),
        (40118, "Not in whitelist.", ConfigError, "allowlisted"),
        (40001, "No permission to operate advertiser 7000000000000000099.", ConfigError, "advertiser"),
        (40002, "Parameter error: invalid audience ID", ConfigError, "Partner audience"),
        (40002, "batch_data.0: 'audience_ids' is a dependency of 'id'", PermanentError, "40002"),
        (40061, "batch_data: at most 1000 rows per request", PermanentError, "batch_size"),
        (40062, "batch_data[3]: EMAIL_SHA256 id must be lowercase hex", PermanentError, "40062"),
        (50000, "System error.", RetryableError, "50000"),
        (51003, "DMP error.", RetryableError, "51003"),
        (40202, "Write conflict.", RetryableError, "40202"),
        (40300, "Advertiser does not exist.", ConfigError, "advertiser account"),
        (49999, "Something new.", PermanentError, "49999"),
    ],
)
def test_http_200_envelopes_map_onto_the_taxonomy(
    code: int, message: str, expected: type[ConnectorError], text: str
) -> None:
    client = TikTokClient("https://tt/open_api/v1.3")
    with pytest.raises(expected, match=text) as info:
        client.classify(envelope(code, message))
    client.close()
    assert info.value.status == 200 and info.value.code == str(code)
    assert "202612011200000000000A1" in info.value.message, "the request_id is in the message"
    if expected is PermanentError:
        assert not isinstance(info.value, (ConfigError, RetryableError))
    if expected is RetryableError:
        assert not isinstance(info.value, RateLimitedError)


def test_success_partial_ok_5xx_and_bodies_without_an_envelope() -> None:
    client = TikTokClient("https://tt/open_api/v1.3")
    client.classify(envelope(0, "OK"))
    client.classify(envelope(20001, "Partial OK"))
    with pytest.raises(RetryableError, match="50000"):
        client.classify(envelope(50000, "System error.", status=503))
    request = httpx.Request("POST", "https://tt/open_api/v1.3/segment/mapping/")
    with pytest.raises(RetryableError, match="not a TikTok envelope"):
        client.classify(httpx.Response(200, json={"hello": "proxy"}, request=request))
    with pytest.raises(RetryableError):
        client.classify(httpx.Response(502, text="<html>bad gateway</html>", request=request))
    client.close()


def test_throttle_waits_are_a_short_fixed_minimum_and_a_block_pauses_the_run() -> None:
    client = TikTokClient("https://tt/open_api/v1.3")
    with pytest.raises(RateLimitedError) as info:
        client.classify(envelope(40100))
    assert info.value.wait_seconds == THROTTLE_WAIT == 1.0
    with pytest.raises(RateLimitedError) as blocked:
        client.classify(envelope(61000, "Too many requests, blocked."))
    assert blocked.value.wait_seconds == BLOCKED_WAIT
    client.close()


# -- throttling, waited out with the injected sleep ------------------------------------------------------
def test_40100_is_waited_out_with_the_injected_sleep(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str, clock: Clock
) -> None:
    emulator.inject = [(40100, "Too many requests."), (40100, "Too many requests.")]
    result = destination.add(audience, [person(1), person(2)], BOTH)
    assert sorted(result.accepted) == sorted(held(emulator, audience)) and len(result.accepted) == 2
    assert len(clock.waits) == 2 and all(w >= THROTTLE_WAIT for w in clock.waits)
    assert [code for _, code in emulator.codes] == [40100, 40100, 0]
    assert destination.stats()["throttled"] == 2


def test_the_emulators_own_quota_is_waited_out_never_slept(
    emulator: TikTokEmulator, audience: str, clock: Clock
) -> None:
    emulator.requests_per_second = 1
    dest = build(emulator, clock, batch_size=1)
    result = dest.add(audience, [person(i) for i in range(3)], BOTH)
    dest.close()
    assert len(result.accepted) == 3 and len(held(emulator, audience)) == 3
    assert [code for _, code in emulator.codes].count(40100) >= 2
    assert clock.waits and all(w >= THROTTLE_WAIT for w in clock.waits)


def test_a_blocked_app_stops_the_run_for_a_long_pause(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str
) -> None:
    emulator.inject = [(61000, "Too many requests, blocked.")]
    with pytest.raises(LongPauseError) as info:
        destination.add(audience, [person(1)], BOTH)
    assert info.value.wait_seconds is not None and info.value.wait_seconds >= BLOCKED_WAIT


# -- auth and set-up -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["wrong", "expired"])
def test_auth_codes_are_config_errors_without_the_token_and_are_not_retried(
    emulator: TikTokEmulator, audience: str, clock: Clock, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = TOKEN
    if case == "wrong":
        secret = "wrong-" + TOKEN
    else:
        emulator.expire(TOKEN)
    dest = build(emulator, clock, secret=secret)
    with pytest.raises(ConfigError, match="re-authorise") as info:
        dest.add(audience, [person(1)], BOTH)
    dest.close()
    assert info.value.code == ("40105" if case == "wrong" else "40102")
    assert "request_id" in info.value.message
    text = str(info.value) + info.value.message + caplog.text
    assert TOKEN not in text and secret not in text
    assert len(emulator.log) == 1 and clock.waits == []


def test_an_unknown_audience_or_advertiser_needs_attention(
    destination: TikTokDestination, emulator: TikTokEmulator, clock: Clock
) -> None:
    with pytest.raises(ConfigError, match="Partner audience"):
        destination.add("7399999999999999999", [person(1)], BOTH)
    other = build(emulator, clock, advertiser_id="7000000000000000099")
    with pytest.raises(ConfigError, match="advertiser"):
        other.add(emulator.create_audience("7000000000000000099", "theirs"), [person(1)], BOTH)
    other.close()
    assert clock.waits == [], "no set-up error is retried"


def test_advertiser_id_and_a_numeric_audience_are_required_before_anything_is_sent(
    emulator: TikTokEmulator, audience: str, clock: Clock
) -> None:
    unset = build(emulator, clock, advertiser_id=None)
    with pytest.raises(ConfigError, match="advertiser_id"):
        unset.add(audience, [person(1)], BOTH)
    unset.close()
    dest = build(emulator, clock)
    with pytest.raises(ConfigError, match="audience id"):
        dest.add("repeat buyers", [person(1)], BOTH)
    dest.close()
    assert emulator.log == []
    with pytest.raises(ValueError):
        TikTokConfig(advertiser_id="adv-42")
    with pytest.raises(ValueError):
        TikTokConfig(batch_size=1001)


# -- rows checked before sending -----------------------------------------------------------------------
def test_unusable_members_are_rejected_unsent_and_the_rest_go_through(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str
) -> None:
    unusable = [person(90, email="nobody", phone="12"), person(91, email=None, phone="not a phone")]
    good = [person(1), person(2, phone=None)]
    result = destination.add(audience, [unusable[0], *good, unusable[1]], BOTH)
    expected = {destination.identity(m, BOTH) for m in unusable}
    assert {r.identity for r in result.rejected} == expected and len(result.rejected) == 1, "same identity once"
    assert {r.code for r in result.rejected} == {"no_identifier"} and all(r.reason for r in result.rejected)
    assert set(result.accepted) == {destination.identity(m, BOTH) for m in good} == held(emulator, audience)
    assert sum(len(b["batch_data"]) for b in mapping_bodies(emulator)) == 2
    only_email = TikTokOptions(keys=["EMAIL"])
    phone_only = destination.add(audience, [person(3, email=None)], only_email)
    assert [r.code for r in phone_only.rejected] == ["no_identifier"] and phone_only.accepted == []
    assert len(mapping_bodies(emulator)) == 1, "nothing usable: no request at all"


def test_identities_that_cannot_be_removed_are_rejected_and_do_not_block_the_batch(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str
) -> None:
    added = destination.add(audience, [person(1), person(2)], BOTH).accepted
    bad = ["garbage", f"{EMAIL},{PHONE}:|", f"{EMAIL},{PHONE}:{'A' * 64}|", f"EMAIL:{'a' * 64}", f"{EMAIL}:{'a' * 63}"]
    result = destination.remove(audience, [*bad, *added, added[0]], BOTH)
    assert sorted(r.identity for r in result.rejected) == sorted(bad)
    assert {r.code for r in result.rejected} == {"bad_identity"}
    assert sorted(result.accepted) == sorted(added), "each identity reported once"
    assert held(emulator, audience) == set()
    for body in mapping_bodies(emulator):
        jsonschema.validate(body, MAPPING_SCHEMA)


def test_a_batch_tiktok_refuses_for_one_id_is_halved_until_that_row_is_found(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned = sha256_hex("p3@example.com")
    original = emulator._mapping

    def stricter(request: Request, body: Any) -> tuple[int, str, Any, int | None]:
        ids = {cell.get("id") for row in body["batch_data"] for cell in row}
        if poisoned in ids:
            return 40062, "batch_data: EMAIL_SHA256 id must be lowercase hex of its hash", None, None
        return original(request, body)

    monkeypatch.setattr(emulator, "_mapping", stricter)
    members = [person(i) for i in range(8)]
    result = destination.add(audience, members, BOTH)
    assert [r.identity for r in result.rejected] == [destination.identity(members[3], BOTH)]
    assert result.rejected[0].code == "not_hashed"
    others = {destination.identity(m, BOTH) for i, m in enumerate(members) if i != 3}
    assert set(result.accepted) == others == held(emulator, audience)
    assert destination.stats()["bisections"] >= 3


def test_partial_ok_is_counted_and_logged_as_accepted(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.inject = [(20001, "Partial OK")]
    result = destination.add(audience, [person(1)], BOTH)
    assert len(result.accepted) == 1 and destination.stats()["partial_ok"] == 1
    assert "PARTIAL_OK" in caplog.text


def test_batches_follow_the_configured_size(emulator: TikTokEmulator, audience: str, clock: Clock) -> None:
    dest = build(emulator, clock, batch_size=2)
    assert dest.batch_size == 2
    result = dest.add(audience, [person(i) for i in range(5)], BOTH)
    dest.close()
    assert len(result.accepted) == 5
    assert [entry.items for entry in emulator.log] == [2, 2, 1]


# -- identities and normalization ------------------------------------------------------------------------
def test_identity_round_trips_and_a_missing_value_is_empty(destination: TikTokDestination) -> None:
    identity = destination.identity(person(1, phone=None), BOTH)
    assert identity == f"{EMAIL},{PHONE}:{sha256_hex('p1@example.com')}|"
    assert decode_identity(identity) == ((EMAIL, PHONE), (sha256_hex("p1@example.com"), ""))
    phone_first = destination.identity(person(1), TikTokOptions(keys=["PHONE", "EMAIL"]))
    assert phone_first.startswith(f"{PHONE},{EMAIL}:")
    assert decode_identity("EMAIL,PHONE:a|b") is None and decode_identity(f"{EMAIL}:a|b") is None


@pytest.mark.parametrize(
    ("raw", "country", "digits"),
    [
        ("(212) 555-0100", "US", "12125550100"),
        ("+1 212 555 0100", None, "12125550100"),
        ("020 7946 0018", "GB", "442079460018"),
        ("+44 20 7946 0018", "US", "442079460018"),
        ("030 901820", "de", "4930901820"),
    ],
)
def test_phones_are_hashed_as_digits_with_the_country_code_and_no_plus(
    destination: TikTokDestination, raw: str, country: str | None, digits: str
) -> None:
    member = Member(key="x", email=None, phone=raw, country=country)
    assert destination.row(member, ["PHONE"]) == (sha256_hex(digits),)
    assert destination.row(member, ["PHONE"]) != (sha256_hex("+" + digits),)
    region = (country or "US").upper()
    assert tiktok_phone(raw, region) == digits


def test_an_invalid_phone_is_no_value_and_the_body_carries_the_digits_hash(
    destination: TikTokDestination, emulator: TikTokEmulator, audience: str
) -> None:
    assert tiktok_phone("555", "US") is None and tiktok_phone(None, "US") is None
    destination.add(audience, [person(7, email=None, phone="+1 (212) 555-0107")], BOTH)
    (body,) = mapping_bodies(emulator)
    assert body["batch_data"] == [[{}, {"id": sha256_hex("12125550107"), "audience_ids": [audience]}]]


def test_the_phone_cache_holds_only_digests_and_forgets_the_least_recently_used() -> None:
    cache = PhoneHashes(2)
    first = cache("+1 212 555 0100", "US")
    assert first == sha256_hex("12125550100") and cache("", "US") == ""
    cache("+1 212 555 0101", "US")
    cache("+1 212 555 0100", "US")  # used again: the 0101 entry is now the oldest
    cache("+1 212 555 0102", "US")
    stored = cache._known
    assert len(stored) == 2 and all(isinstance(k, bytes) and len(k) == 32 for k in stored)
    assert sha256_hex("12125550101") not in stored.values()
    assert "12125550100" not in repr(stored) and "212 555" not in repr(stored)
    assert cache("0100", "GB") == "" and cache("2125550100", "US") == first, "the region is part of the key"


def test_destinations_of_one_advertiser_share_one_request_bucket(emulator: TikTokEmulator) -> None:
    runtime = Runtime(sleep=lambda s: None, key_prefix=f"test-{uuid.uuid4().hex}")
    config = TikTokConfig(base_url=emulator.base_url, secret=TOKEN, advertiser_id=ADVERTISER)
    one, two = TikTokDestination("a", config, runtime), TikTokDestination("b", config, runtime)
    other = TikTokDestination("c", config.model_copy(update={"advertiser_id": "7000000000000000099"}), runtime)
    assert one.client.rate_limiter is two.client.rate_limiter is not other.client.rate_limiter
    for dest in (one, two, other):
        dest.close()
