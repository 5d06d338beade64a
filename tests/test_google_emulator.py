"""The Google Data Manager contract emulator, driven over real HTTP with raw httpx and the official google-auth."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.google import discovery
from connectors.google.discovery import SCOPE
from connectors.google.emulator import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEFAULT_USER,
    REFRESH_TOKEN,
    GoogleDataManagerEmulator,
    sandbox_emulator,
)
from connectors.kernel import specs
from connectors.kernel.emulator import Faults
from connectors.kernel.identifiers import normalize_email, normalize_phone, sha256_hex

ACCOUNT = "1234567890"
LIST = "7001"
INGEST = "/v1/audienceMembers:ingest"
REMOVE = "/v1/audienceMembers:remove"
STATUS = "/v1/requestStatus:retrieve"
GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}
START = 1_780_000_000.0  # 2026-05-28, a fixed point for the injected clock


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def h(email: str) -> str:
    normalized = normalize_email(email)
    assert normalized is not None
    return sha256_hex(normalized)


def destination(account: str = ACCOUNT, list_id: str = LIST, **extra: Any) -> dict[str, Any]:
    return {
        "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": account},
        "productDestinationId": list_id,
        **extra,
    }


def member(*emails: str, phone: str | None = None, **extra: Any) -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = [{"emailAddress": h(e)} for e in emails]
    if phone is not None:
        e164 = normalize_phone(phone)
        assert e164 is not None and e164.startswith("+")
        identifiers.append({"phoneNumber": sha256_hex(e164)})
    return {"userData": {"userIdentifiers": identifiers}, **extra}


def ingest_body(members: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    body = {
        "destinations": [destination()],
        "audienceMembers": members,
        "encoding": "HEX",
        "consent": GRANTED,
        "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"},
    }
    return {**body, **overrides}


def remove_body(members: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return {"destinations": [destination()], "audienceMembers": members, "encoding": "HEX", **overrides}


def violations(response: httpx.Response) -> list[dict[str, str]]:
    """The BadRequest field violations of a Google INVALID_ARGUMENT answer (and check its envelope)."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    infos = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert infos and infos[0]["domain"] == "datamanager.googleapis.com"
    bad = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"]
    found: list[dict[str, str]] = bad[0]["fieldViolations"]
    return found


def reasons(response: httpx.Response) -> set[str]:
    return {v.get("reason", "") for v in violations(response)}


def poll(client: httpx.Client, request_id: str) -> list[dict[str, Any]]:
    """Every answer of requestStatus:retrieve until no destination is PROCESSING (bounded)."""
    seen: list[dict[str, Any]] = []
    for _ in range(10):
        response = client.get(STATUS, params={"requestId": request_id})
        assert response.status_code == 200, response.text
        body = response.json()
        assert discovery.errors("RetrieveRequestStatusResponse", body) == []
        seen.append(body)
        if all(d["requestStatus"] != "PROCESSING" for d in body["requestStatusPerDestination"]):
            return seen
    raise AssertionError("still PROCESSING after 10 polls")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[GoogleDataManagerEmulator]:
    with GoogleDataManagerEmulator(clock=clock) as emulator:
        assert isinstance(emulator, GoogleDataManagerEmulator)
        emulator.grant(DEFAULT_USER, ACCOUNT)
        emulator.create_user_list(ACCOUNT, LIST)
        yield emulator


@pytest.fixture
def client(emu: GoogleDataManagerEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emu.issue_token()}"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=10) as c:
        yield c


