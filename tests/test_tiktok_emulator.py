"""The TikTok contract emulator over raw HTTP: envelope codes, body schemas, limits, quota, state.

These pin the behaviour that ``connectors/tiktok/CONTRACT.md`` describes, so a TikTok connector
written against the emulator inherits the same understanding of the real API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest

from connectors.kernel.emulator import Faults
from connectors.kernel.identifiers import sha256_hex
from connectors.tiktok import emulator as tiktok
from connectors.tiktok.emulator import TikTokEmulator, sandbox_emulator
from connectors.tiktok.schemas import (
    AUDIENCE_SCHEMAS,
    CUSTOM_AUDIENCE_DELETE_SCHEMA,
    MAPPING_SCHEMA,
    MAX_MAPPING_ROWS,
)

TOKEN = "tt-token-0123456789abcdef"
ADVERTISER = "7000000000000000042"
OTHER_ADVERTISER = "7000000000000000099"
EMAIL, PHONE = "EMAIL_SHA256", "PHONE_SHA256"


def email(i: int) -> str:
    return sha256_hex(f"p{i}@example.com")


def phone(i: int) -> str:
    return sha256_hex(f"1212555{i:04d}")


def mapping(audience: str, rows: list[list[str | None]], *, action: str = "add", schema: Any = None) -> dict[str, Any]:
    id_schema = schema or [EMAIL, PHONE]
    cells = [[{"id": v, "audience_ids": [audience]} if v else {} for v in row] for row in rows]
    return {"advertiser_ids": [ADVERTISER], "action": action, "id_schema": id_schema, "batch_data": cells}


class Api:
    """Raw HTTP against one emulator over one connection pool (a client per call costs ~40 ms)."""

    def __init__(self, emulator: TikTokEmulator, client: httpx.Client) -> None:
        self.emulator, self.client = emulator, client

    def post(self, path: str, body: Any, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Access-Token": token} if token is not None else {}
        return self.client.post(f"{self.emulator.base_url}/{path}", json=body, headers=headers)

    def get(self, path: str, params: dict[str, Any], token: str = TOKEN) -> httpx.Response:
        return self.client.get(f"{self.emulator.base_url}/{path}", params=params, headers={"Access-Token": token})

    def details(self, audience: str) -> dict[str, Any]:
        answer = self.get(
            "dmp/custom_audience/get/", {"advertiser_id": ADVERTISER, "custom_audience_ids": f'["{audience}"]'}
        )
        assert code_of(answer) == 0
        entry: dict[str, Any] = answer.json()["data"]["list"][0]["audience_details"]
        return entry


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


@pytest.fixture
def emulator() -> Iterator[TikTokEmulator]:
    with TikTokEmulator(TOKEN, advertiser_ids=[ADVERTISER], requests_per_second=1000) as emu:
        assert isinstance(emu, TikTokEmulator)
        yield emu


@pytest.fixture
def api(emulator: TikTokEmulator, client: httpx.Client) -> Api:
    return Api(emulator, client)


@pytest.fixture
def audience(emulator: TikTokEmulator) -> str:
    return emulator.create_audience(ADVERTISER, "repeat buyers")


def code_of(response: httpx.Response) -> int:
    assert response.status_code == 200, "TikTok answers its own errors inside an HTTP 200 envelope"
    body = response.json()
    assert set(body) == {"code", "message", "request_id", "data"}
    return int(body["code"])


def test_missing_wrong_and_expired_tokens_get_the_auth_codes(api: Api, emulator: TikTokEmulator, audience: str) -> None:
    body = mapping(audience, [[email(1), None]])
    assert code_of(api.post("segment/mapping/", body, token=None)) == 40104
    assert code_of(api.post("segment/mapping/", body, token="not-the-token")) == 40105
    emulator.expire(TOKEN)
    assert code_of(api.post("segment/mapping/", body)) == 40102
    assert emulator.audience(audience) == set()
    assert emulator.bodies == [], "refused before any handler ran"


@pytest.mark.parametrize(
    "change",
    [
        {"action": "remove"},
        {"id_schema": ["EMAIL"]},
        {"advertiser_ids": ADVERTISER},
        {"batch_data": []},
        {"batch_data": [[{"id": sha256_hex("x")}, {}]]},
        {"extra": 1},
    ],
    ids=["action-remove", "unknown-id-type", "advertiser-not-a-list", "no-rows", "cell-without-audience", "extra-key"],
)
def test_malformed_bodies_get_40002_and_the_schema_refuses_them_too(
    api: Api, emulator: TikTokEmulator, audience: str, change: dict[str, Any]
) -> None:
    body = {**mapping(audience, [[email(1), phone(1)]]), **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, MAPPING_SCHEMA)
    assert code_of(api.post("segment/mapping/", body)) == 40002
    assert emulator.audience(audience) == set()


def test_the_schemas_are_valid_and_accept_what_the_emulator_accepts(
    api: Api, emulator: TikTokEmulator, audience: str
) -> None:
    for schema in (MAPPING_SCHEMA, CUSTOM_AUDIENCE_DELETE_SCHEMA, *AUDIENCE_SCHEMAS.values()):
        jsonschema.Draft202012Validator.check_schema(schema)
    body = mapping(audience, [[email(1), None], [None, phone(2)]])
    jsonschema.validate(body, MAPPING_SCHEMA)
    assert code_of(api.post("segment/mapping/", body)) == 0
    create = {"advertiser_id": ADVERTISER, "custom_audience_name": "vip", "action": "create", "id_type": EMAIL}
    jsonschema.validate(create, AUDIENCE_SCHEMAS["create"])
    assert code_of(api.post("segment/audience/", create)) == 0


@pytest.mark.parametrize(
    "value",
    ["jane@example.com", "A" * 64, "a" * 63, "g" * 64, sha256_hex("x")[:32]],
    ids=["raw-email", "uppercase", "short", "not-hex", "md5-length-in-sha256-column"],
)
def test_ids_that_are_not_lowercase_sha256_hex_are_refused(
    api: Api, emulator: TikTokEmulator, audience: str, value: str
) -> None:
    body = mapping(audience, [[email(1), None], [value, None]])
    answer = api.post("segment/mapping/", body)
    assert code_of(answer) == 40062 and "batch_data[1]" in answer.json()["message"]
    assert emulator.audience(audience) == set(), "a refused batch applies no row"


def test_add_then_delete_converges_and_both_are_idempotent(api: Api, emulator: TikTokEmulator, audience: str) -> None:
    rows: list[list[str | None]] = [[email(1), phone(1)], [email(2), None]]
    for _ in range(2):
        assert code_of(api.post("segment/mapping/", mapping(audience, rows))) == 0
    assert emulator.audience(audience) == {((EMAIL, email(1)), (PHONE, phone(1))), ((EMAIL, email(2)),)}
    assert api.details(audience)["cover_num"] == 2
    # a delete matches the whole row that was added: e-mail alone does not remove the e-mail+phone row
    partial = mapping(audience, [[email(1)]], action="delete", schema=[EMAIL])
    assert code_of(api.post("segment/mapping/", partial)) == 0
    assert len(emulator.audience(audience)) == 2
    for _ in range(2):
        assert code_of(api.post("segment/mapping/", mapping(audience, rows[:1], action="delete"))) == 0
    assert emulator.audience(audience) == {((EMAIL, email(2)),)}
    assert emulator.identities(audience) == {email(2)}


def test_rows_must_have_one_entry_per_id_schema_column(api: Api, emulator: TikTokEmulator, audience: str) -> None:
    body = mapping(audience, [[email(1), phone(1)]])
    body["batch_data"][0].append({})
    jsonschema.validate(body, MAPPING_SCHEMA)  # JSON Schema cannot express the width; the emulator checks it
    answer = api.post("segment/mapping/", body)
    assert code_of(answer) == 40002 and "id_schema" in answer.json()["message"]
    assert code_of(api.post("segment/mapping/", mapping(audience, [[None, None]]))) == 40002


def test_the_batch_limit_is_enforced(api: Api, emulator: TikTokEmulator, audience: str) -> None:
    full = mapping(audience, [[email(i), None] for i in range(MAX_MAPPING_ROWS)])
    assert code_of(api.post("segment/mapping/", full)) == 0
    over = mapping(audience, [[email(i), None] for i in range(MAX_MAPPING_ROWS + 1)])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(over, MAPPING_SCHEMA)
    assert code_of(api.post("segment/mapping/", over)) == 40061
    assert len(emulator.audience(audience)) == MAX_MAPPING_ROWS
    assert [entry.items for entry in emulator.log] == [MAX_MAPPING_ROWS, MAX_MAPPING_ROWS + 1]


def test_the_per_second_quota_answers_40100_with_an_injected_clock(client: httpx.Client) -> None:
    now = [100.2]
    with TikTokEmulator(TOKEN, advertiser_ids=[ADVERTISER], requests_per_second=3, clock=lambda: now[0]) as emu:
        assert isinstance(emu, TikTokEmulator)
        api = Api(emu, client)
        body = mapping(emu.create_audience(ADVERTISER, "q"), [[email(1), None]])
        assert [code_of(api.post("segment/mapping/", body)) for _ in range(4)] == [0, 0, 0, 40100]
        now[0] = 100.9
        assert code_of(api.post("segment/mapping/", body)) == 40100, "same one-second window"
        now[0] = 101.0
        assert code_of(api.post("segment/mapping/", body)) == 0
        assert [code for _, code in emu.codes] == [0, 0, 0, 40100, 40100, 0]


def test_unknown_and_foreign_audiences_and_advertisers_are_refused(
    api: Api, emulator: TikTokEmulator, audience: str
) -> None:
    unknown = mapping("7399999999999999999", [[email(1), None]])
    assert code_of(api.post("segment/mapping/", unknown)) == 40002
    # one known and one unknown audience in the same batch: nothing is applied
    mixed = mapping(audience, [[email(1), None]])
    mixed["batch_data"].append([{"id": email(2), "audience_ids": ["7399999999999999999"]}, {}])
    assert code_of(api.post("segment/mapping/", mixed)) == 40002
    assert emulator.audience(audience) == set()
    foreign = emulator.create_audience(OTHER_ADVERTISER, "someone else's")
    assert code_of(api.post("segment/mapping/", mapping(foreign, [[email(1), None]]))) == 40002
    not_granted = {**mapping(foreign, [[email(1), None]]), "advertiser_ids": [OTHER_ADVERTISER]}
    assert code_of(api.post("segment/mapping/", not_granted)) == 40001
    emulator.grant(TOKEN, OTHER_ADVERTISER)
    assert code_of(api.post("segment/mapping/", not_granted)) == 0


def test_audiences_are_created_and_deleted_over_http(api: Api) -> None:
    create = {"advertiser_id": ADVERTISER, "custom_audience_name": "n" * 80, "action": "create"}
    answer = api.post("segment/audience/", create)
    assert code_of(answer) == 0 and answer.json()["message"] == "OK"
    audience = answer.json()["data"]["audience_id"]
    assert api.details(audience)["name"] == "n" * 67 + "..."
    assert code_of(api.post("segment/mapping/", mapping(audience, [[email(1), None]]))) == 0
    delete = {"advertiser_id": ADVERTISER, "audience_id": audience, "action": "delete"}
    assert code_of(api.post("segment/audience/", delete)) == 0
    assert code_of(api.post("segment/audience/", delete)) == 40002
    assert code_of(api.post("segment/mapping/", mapping(audience, [[email(1), None]]))) == 40002
    assert code_of(api.post("segment/audience/", {"advertiser_id": ADVERTISER, "action": "update"})) == 40002
    # the file API's delete (the official SDK documents it) removes any audience of the advertiser
    other = api.emulator.create_audience(ADVERTISER, "other")
    assert (
        code_of(api.post("dmp/custom_audience/delete/", {"advertiser_id": ADVERTISER, "custom_audience_ids": [other]}))
        == 0
    )
    assert other not in api.emulator.audiences


def test_an_audience_below_1000_members_reads_as_not_valid(api: Api, emulator: TikTokEmulator, audience: str) -> None:
    emulator.seed(audience, [((EMAIL, email(i)),) for i in range(999)])
    first = api.details(audience)
    assert (first["cover_num"], first["is_valid"], first["type"]) == (999, False, "Partner")
    emulator.seed(audience, [((EMAIL, email(999)),)])
    assert api.details(audience)["is_valid"] is True
    page = {"advertiser_id": ADVERTISER, "page": 1, "page_size": 100}
    listed = api.get("dmp/custom_audience/list/", page).json()["data"]
    assert listed["page_info"]["total_number"] == 1 and listed["list"][0]["cover_num"] == 1000


def test_get_takes_audience_ids_as_a_json_array(api: Api, audience: str) -> None:
    repeated = api.get("dmp/custom_audience/get/", {"advertiser_id": ADVERTISER, "custom_audience_ids": audience})
    assert code_of(repeated) == 40002
    assert api.details(audience)["audience_id"] == audience


def test_harness_faults_answer_in_tiktok_shapes(api: Api, emulator: TikTokEmulator, audience: str) -> None:
    body = mapping(audience, [[email(1), None]])
    emulator.faults.throttle_storm = 1
    throttled = api.post("segment/mapping/", body)
    assert code_of(throttled) == 40100 and emulator.audience(audience) == set()
    emulator.inject = [(40118, "Not in whitelist.")]
    assert code_of(api.post("segment/mapping/", body)) == 40118
    emulator.faults = Faults(error_rate=1.0)
    storm = api.post("segment/mapping/", body)
    assert storm.status_code in (500, 502, 503) and storm.json()["code"] == 50000
    emulator.faults = Faults(malformed_rate=1.0)
    torn = api.post("segment/mapping/", body)
    with pytest.raises(ValueError):
        torn.json()
    assert emulator.audience(audience) == {((EMAIL, email(1)),)}, "a torn answer can hide an applied write"
    emulator.faults = Faults(reset_rate=1.0)
    with pytest.raises(httpx.TransportError):
        api.post("segment/mapping/", body)


def test_the_sandbox_creates_audiences_on_first_use_for_its_advertiser_only(client: httpx.Client) -> None:
    emu, token = sandbox_emulator()
    body = {**mapping("123456", [[email(1), None]]), "advertiser_ids": [tiktok.SANDBOX_ADVERTISER_ID]}
    with emu:
        api = Api(emu, client)
        assert emu.base_url == emu.url
        assert code_of(api.post("segment/mapping/", body, token=token)) == 0
        assert emu.audience("123456") == {((EMAIL, email(1)),)}
        other = {**body, "advertiser_ids": [ADVERTISER]}
        assert code_of(api.post("segment/mapping/", other, token=token)) == 40001
        emu.grant(token, ADVERTISER)
        fresh = {**mapping("654321", [[email(1), None]]), "advertiser_ids": [ADVERTISER]}
        assert code_of(api.post("segment/mapping/", fresh, token=token)) == 40002, "only the sandbox advertiser"
        assert "654321" not in emu.audiences
    with TikTokEmulator(TOKEN, advertiser_ids=[tiktok.SANDBOX_ADVERTISER_ID]) as plain:
        assert isinstance(plain, TikTokEmulator)
        refused = Api(plain, client).post("segment/mapping/", body)
        assert code_of(refused) == 40002, "auto-creation is for the sandbox only"
