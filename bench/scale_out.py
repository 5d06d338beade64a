"""Scale-out: a 1M-member initial sync to Meta sent by one Celery worker, then by two, in one run.

Real Celery workers (one pool process each) on a throwaway Redis, a PostgreSQL database per trial
(copied from one seeded template, dropped after), and the Meta contract emulator with no rate limit
but a fixed time per request (``--latency``: the platform's own processing time, which a worker
spends waiting). Each trial starts from an empty audience and ends when the run row closes; the
audience is then checked against the segment (count and every identity).

    .venv/bin/python -m bench.scale_out [--members 1000000] [--latency 1.0] [--postgres URL]

Trials: the planning run sending everything itself (no split; the engine before parts), the split
sync with one worker, and the split sync with two workers. The ratio that matters is two workers
against one on the same split path; the unsplit run says what splitting itself costs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from connectors.kernel.emulator import Faults
from connectors.kernel.identifiers import sha256_hex
from connectors.meta.emulator import MetaEmulator
from tests.services import ThrowawayRedis
from tests.worker_process import CeleryWorker
from worker.celery_app import make_celery
from worker.settings import Settings
from worker.store import open_store

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TOKEN = "scale-out-token"


@dataclass
class Trial:
    label: str
    workers: int
    split_over: int


def seed(url: str, members: int) -> None:
    """Profiles and one segment of ``members`` people, written by the database itself."""
    store = open_store(url)
    store.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO profiles (customer_key, email, email_consent) "
                "SELECT 'c' || n, 'member' || n || '@example.com', 'SUBSCRIBED' FROM generate_series(0, :last) AS n"
            ),
            {"last": members - 1},
        )
        conn.execute(
            text("INSERT INTO segment_members (segment, customer_key) SELECT 'buyers', customer_key FROM profiles")
        )
        conn.execute(text("UPDATE results_state SET version = version + 1"))
    engine.dispose()


class Databases:
    """PostgreSQL databases made for this run, beside ``server``'s; every one dropped at the end."""

    def __init__(self, server: str) -> None:
        self.base = make_url(server)
        self.admin = create_engine(self.base, isolation_level="AUTOCOMMIT")
        self.made: list[str] = []

    def create(self, template: str | None = None) -> str:
        name = f"scale_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        self.made.append(name)
        return name

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        self.made.remove(name)

    def close(self) -> None:
        for name in list(self.made):
            self.drop(name)
        self.admin.dispose()


