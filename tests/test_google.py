"""Google Customer Match (Data Manager API): what the generated suites cannot know about Google.

Bodies against the discovery document, identities and hashing, consent, the terms of service,
fast-fail isolation, validateOnly, requestStatus diagnostics, project quotas, and OAuth2 through
google-auth (refresh before expiry and on a 401, service accounts, refused credentials). Every test
drives the real destination over HTTP against the contract emulator.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors.google import client as google_client
from connectors.google import destination as google_destination
from connectors.google import discovery
from connectors.google.client import ERRORS, PER_MINUTE_WAIT, seconds_to_daily_reset
from connectors.google.contract import ACCOUNT, LIST, UNLIMITED, credentials_json
from connectors.google.destination import GoogleConfig, GoogleDestination, GoogleOptions, ProductAccount
from connectors.google.emulator import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEFAULT_USER,
    REFRESH_TOKEN,
    GoogleDataManagerEmulator,
    invalid_argument,
    sandbox_emulator,
)
from connectors.google.members import Row, decode_identity, encode_identity
from connectors.kernel.destination import BatchResult
from connectors.kernel.errors import (
    ConfigError,
    LongPauseError,
    PermanentError,
    RetryableError,
)
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime

START = 1_780_000_000.0  # 2026-05-28, the emulator's injected clock
INGEST, REMOVE, STATUS = "/v1/audienceMembers:ingest", "/v1/audienceMembers:remove", "/v1/requestStatus:retrieve"
SCHEMAS = {INGEST: "IngestAudienceMembersRequest", REMOVE: "RemoveAudienceMembersRequest"}
GRANTED = "CONSENT_GRANTED"


class Clock:
    """The emulator's time; the destination's injected sleep moves it on (quota windows, token expiry)."""

    def __init__(self) -> None:
        self.now = START
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@contextmanager
def emulator(**options: Any) -> Iterator[GoogleDataManagerEmulator]:
    options = {"processing_polls": 1, "mutate_quota": UNLIMITED, "read_quota": UNLIMITED, **options}
    emu = GoogleDataManagerEmulator(**options)
    emu.start()
    emu.grant(DEFAULT_USER, ACCOUNT)
    emu.create_user_list(ACCOUNT, LIST)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emu(clock: Clock) -> Iterator[GoogleDataManagerEmulator]:
    with emulator(clock=clock) as started:
        yield started


def build(
    emu: GoogleDataManagerEmulator,
    sleep: Callable[[float], None],
    *,
    secret: str | None = None,
    **overrides: Any,
) -> GoogleDestination:
    settings: dict[str, Any] = {
        "base_url": emu.base_url,
        "token_uri": emu.token_uri,
        "secret": secret if secret is not None else credentials_json(REFRESH_TOKEN),
        "operating_account": ProductAccount(account_id=ACCOUNT),
        "terms_accepted": True,
        "requests_per_minute": 1e9,
        "burst": 1e9,
        **overrides,
    }
    runtime = Runtime(sleep=sleep, key_prefix=f"test-{uuid.uuid4().hex}")
    destination = GoogleDestination("g", GoogleConfig(**settings), runtime)
    OPENED.append(destination)
    return destination


OPENED: list[GoogleDestination] = []


@pytest.fixture(autouse=True)
def _close_destinations() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


@pytest.fixture
def dest(emu: GoogleDataManagerEmulator, clock: Clock) -> GoogleDestination:
    return build(emu, clock.sleep)


def person(i: int, consent: Consent = Consent.SUBSCRIBED, **fields: Any) -> Member:
    values: dict[str, Any] = {"email": f"person{i}@example.com", "phone": f"+1212555{i:04d}", "country": "US"}
    return Member(key=f"c{i}", email_consent=consent, **{**values, **fields})


def ids(destination: GoogleDestination, members: list[Member]) -> list[str]:
    return [destination.identity(m, GoogleOptions()) for m in members]


def held(emu: GoogleDataManagerEmulator) -> set[str]:
    """The hashed emails the list holds (the emulator's identity of a member)."""
    return emu.members(ACCOUNT, LIST)


def sent(emu: GoogleDataManagerEmulator, path: str) -> list[dict[str, Any]]:
    return [body for _, p, body in emu.bodies if p == path]


def email_hash(member: Member) -> str:
    assert member.email is not None
    return sha256_hex(member.email.strip().lower())


# -- bodies, identities, hashing ---------------------------------------------------------------------
def test_every_body_we_send_matches_the_discovery_document(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination
) -> None:
    members = [person(1), person(2, Consent.NOT_SUBSCRIBED), person(3, phone=None), person(4, email=None)]
    dest.add(LIST, members, GoogleOptions())
    dest.validate(LIST, members, GoogleOptions())
    dest.remove(LIST, ids(dest, members[:2]), GoogleOptions())
    assert {p for _, p, _ in emu.bodies} == {INGEST, REMOVE}
    for _, path, body in emu.bodies:
        assert discovery.errors(SCHEMAS[path], body) == [], path
        assert body["encoding"] == "HEX"
        assert body["destinations"] == [
            {"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": ACCOUNT}, "productDestinationId": LIST}
        ]
        assert all(len(m["userData"]["userIdentifiers"]) <= 10 for m in body["audienceMembers"])
    for body in sent(emu, INGEST):
        assert body["termsOfService"] == {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
    for body in sent(emu, REMOVE):  # the remove request has no consent and no terms
        assert set(body) == {"destinations", "audienceMembers", "encoding"}
        assert all(set(m) == {"userData"} for m in body["audienceMembers"])


def test_identities_hash_normalized_identifiers_and_a_removal_is_rebuilt_from_them(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination
) -> None:
    member = Member(key="j", email="  Jane.Doe@Example.COM ", phone="(212) 565-0000", email_consent=Consent.SUBSCRIBED)
    email, phone = sha256_hex("jane.doe@example.com"), sha256_hex("+12125650000")  # E.164 with the '+'
    identity = dest.identity(member, GoogleOptions())
    assert identity == f"EMAIL,PHONE:{email}|{phone}"
    assert decode_identity(identity) == (("EMAIL", "PHONE"), (email, phone))
    assert dest.identity(member, GoogleOptions(keys=["PHONE"])) == f"PHONE:{phone}"
    assert dest.add(LIST, [member], GoogleOptions()).accepted == [identity]
    identifiers = sent(emu, INGEST)[0]["audienceMembers"][0]["userData"]["userIdentifiers"]
    assert identifiers == [{"emailAddress": email}, {"phoneNumber": phone}]
    assert held(emu) == {email}

    result = dest.remove(LIST, [identity], GoogleOptions())
    assert result.accepted == [identity] and held(emu) == set()
    assert sent(emu, REMOVE)[0]["audienceMembers"][0]["userData"]["userIdentifiers"] == identifiers


def test_identities_that_are_not_ours_are_rejected_without_a_request(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination
) -> None:
    upper = "EMAIL:" + sha256_hex("a@example.com").upper()
    garbled = ["jane@example.com", "EMAIL,PHONE:|", upper, "FN:" + sha256_hex("jane"), "EMAIL,EMAIL:a|b"]
    result = dest.remove(LIST, garbled, GoogleOptions())
    assert [r.identity for r in result.rejected] == garbled and {r.code for r in result.rejected} == {"bad_identity"}
    assert result.accepted == [] and emu.bodies == []


# -- consent -----------------------------------------------------------------------------------------
def effective_consent(body: dict[str, Any], member: dict[str, Any]) -> dict[str, str]:
    """What Google applies: the member's own consent, field by field, over the request's."""
    unspecified = "CONSENT_STATUS_UNSPECIFIED"
    own, request = member.get("consent") or {}, body.get("consent") or {}
    effective = {}
    for name in ("adUserData", "adPersonalization"):
        value = own.get(name, unspecified)
        effective[name] = value if value != unspecified else request.get(name, unspecified)
    return effective


def test_consent_is_granted_only_for_members_who_gave_it(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination
) -> None:
    subscribed = person(1)
    never_asked_us = person(2, Consent.NOT_SUBSCRIBED)
    unknown_no_country = person(3, Consent.UNKNOWN, country=None)  # a US number, the store's region
    pending_de = person(4, Consent.PENDING, country="DE")
    unknown_uk_phone = person(5, Consent.UNKNOWN, country=None, phone="+44 20 7946 0018")
    opted_out = person(6, Consent.UNSUBSCRIBED)
    erased = person(7, Consent.REDACTED)
    members = [subscribed, never_asked_us, unknown_no_country, pending_de, unknown_uk_phone, opted_out, erased]
    expected = {"c4": "no_consent", "c5": "no_consent", "c6": "opted_out", "c7": "redacted"}
    assert {m.key: dest.ineligible_reason(m) for m in members if dest.ineligible_reason(m)} == expected

    result = dest.add(LIST, members, GoogleOptions())
    by_identity = dict(zip(ids(dest, members), members, strict=True))
    assert {by_identity[r.identity].key: r.code for r in result.rejected} == expected
    assert {by_identity[i].key for i in result.accepted} == {"c1", "c2", "c3"}

    (body,) = sent(emu, INGEST)
    hashes = {email_hash(m): m for m in members}
    for entry in body["audienceMembers"]:
        member = hashes[entry["userData"]["userIdentifiers"][0]["emailAddress"]]
        consent = effective_consent(body, entry)
        if member.email_consent == Consent.SUBSCRIBED:
            assert consent == {"adUserData": GRANTED, "adPersonalization": GRANTED}
        else:
            assert GRANTED not in consent.values(), member.key
    stored = {r.identity: (r.ad_user_data, r.ad_personalization) for r in emu.member_records(ACCOUNT, LIST)}
    assert stored == {
        email_hash(subscribed): (GRANTED, GRANTED),
        email_hash(never_asked_us): ("CONSENT_STATUS_UNSPECIFIED", "CONSENT_STATUS_UNSPECIFIED"),
        email_hash(unknown_no_country): ("CONSENT_STATUS_UNSPECIFIED", "CONSENT_STATUS_UNSPECIFIED"),
    }


def test_a_shared_consent_is_sent_once_and_a_mixed_batch_never_lends_it(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination
) -> None:
    dest.add(LIST, [person(1), person(2)], GoogleOptions())
    dest.add(LIST, [person(3), person(4, Consent.NOT_SUBSCRIBED)], GoogleOptions())
    uniform, mixed = sent(emu, INGEST)
    assert uniform["consent"] == {"adUserData": GRANTED, "adPersonalization": GRANTED}
    assert all("consent" not in m for m in uniform["audienceMembers"])
    assert "consent" not in mixed
    assert [("consent" in m) for m in mixed["audienceMembers"]] == [True, False]


# -- terms of service ------------------------------------------------------------------------------
def test_unaccepted_terms_are_a_config_error_before_anything_is_sent(
    emu: GoogleDataManagerEmulator, clock: Clock
) -> None:
    destination = build(emu, clock.sleep, terms_accepted=False)
    for attempt in (destination.add, destination.validate):
        with pytest.raises(ConfigError, match="terms_accepted = true") as info:
            attempt(LIST, [person(1)], GoogleOptions())
        assert "Customer Match terms" in info.value.message
    assert emu.log == []
    # removing needs no terms: a store that withdrew its acceptance can still take people out
    identity = destination.identity(person(1), GoogleOptions())
    assert destination.remove(LIST, [identity], GoogleOptions()).accepted == [identity]


def _answer(status: int, body: Any, method: str = "POST") -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request(method, "https://datamanager.googleapis.com/v1/x"))