# -- bodies, schemas and limits ------------------------------------------------------------------------
def test_a_body_breaking_the_discovery_schema_is_refused_and_the_validator_agrees(
    emu: GoogleDataManagerEmulator, client: httpx.Client
) -> None:
    good = ingest_body([member("dana@example.com")])
    assert discovery.errors("IngestAudienceMembersRequest", good) == []
    bad = ingest_body([{"userData": {"userIdentifiers": [{"emailAdress": h("dana@example.com")}]}}], encoding="HEXX")
    response = client.post(INGEST, json=bad)
    fields = {v["field"] for v in violations(response)}
    assert fields == {"audience_members[0].user_data.user_identifiers[0]", "encoding"}
    assert 'Unknown name "emailAdress"' in response.json()["error"]["message"]
    found = discovery.errors("IngestAudienceMembersRequest", bad)
    assert {v.field for v in found} == fields
    assert {(v.kind, v.name) for v in found} == {("unknown_field", "emailAdress"), ("enum", "")}
    # remove has no consent or terms of service: sending them is an unknown field, as the schema says
    response = client.post(REMOVE, json=remove_body([member("dana@example.com")], consent=GRANTED))
    assert [v["field"] for v in violations(response)] == ["(body)"]
    assert 'Unknown name "consent"' in violations(response)[0]["description"]
    assert emu.members(ACCOUNT, LIST) == set()


def test_request_limits_are_enforced_at_the_documented_boundaries(client: httpx.Client) -> None:
    many = [member(f"m{i}@example.com") for i in range(10_001)]
    assert reasons(client.post(INGEST, json=ingest_body(many))) == {"TOO_MANY_AUDIENCE_MEMBERS"}
    assert client.post(INGEST, json=ingest_body(many[:10_000], validateOnly=True)).status_code == 200
    eleven = member(*(f"alias{i}@example.com" for i in range(11)))
    response = client.post(INGEST, json=ingest_body([member("ok@example.com"), eleven]))
    assert [(v["field"], v["reason"]) for v in violations(response)] == [
        ("audience_members.audience_members[1].user_data.user_identifiers", "TOO_MANY_USER_IDENTIFIERS")
    ]
    ten = member(*(f"alias{i}@example.com" for i in range(10)))
    assert client.post(INGEST, json=ingest_body([ten], validateOnly=True)).status_code == 200
    eleven_destinations = ingest_body([member("ok@example.com")], destinations=[destination()] * 11)
    assert "TOO_MANY_DESTINATIONS" in reasons(client.post(INGEST, json=eleven_destinations))


def test_identifiers_must_be_sha256_hex_and_one_bad_member_refuses_the_whole_request(
    emu: GoogleDataManagerEmulator, client: httpx.Client
) -> None:
    plain = {"userData": {"userIdentifiers": [{"emailAddress": "dana@example.com"}]}}
    response = client.post(INGEST, json=ingest_body([member("ok@example.com"), plain]))
    assert [(v["field"], v["reason"]) for v in violations(response)] == [
        ("audience_members.audience_members[1].user_data.user_identifiers", "INVALID_HEX_ENCODING")
    ]
    hex_only = {"userData": {"userIdentifiers": [{"emailAddress": b"dana@example.com".hex()}]}}
    response = client.post(INGEST, json=ingest_body([hex_only]))
    assert [(v["field"], v["reason"]) for v in violations(response)] == [
        ("audience_members.audience_members[0]", "INVALID_SHA256_FORMAT")
    ]
    upper = {"userData": {"userIdentifiers": [{"emailAddress": h("dana@example.com").upper()}]}}
    assert reasons(client.post(INGEST, json=ingest_body([upper]))) == {"INVALID_HEX_ENCODING"}
    no_encoding = ingest_body([member("ok@example.com")])
    del no_encoding["encoding"]
    assert reasons(client.post(INGEST, json=no_encoding)) == {"REQUIRED_FIELD_MISSING"}
    assert emu.members(ACCOUNT, LIST) == set(), "fast fail: the valid member was not added either"


