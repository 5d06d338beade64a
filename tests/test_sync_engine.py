"""The diff/sync engine against the file destination, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.file.destination import audience_path, read_audience
from connectors.kernel.identifiers import sha256_hex
from connectors.kernel.records import Consent
from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from worker.config import AppConfig, load_config
from worker.cycle import sync_mapping
from worker.diff import membership_diff
from worker.factory import make_runtime
from worker.store import Store, open_store


def _config(tmp_path: Path, *, mode: str = "mirror", kind: str = "ads", identifier: str = "email_sha256") -> AppConfig:
    path = write_config(
        tmp_path / "sync.toml",
        f"""
        [destinations.out]
        type = "file"
        directory = "{tmp_path / "aud"}"
        identifier = "{identifier}"
        audience_kind = "{kind}"
        batch_size = 7

        [[mappings]]
        name = "m"
        segment = "buyers"
        destination = "out"
        audience = "buyers"
        mode = "{mode}"
        """,
    )
    return load_config(path)


def _sync(store: Store, config: AppConfig, full: bool = False):  # type: ignore[no-untyped-def]
    settings = make_settings()
    return sync_mapping(store, config, settings, make_runtime(settings), "m", full=full)


def _hashes(keys: list[str]) -> set[str]:
    return {sha256_hex(f"member{k[1:]}@example.com") for k in keys}


def test_diff_is_set_algebra() -> None:
    diff = membership_diff({"a", "b", "c"}, {"b", "d"}, skip={"c"})
    assert (diff.adds, diff.removes, diff.unchanged) == (["a"], ["d"], 1)
    assert membership_diff({"a"}, {"b"}, additive=True).removes == []


def test_adds_then_removes_converge_to_the_segment(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url)
    config = _config(tmp_path)
    keys = seed_segment(store, "buyers", 30)
    first = _sync(store, config)
    assert (first.status, first.added, first.removed) == ("ok", 30, 0)
    file = audience_path(tmp_path / "aud", "buyers")
    assert read_audience(file) == _hashes(keys)

    store.replace_segments({"buyers": keys[10:25]})
    second = _sync(store, config)
    assert (second.added, second.removed) == (0, 15)
    assert read_audience(file) == _hashes(keys[10:25])
    assert _sync(store, config).added == 0  # nothing left to do: a replayed run sends nothing
    runs = [r for r in store.recent_runs(mapping="m")]
    assert [r.counts["removed"] for r in runs] == [0, 15, 0]
    store.dispose()


def test_email_lists_only_get_consented_contacts(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    config = _config(tmp_path, kind="email", identifier="email")
    seed_segment(store, "buyers", 5, consent=Consent.UNSUBSCRIBED)
    result = _sync(store, config)
    assert result.added == 0
    assert result.ineligible == {"no_consent": 5}
    assert read_audience(audience_path(tmp_path / "aud", "buyers")) == set()
    store.dispose()


def test_withdrawn_consent_removes_the_contact_from_the_email_list(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    config = _config(tmp_path, kind="email", identifier="email")
    seed_segment(store, "buyers", 3)
    _sync(store, config)
    seed_segment(store, "buyers", 3, consent=Consent.UNSUBSCRIBED)
    result = _sync(store, config)
    assert result.removed == 3
    assert read_audience(audience_path(tmp_path / "aud", "buyers")) == set()
    store.dispose()


def test_additive_mode_never_removes(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    config = _config(tmp_path, mode="additive")
    keys = seed_segment(store, "buyers", 4)
    _sync(store, config)
    store.replace_segments({"buyers": keys[:1]})
    assert _sync(store, config).removed == 0
    assert len(read_audience(audience_path(tmp_path / "aud", "buyers"))) == 4
    store.dispose()


def test_full_resync_repairs_drift_at_the_destination(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    config = _config(tmp_path)
    keys = seed_segment(store, "buyers", 10)
    _sync(store, config)
    audience_path(tmp_path / "aud", "buyers").unlink()  # someone emptied the audience by hand
    assert _sync(store, config).added == 0  # a diff run trusts what was acknowledged
    full = _sync(store, config, full=True)
    assert full.added == 10
    assert read_audience(audience_path(tmp_path / "aud", "buyers")) == _hashes(keys)
    store.dispose()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[[mappings]]\nname="m"\nsegment="nope"\ndestination="d"\naudience="a"\n[destinations.d]\ntype="file"\n',
            "mappings[0] (m).segment: unknown segment 'nope'",
        ),
        ('[destinations.d]\ntype="carrier-pigeon"\n', "destinations.d.type: unknown destination type"),
        ('[destinations.d]\ntype="file"\nbatch_size="many"\n', "destinations.d.batch_size"),
        (
            '[[mappings]]\nname="m"\nsegment="buyers"\ndestination="missing"\naudience="a"\n',
            "mappings[0] (m).destination: no destination 'missing'",
        ),
        ("[source\n", "not valid TOML"),
    ],
)
def test_a_bad_config_file_names_the_file_the_key_and_the_expectation(tmp_path: Path, body: str, expected: str) -> None:
    from worker.config import ConfigFileError

    path = tmp_path / "bad.toml"
    if body.startswith("[source\n"):
        path.write_text(body)
    else:
        write_config(path, body)
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_a_file_audience_is_its_current_membership_and_files_are_owner_only(tmp_path: Path) -> None:
    """Removal leaves no trace of the person in the file; database, audience and cache are 0600."""
    import stat

    from worker.store.snapshot import snapshot_for

    database = tmp_path / "private" / "store.sqlite3"
    store = open_store(f"sqlite:///{database}")
    config = _config(tmp_path, kind="email", identifier="email")
    keys = seed_segment(store, "buyers", 5)
    _sync(store, config)
    path = audience_path(tmp_path / "aud", "buyers")
    assert path.read_text().splitlines() == ["email", *sorted(f"member{k[1:]}@example.com" for k in keys)]
    store.replace_segments({"buyers": keys[1:]})
    _sync(store, config)
    assert "member0@example.com" not in path.read_text()  # gone, not a "remove" line naming them again
    assert not list(path.parent.glob(".*"))  # no temporary file left behind
    snapshot_for(store).refresh()
    snapshot_for(store).save()
    cache = database.with_name(database.name + ".snapshot.npz")
    for created in (database, path, cache):
        assert stat.S_IMODE(created.stat().st_mode) == 0o600, created
    store.dispose()


def test_a_destination_answering_for_identities_it_was_not_sent_fails_the_run_loudly(
    database_url: str, tmp_path: Path
) -> None:
    """Such an answer used to be filtered silently, so the member was re-sent every cycle."""
    from collections.abc import Sequence

    from connectors.file.destination import FileDestination
    from connectors.kernel.destination import BatchResult
    from connectors.kernel.errors import ContractViolation
    from connectors.kernel.records import Member
    from worker.config import MappingOptions

    class Confused(FileDestination):
        def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
            answer = super().add(audience, members, options)
            return BatchResult(accepted=[*answer.accepted, "never-sent"], rejected=answer.rejected)

    config = _config(tmp_path)
    store = open_store(database_url)
    seed_segment(store, "buyers", 5)
    settings = make_settings()
    runtime = make_runtime(settings)
    confused = Confused("out", config.destinations["out"], runtime)
    with pytest.raises(ContractViolation, match="'file' \\(out\\) answered for 1 identities it was not sent"):
        sync_mapping(store, config, settings, runtime, "m", destination=confused)
    run = store.recent_runs(limit=1, mapping="m")[0]
    assert run.status == "failed" and "it was not sent" in (run.error or "")
    assert store.acknowledged("m") == {}  # nothing of that answer was recorded
    store.dispose()


def test_status_keeps_a_mappings_last_problem_after_a_clean_run(database_url: str) -> None:
    from worker.status import render_status, status_report

    store = open_store(database_url)
    first = store.start_run("sync", "m")
    store.finish_run(first, "partial", {"added": 9, "removed": 0, "rejected": 3, "eligible": 12})
    second = store.start_run("sync", "m")
    store.finish_run(second, "ok", {"added": 0, "removed": 0, "rejected": 0, "eligible": 12})
    report = status_report(store)
    (mapping,) = report["mappings"]
    assert mapping["run_id"] == second and mapping["outcome"] == "ok"
    assert mapping["last_problem"]["run_id"] == first and mapping["last_problem"]["outcome"] == "partial"
    text = render_status(report)
    assert f"m: last problem: run #{first}" in text and "partial: 3 rejected" in text
    assert "audience-sync status --history m" in text
    store.dispose()


def test_status_says_what_the_platform_reported_on_the_last_run(sqlite_url: str) -> None:
    from worker.status import render_status, status_report

    store = open_store(sqlite_url)
    run = store.start_run("sync", "buyers-google")
    counts = {
        "added": 3,
        "dest_request_statuses": {"PARTIAL_SUCCESS": 1, "SUCCESS": 2},
        "dest_match_rate_ranges": {"MATCH_RATE_RANGE_51_TO_60": 3},
        "dest_processing_errors": {"PROCESSING_ERROR_REASON_INVALID_FORMAT": 1},
    }
    store.finish_run(run, "ok", counts)
    quiet = store.start_run("sync", "m")
    store.finish_run(quiet, "ok", {"added": 0})
    report = status_report(store)
    by_name = {m["mapping"]: m for m in report["mappings"]}
    assert by_name["m"]["platform_report"] is None
    assert by_name["buyers-google"]["platform_report"]["processing_errors"] == {
        "PROCESSING_ERROR_REASON_INVALID_FORMAT": 1
    }
    assert (
        "buyers-google: the platform reported on the last run: requests partial success x1, success x2; "
        "match rate 51-60% x3; processing errors invalid format x1"
    ) in render_status(report)
    store.dispose()
