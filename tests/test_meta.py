"""Meta custom audiences: the shared contract, then Meta's own codes, sessions and hashing rules.

Meta publishes no OpenAPI file, so the bodies we send are checked against ``META_BODY_SCHEMA``,
a JSON Schema we wrote from api-contracts.md §6.2 (payload/schema/data/is_raw, session fields,
10,000 rows), tightened with our own rule that every value is pre-hashed SHA-256 hex.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest

from connectors.kernel.errors import ConfigError, LongPauseError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime
from connectors.meta import destination as meta_module
from connectors.meta.destination import (
    MetaClient,
    MetaConfig,
    MetaDestination,
    MetaKey,
    MetaOptions,
    decode_identity,
    encode_identity,
)
from connectors.meta.emulator import MetaEmulator

AUDIENCE = "23850000000000001"
TOKEN = "EAAtesttoken0123456789abcdef"
ALL_KEYS: list[MetaKey] = ["EMAIL", "PHONE", "FN", "LN", "COUNTRY"]
HEX_OR_EMPTY = {"type": "string", "pattern": "^([0-9a-f]{64})?$"}
META_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["payload"],
    "additionalProperties": False,
    "properties": {
        "payload": {
            "type": "object",
            "required": ["schema", "data"],
            "additionalProperties": False,
            "properties": {
                "schema": {
                    "oneOf": [
                        {"enum": ["EMAIL_SHA256", "PHONE_SHA256", "MOBILE_ADVERTISER_ID"]},
                        {
                            "type": "array",
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": {
                                "enum": [
                                    "EMAIL",
                                    "PHONE",
                                    "FN",
                                    "LN",
                                    "ZIP",
                                    "CT",
                                    "ST",
                                    "COUNTRY",
                                    "DOBY",
                                    "DOBM",
                                    "DOBD",
                                    "GEN",
                                    "FI",
                                    "MADID",
                                    "EXTERN_ID",
                                ]
                            },
                        },
                    ]
                },
                "data": {"type": "array", "maxItems": 10_000, "items": {"type": "array", "items": HEX_OR_EMPTY}},
                "is_raw": {"type": "boolean"},
                "app_ids": {"type": "array", "items": {"type": "string"}},
            },
        },
        "session": {
            "type": "object",
            "required": ["session_id", "batch_seq", "last_batch_flag"],
            "additionalProperties": False,
            "properties": {
                "session_id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                "batch_seq": {"type": "integer", "minimum": 1},
                "last_batch_flag": {"type": "boolean"},
                "estimated_num_total": {"type": "integer", "minimum": 0},
            },
        },
        "namespace": {"type": "string"},
    },
}


def identities_in(emulator: MetaEmulator, audience: str = AUDIENCE) -> set[str]:
    return {encode_identity([k for k, _ in row], tuple(v for _, v in row)) for row in emulator.audience(audience)}


# -- vendor specifics ----------------------------------------------------------------------
@pytest.fixture
def emulator() -> Any:
    with MetaEmulator(access_token=TOKEN) as emu:
        assert isinstance(emu, MetaEmulator)
        emu.create_audience(AUDIENCE)
        yield emu


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def destination(emulator: MetaEmulator, waits: list[float]) -> Any:
    runtime = Runtime(sleep=waits.append, key_prefix=f"test-{uuid.uuid4().hex}")
    config = MetaConfig(base_url=emulator.base_url, secret=TOKEN, requests_per_second=1e6, burst=1e6)
    dest = MetaDestination("meta", config, runtime)
    yield dest
    dest.close()


def person(i: int, **extra: Any) -> Member:
    fields: dict[str, Any] = {"email": f"p{i}@example.com", "phone": f"+1212555{i:04d}", "country": "US"}
    fields.update(extra)
    return Member(key=f"c{i}", email_consent=Consent.UNKNOWN, **fields)


DEFAULT = MetaOptions()


def test_rows_use_our_normalization_and_are_hashed(destination: MetaDestination) -> None:
    member = Member(
        key="z",
        email="  Zoe.Doe@Example.COM ",
        phone="(212) 555-0100",
        first_name="Zoe\u0308",
        last_name="O'Brien",
        country="us",
    )
    row = destination.row(member, ALL_KEYS)
    expected = ["zoe.doe@example.com", "12125550100", "zoë", "obrien", "us"]
    assert row == tuple(sha256_hex(v) for v in expected)
    uk = Member(key="u", email=None, phone="020 7946 0018", country="GB")
    assert destination.row(uk, ["EMAIL", "PHONE"]) == ("", sha256_hex("442079460018"))


def test_identity_round_trips_and_carries_its_schema(destination: MetaDestination, emulator: MetaEmulator) -> None:
    identity = destination.identity(person(1), MetaOptions(keys=["EMAIL"]))
    assert decode_identity(identity) == (("EMAIL",), (sha256_hex("p1@example.com"),))
    destination.add(AUDIENCE, [person(1)], MetaOptions(keys=["EMAIL"]))
    assert destination.remove(AUDIENCE, [identity], DEFAULT).accepted == [identity]
    assert emulator.audience(AUDIENCE) == set()
    assert destination.remove(AUDIENCE, ["garbage"], DEFAULT).rejected[0].code == "bad_identity"


def test_member_without_a_usable_key_is_rejected_unsent(destination: MetaDestination, emulator: MetaEmulator) -> None:
    result = destination.add(AUDIENCE, [Member(key="x", email=None, phone="+12125550100")], MetaOptions(keys=["EMAIL"]))
    assert [r.code for r in result.rejected] == ["no_identifier"] and emulator.log == []


@pytest.mark.parametrize("code", [4, 17, 613, 80003, 80004])
def test_throttle_codes_pause_and_retry(
    code: int, destination: MetaDestination, emulator: MetaEmulator, waits: list[float]
) -> None:
    emulator.throttle_code = code
    emulator.faults.throttle_storm = 1
    result = destination.add(AUDIENCE, [person(1)], DEFAULT)
    assert len(result.accepted) == 1
    assert len(waits) == 1 and waits[0] >= 60
    assert emulator.log[0].status == 400


def test_business_use_case_header_sets_the_wait(
    destination: MetaDestination, emulator: MetaEmulator, waits: list[float]
) -> None:
    emulator.regain_minutes = 2
    emulator.faults.throttle_storm = 1
    destination.add(AUDIENCE, [person(1)], DEFAULT)
    assert waits == [120.0]
    emulator.regain_minutes = 15
    emulator.faults.throttle_storm = 1
    with pytest.raises(LongPauseError) as info:
        destination.add(AUDIENCE, [person(2)], DEFAULT)
    assert info.value.wait_seconds == 900.0


def graph_response(code: int, subcode: int | None = None, status: int = 400, method: str = "POST") -> httpx.Response:
    error: dict[str, Any] = {"message": "boom", "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    return httpx.Response(status, json={"error": error}, request=httpx.Request(method, "https://g/v25.0/1/users"))


@pytest.mark.parametrize(
    ("code", "subcode", "status", "expected", "text"),
    [
        (1, None, 500, RetryableError, "#1"),
        (2, None, 503, RetryableError, "#2"),
        (17, 2446079, 400, RateLimitedError, "#17/2446079"),
        (190, None, 400, ConfigError, "re-authorisation"),
        (100, 33, 400, ConfigError, "needs permission"),
        (200, None, 403, ConfigError, "needs permission"),
        (10, None, 400, ConfigError, "needs permission"),
        (100, 1713230, 400, ConfigError, "upload blocked"),
        (100, None, 400, PermanentError, "#100"),
        (368, None, 400, PermanentError, "#368"),
    ],
)
def test_graph_errors_map_onto_the_taxonomy(
    code: int, subcode: int | None, status: int, expected: type[Exception], text: str
) -> None:
    client = MetaClient("https://g/v25.0")
    with pytest.raises(expected, match=text) as info:
        client.classify(graph_response(code, subcode, status))
    client.close()
    if expected is PermanentError:
        assert not isinstance(info.value, ConfigError)


def test_expired_token_needs_reauthorisation(destination: MetaDestination, emulator: MetaEmulator) -> None:
    emulator.inject = [(190, 463)]
    with pytest.raises(ConfigError, match="re-authorisation") as info:
        destination.add(AUDIENCE, [person(1)], DEFAULT)
    assert TOKEN not in str(info.value) and len(emulator.log) == 1


def test_blocked_and_unknown_audiences_need_attention(destination: MetaDestination, emulator: MetaEmulator) -> None:
    emulator.blocked.add(AUDIENCE)
    with pytest.raises(ConfigError, match="upload blocked"):
        destination.add(AUDIENCE, [person(1)], DEFAULT)
    with pytest.raises(ConfigError, match="needs permission"):
        destination.add("999", [person(1)], DEFAULT)


def test_additive_option_tells_the_engine_not_to_remove(destination: MetaDestination) -> None:
    assert destination.removes_members(MetaOptions(additive=True)) is False
    assert destination.removes_members(DEFAULT) is True


def test_a_refused_removal_is_permanent_and_suggests_additive(
    destination: MetaDestination, emulator: MetaEmulator
) -> None:
    added = destination.add(AUDIENCE, [person(1)], DEFAULT).accepted
    emulator.refuse_removes = True
    with pytest.raises(PermanentError, match="additive") as info:
        destination.remove(AUDIENCE, added, DEFAULT)
    assert not isinstance(info.value, ConfigError)
    assert len([r for r in emulator.log if r.method == "DELETE"]) == 1


def test_replace_is_one_session_swapped_by_the_last_batch(
    destination: MetaDestination, emulator: MetaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination.add(AUDIENCE, [person(i) for i in range(20, 25)], DEFAULT)
    monkeypatch.setattr(meta_module, "MAX_ROWS", 3)
    wanted = [person(i) for i in range(8)]
    result = destination.replace(AUDIENCE, [wanted[:5], wanted[5:]], DEFAULT)
    assert set(result.accepted) == {destination.identity(m, DEFAULT) for m in wanted}
    sessions = [body["session"] for method, path, body in emulator.bodies if path.endswith("usersreplace")]
    assert [s["batch_seq"] for s in sessions] == [1, 2, 3]
    assert [s["last_batch_flag"] for s in sessions] == [False, False, True]
    assert len({s["session_id"] for s in sessions}) == 1
    assert {s["estimated_num_total"] for s in sessions} == {8}
    assert identities_in(emulator) == {destination.identity(m, DEFAULT) for m in wanted}
    assert emulator.replaces_completed == 1


def test_emulator_swaps_only_on_the_final_batch(emulator: MetaEmulator) -> None:
    emulator.audiences[AUDIENCE] = {(("EMAIL", "a" * 64),)}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{emulator.base_url}/{AUDIENCE}/usersreplace"

    def send(seq: int, last: bool) -> None:
        body = {
            "payload": {"schema": ["EMAIL"], "data": [[f"{seq:x}" * 64]], "is_raw": True},
            "session": {"session_id": 42, "batch_seq": seq, "last_batch_flag": last, "estimated_num_total": 2},
        }
        assert httpx.post(url, json=body, headers=headers).status_code == 200

    send(1, False)
    assert emulator.audience(AUDIENCE) == {(("EMAIL", "a" * 64),)}
    send(2, True)
    assert emulator.audience(AUDIENCE) == {(("EMAIL", "1" * 64),), (("EMAIL", "2" * 64),)}


def test_emulator_counts_values_that_are_not_sha256_as_invalid(emulator: MetaEmulator) -> None:
    body = {"payload": {"schema": ["EMAIL", "PHONE"], "data": [["not-a-hash", ""], ["", ""], ["b" * 64, ""]]}}
    answer = httpx.post(
        f"{emulator.base_url}/{AUDIENCE}/users", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    assert answer["num_received"] == 3 and answer["num_invalid_entries"] == 2
    assert list(answer["invalid_entry_samples"]) == ["not-a-hash"]


def test_emulator_refuses_more_than_10000_rows(emulator: MetaEmulator) -> None:
    body = {"payload": {"schema": ["EMAIL"], "data": [["c" * 64]] * 10_001}}
    response = httpx.post(
        f"{emulator.base_url}/{AUDIENCE}/users", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == 100


def test_invalid_rows_beyond_the_samples_are_isolated_by_resending_halves(
    destination: MetaDestination, emulator: MetaEmulator
) -> None:
    members = [person(i) for i in range(20)]
    emulator.poisoned |= {sha256_hex(f"p{i}@example.com") for i in range(12)}
    result = destination.add(AUDIENCE, members, DEFAULT)
    # Meta samples at most 10 invalid rows; the other 2 are found by bisection, never acknowledged
    assert len(result.rejected) == 12 and {r.code for r in result.rejected} == {"invalid_entry"}
    assert len(result.accepted) == 8
    stats = destination.stats()
    assert stats["invalid_unidentified"] == 0 and stats["bisections"] >= 1
    assert len(emulator.audience(AUDIENCE)) == 8


def test_bodies_match_the_contract_and_carry_no_raw_pii(destination: MetaDestination, emulator: MetaEmulator) -> None:
    options = MetaOptions(keys=ALL_KEYS)
    members = [person(i, first_name="Zoë", last_name="Doe") for i in range(6)]
    added = destination.add(AUDIENCE, members, options).accepted
    destination.remove(AUDIENCE, added[:2], options)
    destination.replace(AUDIENCE, [members[2:]], options)
    assert {m for m, _, _ in emulator.bodies} == {"POST", "DELETE"}
    for _method, _path, body in emulator.bodies:
        jsonschema.validate(body, META_BODY_SCHEMA)
        text = json.dumps(body)
        assert "@" not in text and "zo" not in text.lower()
    assert emulator.token_in_url == 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"payload": {"schema": ["EMAIL"], "data": [["jane@example.com"]]}}, META_BODY_SCHEMA)


def test_sandbox_emulator_serves_at_its_root_and_creates_audiences() -> None:
    from connectors.meta.emulator import sandbox_emulator

    emulator, token = sandbox_emulator()
    with emulator:
        runtime = Runtime(sleep=lambda s: None, key_prefix=f"test-{uuid.uuid4().hex}")
        dest = MetaDestination("meta", MetaConfig(base_url=emulator.url, secret=token), runtime)
        assert dest.add("777", [person(1)], DEFAULT).accepted
        dest.close()
        assert len(emulator.audience("777")) == 1