def test_address_identifiers_hash_names_but_not_country_or_postal_code(
    emu: GoogleDataManagerEmulator, client: httpx.Client
) -> None:
    address = {
        "givenName": sha256_hex("dana"),
        "familyName": sha256_hex("lee"),
        "regionCode": "US",
        "postalCode": "94045",
    }
    ok = {"userData": {"userIdentifiers": [{"address": address}]}}
    assert client.post(INGEST, json=ingest_body([ok])).status_code == 200
    assert emu.members(ACCOUNT, LIST) == {f"address:{sha256_hex('dana')}:{sha256_hex('lee')}:US:94045"}
    hashed_country = {"userData": {"userIdentifiers": [{"address": {**address, "regionCode": sha256_hex("us")}}]}}
    assert reasons(client.post(INGEST, json=ingest_body([hashed_country]))) == {"INVALID_COUNTRY_CODE"}


def test_missing_or_rejected_customer_match_terms_are_refused(
    emu: GoogleDataManagerEmulator, client: httpx.Client
) -> None:
    body = ingest_body([member("dana@example.com")])
    del body["termsOfService"]
    response = client.post(INGEST, json=body)
    assert [(v["field"], v["reason"]) for v in violations(response)] == [
        ("terms_of_service.customer_match_terms_of_service_status", "TERMS_AND_CONDITIONS_NOT_SIGNED")
    ]
    rejected = ingest_body(
        [member("dana@example.com")], termsOfService={"customerMatchTermsOfServiceStatus": "REJECTED"}
    )
    assert reasons(client.post(INGEST, json=rejected)) == {"TERMS_AND_CONDITIONS_NOT_SIGNED"}
    assert emu.members(ACCOUNT, LIST) == set()


def test_validate_only_answers_like_a_real_request_but_changes_nothing(
    emu: GoogleDataManagerEmulator, client: httpx.Client
) -> None:
    body = ingest_body([member("dana@example.com"), member("alex@example.com")], validateOnly=True)
    response = client.post(INGEST, json=body)
    assert response.status_code == 200 and response.json() == {}
    assert discovery.errors("IngestAudienceMembersResponse", response.json()) == []
    invalid = client.post(INGEST, json={**body, "termsOfService": {}})
    assert reasons(invalid) == {"TERMS_AND_CONDITIONS_NOT_SIGNED"}, "validateOnly still validates"
    assert emu.members(ACCOUNT, LIST) == set() and emu.submitted == {}
    assert client.post(INGEST, json={**body, "validateOnly": False}).status_code == 200
    assert emu.members(ACCOUNT, LIST) == {h("dana@example.com"), h("alex@example.com")}
    assert client.post(REMOVE, json=remove_body([member("dana@example.com")], validateOnly=True)).json() == {}
    assert emu.members(ACCOUNT, LIST) == {h("dana@example.com"), h("alex@example.com")}


def test_ingest_then_remove_converges(emu: GoogleDataManagerEmulator, client: httpx.Client) -> None:
    people = [member("a@example.com", phone="+1 212 555 0100"), member("b@example.com"), member("c@example.com")]
    assert client.post(INGEST, json=ingest_body(people)).status_code == 200
    # a replay (set-like, safe to retry) and a removal by phone only, plus someone never added
    assert client.post(INGEST, json=ingest_body(people)).status_code == 200
    removal = [member(phone="+1 212 555 0100"), member("b@example.com"), member("never@example.com")]
    response = client.post(REMOVE, json=remove_body(removal))
    assert response.status_code == 200
    assert emu.members(ACCOUNT, LIST) == {h("c@example.com")}
    final = poll(client, response.json()["requestId"])[-1]["requestStatusPerDestination"][0]
    assert final["requestStatus"] == "SUCCESS"
    assert final["audienceMembersRemovalStatus"]["userDataRemovalStatus"] == {
        "recordCount": "3",
        "userIdentifierCount": "3",
    }
    assert client.post(REMOVE, json=remove_body([member("c@example.com")])).status_code == 200
    assert emu.members(ACCOUNT, LIST) == set()


