"""Klaviyo: what is its own beyond the generated contract suites (consent at Klaviyo, import jobs,
the pinned revision, rate-limit windows, spec bodies, engagement events)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.kernel.emulator import Request, Response
from connectors.kernel.errors import ConfigError, PermanentError, RateLimitedError, RetryableError
from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime
from connectors.kernel.specs import OpenApiSchemas, load_spec
from connectors.klaviyo.activity import KlaviyoActivity
from connectors.klaviyo.client import ENDPOINTS, ERRORS, JSON_API, REVISION
from connectors.klaviyo.destination import KlaviyoConfig, KlaviyoDestination, KlaviyoOptions
from connectors.klaviyo.emulator import (
    NEVER_SUBSCRIBED,
    SUBSCRIBED,
    UNSUBSCRIBED,
    KlaviyoEmulator,
    Limits,
)
from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from worker.config import load_config
from worker.cycle import sync_mapping
from worker.factory import make_runtime
from worker.reconcile import reconcile
from worker.store import open_store

KEY = "pk_test_destination_0123456789abcdef0"
LIST = "Vip001"
SCHEMAS = OpenApiSchemas("klaviyo", "stable.json.gz")
OPTIONS = KlaviyoOptions()


@dataclass
class Clock:
    """Fake time shared by the emulator's windows, our buckets and our sleeps: sleeping moves it."""

    now: float = 60.0 * 16_667
    waits: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        # time always moves: a token bucket's last wait can be below the float resolution of ``now``
        self.now = max(self.now + seconds, math.nextafter(self.now, math.inf))


