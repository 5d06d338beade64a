"""Soak: 20 cycles at 50,000 members with a random fault in every cycle, ending at 0 missing / 0 extra.

A real Celery worker (two pool processes) on a throwaway Redis, the real store (SQLite file or a
PostgreSQL database made for the run), and three mappings into live emulators: a file audience,
a Mailchimp list (consented contacts) and a Meta custom audience. Between cycles membership moves
(people join and leave, some withdraw consent). During each cycle one fault strikes at a random
moment: SIGKILL of the whole worker (then a restart), SIGKILL of a pool child, a Redis restart
(no persistence: queue and locks lost), or every database connection cut (PostgreSQL). Then the
system recovers the way a deployment does: the beat asks again for every mapping until each last
run finished. After each cycle it prints, per mapping, members missing from and extra in the
destination's real state, against the desired membership.

    .venv/bin/python -m bench.soak [--members 50000] [--cycles 20] [--postgres URL] [--seed 1]
    .venv/bin/python -m bench.soak --split-over 2000 --part-members 2000   # large syncs as parts, under faults
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from connectors.file.destination import audience_path, read_audience
from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.meta.destination import encode_identity
from connectors.meta.emulator import MetaEmulator
from tests.services import ThrowawayRedis
from tests.worker_process import CeleryWorker
from worker.celery_app import make_celery
from worker.config import load_config
from worker.factory import build_destination, make_runtime
from worker.queue import request_sync
from worker.settings import Settings
from worker.store import Store, open_store
from worker.sync import desired_identities

MAPPINGS = ("file", "mailchimp", "meta")
TERMINATE = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"


def config_text(directory: Path, mailchimp: str, meta: str) -> str:
    return f"""
[source]
type = "shopify"
shop_url = "https://soak.myshopify.com"

[destinations.files]
type = "file"
directory = "{directory}"
batch_size = 2000

[destinations.mc]
type = "mailchimp"
base_url = "{mailchimp}/3.0"

[destinations.fb]
type = "meta"
base_url = "{meta}/v25.0"
requests_per_second = 1000
burst = 1000

[[mappings]]
name = "file"
segment = "buyers"
destination = "files"
audience = "buyers"

[[mappings]]
name = "mailchimp"
segment = "newsletter_subscribers"
destination = "mc"
audience = "L1"
options = {{ tag = "soak" }}

