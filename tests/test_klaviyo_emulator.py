"""The Klaviyo contract emulator, driven over raw HTTP: every answer checked against the official spec."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator

from connectors.kernel.emulator import Faults
from connectors.kernel.specs import load_spec
from connectors.klaviyo.emulator import (
    JSON_API,
    NEVER_SUBSCRIBED,
    REVISION,
    SPEC,
    SPEC_NAME,
    SUBSCRIBED,
    UNSUBSCRIBED,
    KlaviyoEmulator,
    Limits,
    sandbox_emulator,
)

KEY = "pk_test_emulator_0123456789abcdef01234"
HEADERS = {"Authorization": f"Klaviyo-API-Key {KEY}", "revision": REVISION, "accept": JSON_API}
MEMBERS = "/api/lists/{}/relationships/profiles"


class Clock:
    """A hand-driven clock for the rate-limit windows: tests move time, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 60.0 * 16_667  # the start of a minute, so window edges are easy to reason about

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def started(emulator: KlaviyoEmulator) -> KlaviyoEmulator:
    emulator.start()
    return emulator


@pytest.fixture
def emulator(clock: Clock) -> Iterator[KlaviyoEmulator]:
    emu = started(KlaviyoEmulator(api_key=KEY, clock=clock))
    yield emu
    emu.stop()


def client_for(emulator: KlaviyoEmulator, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=emulator.url, headers={**HEADERS, **headers}, timeout=10)


@pytest.fixture
def client(emulator: KlaviyoEmulator) -> Iterator[httpx.Client]:
    with client_for(emulator) as c:
        yield c


# -- checking answers against stable.json --------------------------------------------------------
SPEC_DOC = load_spec("klaviyo", SPEC_NAME)
ERROR_SCHEMA = SPEC_DOC["components"]["responses"]["ClientError"]["content"][JSON_API]["schema"]


def conforms(response: httpx.Response, method: str, path: str) -> Any:
    """The body, after checking it against the response schema the spec gives ``method path``."""
    assert response.headers["content-type"] == JSON_API
    answer = SPEC_DOC["paths"][path][method.lower()]["responses"][str(response.status_code)]
    schema = answer["content"][JSON_API]["schema"]["$ref"].rsplit("/", 1)[1]
    body = response.json()
    assert SPEC.errors(schema, body) == [], f"{method} {path} answer breaks {schema}"
    return body


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The first JSON:API error of a refusal, after checking the error document against the spec."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON_API
    body = response.json()
    assert list(OAS30Validator(ERROR_SCHEMA).iter_errors(body)) == []
    error: dict[str, Any] = body["errors"][0]
    assert error["status"] == status and error["code"] == code and error["id"]
    return error


def members_body(ids: list[str]) -> dict[str, Any]:
    return {"data": [{"type": "profile", "id": i} for i in ids]}


def import_body(rows: list[dict[str, Any]], list_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": [{"type": "profile", "attributes": r} for r in rows]}},
    }
    if list_id is not None:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return {"data": data}


def unsubscribe_body(emails: list[str], list_id: str | None = None) -> dict[str, Any]:
    consent = {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}
    rows = [{"type": "profile", "attributes": {"email": e, "subscriptions": consent}} for e in emails]
    data: dict[str, Any] = {"type": "profile-subscription-bulk-delete-job", "attributes": {"profiles": {"data": rows}}}
    if list_id is not None:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def every_page(client: httpx.Client, path: str, params: dict[str, str]) -> list[list[dict[str, Any]]]:
    """Follow ``links.next`` verbatim until it is absent, as a client must."""
    pages, response = [], client.get(path, params=params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["data"])
        if not body["links"].get("next"):
            return pages
        response = client.get(body["links"]["next"])