class RecordingEmulator(KlaviyoEmulator):
    """Keeps every request's headers, to check what we send on each call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers: list[tuple[str, str, dict[str, str]]] = []

    def dispatch(self, request: Request) -> Response | None:
        with self.lock:
            self.headers.append((request.method, request.path, dict(request.headers)))
        return super().dispatch(request)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock: Clock) -> Iterator[RecordingEmulator]:
    emu = RecordingEmulator(api_key=KEY, clock=clock)
    emu.start()
    emu.create_list("VIP", LIST)
    yield emu
    emu.stop()


@pytest.fixture
def make(emulator: KlaviyoEmulator, clock: Clock) -> Iterator[Any]:
    built: list[KlaviyoDestination] = []

    def build(**config: Any) -> KlaviyoDestination:
        runtime = Runtime(sleep=clock.sleep, clock=clock, key_prefix=f"test-{uuid.uuid4().hex}")
        settings = {"base_url": emulator.url, "secret": KEY, **config}
        destination = KlaviyoDestination("kv", KlaviyoConfig(**settings), runtime)
        built.append(destination)
        return destination

    yield build
    for destination in built:
        destination.close()


@pytest.fixture
def destination(make: Any) -> KlaviyoDestination:
    built: KlaviyoDestination = make()
    return built


def person(email: str, **fields: Any) -> Member:
    return Member(key=email, email=email, email_consent=Consent.SUBSCRIBED, **fields)


def subscribed(emulator: KlaviyoEmulator, *emails: str) -> list[Member]:
    for email in emails:
        emulator.add_profile(email, SUBSCRIBED)
    return [person(e) for e in emails]


# -- what goes over the wire ----------------------------------------------------------------------------
def test_bodies_we_send_match_the_klaviyo_spec(destination: KlaviyoDestination, emulator: RecordingEmulator) -> None:
    members = subscribed(emulator, "a@example.com", "b@example.com")
    members.append(person("c@example.com", first_name=" Zoë ", last_name="Müller"))
    destination.add(LIST, members, OPTIONS)
    destination.remove(LIST, ["a@example.com"], OPTIONS)
    schemas = {
        ("POST", "/api/profile-bulk-import-jobs"): "ProfileImportJobCreateQuery",
        ("POST", f"/api/lists/{LIST}/relationships/profiles"): "ListMembersAddQuery",
        ("DELETE", f"/api/lists/{LIST}/relationships/profiles"): "ListMembersDeleteQuery",
    }
    seen = set()
    for method, path, body in emulator.bodies:
        seen.add(schemas[(method, path)])
        assert SCHEMAS.errors(schemas[(method, path)], body) == [], (method, path)
    assert seen == set(schemas.values())
    jobs = [body for method, path, body in emulator.bodies if path.endswith("bulk-import-jobs")]
    assert all("relationships" not in job["data"] for job in jobs), "a job's list would take in every row"
    rows = [row["attributes"] for job in jobs for row in job["data"]["attributes"]["profiles"]["data"]]
    assert {"email": "c@example.com", "first_name": "Zoë", "last_name": "Müller"} in rows
    assert all("subscriptions" not in row and "phone_number" not in row for row in rows)
    # the validator bites: a membership body with emails instead of ids is refused by the spec
    assert SCHEMAS.errors("ListMembersAddQuery", {"data": [{"type": "profile", "email": "a@example.com"}]})


def test_every_request_carries_the_pinned_revision_and_the_key(
    destination: KlaviyoDestination, emulator: RecordingEmulator
) -> None:
    destination.add(LIST, subscribed(emulator, "a@example.com"), OPTIONS)
    destination.members(LIST, OPTIONS)
    assert REVISION == "2026-07-15" and len(emulator.headers) >= 6
    for method, path, headers in emulator.headers:
        assert headers["revision"] == REVISION, path
        assert headers["authorization"] == f"Klaviyo-API-Key {KEY}", path
        assert headers["accept"] == JSON_API
        if method in ("POST", "DELETE"):
            assert headers["content-type"] == JSON_API, path


def test_a_retired_revision_is_a_config_error_naming_the_upgrade(clock: Clock) -> None:
    with KlaviyoEmulator(api_key=KEY, clock=clock, revisions=("2028-01-15",)) as emu:
        assert isinstance(emu, KlaviyoEmulator)
        emu.create_list("VIP", LIST)
        runtime = Runtime(sleep=clock.sleep, clock=clock, key_prefix=f"test-{uuid.uuid4().hex}")
        destination = KlaviyoDestination("kv", KlaviyoConfig(base_url=emu.url, secret=KEY), runtime)
        with pytest.raises(ConfigError, match=f"revision {REVISION}.*upgrade"):
            destination.add(LIST, [person("a@example.com")], OPTIONS)
        destination.close()
        assert len(emu.log) == 1


# -- consent: Klaviyo's word wins, and we never change it ---------------------------------------------------
def test_klaviyo_consent_decides_who_joins_the_list(destination: KlaviyoDestination, emulator: KlaviyoEmulator) -> None:
    emulator.add_profile("yes@example.com", SUBSCRIBED)
    emulator.add_profile("gone@example.com", UNSUBSCRIBED)
    emulator.add_profile("never@example.com", NEVER_SUBSCRIBED)
    emulator.add_profile("bounced@example.com", SUBSCRIBED, suppression="HARD_BOUNCE")
    pending = Member(key="p", email="pending@example.com", email_consent=Consent.PENDING)
    emails = ["yes@example.com", "gone@example.com", "never@example.com", "bounced@example.com", "new@example.com"]
    result = destination.add(LIST, [*map(person, emails), pending], OPTIONS)
    assert result.accepted == ["yes@example.com"]
    codes = {r.identity: r.code for r in result.rejected}
    assert codes == {
        "gone@example.com": "klaviyo_unsubscribed",
        "never@example.com": "klaviyo_never_subscribed",
        "bounced@example.com": "klaviyo_suppressed",
        "new@example.com": "klaviyo_never_subscribed",  # created by the import, never subscribed
        "pending@example.com": "no_consent",
    }
    reasons = {r.identity: r.reason for r in result.rejected}
    assert "UNSUBSCRIBED in Klaviyo" in reasons["gone@example.com"] and "HARD_BOUNCE" in reasons["bounced@example.com"]
    assert all("@" not in r.reason for r in result.rejected), "no address in a reason"
    assert emulator.list_members(LIST) == {"yes@example.com"}
    assert emulator.profile("pending@example.com") is None, "someone without our consent is never sent"


def test_consent_is_never_changed_and_the_unsubscribe_job_never_called(
    destination: KlaviyoDestination, emulator: KlaviyoEmulator
) -> None:
    states = {"s@example.com": SUBSCRIBED, "u@example.com": UNSUBSCRIBED, "n@example.com": NEVER_SUBSCRIBED}
    for email, state in states.items():
        emulator.add_profile(email, state)
    before = {e: emulator.profile(e) for e in states}
    destination.add(LIST, [person(e) for e in [*states, "fresh@example.com"]], OPTIONS)
    destination.remove(LIST, [*states, "fresh@example.com", "nobody@example.com"], OPTIONS)
    for email, state in states.items():
        was, after = before[email], emulator.profile(email)
        assert was is not None and after is not None and after.consent == state
        assert (after.suppressions, after.list_suppressions) == (was.suppressions, was.list_suppressions)
        assert after.consent_timestamp == was.consent_timestamp
    fresh = emulator.profile("fresh@example.com")
    assert fresh is not None and fresh.consent == NEVER_SUBSCRIBED
    assert emulator.unsubscribe_calls == [] and emulator.unsubscribe_jobs == []
    assert not [r for r in emulator.log if "subscription" in r.path]


def test_update_profiles_off_only_looks_profiles_up(destination: KlaviyoDestination, emulator: KlaviyoEmulator) -> None:
    members = subscribed(emulator, "a@example.com")
    result = destination.add(LIST, [*members, person("new@example.com")], KlaviyoOptions(update_profiles=False))
    assert result.accepted == ["a@example.com"]
    assert [(r.identity, r.code) for r in result.rejected] == [("new@example.com", "klaviyo_no_profile")]
    assert emulator.jobs == {} and emulator.profile("new@example.com") is None


# -- import jobs ---------------------------------------------------------------------------------------------
def test_rows_the_import_refuses_become_rejections(destination: KlaviyoDestination, emulator: KlaviyoEmulator) -> None:
    good = subscribed(emulator, "a@example.com", "b@example.com")
    huge = person("huge@example.com", first_name="x" * 100_001)  # over Klaviyo's 100 KB per profile
    emulator.add_profile("huge@example.com", SUBSCRIBED)
    result = destination.add(LIST, [good[0], huge, good[1]], OPTIONS)
    assert sorted(result.accepted) == ["a@example.com", "b@example.com"]
    [refused] = result.rejected
    assert refused.identity == "huge@example.com" and refused.code == "klaviyo_import_invalid"
    assert "exceeds the maximum allowed size" in refused.reason and "@" not in refused.reason
    assert emulator.list_members(LIST) == {"a@example.com", "b@example.com"}
    assert destination.counters["import_refused"] == 1


def test_import_jobs_are_polled_with_the_injected_sleep(make: Any, emulator: KlaviyoEmulator, clock: Clock) -> None:
    emulator.job_polls = (2, 4)  # processing after two reads, complete after four
    destination = make()
    result = destination.add(LIST, subscribed(emulator, "a@example.com"), OPTIONS)
    assert result.accepted == ["a@example.com"]
    polls = [r for r in emulator.log if r.method == "GET" and "bulk-import-jobs/" in r.path]
    assert len(polls) == 4 and destination.counters["import_polls"] == 4
    assert clock.waits[:4] == [1.0, 1.5, 2.25, 3.375], "backing off between polls, never sleeping for real"


def test_an_import_that_never_completes_fails_the_batch_within_its_budget(
    make: Any, emulator: KlaviyoEmulator, clock: Clock
) -> None:
    emulator.job_polls = (1, 10_000)
    destination = make(import_wait_seconds=30)
    with pytest.raises(RetryableError, match="not complete"):
        destination.add(LIST, subscribed(emulator, "a@example.com"), OPTIONS)
    assert 30 <= sum(clock.waits) < 60
    assert emulator.list_members(LIST) == set()


# -- rate limits ------------------------------------------------------------------------------------------
def test_retry_after_is_honoured(make: Any, emulator: KlaviyoEmulator, clock: Clock) -> None:
    emulator.storm_retry_after = 7
    emulator.faults.throttle_storm = 2
    destination = make()
    result = destination.add(LIST, subscribed(emulator, "a@example.com"), OPTIONS)
    assert result.accepted == ["a@example.com"]
    assert len([w for w in clock.waits if w >= 7]) == 2
    assert destination.stats()["throttled"] == 2
    assert sum(1 for r in emulator.log if r.status == 429) == 2


def test_the_documented_limits_are_kept_without_a_single_429(
    destination: KlaviyoDestination, emulator: KlaviyoEmulator, clock: Clock
) -> None:
    # 150 look-ups on an endpoint limited to 75 a second and 750 a minute (the spec's own limits)
    gone = [f"p{i}@example.com" for i in range(15_000)]
    assert destination.remove(LIST, gone, OPTIONS).accepted == gone
    lookups = [r for r in emulator.log if r.path == "/api/profiles"]
    assert len(lookups) == 150
    assert not [r for r in emulator.log if r.status == 429]
    assert clock.waits, "our bucket paced the look-ups"


def test_a_spent_steady_window_pauses_until_it_resets(make: Any, clock: Clock) -> None:
    with KlaviyoEmulator(api_key=KEY, clock=clock, limits=Limits(burst=100, steady=3)) as emu:
        assert isinstance(emu, KlaviyoEmulator)
        emu.create_list("VIP", LIST)
        runtime = Runtime(sleep=clock.sleep, clock=clock, key_prefix=f"test-{uuid.uuid4().hex}")
        destination = KlaviyoDestination("kv", KlaviyoConfig(base_url=emu.url, secret=KEY), runtime)
        destination.remove(LIST, [f"p{i}@example.com" for i in range(500)], OPTIONS)  # five look-ups
        destination.close()
        assert not [r for r in emu.log if r.status == 429], "RateLimit-Remaining: 0 was heeded"
        assert len([r for r in emu.log if r.path == "/api/profiles"]) == 5
        assert any(w >= 30 for w in clock.waits), "waited for the minute window to reset"


@pytest.mark.parametrize(
    ("status", "body", "error", "match"),
    [
        (429, {"code": "throttled", "detail": "Expected available in 0 seconds."}, RateLimitedError, ""),
        (503, {"code": "error", "detail": "Service unavailable."}, RetryableError, ""),
        (401, {"code": "authentication_failed", "detail": "Incorrect."}, ConfigError, "private API key"),
        (400, {"code": "not_authenticated", "detail": "Missing."}, ConfigError, "private API key"),
        (403, {"code": "permission_denied", "detail": "No."}, ConfigError, "scope"),
        (404, {"code": "not_found", "detail": "A list with id Vip001 does not exist."}, ConfigError, "audience"),
        (404, {"code": "not_found", "detail": "No valid revisions found for method"}, ConfigError, "upgrade"),
        (400, {"code": "invalid", "detail": "Invalid input."}, PermanentError, ""),
        (409, {"code": "conflict", "detail": "Conflict."}, PermanentError, ""),
    ],
)
def test_answers_map_onto_the_taxonomy(status: int, body: dict[str, Any], error: type[Exception], match: str) -> None:
    request = httpx.Request("POST", f"https://a.klaviyo.com/api/lists/{LIST}/relationships/profiles")
    response = httpx.Response(status, json={"errors": [{"id": "x", "title": "T", **body}]}, request=request)
    with pytest.raises(error, match=match or None) as caught:
        ERRORS.raise_for(response)
    assert type(caught.value) is error
    if isinstance(caught.value, RateLimitedError):
        assert caught.value.wait_seconds == 1.0, "a 0-second hint still waits a second"


def test_an_unknown_profile_id_is_permanent_and_a_challenge_page_is_retried() -> None:
    members = httpx.Request("DELETE", f"https://a.klaviyo.com/api/lists/{LIST}/relationships/profiles")
    body = {"errors": [{"code": "not_found", "detail": "No such profile.", "source": {"pointer": "/data/3/id"}}]}
    with pytest.raises(PermanentError) as caught:
        ERRORS.raise_for(httpx.Response(404, json=body, request=members))
    assert not isinstance(caught.value, ConfigError), "re-resolve the ids; no person needs to act"
    page = httpx.Response(403, headers={"content-type": "text/html", "cf-mitigated": "challenge"}, request=members)
    with pytest.raises(RetryableError):
        ERRORS.raise_for(page)


def test_the_endpoint_limits_are_the_specs() -> None:
    paths = load_spec("klaviyo", "stable.json.gz")["paths"]
    documented = {
        op["operationId"]: op["x-klaviyo-ratelimit"]
        for item in paths.values()
        for op in item.values()
        if "operationId" in op
    }
    for _, _, op_id, limit in ENDPOINTS:
        rate = documented[op_id]
        assert (f"{limit.burst}/s", f"{limit.steady}/m") == (rate["burst"], rate["steady"]), op_id
        rate_per_second, capacity = limit.bucket()
        assert capacity + rate_per_second <= limit.burst and capacity + 60 * rate_per_second <= limit.steady


# -- removes, ids, read-back, dry run ----------------------------------------------------------------------
def test_remove_takes_profiles_off_the_list_only(destination: KlaviyoDestination, emulator: KlaviyoEmulator) -> None:
    destination.add(LIST, subscribed(emulator, "a@example.com", "b@example.com"), OPTIONS)
    result = destination.remove(LIST, ["a@example.com", "nobody@example.com", "a@example.com"], OPTIONS)
    assert result.accepted == ["a@example.com", "nobody@example.com"] and result.rejected == []
    assert emulator.list_members(LIST) == {"b@example.com"}
    kept = emulator.profile("a@example.com")
    assert kept is not None and kept.consent == SUBSCRIBED


def test_a_stale_profile_id_is_looked_up_again(destination: KlaviyoDestination, emulator: KlaviyoEmulator) -> None:
    destination.add(LIST, subscribed(emulator, "a@example.com"), OPTIONS)  # its id is now cached
    old = emulator.delete_profile("a@example.com")
    emulator.add_profile("a@example.com", SUBSCRIBED)  # merged into a new profile, still on the list
    emulator.add_to_list(LIST, "a@example.com")
    assert destination.remove(LIST, ["a@example.com"], OPTIONS).accepted == ["a@example.com"]
    assert emulator.list_members(LIST) == set() and old is not None
    assert destination.counters["stale_profile_ids"] == 1
    assert [r.status for r in emulator.log if r.method == "DELETE"] == [404, 204]


def test_members_reads_back_what_the_list_holds(destination: KlaviyoDestination, emulator: KlaviyoEmulator) -> None:
    destination.add(LIST, subscribed(emulator, *[f"m{i}@example.com" for i in range(230)]), OPTIONS)
    emulator.add_profile("Other@Example.com", SUBSCRIBED)
    emulator.add_to_list(LIST, "other@example.com")  # added at Klaviyo, not by us
    held = destination.members(LIST, OPTIONS)
    assert held == emulator.list_members(LIST) and len(held) == 231
    assert len([r for r in emulator.log if r.path == f"/api/lists/{LIST}/profiles"]) == 3  # paged by 100


def test_drift_made_by_hand_in_klaviyo_is_found_and_repaired(tmp_path: Path) -> None:
    with KlaviyoEmulator(api_key=KEY, job_polls=(0, 0)) as klaviyo:
        klaviyo.create_list("Reactivation 60-180", "Lap060")
        for address in [f"member{n}@example.com" for n in range(8)] + ["stranger@example.com"]:
            klaviyo.add_profile(address, SUBSCRIBED)
        path = write_config(
            tmp_path / "c.toml",
            f'[destinations.kl]\ntype = "klaviyo"\nbase_url = "{klaviyo.url}"\n'
            '[[mappings]]\nname = "m"\nsegment = "lapsed_60_180"\ndestination = "kl"\naudience = "Lap060"\n',
        )
        config, settings = load_config(path), make_settings(secrets={"AUDIENCE_SYNC_KLAVIYO_API_KEY": KEY})
        runtime = make_runtime(settings, sleep=lambda seconds: None)  # import jobs complete at the first poll
        store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
        seed_segment(store, "lapsed_60_180", 8)
        sync_mapping(store, config, settings, runtime, "m")
        chosen = {f"member{n}@example.com" for n in range(8)}
        assert klaviyo.list_members("Lap060") == chosen
        members = klaviyo.lists["Lap060"].members  # a marketer, in Klaviyo's UI: two taken off the list ...
        for address in ("member0@example.com", "member1@example.com"):
            profile = klaviyo.profile(address)
            assert profile is not None
            del members[profile.id]
        klaviyo.add_to_list("Lap060", "stranger@example.com")  # ... and someone we never chose put on it

        found = reconcile(store, config, settings, runtime, "m")
        assert found.missing == {"member0@example.com", "member1@example.com"}
        assert found.extra == {"stranger@example.com"} and found.after is None
        assert "2 missing at the destination, 1 extra there" in found.render() and "stranger@" not in found.render()
        assert klaviyo.list_members("Lap060") == chosen - found.missing | found.extra  # a check changes nothing

        repaired = reconcile(store, config, settings, runtime, "m", repair=True)
        assert repaired.sync == {"status": "ok", "added": 2, "removed": 1}
        assert repaired.after is not None and not repaired.after.missing and not repaired.after.extra
        assert klaviyo.list_members("Lap060") == chosen == set(store.acknowledged("m"))
        stranger = klaviyo.profile("stranger@example.com")  # off the list, never unsubscribed
        assert stranger is not None and stranger.consent == SUBSCRIBED and not klaviyo.unsubscribe_jobs
        store.dispose()


def test_answers_name_exactly_the_identities_we_were_given(
    destination: KlaviyoDestination, emulator: KlaviyoEmulator
) -> None:
    emulator.add_profile("jane@example.com", SUBSCRIBED)
    members = [person("Jane@Example.COM "), person("jane@example.com"), person("not an address")]
    result = destination.add(LIST, members, OPTIONS)
    given = {destination.identity(m, OPTIONS) for m in members}
    answered = set(result.accepted) | {r.identity for r in result.rejected}
    assert answered == given == {"jane@example.com", "not an address"}
    assert result.accepted == ["jane@example.com"]


def test_a_wrong_list_is_a_config_error_before_anything_is_imported(
    destination: KlaviyoDestination, emulator: KlaviyoEmulator
) -> None:
    with pytest.raises(ConfigError, match="existing Klaviyo list"):
        destination.add("NoSuch", subscribed(emulator, "a@example.com"), OPTIONS)
    assert emulator.jobs == {} and emulator.bodies == []


def test_validate_is_a_dry_run(destination: KlaviyoDestination, emulator: KlaviyoEmulator) -> None:
    emulator.add_profile("yes@example.com", SUBSCRIBED)
    emulator.add_profile("gone@example.com", UNSUBSCRIBED)
    members = [person("yes@example.com"), person("gone@example.com"), person("new@example.com")]
    answer = destination.validate(LIST, members, OPTIONS)
    assert answer.accepted == ["yes@example.com"]
    assert {r.identity: r.code for r in answer.rejected} == {
        "gone@example.com": "klaviyo_unsubscribed",
        "new@example.com": "klaviyo_never_subscribed",
    }
    assert emulator.bodies == [] and emulator.jobs == {} and emulator.list_members(LIST) == set()


def test_a_missing_key_names_its_variable() -> None:
    destination = KlaviyoDestination("kv", KlaviyoConfig(), Runtime())
    with pytest.raises(ConfigError, match="AUDIENCE_SYNC_KLAVIYO_API_KEY"):
        destination.add(LIST, [person("a@example.com")], OPTIONS)


# -- engagement ------------------------------------------------------------------------------------------------
def test_engagement_is_the_latest_open_or_click_per_address_since_the_watermark(
    destination: KlaviyoDestination, emulator: KlaviyoEmulator
) -> None:
    mark = datetime(2026, 11, 1, tzinfo=UTC)
    emulator.record_event("A@example.com", "Opened Email", at=mark - timedelta(days=1))
    emulator.record_event("a@example.com", "Clicked Email", at=mark + timedelta(hours=1))
    emulator.record_event("a@example.com", "Opened Email", at=mark + timedelta(hours=2))
    emulator.record_event("b@example.com", "Opened Email", at=mark + timedelta(minutes=30))
    emulator.record_event("c@example.com", "Received Email", at=mark + timedelta(hours=3))
    emulator.record_event("d@example.com", "Opened Email", at=mark)  # at the watermark: already seen
    for i in range(250):  # more than one page of events
        emulator.record_event(f"r{i}@example.com", "Clicked Email", at=mark + timedelta(days=1, seconds=i))
    latest: dict[str, datetime] = {}
    pages = list(KlaviyoActivity(destination).last_engaged(mark, mark + timedelta(days=2)))
    for page in pages:
        for email, at in page.items():
            latest[email] = max(at, latest.get(email, at))
    assert len(pages) >= 3
    assert latest.pop("a@example.com") == mark + timedelta(hours=2)
    assert latest.pop("b@example.com") == mark + timedelta(minutes=30)
    assert latest == {f"r{i}@example.com": mark + timedelta(days=1, seconds=i) for i in range(250)}