def run_trial(trial: Trial, url: str, members: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    broker = ThrowawayRedis()
    emulator = MetaEmulator(access_token=TOKEN, faults=Faults(latency=args.latency))
    emulator.create_audience("A1")
    broker.start()
    emulator.start()
    config = workdir / f"{trial.workers}-{trial.split_over}.toml"
    config.write_text(
        '[source]\ntype = "shopify"\nshop_url = "https://scale.myshopify.com"\n'
        '[destinations.meta]\ntype = "meta"\n'
        f'base_url = "{emulator.base_url}"\n'
        '[[mappings]]\nname = "big"\nsegment = "buyers"\ndestination = "meta"\naudience = "A1"\n'
        'options = { keys = ["EMAIL"] }\n',
        encoding="utf-8",
    )
    prefix = f"scale-{uuid.uuid4().hex[:6]}"
    env = {
        "AUDIENCE_SYNC_REDIS_URL": broker.url,
        "AUDIENCE_SYNC_DATABASE_URL": url,
        "AUDIENCE_SYNC_KEY_PREFIX": prefix,
        "AUDIENCE_SYNC_QUEUE": f"{prefix}-q",
        "AUDIENCE_SYNC_CONFIG": str(config),
        "AUDIENCE_SYNC_META_ACCESS_TOKEN": TOKEN,
        "AUDIENCE_SYNC_SPLIT_SYNC_OVER": str(trial.split_over),
        "AUDIENCE_SYNC_SYNC_PART_MEMBERS": str(args.part_members),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{k.removeprefix("AUDIENCE_SYNC_").lower(): v for k, v in env.items() if k.startswith("AUDIENCE_")},
    )
    workers = [
        CeleryWorker(env, env["AUDIENCE_SYNC_QUEUE"], workdir / f"worker-{trial.workers}-{n}.log")
        for n in range(trial.workers)
    ]
    app = make_celery(settings)
    store = open_store(url)
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            deadline = time.monotonic() + 120
            while "ready" not in worker.log():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not start: {worker.log()[-2000:]}")
                time.sleep(0.2)
        started = time.perf_counter()
        app.send_task("audience_sync.sync_mapping", args=["big"], queue=settings.queue)
        while True:
            runs = store.recent_runs(mapping="big")
            if runs and runs[0].status != "running":
                break
            waited = time.perf_counter() - started
            if waited > args.timeout or (not runs and waited > 60):
                logs = "\n".join(w.log()[-3000:] for w in workers)
                raise RuntimeError(f"{trial.label}: no finished run after {waited:.0f} s; worker logs:\n{logs}")
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        run = runs[0]
        if run.status != "ok":
            raise RuntimeError(f"{trial.label}: the run ended {run.status}: {run.error}")
        held = {dict(row)["EMAIL"] for row in emulator.audience("A1")}
        wanted = {sha256_hex(f"member{n}@example.com") for n in range(members)}
        if held != wanted:
            raise RuntimeError(f"{trial.label}: {len(wanted - held)} missing, {len(held - wanted)} extra")
        parts = store.parts(run.id)
        takers = Counter(p.worker for p in parts if p.worker)
        return {
            "seconds": seconds,
            "requests": len(emulator.log),
            "parts": len(parts),
            "takers": len(takers),
            "spread": "/".join(str(n) for n in sorted(takers.values(), reverse=True)),
        }
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.stop()
        store.dispose()
        app.close()
        emulator.stop()
        broker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the emulator takes per request")
    parser.add_argument("--part-members", type=int, default=50_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("AUDIENCE_SYNC_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        help="a PostgreSQL server URL (databases are made beside it for the run and dropped after)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="longest a trial may take")
    parser.add_argument("--skip-unsplit", action="store_true", help="only the split trials")
    args = parser.parse_args(argv)
    trials = [Trial("one worker, split", 1, 1), Trial("two workers, split", 2, 1)]
    if not args.skip_unsplit:
        trials.insert(0, Trial("one worker, no split (one task sends all)", 1, 0))
    databases = Databases(args.postgres)
    figures: list[tuple[Trial, dict[str, Any]]] = []
    try:
        template = databases.create()
        made = time.perf_counter()
        seed(databases.url(template), args.members)
        print(f"seeded {args.members:,} members in {time.perf_counter() - made:.1f} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="as-scale-") as tmp:
            for trial in trials:
                name = databases.create(template)
                try:
                    result = run_trial(trial, databases.url(name), args.members, args, Path(tmp))
                finally:
                    databases.drop(name)
                figures.append((trial, result))
                print(
                    f"{trial.label:44s} {result['seconds']:8.1f} s  {args.members / result['seconds']:9,.0f} members/s"
                    f"  {int(result['requests']):5d} requests  parts {int(result['parts'])} taken by"
                    f" {int(result['takers'])} worker(s) ({result['spread'] or '-'} each)",
                    flush=True,
                )
    finally:
        databases.close()
    by_label = {t.label: r["seconds"] for t, r in figures}
    one, two = by_label.get("one worker, split"), by_label.get("two workers, split")
    print(f"\n{args.members:,} members, {args.latency} s per request (no rate limit), parts of {args.part_members:,}")
    if one and two:
        print(f"two workers vs one (same split path): {one / two:.2f}x   (target >= 1.7x)")
    unsplit = by_label.get("one worker, no split (one task sends all)")
    if unsplit and two:
        print(
            f"two workers vs the unsplit run: {unsplit / two:.2f}x;  splitting's own cost with one worker:"
            f" {(one or 0) / unsplit:.2f}x the unsplit time"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