# -- auth, revision, scopes ------------------------------------------------------------------------
def test_missing_or_wrong_key_is_a_json_api_401_and_changes_nothing(emulator: KlaviyoEmulator) -> None:
    list_id = emulator.create_list("VIP")
    profile = emulator.add_profile("a@example.com", SUBSCRIBED)
    url = emulator.url + MEMBERS.format(list_id)
    no_key = httpx.post(url, json=members_body([profile]), headers={"revision": REVISION})
    assert "Klaviyo-API-Key" in refused(no_key, 401, "not_authenticated")["detail"]
    bearer = httpx.post(url, json=members_body([profile]), headers={**HEADERS, "Authorization": f"Bearer {KEY}"})
    refused(bearer, 401, "not_authenticated")
    wrong = httpx.post(url, json=members_body([profile]), headers={**HEADERS, "Authorization": "Klaviyo-API-Key pk_x"})
    refused(wrong, 401, "authentication_failed")
    assert emulator.list_members(list_id) == set()
    assert httpx.post(url, json=members_body([profile]), headers=HEADERS).status_code == 204


def test_the_revision_header_is_required_and_must_be_a_served_revision(client: httpx.Client) -> None:
    missing = client.get("/api/lists", headers={"revision": ""})  # an empty header value still counts as sent
    assert missing.status_code == 400
    del client.headers["revision"]
    assert refused(client.get("/api/lists"), 400, "invalid")["source"] == {"parameter": "revision"}
    refused(client.get("/api/lists", headers={"revision": "July 2026"}), 400, "invalid")
    old = refused(client.get("/api/lists", headers={"revision": "2023-02-22"}), 404, "not_found")
    assert old["detail"] == "No valid revisions found for method"
    assert client.get("/api/lists", headers={"revision": REVISION}).status_code == 200


def test_a_key_without_the_endpoints_scopes_is_forbidden(clock: Clock) -> None:
    emulator = started(KlaviyoEmulator(api_key=KEY, clock=clock, scopes=["lists:read", "profiles:read"]))
    try:
        list_id = emulator.create_list("VIP")
        profile = emulator.add_profile("a@example.com")
        with client_for(emulator) as client:
            refused(client.post(MEMBERS.format(list_id), json=members_body([profile])), 403, "permission_denied")
            assert client.get("/api/lists").status_code == 200
        assert emulator.list_members(list_id) == set()
    finally:
        emulator.stop()