def test_request_status_goes_processing_then_reports_counts_match_rate_and_bad_records(
    emu: GoogleDataManagerEmulator, client: httpx.Client
) -> None:
    denied = member("b@example.com", consent={"adUserData": "CONSENT_DENIED"})
    people = [member("a@example.com", phone="+44 20 7946 0958"), denied, member("c@example.com")]
    response = client.post(INGEST, json=ingest_body(people))
    assert response.status_code == 200 and discovery.errors("IngestAudienceMembersResponse", response.json()) == []
    answers = poll(client, response.json()["requestId"])
    assert [a["requestStatusPerDestination"][0]["requestStatus"] for a in answers] == [
        "PROCESSING",
        "PROCESSING",
        "PARTIAL_SUCCESS",
    ]
    final = answers[-1]["requestStatusPerDestination"][0]
    assert final["destination"] == destination()
    status = final["audienceMembersIngestionStatus"]["userDataIngestionStatus"]
    assert status["recordCount"] == "3" and status["userIdentifierCount"] == "4"  # int64 travels as a string
    assert status["uploadMatchRateRange"] == "MATCH_RATE_RANGE_41_TO_50"  # 2 of 3 accepted x 0.7 match rate
    assert final["errorInfo"] == {
        "errorCounts": [{"reason": "PROCESSING_ERROR_REASON_DENIED_CONSENT", "recordCount": "1", "recordIndices": [1]}]
    }
    assert emu.members(ACCOUNT, LIST) == {h("a@example.com"), h("c@example.com")}, "a denied member is not added"
    clean = client.post(INGEST, json=ingest_body([member("d@example.com")])).json()["requestId"]
    assert poll(client, clean)[-1]["requestStatusPerDestination"][0]["requestStatus"] == "SUCCESS"
    emu.poisoned.add(h("e@example.com"))
    bad = client.post(INGEST, json=ingest_body([member("e@example.com")])).json()["requestId"]
    assert poll(client, bad)[-1]["requestStatusPerDestination"][0]["requestStatus"] == "FAILED"
    unknown = client.get(STATUS, params={"requestId": "not-a-request"})
    assert reasons(unknown) == {"INVALID_REQUEST_ID"}


def test_consent_is_kept_per_member_and_unknown_consent_of_eea_users_is_not_granted(clock: FakeClock) -> None:
    with GoogleDataManagerEmulator(clock=clock, eea=True, processing_polls=0) as emu:
        assert isinstance(emu, GoogleDataManagerEmulator)
        emu.grant(DEFAULT_USER, ACCOUNT)
        emu.create_user_list(ACCOUNT, LIST)
        headers = {"Authorization": f"Bearer {emu.issue_token()}"}
        people = [member("a@example.com"), member("b@example.com", consent=GRANTED)]
        body = ingest_body(people, consent={"adUserData": "CONSENT_GRANTED"})  # request-level: half the consent
        request_id = httpx.post(emu.url + INGEST, json=body, headers=headers).json()["requestId"]
        errors = emu.status_of(request_id)["requestStatusPerDestination"][0]["errorInfo"]["errorCounts"]
        assert errors == [
            {"reason": "PROCESSING_ERROR_REASON_UNKNOWN_CONSENT", "recordCount": "1", "recordIndices": [0]}
        ]
        [record] = emu.member_records(ACCOUNT, LIST)
        assert record.identity == h("b@example.com")
        assert (record.ad_user_data, record.ad_personalization) == ("CONSENT_GRANTED", "CONSENT_GRANTED")


