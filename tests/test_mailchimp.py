"""Mailchimp: the shared contract, then what is Mailchimp's own (consent, 403s, tags, spec bodies)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors.kernel.errors import ConfigError
from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime
from connectors.mailchimp import emulator as mc_emulator
from connectors.mailchimp.destination import (
    MailchimpConfig,
    MailchimpDestination,
    MailchimpOptions,
    subscriber_hash,
)
from connectors.mailchimp.emulator import MailchimpEmulator

LIST = "list0001"
KEY = "0123456789abcdef0123456789abcdef-us1"


# -- vendor specifics ------------------------------------------------------------------------
@pytest.fixture
def emulator() -> Any:
    with MailchimpEmulator(api_key=KEY) as emu:
        assert isinstance(emu, MailchimpEmulator)
        emu.create_list(LIST)
        yield emu


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def destination(emulator: MailchimpEmulator, waits: list[float]) -> Any:
    runtime = Runtime(sleep=waits.append, key_prefix=f"test-{uuid.uuid4().hex}")
    dest = MailchimpDestination("mc", MailchimpConfig(base_url=emulator.base_url, secret=KEY), runtime)
    yield dest
    dest.close()


def person(email: str) -> Member:
    return Member(key=email, email=email, email_consent=Consent.SUBSCRIBED)


def test_unsubscribed_and_cleaned_contacts_are_never_resubscribed(
    destination: MailchimpDestination, emulator: MailchimpEmulator
) -> None:
    emulator.add_member(LIST, "gone@example.com", "unsubscribed")
    emulator.add_member(LIST, "bounced@example.com", "cleaned")
    segment = emulator.create_segment(LIST, "vip")
    opts = MailchimpOptions(segment_id=segment)
    members = [person("gone@example.com"), person("bounced@example.com"), person("new@example.com")]
    result = destination.add(LIST, members, opts)
    assert result.accepted == ["new@example.com"]
    codes = {r.identity: r.code for r in result.rejected}
    assert codes == {"gone@example.com": "mailchimp_unsubscribed", "bounced@example.com": "mailchimp_cleaned"}
    assert all("@" not in r.reason for r in result.rejected), "no raw email in reasons"
    assert emulator.member_status(LIST, "gone@example.com") == "unsubscribed"
    assert emulator.member_status(LIST, "bounced@example.com") == "cleaned"
    assert emulator.segment_members(LIST, segment) == {"new@example.com"}
    sent = [m for method, path, body in emulator.bodies if path.endswith(LIST) for m in body["members"]]
    assert sent and all("status" not in m and m["status_if_new"] == "subscribed" for m in sent)


def test_members_without_consent_are_rejected_not_sent(
    destination: MailchimpDestination, emulator: MailchimpEmulator
) -> None:
    pending = Member(key="p", email="p@example.com", email_consent=Consent.PENDING)
    result = destination.add(LIST, [pending], MailchimpOptions(tag="vip"))
    assert [r.code for r in result.rejected] == ["no_consent"]
    assert emulator.member_status(LIST, "p@example.com") is None


def test_emulator_refuses_to_resubscribe_in_compliance_state(emulator: MailchimpEmulator) -> None:
    emulator.add_member(LIST, "gone@example.com", "unsubscribed")
    body = {"members": [{"email_address": "gone@example.com", "status": "subscribed"}], "update_existing": True}
    answer = httpx.post(f"{emulator.base_url}/lists/{LIST}", json=body, auth=("x", KEY)).json()
    assert answer["error_count"] == 1 and "compliance state" in answer["errors"][0]["error"]
    member = f"{emulator.base_url}/lists/{LIST}/members/{subscriber_hash('Gone@Example.com')}"
    assert httpx.get(member, auth=("x", KEY)).json()["status"] == "unsubscribed"


def test_emulator_enforces_the_500_member_limit(emulator: MailchimpEmulator) -> None:
    members = [{"email_address": f"a{i}@example.com", "status": "subscribed"} for i in range(501)]
    response = httpx.post(f"{emulator.base_url}/lists/{LIST}", json={"members": members}, auth=("x", KEY))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_tag_segment_is_found_or_created_once(destination: MailchimpDestination, emulator: MailchimpEmulator) -> None:
    destination.add(LIST, [person("a@example.com")], MailchimpOptions(tag="vip"))
    destination.add(LIST, [person("b@example.com")], MailchimpOptions(tag="vip"))
    creates = [r for r in emulator.log if r.method == "POST" and r.path.endswith("/segments")]
    lookups = [r for r in emulator.log if r.method == "GET"]
    assert len(creates) == 1 and len(lookups) == 1
    existing = emulator.create_segment(LIST, "loyal", {"a@example.com"})
    destination.add(LIST, [person("b@example.com")], MailchimpOptions(tag="loyal"))
    assert emulator.segment_members(LIST, existing) == {"a@example.com", "b@example.com"}
    assert len([r for r in emulator.log if r.method == "POST" and r.path.endswith("/segments")]) == 1


def test_remove_takes_members_out_of_the_segment_only(
    destination: MailchimpDestination, emulator: MailchimpEmulator
) -> None:
    destination.add(LIST, [person("a@example.com"), person("b@example.com")], MailchimpOptions(tag="vip"))
    result = destination.remove(LIST, ["a@example.com", "never@example.com"], MailchimpOptions(tag="vip"))
    assert sorted(result.accepted) == ["a@example.com", "never@example.com"]
    segment = emulator.segment_by_name(LIST, "vip")
    assert segment is not None and emulator.segment_members(LIST, segment) == {"b@example.com"}
    assert emulator.member_status(LIST, "a@example.com") == "subscribed"


def test_one_bare_403_is_retried(
    destination: MailchimpDestination, emulator: MailchimpEmulator, waits: list[float]
) -> None:
    emulator.bare_forbidden = 1
    result = destination.add(LIST, [person("a@example.com")], MailchimpOptions(tag="vip"))
    assert result.accepted == ["a@example.com"] and len(waits) == 1


def test_two_bare_403s_are_a_config_error(destination: MailchimpDestination, emulator: MailchimpEmulator) -> None:
    emulator.bare_forbidden = 5
    with pytest.raises(ConfigError, match="403"):
        destination.add(LIST, [person("a@example.com")], MailchimpOptions(tag="vip"))
    assert emulator.bare_forbidden == 3


def test_missing_key_is_a_config_error() -> None:
    dest = MailchimpDestination("mc", MailchimpConfig(), Runtime())
    with pytest.raises(ConfigError, match="AUDIENCE_SYNC_MAILCHIMP_API_KEY"):
        dest.add(LIST, [person("a@example.com")], MailchimpOptions(tag="vip"))


def test_default_base_url_uses_the_key_data_centre() -> None:
    dest = MailchimpDestination("mc", MailchimpConfig(secret="abc123-us6"), Runtime())
    assert dest.client.base_url == "https://us6.api.mailchimp.com/3.0"
    dest.close()
    with pytest.raises(ConfigError, match="data-centre"):
        _ = MailchimpDestination("mc", MailchimpConfig(secret="nodc"), Runtime()).client


def test_options_need_exactly_one_target() -> None:
    with pytest.raises(ValidationError):
        MailchimpOptions()
    with pytest.raises(ValidationError):
        MailchimpOptions(tag="a", segment_id=1)
    with pytest.raises(ValidationError):
        MailchimpOptions(tag="a", colour="red")  # type: ignore[call-arg]


def test_identity_is_the_normalized_email() -> None:
    dest = MailchimpDestination("mc", MailchimpConfig(), Runtime())
    assert dest.identity(person("  Jane.Doe@Gmail.COM "), MailchimpOptions(tag="t")) == "jane.doe@gmail.com"
    assert subscriber_hash(" Jane.Doe@Gmail.COM") == subscriber_hash("jane.doe@gmail.com")
    assert len(subscriber_hash("a@b.co")) == 32


def test_connections_per_key_stay_under_the_cap(emulator: MailchimpEmulator) -> None:
    emulator.faults.latency = 0.02
    runtime = Runtime(sleep=lambda s: None, key_prefix=f"test-{uuid.uuid4().hex}")
    segment = emulator.create_segment(LIST, "vip")
    config = MailchimpConfig(base_url=emulator.base_url, secret=KEY)
    destinations = [MailchimpDestination(f"mc{i}", config, runtime) for i in range(4)]

    def push(i: int) -> list[str]:
        members = [person(f"p{i}-{j}@example.com") for j in range(3)]
        return destinations[i % 4].add(LIST, members, MailchimpOptions(segment_id=segment)).accepted

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        accepted = [a for chunk in pool.map(push, range(24)) for a in chunk]
    for d in destinations:
        d.close()
    assert len(accepted) == 72 and time.monotonic() - started < 10
    assert emulator.peak_connections <= 8
    assert not [r for r in emulator.log if r.status == 429]


def test_bodies_we_send_match_the_mailchimp_spec(
    destination: MailchimpDestination, emulator: MailchimpEmulator
) -> None:
    destination.add(LIST, [person(f"s{i}@example.com") for i in range(3)], MailchimpOptions(tag="vip"))
    destination.remove(LIST, ["s0@example.com"], MailchimpOptions(tag="vip"))
    schemas = {
        "POST segments": mc_emulator.SEGMENT_CREATE_SCHEMA,
        "POST members": mc_emulator.BATCH_SCHEMA,
        "POST segment": mc_emulator.SEGMENT_MEMBERS_SCHEMA,
    }
    seen = set()
    for method, path, body in emulator.bodies:
        tail = path.rsplit("/", 2)
        kind = "segments" if tail[-1] == "segments" else "segment" if tail[-2] == "segments" else "members"
        seen.add(kind)
        assert mc_emulator.spec_errors(schemas[f"{method} {kind}"], body) == []
    assert seen == {"segments", "members", "segment"}
    assert mc_emulator.spec_errors(mc_emulator.BATCH_SCHEMA, {"members": [{"status": "subscribd"}]})


def test_emulator_answers_400_to_a_spec_violation(emulator: MailchimpEmulator) -> None:
    body = {"members": [{"email_address": "a@example.com", "status": "subscribd"}]}
    response = httpx.post(f"{emulator.base_url}/lists/{LIST}", json=body, auth=("x", KEY))
    assert response.status_code == 400 and response.json()["title"] == "Invalid Resource"


def test_sandbox_emulator_serves_at_its_root_and_creates_lists() -> None:
    emulator, key = mc_emulator.sandbox_emulator()
    with emulator:
        runtime = Runtime(sleep=lambda s: None, key_prefix=f"test-{uuid.uuid4().hex}")
        dest = MailchimpDestination("mc", MailchimpConfig(base_url=emulator.url, secret=key), runtime)
        assert dest.add("any-list", [person("a@example.com")], MailchimpOptions(tag="t")).accepted
        dest.close()
        segment = emulator.segment_by_name("any-list", "t")
        assert segment is not None and emulator.segment_members("any-list", segment) == {"a@example.com"}