# -- bodies are judged by the spec ------------------------------------------------------------------
def test_a_spec_invalid_body_is_a_json_api_400_and_the_spec_validator_agrees(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    list_id = emulator.create_list("VIP")
    profile = emulator.add_profile("a@example.com")
    wrong = {"data": [{"type": "profiles", "id": profile}]}  # the JSON:API type is "profile"
    assert SPEC.errors("ListMembersAddQuery", wrong)
    error = refused(client.post(MEMBERS.format(list_id), json=wrong), 400, "invalid")
    assert error["source"]["pointer"] == "/data/0/type"
    no_attributes = {"data": {"type": "profile-bulk-import-job"}}
    assert SPEC.errors("ProfileImportJobCreateQuery", no_attributes)
    refused(client.post("/api/profile-bulk-import-jobs", json=no_attributes), 400, "invalid")
    assert emulator.list_members(list_id) == set() and emulator.jobs == {}
    right = members_body([profile])
    assert SPEC.errors("ListMembersAddQuery", right) == []
    assert client.post(MEMBERS.format(list_id), json=right).status_code == 204
    torn = client.post(MEMBERS.format(list_id), content=b'{"data": [', headers={"content-type": JSON_API})
    refused(torn, 400, "parse_error")
    text = client.post(MEMBERS.format(list_id), content=json.dumps(right), headers={"content-type": "text/plain"})
    refused(text, 415, "unsupported_media_type")


# -- batch limits -------------------------------------------------------------------------------------
def test_more_than_1000_list_members_per_call_is_refused(emulator: KlaviyoEmulator, client: httpx.Client) -> None:
    list_id = emulator.create_list("VIP")
    ids = [emulator.add_profile(f"p{i}@example.com") for i in range(1001)]
    for method in ("POST", "DELETE"):
        error = refused(client.request(method, MEMBERS.format(list_id), json=members_body(ids)), 400, "invalid")
        assert "1000" in error["detail"]
    assert emulator.list_members(list_id) == set()
    assert client.post(MEMBERS.format(list_id), json=members_body(ids[:1000])).status_code == 204
    assert len(emulator.list_members(list_id)) == 1000
    assert [r.items for r in emulator.log if r.method == "POST"] == [1001, 1000]


def test_more_than_10000_profiles_or_5mb_per_import_job_is_refused(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    rows = [{"email": f"p{i}@example.com"} for i in range(10_001)]
    error = refused(client.post("/api/profile-bulk-import-jobs", json=import_body(rows)), 400, "invalid")
    assert error["source"]["pointer"] == "/data/attributes/profiles/data"
    huge = [{"email": f"p{i}@example.com", "properties": {"note": "x" * 99_000}} for i in range(60)]
    refused(client.post("/api/profile-bulk-import-jobs", json=import_body(huge)), 413, "request_too_large")
    assert emulator.jobs == {}
    accepted = client.post("/api/profile-bulk-import-jobs", json=import_body(rows[:10_000]))
    assert conforms(accepted, "POST", "/api/profile-bulk-import-jobs")["data"]["attributes"]["total_count"] == 10_000


# -- bulk import -----------------------------------------------------------------------------------------
def test_bulk_import_job_runs_queued_processing_complete_and_reports_bad_rows(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    list_id = emulator.create_list("VIP")
    emulator.add_profile("old@example.com", SUBSCRIBED)
    emulator.add_profile("gone@example.com", UNSUBSCRIBED)
    rows = [
        {"email": "old@example.com", "first_name": "Olga"},
        {"email": "New@Example.com"},
        {"email": "not-an-email"},
        {"email": "second@example.com", "properties": {"tier": "gold"}},
        {"email": "gone@example.com"},
        {"email": "big@example.com", "properties": {"blob": "x" * 120_000}},  # over 100KB for one profile
    ]
    created = client.post("/api/profile-bulk-import-jobs", json=import_body(rows, list_id))
    assert created.status_code == 202
    job = conforms(created, "POST", "/api/profile-bulk-import-jobs")["data"]
    assert job["attributes"]["status"] == "queued" and job["attributes"]["total_count"] == 6
    path = "/api/profile-bulk-import-jobs/{job_id}"
    statuses = []
    for _ in range(3):
        answer = client.get(f"/api/profile-bulk-import-jobs/{job['id']}", params={"include": "lists"})
        document = conforms(answer, "GET", path)
        assert [lst["id"] for lst in document["included"]] == [list_id]
        polled = document["data"]
        statuses.append(polled["attributes"]["status"])
        if statuses[-1] == "processing":
            assert emulator.list_members(list_id) == set(), "nothing is applied before the job completes"
    assert statuses == ["processing", "complete", "complete"]
    attributes = polled["attributes"]
    assert (attributes["completed_count"], attributes["failed_count"]) == (4, 2)

    errors_path = "/api/profile-bulk-import-jobs/{id}/import-errors"
    errors = conforms(client.get(f"/api/profile-bulk-import-jobs/{job['id']}/import-errors"), "GET", errors_path)
    pointers = sorted(e["attributes"]["source"]["pointer"] for e in errors["data"])
    assert pointers == ["/data/attributes/profiles/data/2/attributes/email", "/data/attributes/profiles/data/5"]
    assert errors["data"][0]["attributes"]["original_payload"]["attributes"]["email"] == "not-an-email"

    ids = every_page(client, f"/api/profile-bulk-import-jobs/{job['id']}/relationships/profiles", {"page[size]": "3"})
    assert [len(p) for p in ids] == [3, 1]
    profiles_path = "/api/profile-bulk-import-jobs/{id}/profiles"
    profiles = conforms(client.get(f"/api/profile-bulk-import-jobs/{job['id']}/profiles"), "GET", profiles_path)
    assert {p["id"] for p in profiles["data"]} == {r["id"] for page in ids for r in page}

    good = {"old@example.com", "new@example.com", "second@example.com", "gone@example.com"}
    assert emulator.list_members(list_id) == good
    consents = {e: getattr(emulator.profile(e), "consent", None) for e in good}
    assert consents == {
        "old@example.com": SUBSCRIBED,
        "gone@example.com": UNSUBSCRIBED,
        "new@example.com": NEVER_SUBSCRIBED,
        "second@example.com": NEVER_SUBSCRIBED,
    }, "an import never changes consent"
    old = emulator.profile("old@example.com")
    second = emulator.profile("second@example.com")
    assert old is not None and old.attributes["first_name"] == "Olga"
    assert second is not None and second.attributes["properties"] == {"tier": "gold"}
    assert emulator.profile("big@example.com") is None


def test_import_into_an_unknown_list_is_a_404(client: httpx.Client) -> None:
    error = refused(
        client.post("/api/profile-bulk-import-jobs", json=import_body([{"email": "a@x.io"}], "NoSuch")),
        404,
        "not_found",
    )
    assert error["source"]["pointer"] == "/data/relationships/lists/data/0/id"


# -- list membership ----------------------------------------------------------------------------------
def test_list_add_and_remove_are_idempotent_and_never_change_consent(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    list_id = emulator.create_list("VIP")
    a = emulator.add_profile("a@example.com", SUBSCRIBED)
    b = emulator.add_profile("b@example.com", NEVER_SUBSCRIBED)
    c = emulator.add_profile("c@example.com", UNSUBSCRIBED)
    for _ in range(2):
        added = client.post(MEMBERS.format(list_id), json=members_body([a, b, c, a]))
        assert added.status_code == 204 and added.content == b""
    assert emulator.list_members(list_id) == {"a@example.com", "b@example.com", "c@example.com"}
    for _ in range(2):
        assert client.request("DELETE", MEMBERS.format(list_id), json=members_body([a, c])).status_code == 204
    assert emulator.list_members(list_id) == {"b@example.com"}
    lookup = {"filter": 'any(email,["a@example.com","b@example.com","c@example.com"])'}
    found = client.get("/api/profiles", params={**lookup, "additional-fields[profile]": "subscriptions"})
    body = conforms(found, "GET", "/api/profiles")
    consent = {p["attributes"]["email"]: p["attributes"]["subscriptions"]["email"]["marketing"] for p in body["data"]}
    assert {e: m["consent"] for e, m in consent.items()} == {
        "a@example.com": SUBSCRIBED,
        "b@example.com": NEVER_SUBSCRIBED,
        "c@example.com": UNSUBSCRIBED,
    }
    assert consent["c@example.com"]["can_receive_email_marketing"] is False
    assert emulator.unsubscribe_calls == []


def test_unknown_lists_and_profiles_are_json_api_404s(emulator: KlaviyoEmulator, client: httpx.Client) -> None:
    profile = emulator.add_profile("a@example.com")
    refused(client.post(MEMBERS.format("NoSuch"), json=members_body([profile])), 404, "not_found")
    refused(client.get("/api/lists/NoSuch"), 404, "not_found")
    list_id = emulator.create_list("VIP")
    error = refused(
        client.post(MEMBERS.format(list_id), json=members_body([profile, "01NOSUCHPROFILE"])), 404, "not_found"
    )
    assert error["source"]["pointer"] == "/data/1/id"
    assert emulator.list_members(list_id) == set(), "a refused call applies nothing"
    refused(client.get("/api/no-such-thing"), 404, "not_found")
    refused(client.patch("/api/profile-bulk-import-jobs"), 405, "method_not_allowed")


def test_reading_membership_back_pages_cover_every_member_exactly_once(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    list_id = emulator.create_list("VIP")
    ids = [emulator.add_profile(f"m{i:03}@example.com", SUBSCRIBED) for i in range(250)]
    assert client.post(MEMBERS.format(list_id), json=members_body(ids[:200])).status_code == 204
    assert client.post(MEMBERS.format(list_id), json=members_body(ids[200:])).status_code == 204
    pages = every_page(client, MEMBERS.format(list_id), {"page[size]": "100"})
    assert [len(p) for p in pages] == [100, 100, 50]
    seen = [r["id"] for page in pages for r in page]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 250

    first = client.get(f"/api/lists/{list_id}/profiles", params={"page[size]": "100"})
    body = conforms(first, "GET", "/api/lists/{id}/profiles")
    emails = [p["attributes"]["email"] for p in body["data"]]
    assert all(p["attributes"]["joined_group_at"] for p in body["data"])
    removed = [p["id"] for p in body["data"][:10]]  # members already read leave mid-way: nothing shifts
    assert client.request("DELETE", MEMBERS.format(list_id), json=members_body(removed)).status_code == 204
    response = client.get(body["links"]["next"])
    while True:
        page = conforms(response, "GET", "/api/lists/{id}/profiles")
        emails += [p["attributes"]["email"] for p in page["data"]]
        if "next" not in page["links"]:
            break
        response = client.get(page["links"]["next"])
    assert len(emails) == len(set(emails)) == 250

    relationships = client.get(MEMBERS.format(list_id), params={"page[size]": "5"})
    conforms(relationships, "GET", "/api/lists/{id}/relationships/profiles")
    for size in ("0", "101"):
        refused(client.get(MEMBERS.format(list_id), params={"page[size]": size}), 400, "invalid")
    refused(client.get(MEMBERS.format(list_id), params={"page[cursor]": "not-a-cursor"}), 400, "invalid")
    next_link = client.get(MEMBERS.format(list_id), params={"page[size]": "1"}).json()["links"]["next"]
    cursor = httpx.URL(next_link).params["page[cursor]"]
    elsewhere = {"page[size]": "1", "page[cursor]": cursor}  # a cursor is only good for the query that made it
    refused(client.get(f"/api/lists/{list_id}/profiles", params=elsewhere), 400, "invalid")


def test_profiles_are_found_by_email_filter_with_spec_page_bounds(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    a = emulator.add_profile("a@example.com", SUBSCRIBED)
    b = emulator.add_profile("b@example.com")
    emulator.add_profile("c@example.com")
    found = client.get("/api/profiles", params={"filter": 'any(email,["a@example.com","b@example.com","z@x.io"])'})
    body = conforms(found, "GET", "/api/profiles")
    assert {p["attributes"]["email"]: p["id"] for p in body["data"]} == {"a@example.com": a, "b@example.com": b}
    assert all("subscriptions" not in p["attributes"] for p in body["data"]), "only with additional-fields"
    one = client.get("/api/profiles", params={"filter": "equals(email,'A@Example.com')", "fields[profile]": "email"})
    assert [(p["id"], p["attributes"]) for p in one.json()["data"]] == [(a, {"email": "a@example.com"})]
    refused(client.get("/api/profiles", params={"filter": 'greater-than(email,"a")'}), 400, "invalid")
    refused(client.get("/api/profiles", params={"filter": 'equals(nickname,"a")'}), 400, "invalid")
    refused(client.get("/api/profiles", params={"filter": "equals(email,a@example.com)"}), 400, "invalid")
    refused(client.get("/api/profiles", params={"filter": "any(email,"}), 400, "invalid")
    refused(client.get("/api/profiles", params={"page[size]": "101"}), 400, "invalid")
    too_many = "any(email,[" + ",".join(f'"p{i}@x.io"' for i in range(101)) + "])"
    refused(client.get("/api/profiles", params={"filter": too_many}), 400, "invalid")


def test_identifier_filters_answer_from_the_index_exactly_as_a_scan_would(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    emulator.seed_profiles(f"s{i}@example.com" for i in range(50))
    a = emulator.add_profile("a@example.com", external_id="ext-1", phone_number="+12125550001")
    emulator.add_profile("b@example.com", external_id="ext-2")

    def ids(flt: str) -> set[str]:
        return {p["id"] for p in client.get("/api/profiles", params={"filter": flt}).json()["data"]}

    assert ids('equals(external_id,"ext-1")') == ids('any(phone_number,["+12125550001"])') == {a}
    assert ids(f'any(id,["{a}","nope"])') == {a}
    assert ids('equals(email,"a@example.com"),equals(external_id,"ext-2")') == set()  # every condition holds
    assert len(ids('any(email,["s1@example.com","s2@example.com","S3@Example.com"])')) == 3
    seeded = emulator.profile("s7@example.com")
    assert seeded is not None and seeded.consent == SUBSCRIBED


def test_a_deleted_profile_leaves_its_lists_and_its_id_stops_existing(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    list_id = emulator.create_list("VIP")
    profile = emulator.add_profile("a@example.com", SUBSCRIBED)
    emulator.add_to_list(list_id, "a@example.com")
    assert emulator.delete_profile("A@example.com") == profile and emulator.delete_profile("a@example.com") is None
    assert emulator.list_members(list_id) == set() and emulator.profile("a@example.com") is None
    error = refused(client.post(MEMBERS.format(list_id), json=members_body([profile])), 404, "not_found")
    assert error["source"]["pointer"] == "/data/0/id"


def test_the_fast_request_validators_agree_with_the_spec_validator() -> None:
    from connectors.klaviyo.emulator import request_validator

    bad_bodies = {
        "ProfileImportJobCreateQuery": import_body([{"email": 5, "location": {"latitude": []}}, {"phone_number": 1}]),
        "ListMembersAddQuery": {"data": [{"type": "profil", "id": 3}, {"id": "x"}]},
        "ListMembersDeleteQuery": {"data": "everyone"},
        "SubscriptionDeleteJobCreateQuery": {"data": {"type": "profile-subscription-bulk-delete-job", "attributes": 7}},
        "ListCreateQuery": {"data": {"type": "list", "attributes": {}}},
    }
    for schema, body in bad_bodies.items():
        fast = sorted((list(e.absolute_path), e.message) for e in request_validator(schema).iter_errors(body))
        spec = sorted((list(e.absolute_path), e.message) for e in SPEC.validator(schema).iter_errors(body))
        assert fast and fast == spec, schema


# -- consent: the dangerous unsubscribe job -------------------------------------------------------------
def test_unsubscribe_job_unsubscribes_globally_everyone_not_in_the_list(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    list_id = emulator.create_list("VIP")
    member = emulator.add_profile("member@example.com", SUBSCRIBED)
    emulator.add_profile("outsider@example.com", SUBSCRIBED)
    assert client.post(MEMBERS.format(list_id), json=members_body([member])).status_code == 204
    body = unsubscribe_body(["member@example.com", "outsider@example.com", "stranger@example.com"], list_id)
    assert SPEC.errors("SubscriptionDeleteJobCreateQuery", body) == []
    answer = client.post("/api/profile-subscription-bulk-delete-jobs", json=body)
    assert answer.status_code == 202 and answer.content == b""
    kept = emulator.profile("member@example.com")
    assert kept is not None and kept.consent == SUBSCRIBED and kept.list_suppressions[0][0] == list_id
    assert emulator.list_members(list_id) == set()
    outsider, stranger = emulator.profile("outsider@example.com"), emulator.profile("stranger@example.com")
    assert outsider is not None and outsider.consent == UNSUBSCRIBED, "not in the list: unsubscribed globally"
    assert stranger is not None and stranger.consent == UNSUBSCRIBED, "unknown: created, then unsubscribed"
    assert (
        client.post(
            "/api/profile-subscription-bulk-delete-jobs", json=unsubscribe_body(["member@example.com"])
        ).status_code
        == 202
    )
    kept = emulator.profile("member@example.com")
    assert kept is not None and kept.consent == UNSUBSCRIBED, "without a list, everyone is unsubscribed globally"
    over = unsubscribe_body([f"p{i}@example.com" for i in range(101)])
    refused(client.post("/api/profile-subscription-bulk-delete-jobs", json=over), 400, "invalid")
    assert len(emulator.unsubscribe_jobs) == 2 and len(emulator.unsubscribe_calls) == 3


# -- rate limits ------------------------------------------------------------------------------------
def test_past_the_burst_a_429_carries_retry_after_and_other_answers_carry_ratelimit_headers(clock: Clock) -> None:
    emulator = started(KlaviyoEmulator(api_key=KEY, clock=clock, limits=Limits(burst=3, steady=5)))
    try:
        with client_for(emulator) as client:
            remaining = []
            for _ in range(3):
                ok = client.get("/api/lists")
                assert ok.status_code == 200 and ok.headers["RateLimit-Limit"] == "5"
                assert 1 <= int(ok.headers["RateLimit-Reset"]) <= 60
                remaining.append(ok.headers["RateLimit-Remaining"])
            assert remaining == ["4", "3", "2"]
            burst = client.get("/api/lists")
            assert refused(burst, 429, "throttled")["detail"].startswith("Request was throttled.")
            assert burst.headers["Retry-After"] == "1" and "RateLimit-Limit" not in burst.headers
            assert client.get("/api/metrics").status_code == 200, "each endpoint has its own windows"
            clock.advance(1)
            assert [client.get("/api/lists").headers["RateLimit-Remaining"] for _ in range(2)] == ["1", "0"]
            clock.advance(1)
            steady = client.get("/api/lists")
            assert steady.status_code == 429 and int(steady.headers["Retry-After"]) == 58
            clock.advance(58)
            assert client.get("/api/lists").headers["RateLimit-Remaining"] == "4"
    finally:
        emulator.stop()


def test_spec_limits_apply_by_default_and_can_be_switched_off(clock: Clock) -> None:
    emulator = started(KlaviyoEmulator(api_key=KEY, clock=clock))
    relaxed = started(KlaviyoEmulator(api_key=KEY, clock=clock, enforce_limits=False))
    try:
        for emu, expected in ((emulator, [204] * 10 + [429]), (relaxed, [204] * 11)):
            list_id = emu.create_list("VIP")
            profile = emu.add_profile("a@example.com")
            with client_for(emu) as client:  # add_profiles_to_list: burst 10/s, steady 150/m in stable.json
                answers = [client.post(MEMBERS.format(list_id), json=members_body([profile])) for _ in range(11)]
            assert [a.status_code for a in answers] == expected
            assert answers[0].headers["RateLimit-Limit"] == "150"
    finally:
        emulator.stop()
        relaxed.stop()


def test_harness_faults_answer_in_klaviyos_shapes(clock: Clock) -> None:
    storm = started(KlaviyoEmulator(api_key=KEY, clock=clock, faults=Faults(throttle_storm=2)))
    broken = started(KlaviyoEmulator(api_key=KEY, clock=clock, faults=Faults(error_rate=1.0)))
    torn = started(KlaviyoEmulator(api_key=KEY, clock=clock, faults=Faults(malformed_rate=1.0)))
    dropped = started(KlaviyoEmulator(api_key=KEY, clock=clock, faults=Faults(reset_rate=1.0)))
    try:
        with client_for(dropped) as client, pytest.raises(httpx.TransportError):
            client.get("/api/lists")
        with client_for(storm) as client:
            answers = [client.get("/api/lists") for _ in range(3)]
            assert [a.status_code for a in answers] == [429, 429, 200]
            assert answers[0].headers["Retry-After"] == "1"
            refused(answers[0], 429, "throttled")
        with client_for(broken) as client:
            assert client.get("/api/lists").json()["errors"][0]["status"] in (500, 502, 503)
        with client_for(torn) as client:
            create = {"data": {"type": "list", "attributes": {"name": "Torn"}}}
            answer = client.post("/api/lists", json=create)
            with pytest.raises(json.JSONDecodeError):
                answer.json()
            assert [lst.name for lst in torn.lists.values()] == ["Torn"], "the effect happened; only the answer tore"
    finally:
        for emu in (storm, broken, torn, dropped):
            emu.stop()


# -- lists -------------------------------------------------------------------------------------------
def test_lists_are_created_read_and_paged_ten_at_a_time(emulator: KlaviyoEmulator, client: httpx.Client) -> None:
    created = client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "Newsletter"}}})
    assert created.status_code == 201
    list_id = conforms(created, "POST", "/api/lists")["data"]["id"]
    for i in range(11):
        emulator.create_list(f"List {i}")
    pages = every_page(client, "/api/lists", {})
    assert [len(p) for p in pages] == [10, 2]
    conforms(client.get("/api/lists"), "GET", "/api/lists")
    refused(client.get("/api/lists", params={"page[size]": "11"}), 400, "invalid")
    named = client.get("/api/lists", params={"filter": 'equals(name,["Newsletter"])'}).json()["data"]
    assert [lst["id"] for lst in named] == [list_id]
    refused(client.get("/api/lists", params={"filter": 'equals(name,"Newsletter")'}), 400, "invalid")
    profile = emulator.add_profile("a@example.com")
    assert client.post(MEMBERS.format(list_id), json=members_body([profile])).status_code == 204
    one = client.get(f"/api/lists/{list_id}/", params={"additional-fields[list]": "profile_count"})
    assert conforms(one, "GET", "/api/lists/{id}")["data"]["attributes"]["profile_count"] == 1
    assert "profile_count" not in client.get(f"/api/lists/{list_id}").json()["data"]["attributes"]


def test_the_sandbox_account_already_holds_the_shops_subscribers() -> None:
    from connectors.shopify.synthetic import SyntheticStore

    class World:
        store = SyntheticStore(seed=4, customers=60, now=datetime(2026, 11, 1, tzinfo=UTC))

    emulator, _ = sandbox_emulator(World())
    states = {
        c["defaultEmailAddress"]["emailAddress"].lower(): c["defaultEmailAddress"]["marketingState"]
        for c in World.store.customers
        if c["defaultEmailAddress"]
    }
    subscribed = {e for e, state in states.items() if state == SUBSCRIBED}
    assert subscribed and len(subscribed) < len(states)
    for email, state in states.items():
        profile = emulator.profile(email)
        assert (profile is not None and profile.consent == SUBSCRIBED) == (state == SUBSCRIBED), email


def test_sandbox_creates_unknown_lists_on_first_use() -> None:
    emulator, key = sandbox_emulator()
    emulator.start()
    try:
        headers = {**HEADERS, "Authorization": f"Klaviyo-API-Key {key}"}
        with httpx.Client(base_url=emulator.url, headers=headers) as client:
            created = client.post("/api/profile-bulk-import-jobs", json=import_body([{"email": "a@x.io"}], "Cfg001"))
            assert created.status_code == 202
            emulator.finish_jobs()
            assert emulator.list_members("Cfg001") == {"a@x.io"}
            profile = emulator.add_profile("b@x.io")
            assert client.post(MEMBERS.format("Cfg002"), json=members_body([profile])).status_code == 204
            assert emulator.list_members("Cfg002") == {"b@x.io"}
    finally:
        emulator.stop()


# -- engagement events ---------------------------------------------------------------------------------
def test_events_page_in_datetime_order_under_metric_and_datetime_filters(
    emulator: KlaviyoEmulator, client: httpx.Client
) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(30):
        emulator.record_event(f"reader{i % 7}@example.com", "Opened Email", start + timedelta(hours=29 - i))
    for i in range(5):
        emulator.record_event("clicker@example.com", "Clicked Email", start + timedelta(hours=i))
    metrics = conforms(client.get("/api/metrics"), "GET", "/api/metrics")
    by_name = {m["attributes"]["name"]: m["id"] for m in metrics["data"]}
    assert {"Opened Email", "Clicked Email"} <= set(by_name)
    cutoff = start + timedelta(hours=9, minutes=30)
    query = {
        "filter": f'equals(metric_id,"{by_name["Opened Email"]}"),greater-than(datetime,{cutoff.isoformat()})',
        "include": "profile",
        "page[size]": "8",
    }
    first = client.get("/api/events", params=query)
    conforms(first, "GET", "/api/events")
    pages = every_page(client, "/api/events", query)
    events = [e for page in pages for e in page]
    assert [len(p) for p in pages] == [8, 8, 4]
    times = [datetime.fromisoformat(e["attributes"]["datetime"]) for e in events]
    assert times == sorted(times) and times[0] > cutoff and len(set(e["id"] for e in events)) == 20
    emails = {p["id"]: p["attributes"]["email"] for p in first.json()["included"] if p["type"] == "profile"}
    assert all(e["relationships"]["profile"]["data"]["id"] in emails for e in first.json()["data"])
    assert set(emails.values()) <= {f"reader{i}@example.com" for i in range(7)}
    newest = client.get("/api/events", params={**query, "sort": "-datetime"}).json()["data"]
    assert newest[0]["id"] == events[-1]["id"]
    refused(client.get("/api/events", params={"filter": 'equals(email,"a@x.io")'}), 400, "invalid")
    refused(client.get("/api/events", params={"filter": "greater-than(datetime,yesterday)"}), 400, "invalid")
    quoted = f"greater-than(datetime,'{cutoff.isoformat()}')"  # Klaviyo wants datetimes bare, never quoted
    refused(client.get("/api/events", params={"filter": quoted}), 400, "invalid")
    refused(client.get("/api/events", params={"page[size]": "1001"}), 400, "invalid")