def test_membership_lasts_at_most_540_days_and_a_refresh_shows_as_due(
    emu: GoogleDataManagerEmulator, client: httpx.Client, clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="540"):
        emu.create_user_list(ACCOUNT, "other", membership_days=541)
    assert client.post(INGEST, json=ingest_body([member("a@example.com"), member("b@example.com")])).status_code == 200
    [first, _] = emu.member_records(ACCOUNT, LIST)
    assert first.last_sent == emu.now()
    clock.advance(timedelta(days=515).total_seconds())
    assert emu.refresh_due(ACCOUNT, LIST) == {h("a@example.com"), h("b@example.com")}
    token = emu.issue_token()  # the fixture's token expired long ago
    body = ingest_body([member("a@example.com")])
    assert httpx.post(emu.url + INGEST, json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert emu.refresh_due(ACCOUNT, LIST) == {h("b@example.com")}
    clock.advance(timedelta(days=26).total_seconds())  # 541 days after the first upload
    assert emu.members(ACCOUNT, LIST) == {h("a@example.com")}
    [kept] = emu.member_records(ACCOUNT, LIST)
    assert kept.first_added < kept.last_sent


# -- quotas --------------------------------------------------------------------------------------------
def quota_limit(response: httpx.Response) -> str:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    [info] = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert info["metadata"]["service"] == "datamanager.googleapis.com"
    limit: str = info["metadata"]["quota_limit"]
    return limit


def test_the_per_minute_request_quota_answers_429_with_its_name_until_the_minute_turns(
    emu: GoogleDataManagerEmulator, client: httpx.Client, clock: FakeClock
) -> None:
    clock.now = START - START % 60  # the start of a minute
    body = ingest_body([member("a@example.com")], validateOnly=True)
    assert all(client.post(INGEST, json=body).status_code == 200 for _ in range(300))
    assert quota_limit(client.post(INGEST, json=body)) == "IngestionMutateRequestsPerMinutePerProject"
    assert quota_limit(client.post(REMOVE, json=remove_body([member("a@example.com")]))).endswith("PerMinutePerProject")
    assert reasons(client.get(STATUS, params={"requestId": "x"})) == {"INVALID_REQUEST_ID"}, (
        "reads have their own quota"
    )
    clock.advance(59)
    assert client.post(INGEST, json=body).status_code == 429
    clock.advance(1)
    assert client.post(INGEST, json=body).status_code == 200


def test_the_daily_quota_needs_a_long_pause(clock: FakeClock) -> None:
    with GoogleDataManagerEmulator(clock=clock, mutate_quota=(300, 2)) as emu:
        assert isinstance(emu, GoogleDataManagerEmulator)
        emu.grant(DEFAULT_USER, ACCOUNT)
        emu.create_user_list(ACCOUNT, LIST)
        with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {emu.issue_token()}"}) as c:
            body = ingest_body([member("a@example.com")], validateOnly=True)
            assert [c.post(INGEST, json=body).status_code for _ in range(2)] == [200, 200]
            assert quota_limit(c.post(INGEST, json=body)) == "IngestionMutateRequestsPerDayPerProject"
            clock.advance(120)
            assert quota_limit(c.post(INGEST, json=body)) == "IngestionMutateRequestsPerDayPerProject"
    assert emu.log[-1].status == 429


# -- auth ------------------------------------------------------------------------------------------------
def test_an_expired_token_is_401_and_a_refreshed_one_works(emu: GoogleDataManagerEmulator, clock: FakeClock) -> None:
    body = ingest_body([member("a@example.com")])
    missing = httpx.post(emu.url + INGEST, json=body)
    assert missing.status_code == 401 and missing.json()["error"]["status"] == "UNAUTHENTICATED"
    assert missing.json()["error"]["details"][0]["reason"] == "CREDENTIALS_MISSING"
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN, "client_id": CLIENT_ID}
    granted = httpx.post(emu.token_uri, data={**form, "client_secret": CLIENT_SECRET}).json()
    assert granted["token_type"] == "Bearer" and granted["expires_in"] == 3599 and granted["scope"] == SCOPE
    auth = {"Authorization": f"Bearer {granted['access_token']}"}
    assert httpx.post(emu.url + INGEST, json=body, headers=auth).status_code == 200
    clock.advance(3599)
    expired = httpx.post(emu.url + INGEST, json=body, headers=auth)
    assert expired.status_code == 401 and expired.json()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
    assert "invalid_token" in expired.headers["www-authenticate"]
    fresh = httpx.post(emu.token_uri, data={**form, "client_secret": CLIENT_SECRET}).json()["access_token"]
    assert httpx.post(emu.url + INGEST, json=body, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    wrong = httpx.post(emu.token_uri, data={**form, "client_secret": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    emu.revoke_refresh_token(REFRESH_TOKEN)
    revoked = httpx.post(emu.token_uri, data={**form, "client_secret": CLIENT_SECRET})
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"


def test_accounts_the_token_cannot_use_and_missing_scopes_are_403(emu: GoogleDataManagerEmulator) -> None:
    emu.create_user_list("5550001111", LIST)
    auth = {"Authorization": f"Bearer {emu.issue_token()}"}
    foreign = ingest_body([member("a@example.com")], destinations=[destination("5550001111")])
    response = httpx.post(emu.url + INGEST, json=foreign, headers=auth)
    assert response.status_code == 403 and response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert response.json()["error"]["details"][0]["reason"] == "PERMISSION_DENIED"
    # through a manager account: the login account is granted and manages the operating account
    emu.grant(DEFAULT_USER, "9990000000")
    via_manager = destination("5550001111", loginAccount={"accountType": "GOOGLE_ADS", "accountId": "9990000000"})
    body = ingest_body([member("a@example.com")], destinations=[via_manager])
    assert httpx.post(emu.url + INGEST, json=body, headers=auth).status_code == 403
    emu.link("9990000000", "5550001111")
    assert httpx.post(emu.url + INGEST, json=body, headers=auth).status_code == 200
    hyphens = ingest_body([member("a@example.com")], destinations=[destination("123-456-7890")])
    assert reasons(httpx.post(emu.url + INGEST, json=hyphens, headers=auth)) == {"INVALID_DESTINATION"}
    narrow = {"Authorization": f"Bearer {emu.issue_token(scopes=['https://www.googleapis.com/auth/adwords'])}"}
    response = httpx.post(emu.url + INGEST, json=ingest_body([member("a@example.com")]), headers=narrow)
    assert response.status_code == 403
    assert response.json()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    unknown_list = ingest_body([member("a@example.com")], destinations=[destination(list_id="404")])
    assert reasons(httpx.post(emu.url + INGEST, json=unknown_list, headers=auth)) == {"INVALID_USER_LIST_ID"}


def test_google_auth_refresh_token_credentials_get_a_token_that_ingests(emu: GoogleDataManagerEmulator) -> None:
    from google.auth.exceptions import RefreshError
    from google.auth.transport.requests import Request
    from google.oauth2.credentials import Credentials

    emu.clock = time.time  # google-auth computes expiry on the real clock
    creds = Credentials(
        token=None,
        refresh_token=REFRESH_TOKEN,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri=emu.token_uri,
        scopes=[SCOPE],
    )
    creds.refresh(Request())
    assert creds.valid and creds.token and creds.token.startswith("ya29.")
    response = httpx.post(
        emu.url + INGEST,
        json=ingest_body([member("a@example.com")]),
        headers={"Authorization": f"Bearer {creds.token}"},
    )
    assert response.status_code == 200 and "requestId" in response.json()
    assert emu.members(ACCOUNT, LIST) == {h("a@example.com")}
    bad = Credentials(
        None, refresh_token="1//unknown", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_uri=emu.token_uri
    )
    with pytest.raises(RefreshError, match="invalid_grant"):
        bad.refresh(Request())


def _service_account_info(emu: GoogleDataManagerEmulator, email: str) -> tuple[dict[str, str], bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {
        "type": "service_account",
        "project_id": "audience-sync-test",
        "private_key_id": "key-1",
        "private_key": private,
        "client_email": email,
        "client_id": "1000000000001",
        "token_uri": emu.token_uri,
    }
    return info, public


def test_google_auth_service_account_jwt_is_verified_and_its_token_ingests(emu: GoogleDataManagerEmulator) -> None:
    from google.auth.exceptions import RefreshError
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    emu.clock = time.time  # the JWT's iat/exp are real time
    email = "sync@audience-sync-test.iam.gserviceaccount.com"
    info, public = _service_account_info(emu, email)
    emu.register_service_account(email, public, key_id="key-1")
    emu.grant(email, ACCOUNT)
    creds = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    creds.refresh(Request())
    assert creds.valid and creds.token
    auth = {"Authorization": f"Bearer {creds.token}"}
    response = httpx.post(emu.url + INGEST, json=ingest_body([member("sa@example.com")]), headers=auth)
    assert response.status_code == 200, response.text
    assert emu.members(ACCOUNT, LIST) == {h("sa@example.com")}
    # the same email signing with a key the emulator does not trust is refused
    impostor, _ = _service_account_info(emu, email)
    with pytest.raises(RefreshError, match="Invalid JWT Signature"):
        service_account.Credentials.from_service_account_info(impostor, scopes=[SCOPE]).refresh(Request())


# -- harness faults, sandbox, spec ----------------------------------------------------------------------
def test_harness_faults_answer_in_google_style(clock: FakeClock) -> None:
    faults = Faults(throttle_storm=1)
    with GoogleDataManagerEmulator(faults, clock=clock) as emu:
        assert isinstance(emu, GoogleDataManagerEmulator)
        emu.grant(DEFAULT_USER, ACCOUNT)
        emu.create_user_list(ACCOUNT, LIST)
        auth = {"Authorization": f"Bearer {emu.issue_token()}"}
        body = ingest_body([member("a@example.com")])
        assert quota_limit(httpx.post(emu.url + INGEST, json=body, headers=auth)).endswith("PerMinutePerProject")
        faults.error_rate = 1.0
        statuses = {httpx.post(emu.url + INGEST, json=body, headers=auth).status_code for _ in range(12)}
        assert statuses <= {500, 502, 503} and len(statuses) > 1
        faults.error_rate, faults.malformed_rate = 0.0, 1.0
        torn = httpx.post(emu.url + INGEST, json=body, headers=auth)
        with pytest.raises(json.JSONDecodeError):
            torn.json()
        assert emu.members(ACCOUNT, LIST) == {h("a@example.com")}, "a torn answer still applied the request"
        faults.malformed_rate, faults.reset_rate = 0.0, 1.0
        with pytest.raises(httpx.TransportError):
            httpx.post(emu.url + INGEST, json=body, headers=auth)


def test_sandbox_emulator_accepts_any_list_and_its_credentials_work_with_google_auth() -> None:
    from google.auth.transport.requests import Request
    from google.oauth2.credentials import Credentials

    emulator, secret = sandbox_emulator()
    with emulator:
        # from_authorized_user_info always sets Google's own token endpoint: point it at the emulator after
        creds = Credentials.from_authorized_user_info(json.loads(secret), scopes=[SCOPE])
        creds = creds.with_token_uri(emulator.token_uri)
        assert creds.token_uri == emulator.token_uri
        creds.refresh(Request())
        body = ingest_body([member("a@example.com")], destinations=[destination("4242424242", "888")])
        response = httpx.post(emulator.url + INGEST, json=body, headers={"Authorization": f"Bearer {creds.token}"})
        assert response.status_code == 200, response.text
        assert emulator.members("4242424242", "888") == {h("a@example.com")}


def test_a_missing_discovery_document_stops_the_emulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(specs, "ROOT", tmp_path)
    monkeypatch.setattr(discovery, "_VALIDATORS", {})
    specs.load_spec.cache_clear()
    discovery.to_json_schema.cache_clear()
    try:
        with pytest.raises(specs.SpecMissing, match=r"google/spec/datamanager\.v1\.json\.gz is missing"):
            GoogleDataManagerEmulator()
    finally:
        specs.load_spec.cache_clear()
        discovery.to_json_schema.cache_clear()
