"""A large sync split into parts: what the audience ends up holding, what the run row says, and
that a failed, lost or killed part is sent again without sending anyone twice."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.kernel.emulator import Faults, Scripted
from connectors.mailchimp.emulator import MailchimpEmulator
from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from tests.worker_process import CeleryWorker, wait_for
from worker.config import AppConfig, load_config
from worker.cycle import sync_mapping
from worker.factory import make_runtime
from worker.settings import Settings
from worker.split import PartSplitter
from worker.store import Store, open_store

KEY = "split-key-us1"


@dataclass
class Rig:
    emulator: MailchimpEmulator
    config: AppConfig
    settings: Settings
    store: Store

    def sync(self, **kwargs: Any) -> Any:
        kwargs.setdefault("split", PartSplitter(over=500, part_members=600))
        runtime = make_runtime(self.settings, sleep=lambda _: None)
        return sync_mapping(self.store, self.config, self.settings, runtime, "big", **kwargs)

    def audience(self) -> set[str]:
        segment = self.emulator.segment_by_name("L1", "vip")
        return set(self.emulator.segment_members("L1", segment))

    def sent_adds(self) -> list[str]:
        """Every address the emulator was asked to add to the segment, repeats included."""
        return [
            email
            for method, path, body in self.emulator.bodies
            if method == "POST" and re.search(r"/segments/\d+$", path)
            for email in body.get("members_to_add", [])
        ]


def _emails(first: int, last: int) -> set[str]:
    return {f"member{n}@example.com" for n in range(first, last)}


@pytest.fixture
def rig(database_url: str, tmp_path: Path) -> Iterator[Rig]:
    with MailchimpEmulator(api_key=KEY) as emulator:
        emulator.create_list("L1")
        path = write_config(
            tmp_path / "split.toml",
            f'[destinations.d]\ntype = "mailchimp"\nbase_url = "{emulator.url}/3.0"\n'
            '[[mappings]]\nname = "big"\nsegment = "buyers"\ndestination = "d"\naudience = "L1"\n'
            'options = { tag = "vip" }\n',
        )
        settings = make_settings(
            database_url=database_url, config=path, secrets={"AUDIENCE_SYNC_MAILCHIMP_API_KEY": KEY}
        )
        store = open_store(database_url)
        yield Rig(emulator, load_config(path), settings, store)
        store.dispose()


def test_a_large_sync_is_sent_as_parts_and_the_run_tells_the_whole_story(rig: Rig) -> None:
    keys = seed_segment(rig.store, "buyers", 5_700)
    rig.store.replace_segments({"buyers": keys[:2_600]})
    result = rig.sync()
    assert result.status == "ok", result.error
    assert rig.audience() == _emails(0, 2_600)
    run = rig.store.run(result.run_id)
    assert run.status == "ok"
    assert run.counts["parts"] == 6 and run.counts["parts_done"] == 6  # 500 per part: whole batches
    assert run.counts["added"] == 2_600 and run.counts["pending_adds"] == 0
    assert {p.state for p in rig.store.parts(result.run_id)} == {"done"}
    assert rig.store.part_work(result.run_id, 0) == []  # a done part's identities are gone
    assert sorted(rig.sent_adds()) == sorted(_emails(0, 2_600))  # nobody twice
    assert len(rig.emulator.segments["L1"]) == 1  # the segment was made once, before the parts

    # members leave and join: removes and adds are parts too, and the audience follows
    rig.store.replace_segments({"buyers": keys[1_000:2_600] + keys[5_000:5_700]})
    second = rig.sync()
    assert second.status == "ok", second.error
    assert rig.audience() == _emails(1_000, 2_600) | _emails(5_000, 5_700)
    counts = rig.store.run(second.run_id).counts
    assert (counts["added"], counts["removed"], counts["parts"]) == (700, 1_000, 4)


def test_a_small_diff_is_sent_by_the_planning_run_itself(rig: Rig) -> None:
    seed_segment(rig.store, "buyers", 400)
    result = rig.sync()
    assert result.status == "ok" and result.parts == 0
    assert rig.store.parts(result.run_id) == []
    assert rig.audience() == _emails(0, 400)


def test_a_failed_part_fails_the_run_visibly_and_the_next_sync_sends_only_what_is_owed(rig: Rig) -> None:
    seed_segment(rig.store, "buyers", 2_000)
    # the third batch's request answers 500 every time: its part exhausts the retries
    rig.emulator.faults = Faults(
        script=[Scripted("POST", r"/segments/\d+$", "error", times=rig.settings.retry_attempts, after=2)]
    )
    first = rig.sync()
    run = rig.store.run(first.run_id)
    assert run.status == "failed"
    assert run.error is not None and run.error.startswith("1 of 4 parts did not finish; part 2:")
    assert run.counts["added"] == 1_500 and run.counts["pending_adds"] == 500
    assert rig.store.sync_request("big") is None or rig.store.sync_request("big").task_id is None

    rig.emulator.faults = Faults()
    second = rig.sync()
    assert second.status == "ok", second.error
    assert rig.audience() == _emails(0, 2_000)
    assert second.added == 500  # only the failed part's members
    assert sorted(set(rig.sent_adds())) == sorted(_emails(0, 2_000))


class Killed(BaseException):
    """The worker dies (not an error the engine may catch)."""


def test_a_lost_part_message_and_a_killed_part_are_sent_by_the_next_sync_without_repeats(rig: Rig) -> None:
    seed_segment(rig.store, "buyers", 3_000)
    lost: list[tuple[int, list[int]]] = []
    first = rig.sync(dispatch=lambda run_id, parts: lost.append((run_id, parts)))
    assert first.status == "running" and lost == [(first.run_id, [0, 1, 2, 3, 4, 5])]
    assert rig.audience() == set()  # written as parts; no worker got the messages
    from worker.status import render_status, status_report

    shown = render_status(status_report(rig.store))
    assert "running (parts 0/6)" in shown, shown

    # a worker takes part 0 and dies after its first batch
    from worker.cycle import sync_part

    def die(counts: dict[str, Any]) -> None:
        raise Killed

    with pytest.raises(Killed):
        runtime = make_runtime(rig.settings, sleep=lambda _: None)
        sync_part(rig.store, rig.config, rig.settings, runtime, "big", first.run_id, 0, progress=die)
    assert rig.store.part(first.run_id, 0).state == "pending"

    # the next sync of the mapping plans nothing new: it sends the split run's owed parts
    again = rig.sync()
    assert again.run_id == first.run_id and again.status == "ok", again.error
    assert rig.audience() == _emails(0, 3_000)
    assert sorted(rig.sent_adds()) == sorted(_emails(0, 3_000))  # the killed part's first batch not again
    counts = rig.store.run(first.run_id).counts
    assert counts["added"] == 3_000 and counts["parts_done"] == 6
    assert rig.store.part(first.run_id, 0).attempts == 2


def test_an_erasure_while_parts_are_owed_keeps_the_person_out_of_every_part(rig: Rig) -> None:
    from worker.erasure import request_erasure

    seed_segment(rig.store, "buyers", 1_200)
    first = rig.sync(dispatch=lambda run_id, parts: None)
    assert first.status == "running"
    request_erasure(rig.store, rig.config, "member7@example.com", origin="cli")
    assert all(w.customer_key != "c7" for p in range(3) for w in rig.store.part_work(first.run_id, p))
    assert rig.sync().status == "ok"
    assert "member7@example.com" not in rig.audience()
    assert "member7@example.com" not in rig.sent_adds()
    assert len(rig.audience()) == 1_199


@pytest.mark.redis
def test_two_celery_workers_share_the_parts_of_one_sync(
    redis_url: str, key_prefix: str, tmp_path: Path, database_url: str
) -> None:
    from worker.celery_app import make_celery

    database = database_url
    with MailchimpEmulator(api_key=KEY, faults=Faults(latency=0.05)) as emulator:
        emulator.create_list("L1")
        config = write_config(
            tmp_path / "worker.toml",
            f'[destinations.d]\ntype = "mailchimp"\nbase_url = "{emulator.url}/3.0"\n'
            '[[mappings]]\nname = "big"\nsegment = "buyers"\ndestination = "d"\naudience = "L1"\n'
            'options = { tag = "vip" }\n',
        )
        env = {
            "AUDIENCE_SYNC_REDIS_URL": redis_url,
            "AUDIENCE_SYNC_DATABASE_URL": database,
            "AUDIENCE_SYNC_KEY_PREFIX": key_prefix,
            "AUDIENCE_SYNC_QUEUE": f"{key_prefix}-q",
            "AUDIENCE_SYNC_CONFIG": str(config),
            "AUDIENCE_SYNC_MAILCHIMP_API_KEY": KEY,
            "AUDIENCE_SYNC_SPLIT_SYNC_OVER": "1000",
            "AUDIENCE_SYNC_SYNC_PART_MEMBERS": "500",
        }
        settings = make_settings(database_url=database, redis_url=redis_url, key_prefix=key_prefix)
        store = open_store(database)
        seed_segment(store, "buyers", 4_000)
        workers = [CeleryWorker(env, env["AUDIENCE_SYNC_QUEUE"], tmp_path / f"w{n}.log") for n in range(2)]
        app = make_celery(settings)
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                wait_for(lambda w=worker: "ready" in w.log(), 60, "a worker to be ready")
            app.send_task("audience_sync.sync_mapping", args=["big"], queue=env["AUDIENCE_SYNC_QUEUE"])

            def finished() -> Any:
                runs = store.recent_runs(mapping="big")
                return runs and runs[0].status != "running" and runs[0]

            run = wait_for(finished, 120, "the split run to close")
            assert run.status == "ok", run.error
            segment = emulator.segment_by_name("L1", "vip")
            assert set(emulator.segment_members("L1", segment)) == {f"member{n}@example.com" for n in range(4_000)}
            parts = store.parts(run.id)
            assert len(parts) == 8 and {p.state for p in parts} == {"done"}
            assert len({p.counts.get("added") for p in parts}) == 1  # 500 each
            takers = {p.worker for p in parts}
            assert len(takers) == 2 and None not in takers, f"both workers took parts: {takers}"
        finally:
            for worker in workers:
                worker.stop()
            app.close()
            store.dispose()


def test_a_member_whose_address_changed_after_the_plan_is_not_sent_under_the_old_one(rig: Rig) -> None:
    keys = seed_segment(rig.store, "buyers", 1_200)
    first = rig.sync(dispatch=lambda run_id, parts: None)
    assert first.status == "running"
    # c5 changes address before any part is sent (a recompute wrote new profiles meanwhile)
    seed_segment(rig.store, "buyers", 1_200)
    with rig.store.engine.begin() as conn:
        from sqlalchemy import update

        from worker.store import schema

        conn.execute(
            update(schema.profiles).where(schema.profiles.c.customer_key == "c5").values(email="renamed5@example.com")
        )
    assert keys[5] == "c5"
    closed = rig.sync()
    assert closed.run_id == first.run_id and closed.status == "ok"
    assert rig.store.run(first.run_id).counts["changed"] == 1
    assert "member5@example.com" not in rig.sent_adds()  # never sent under the address it no longer has
    following = rig.sync()  # a new plan sees the new address
    assert following.added == 1
    assert rig.audience() == (_emails(0, 1_200) - {"member5@example.com"}) | {"renamed5@example.com"}


def test_a_full_resync_sent_as_parts_sends_every_member_again_once(rig: Rig) -> None:
    seed_segment(rig.store, "buyers", 1_500)
    assert rig.sync().status == "ok"
    assert len(rig.sent_adds()) == 1_500
    full = rig.sync(full=True)
    assert full.status == "ok" and full.parts == 3, full.error
    assert sorted(rig.sent_adds()) == sorted(list(_emails(0, 1_500)) * 2)  # everyone once more, nobody thrice
    assert rig.store.run(full.run_id).counts["added"] == 1_500
    assert rig.audience() == _emails(0, 1_500)


def test_a_part_of_a_superseded_run_stops_without_recording(rig: Rig) -> None:
    from worker.cycle import sync_part

    seed_segment(rig.store, "buyers", 1_200)
    first = rig.sync(dispatch=lambda run_id, parts: None)
    rig.store.claim_fence("big", first.run_id + 1000)  # another run took the mapping
    runtime = make_runtime(rig.settings, sleep=lambda _: None)
    outcome = sync_part(rig.store, rig.config, rig.settings, runtime, "big", first.run_id, 0)
    assert outcome.status == "failed" and outcome.error is not None and "superseded" in outcome.error
    assert rig.store.acknowledged("big") == {}
    assert rig.store.part(first.run_id, 0).state == "failed"


def test_a_part_taken_again_does_not_send_its_refused_members_again(rig: Rig) -> None:
    from worker.cycle import sync_part

    seed_segment(rig.store, "buyers", 1_000)
    rig.emulator.add_member("L1", "member3@example.com", "unsubscribed")  # Mailchimp refuses to resubscribe
    first = rig.sync(dispatch=lambda run_id, parts: None)

    def die(counts: dict[str, Any]) -> None:
        raise Killed

    runtime = make_runtime(rig.settings, sleep=lambda _: None)
    with pytest.raises(Killed):
        sync_part(rig.store, rig.config, rig.settings, runtime, "big", first.run_id, 0, progress=die)
    closed = rig.sync()
    assert closed.run_id == first.run_id and closed.status == "partial"
    counts = rig.store.run(first.run_id).counts
    assert (counts["added"], counts["rejected"]) == (999, 1)
    upserted = [
        m["email_address"]
        for method, path, body in rig.emulator.bodies
        if method == "POST" and path.endswith("/lists/L1")
        for m in body["members"]
    ]
    assert upserted.count("member3@example.com") == 1  # refused once, not asked again
    assert "member3@example.com" in rig.store.rejected("big")