def _emulated(response: Any) -> httpx.Response:
    return _answer(response.status, response.body)


def test_googles_own_terms_and_list_refusals_are_config_errors_with_hints() -> None:
    from connectors.google.emulator import FieldViolation

    field = "terms_of_service.customer_match_terms_of_service_status"
    terms = _emulated(invalid_argument([FieldViolation(field, "must be accepted", "TERMS_AND_CONDITIONS_NOT_SIGNED")]))
    with pytest.raises(ConfigError, match="terms_accepted = true") as info:
        ERRORS.raise_for(terms)
    assert "INVALID_ARGUMENT/TERMS_AND_CONDITIONS_NOT_SIGNED" in info.value.message
    where = "destinations[0].product_destination_id"
    unknown_list = _emulated(invalid_argument([FieldViolation(where, "no such list", "INVALID_USER_LIST_ID")]))
    with pytest.raises(ConfigError, match="user list id"):
        ERRORS.raise_for(unknown_list)


# -- fast-fail ------------------------------------------------------------------------------------
@pytest.fixture
def broken_hashing(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Members whose keys are put in the returned set get an uppercase (malformed) email hash, as a
    hashing bug would send: Google refuses the whole request for them (fast-fail)."""
    bad: set[str] = set()
    original = google_destination.audience_member

    def corrupted(member: Member, keys: Any, values: Row) -> dict[str, Any]:
        body = original(member, keys, values)
        if member.key in bad:
            body["userData"]["userIdentifiers"][0]["emailAddress"] = values[0].upper()
        return body

    monkeypatch.setattr(google_destination, "audience_member", corrupted)
    return bad


def test_fast_fail_rejects_exactly_the_bad_members_and_resends_the_rest(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination, broken_hashing: set[str]
) -> None:
    members = [person(i) for i in range(6)]
    broken_hashing.update({"c1", "c4"})
    result = dest.add(LIST, members, GoogleOptions())
    identities = ids(dest, members)
    assert [r.identity for r in result.rejected] == [identities[1], identities[4]]
    assert {r.code for r in result.rejected} == {"invalid_hex_encoding"}
    assert all("INVALID_HEX_ENCODING" in r.reason for r in result.rejected)
    assert sorted(result.accepted) == sorted(identities[i] for i in (0, 2, 3, 5))
    assert held(emu) == {email_hash(members[i]) for i in (0, 2, 3, 5)}
    assert [len(b["audienceMembers"]) for b in sent(emu, INGEST)] == [6, 4]  # one refusal, one resend
    assert [r.status for r in emu.log if r.path == INGEST] == [400, 200]
    assert dest.stats()["fast_fail_refused"] == 2


def test_a_request_refused_for_every_member_fails_loudly_instead_of_rejecting_them_all(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination, broken_hashing: set[str]
) -> None:
    broken_hashing.update({"c1", "c2", "c3"})
    with pytest.raises(PermanentError, match="INVALID_HEX_ENCODING"):
        dest.add(LIST, [person(i) for i in (1, 2, 3)], GoogleOptions())
    assert held(emu) == set() and len(sent(emu, INGEST)) == 1


def test_validate_only_changes_nothing_and_reports_what_google_would_refuse(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination, broken_hashing: set[str]
) -> None:
    members = [person(i) for i in range(5)]
    broken_hashing.add("c2")
    answer = dest.validate(LIST, members, GoogleOptions())
    identities = ids(dest, members)
    assert [r.identity for r in answer.rejected] == [identities[2]]
    assert "INVALID_HEX_ENCODING" in answer.rejected[0].reason
    assert sorted(answer.accepted) == sorted(identities[i] for i in (0, 1, 3, 4))
    assert held(emu) == set() and emu.submitted == {}
    assert all(b["validateOnly"] is True for b in sent(emu, INGEST))
    assert not any(r.path == STATUS for r in emu.log), "a validate-only request has nothing to retrieve"


# -- requestStatus diagnostics -----------------------------------------------------------------------
def test_request_status_diagnostics_land_in_stats_and_reject_records_google_failed(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination, clock: Clock
) -> None:
    members = [person(i) for i in range(4)]
    emu.poisoned.add(email_hash(members[3]))
    result = dest.add(LIST, members, GoogleOptions())
    identities = ids(dest, members)
    assert [(r.identity, r.code) for r in result.rejected] == [(identities[3], "invalid_format")]
    assert "PROCESSING_ERROR_REASON_INVALID_FORMAT" in result.rejected[0].reason
    assert sorted(result.accepted) == sorted(identities[:3])
    stats = dest.stats()
    assert stats["request_statuses"] == {"PARTIAL_SUCCESS": 1}
    assert stats["records_reported"] == 4
    assert stats["processing_errors"] == {"PROCESSING_ERROR_REASON_INVALID_FORMAT": 1}
    assert stats["match_rate_ranges"] == {"MATCH_RATE_RANGE_51_TO_60": 1}  # 3 of 4 accepted x 0.7
    (report,) = stats["last_requests"]
    assert report["polls"] == 2 and report["identifier_count"] == 8 and report["operation"] == "ingest"
    assert clock.waits == [1.0, 2.0]  # the first poll still saw PROCESSING; waits went through the runtime
    json.dumps(stats)  # the engine stores it in the run row


def test_a_request_still_processing_does_not_stall_the_sync(clock: Clock) -> None:
    with emulator(clock=clock, processing_polls=100) as emu:
        destination = build(emu, clock.sleep, status_polls=3, status_budget_seconds=10)
        first = destination.add(LIST, [person(1)], GoogleOptions())
        second = destination.add(LIST, [person(2)], GoogleOptions())
        assert len(first.accepted) == len(second.accepted) == 1
        assert clock.waits == [1.0, 2.0, 4.0, 1.0, 2.0]  # three polls, then the run's budget of 10 s
        stats = destination.stats()
        assert stats["request_statuses"] == {"PROCESSING": 2}
        assert [r["polls"] for r in stats["last_requests"]] == [3, 2]
        assert stats["status_wait_seconds"] == 10.0


# -- quotas --------------------------------------------------------------------------------------
def test_a_per_minute_quota_429_waits_for_the_next_minute(clock: Clock) -> None:
    with emulator(clock=clock, mutate_quota=(2, 1_000)) as emu:
        destination = build(emu, clock.sleep)
        for i in range(3):
            assert len(destination.add(LIST, [person(i)], GoogleOptions()).accepted) == 1
        assert [r.status for r in emu.log if r.path == INGEST] == [200, 200, 429, 200]
        assert PER_MINUTE_WAIT in clock.waits and max(clock.waits) == PER_MINUTE_WAIT
        assert destination.stats()["throttled"] == 1


def test_a_daily_quota_429_pauses_until_the_pacific_midnight_reset(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(google_client, "now_utc", lambda: datetime(2026, 5, 28, 23, 0, tzinfo=UTC))  # 16:00 PDT
    with emulator(clock=clock, mutate_quota=(100, 1)) as emu:
        destination = build(emu, clock.sleep)
        destination.add(LIST, [person(1)], GoogleOptions())
        with pytest.raises(LongPauseError) as info:
            destination.add(LIST, [person(2)], GoogleOptions())
        assert info.value.wait_seconds == 8 * 3600
        assert "IngestionMutateRequestsPerDayPerProject" in info.value.message
        assert PER_MINUTE_WAIT not in clock.waits


def test_the_daily_reset_is_midnight_pacific_time_summer_and_winter() -> None:
    assert seconds_to_daily_reset(datetime(2026, 5, 28, 23, 0, tzinfo=UTC)) == 8 * 3600  # PDT, UTC-7
    assert seconds_to_daily_reset(datetime(2026, 1, 15, 20, 0, tzinfo=UTC)) == 12 * 3600  # PST, UTC-8


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (503, {"code": 503, "status": "UNAVAILABLE", "message": "unavailable"}, RetryableError),
        (500, {"code": 500, "status": "INTERNAL", "message": "internal"}, RetryableError),
        (403, {"code": 403, "status": "PERMISSION_DENIED", "message": "denied"}, ConfigError),
        (401, {"code": 401, "status": "UNAUTHENTICATED", "message": "bad token"}, ConfigError),
        (400, {"code": 400, "status": "INVALID_ARGUMENT", "message": 'Unknown name "x"'}, PermanentError),
    ],
)
def test_google_error_statuses_map_onto_the_taxonomy(status: int, error: dict[str, Any], expected: type) -> None:
    with pytest.raises(expected) as info:
        ERRORS.raise_for(_answer(status, {"error": error}))
    assert type(info.value) is expected


def test_an_account_the_credentials_cannot_use_is_a_config_error_naming_login_account(clock: Clock) -> None:
    with emulator(clock=clock) as emu:
        destination = build(emu, clock.sleep, operating_account=ProductAccount(account_id="555-000-1111"))
        with pytest.raises(ConfigError, match="login_account") as info:
            destination.add(LIST, [person(1)], GoogleOptions())
        assert "PERMISSION_DENIED" in info.value.message
        assert sent(emu, INGEST)[0]["destinations"][0]["operatingAccount"]["accountId"] == "5550001111"


# -- OAuth2 through google-auth ----------------------------------------------------------------------
def tokens_issued(emu: GoogleDataManagerEmulator) -> int:
    return sum(1 for r in emu.log if r.path == "/token" and r.status == 200)


def test_an_expired_token_is_refreshed_through_google_auth_and_the_request_sent_again(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination, clock: Clock
) -> None:
    dest.add(LIST, [person(1)], GoogleOptions())
    clock.now += 7200  # the emulator's token expired; google-auth's clock does not know it yet
    result = dest.add(LIST, [person(2)], GoogleOptions())
    assert len(result.accepted) == 1 and len(held(emu)) == 2
    ingests = [r.status for r in emu.log if r.path in (INGEST, "/token")]
    assert ingests == [200, 200, 401, 200, 200]  # token, ingest, ingest refused, new token, ingest again
    assert tokens_issued(emu) == 2 and dest.stats()["token_refreshes"] == 2


def test_a_token_is_refreshed_before_it_expires(clock: Clock) -> None:
    # 200 s tokens are inside google-auth's refresh margin (3 min 45 s): refreshed before every use
    with emulator(clock=clock, token_lifetime=200) as emu:
        destination = build(emu, clock.sleep, status_polls=0)
        destination.add(LIST, [person(1)], GoogleOptions())
        destination.add(LIST, [person(2)], GoogleOptions())
        assert tokens_issued(emu) == 2
        assert not any(r.status == 401 for r in emu.log)


def _service_account(email: str) -> tuple[dict[str, str], bytes]:
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
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return info, public


def test_a_service_account_key_gets_a_token_through_google_auth(clock: Clock) -> None:
    email = "syncer@audience-sync-test.iam.gserviceaccount.com"
    info, public = _service_account(email)
    with emulator() as emu:  # the real clock: google-auth dates the JWT it signs with it
        emu.register_service_account(email, public, key_id="key-1")
        emu.grant(email, ACCOUNT)
        destination = build(emu, clock.sleep, secret=json.dumps(info))  # token_uri: the config's, not the key's
        assert len(destination.add(LIST, [person(1)], GoogleOptions()).accepted) == 1
        assert tokens_issued(emu) == 1


def _variants() -> list[tuple[str, str]]:
    user = {"type": "authorized_user", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return [
        (
            "wrong client secret",
            json.dumps({**user, "client_secret": "not-the-secret", "refresh_token": REFRESH_TOKEN}),
        ),
        ("revoked refresh token", json.dumps({**user, "refresh_token": "1//revoked-refresh-token-value"})),
        ("not JSON", "{client_secret: " + CLIENT_SECRET),
        ("a file path", "/run/secrets/google-key.json"),
        ("a bare token", REFRESH_TOKEN),
        ("an unknown type", json.dumps({"type": "external_account", "client_secret": CLIENT_SECRET})),
        ("missing fields", json.dumps({"type": "authorized_user", "client_secret": CLIENT_SECRET})),
    ]


@pytest.mark.parametrize(("case", "secret"), _variants(), ids=[c for c, _ in _variants()])
def test_wrong_credentials_are_a_config_error_that_shows_no_secret(
    case: str, secret: str, emu: GoogleDataManagerEmulator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    destination = build(emu, clock.sleep, secret=secret)
    with pytest.raises(ConfigError) as info:
        destination.add(LIST, [person(1)], GoogleOptions())
    text = str(info.value) + info.value.message + caplog.text
    for fragment in (CLIENT_SECRET, "not-the-secret", REFRESH_TOKEN, "revoked-refresh-token", "/run/secrets"):
        assert fragment not in text, case
    assert len(emu.log) <= 1, "a refused credential must not be retried"
    assert not any(r.path == INGEST for r in emu.log)


def test_an_impostor_service_account_key_is_refused_without_the_key(clock: Clock) -> None:
    email = "syncer@audience-sync-test.iam.gserviceaccount.com"
    _, public = _service_account(email)
    impostor, _ = _service_account(email)
    with emulator() as emu:
        emu.register_service_account(email, public)
        destination = build(emu, clock.sleep, secret=json.dumps(impostor))
        with pytest.raises(ConfigError, match="invalid_grant") as info:
            destination.add(LIST, [person(1)], GoogleOptions())
        assert "Invalid JWT Signature" in info.value.message
        assert "PRIVATE KEY" not in info.value.message and impostor["private_key"][40:80] not in info.value.message


# -- configuration --------------------------------------------------------------------------------
def test_the_sandbox_credentials_use_the_local_emulators_token_endpoint() -> None:
    emu, secret = sandbox_emulator()
    emu.start()
    try:
        config = GoogleConfig(
            base_url=emu.base_url, secret=secret, operating_account=ProductAccount(account_id="42"), terms_accepted=True
        )
        destination = GoogleDestination("sandbox", config, Runtime(sleep=lambda s: None))
        OPENED.append(destination)
        assert destination.token_uri() == emu.token_uri
        assert len(destination.add("9", [person(1)], GoogleOptions()).accepted) == 1
    finally:
        emu.stop()
    remote = GoogleDestination("g", GoogleConfig(operating_account=ProductAccount(account_id="1")), Runtime())
    assert remote.token_uri() is None  # google-auth's own endpoint: credentials never go elsewhere


def test_a_destination_without_an_operating_account_says_what_to_set(
    emu: GoogleDataManagerEmulator, clock: Clock
) -> None:
    destination = build(emu, clock.sleep, operating_account=None)
    with pytest.raises(ConfigError, match="operating_account"):
        destination.add(LIST, [person(1)], GoogleOptions())


def test_the_reported_identities_are_exactly_the_ones_given(
    emu: GoogleDataManagerEmulator, dest: GoogleDestination
) -> None:
    twice = person(1)
    nothing_usable = Member(key="x", email="not an address", phone="12", email_consent=Consent.SUBSCRIBED)
    members = [twice, person(2), twice, nothing_usable]
    result: BatchResult = dest.add(LIST, members, GoogleOptions())
    answered = result.accepted + [r.identity for r in result.rejected]
    assert sorted(answered) == sorted(set(ids(dest, members)))
    assert [r.code for r in result.rejected] == ["no_identifier"]
    assert encode_identity(["EMAIL", "PHONE"], ("", "")) == result.rejected[0].identity