[[mappings]]
name = "meta"
segment = "buyers"
destination = "fb"
audience = "A1"
options = {{ keys = ["EMAIL"] }}
"""


class Population:
    """Who is in which segment, and their consent; moves between cycles."""

    def __init__(self, members: int, rng: random.Random) -> None:
        self.rng = rng
        self.next = members
        self.buyers = {f"k{n}" for n in range(members)}
        self.consent = {k: "SUBSCRIBED" if rng.random() < 0.7 else "UNSUBSCRIBED" for k in self.buyers}

    def move(self, share: float = 0.08) -> str:
        leave = set(self.rng.sample(sorted(self.buyers), int(len(self.buyers) * share / 2)))
        self.buyers -= leave
        joins = int(len(self.buyers) * share / 2)
        for n in range(self.next, self.next + joins):
            self.buyers.add(f"k{n}")
            self.consent[f"k{n}"] = "SUBSCRIBED" if self.rng.random() < 0.7 else "UNSUBSCRIBED"
        self.next += joins
        flips = self.rng.sample(sorted(self.buyers), int(len(self.buyers) * 0.01))
        for key in flips:  # some withdraw consent, some give it
            self.consent[key] = "UNSUBSCRIBED" if self.consent[key] == "SUBSCRIBED" else "SUBSCRIBED"
        return f"{len(leave)} left, {joins} joined, {len(flips)} consent changes"

    def write(self, store: Store) -> None:
        rows = [
            {
                "customer_key": k,
                "email": f"person{k[1:]}@example.com",
                "phone": None,
                "first_name": None,
                "last_name": None,
                "country": None,
                "email_consent": self.consent[k],
            }
            for k in sorted(self.buyers)
        ]
        store.replace_profiles(rows)
        subscribers = [k for k in sorted(self.buyers) if self.consent[k] == "SUBSCRIBED"]
        store.replace_segments({"buyers": sorted(self.buyers), "newsletter_subscribers": subscribers})


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = workdir
        self.broker = ThrowawayRedis()
        self.mailchimp = MailchimpEmulator(api_key="soak-key-us1")
        self.mailchimp.create_list("L1")
        self.meta = MetaEmulator(access_token="soak-token")
        self.meta.create_audience("A1")
        self.database = args.postgres or f"sqlite:///{workdir / 'soak.sqlite3'}"
        self.prefix = f"soak-{uuid.uuid4().hex[:6]}"

    # -- set-up ---------------------------------------------------------------------------
    def start(self) -> None:
        self.broker.start()
        self.mailchimp.start()
        self.meta.start()
        config = self.workdir / "soak.toml"
        config.write_text(config_text(self.workdir / "aud", self.mailchimp.url, self.meta.url), encoding="utf-8")
        self.env = {
            "AUDIENCE_SYNC_REDIS_URL": self.broker.url,
            "AUDIENCE_SYNC_DATABASE_URL": self.database,
            "AUDIENCE_SYNC_KEY_PREFIX": self.prefix,
            "AUDIENCE_SYNC_QUEUE": f"{self.prefix}-q",
            "AUDIENCE_SYNC_CONFIG": str(config),
            "AUDIENCE_SYNC_VISIBILITY_TIMEOUT_SECONDS": "20",
            "AUDIENCE_SYNC_TASK_BUDGET_SECONDS": "5",
            "AUDIENCE_SYNC_LOCK_TTL_SECONDS": "5",
            "AUDIENCE_SYNC_MAILCHIMP_API_KEY": "soak-key-us1",
            "AUDIENCE_SYNC_META_ACCESS_TOKEN": "soak-token",
            "AUDIENCE_SYNC_SPLIT_SYNC_OVER": str(self.args.split_over),
            "AUDIENCE_SYNC_SYNC_PART_MEMBERS": str(self.args.part_members),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            **{k.removeprefix("AUDIENCE_SYNC_").lower(): v for k, v in self.env.items() if k.startswith("AUDIENCE_")},
        )
        self.config = load_config(config)
        self.store = open_store(self.database)
        self.app = make_celery(self.settings)
        self.worker = CeleryWorker(
            self.env, self.env["AUDIENCE_SYNC_QUEUE"], self.workdir / "worker.log", concurrency=2
        )
        self.worker.start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.worker.stop()
        with contextlib.suppress(Exception):
            self.store.dispose()
        self.mailchimp.stop()
        self.meta.stop()
        self.broker.close()

    # -- the beat, recovery and the check --------------------------------------------------------------
    def send(self, mapping: str, full: bool) -> str:
        return str(
            self.app.send_task(
                "audience_sync.sync_mapping", args=[mapping], kwargs={"full": full}, queue=self.settings.queue
            ).id
        )

    def ask_all(self) -> None:
        for name in MAPPINGS:
            with contextlib.suppress(Exception):  # the broker may be restarting: the next ask retries
                request_sync(self.store, self.settings, name, full=False, reason="cycle", send=self.send)

    def settled(self, since: float) -> bool:
        for name in MAPPINGS:
            runs = self.store.recent_runs(limit=1, mapping=name)
            if not runs or runs[0].status != "ok" or runs[0].started_at.timestamp() < since:
                return False
        return not self.store.owed_syncs()

    def recover(self, since: float, limit: float = 600.0) -> float:
        started = time.monotonic()
        asked = 0.0
        while not self.settled(since):
            if time.monotonic() - started > limit:
                raise RuntimeError("did not recover in time")
            if time.monotonic() - asked > 8:  # the beat, much faster than every 15 minutes
                self.ask_all()
                asked = time.monotonic()
            time.sleep(0.5)
        return time.monotonic() - started

    def desired(self, name: str) -> set[str]:
        mapping = self.config.mappings[name]
        dest = build_destination(
            mapping.destination,
            self.config.destinations[mapping.destination],
            self.settings,
            make_runtime(self.settings),
        )
        members = self.store.members(self.store.segment_keys(mapping.segment)).values()
        return set(desired_identities(dest, members, self.config.options[name])[0])

    def held(self, name: str) -> set[str]:
        if name == "file":
            return read_audience(audience_path(self.workdir / "aud", "buyers"))
        if name == "mailchimp":
            segment = self.mailchimp.segment_by_name("L1", "soak")
            return set() if segment is None else self.mailchimp.segment_members("L1", segment)
        return {encode_identity([k for k, _ in r], tuple(v for _, v in r)) for r in self.meta.audience("A1")}

    # -- faults -----------------------------------------------------------------------------------------
    def fault(self, kind: str) -> None:
        if kind == "kill worker":
            self.worker.kill()
            time.sleep(self.rng.uniform(0, 2))
            self.worker.start()
        elif kind == "kill pool child":
            children = [pid for pid in self._children()]
            if children:
                os.kill(self.rng.choice(children), signal.SIGKILL)
        elif kind == "restart redis":
            self.broker.stop()
            time.sleep(self.rng.uniform(0.2, 2))
            self.broker.start()
        elif kind == "cut database":
            url = make_url(self.database)
            admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(TERMINATE + " AND pid <> pg_backend_pid()"), {"n": url.database})
            admin.dispose()

    def _children(self) -> list[int]:
        assert self.worker.proc is not None
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) == self.worker.proc.pid:
                        found.append(int(entry.name))
        return found

    def run(self) -> int:
        population = Population(self.args.members, self.rng)
        population.write(self.store)
        faults = ["kill worker", "kill pool child", "restart redis"]
        if self.database.startswith("postgresql"):
            faults.append("cut database")
        backend = make_url(self.database).get_backend_name()
        print(
            f"soak: {self.args.members:,} members, {self.args.cycles} cycles, store {backend}; syncs of more than"
            f" {self.args.split_over:,} moves split into parts of {self.args.part_members:,}"
        )
        print(f"{'cycle':>5}  {'fault':<16} {'change':<42} {'recover':>8}  " + "  ".join(f"{m:>22}" for m in MAPPINGS))
        worst = 0
        for cycle in range(1, self.args.cycles + 1):
            change = population.move() if cycle > 1 else "initial sync"
            if cycle > 1:
                population.write(self.store)
            since = time.time()
            self.ask_all()
            kind = self.rng.choice(faults)
            time.sleep(self.rng.uniform(0.3, 3.0))  # mid-sync, somewhere
            self.fault(kind)
            took = self.recover(since)
            cells = []
            for name in MAPPINGS:
                desired, held = self.desired(name), self.held(name)
                missing, extra = len(desired - held), len(held - desired)
                worst = max(worst, missing + extra)
                cells.append(f"{missing} missing / {extra} extra".rjust(22))
            print(f"{cycle:>5}  {kind:<16} {change:<42} {took:>7.1f}s  " + "  ".join(cells), flush=True)
        print("soak: every mapping exact after every recovered cycle" if worst == 0 else f"soak: FAILED ({worst} off)")
        return 0 if worst == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--postgres", help="a PostgreSQL URL (a database made for the run; dropped after)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--split-over", type=int, default=100_000, help="syncs moving more members than this are sent as parts"
    )
    parser.add_argument("--part-members", type=int, default=25_000, help="members per part of a split sync")
    args = parser.parse_args(argv)
    made: str | None = None
    if args.postgres:
        base = make_url(args.postgres)
        made = f"soak_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{made}"'))
        admin.dispose()
        args.postgres = base.set(database=made).render_as_string(hide_password=False)
    with tempfile.TemporaryDirectory(prefix="as-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            soak.start()
            return soak.run()
        finally:
            soak.stop()
            if made is not None:
                admin = create_engine(make_url(args.postgres).set(database="postgres"), isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(
                        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": made}
                    )
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{made}"'))
                admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
