"""The operator's commands, run as a person would: a real process, real files, real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

CLI = [sys.executable, "-m", "worker.cli"]


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **(env or {})}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full_env, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )


def test_run_resync_and_status_on_the_embedded_defaults(tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    small = {"AUDIENCE_SYNC_SANDBOX_CUSTOMERS": "300"}
    ran = cli("run", cwd=tmp_path, env=small)
    assert ran.returncode == 0, ran.stderr
    assert "cycle finished" in ran.stdout and "newsletter-mailchimp" in ran.stdout
    assert (tmp_path / "var" / "audience-sync.sqlite3").exists()
    assert (tmp_path / "var" / "audiences" / "buyers.csv").exists()

    inline = cli("resync", "buyers-file", "--inline", "--full", cwd=tmp_path, env=small)
    assert inline.returncode == 0, inline.stderr
    assert inline.stdout.splitlines()[-1].startswith("buyers-file: ok: added ")

    env = {
        "AUDIENCE_SYNC_REDIS_URL": redis_url,
        "AUDIENCE_SYNC_KEY_PREFIX": key_prefix,
        "AUDIENCE_SYNC_QUEUE": f"{key_prefix}-q",
    }
    queued = cli("resync", "buyers-meta", "--full", cwd=tmp_path, env=env)
    assert queued.returncode == 0, queued.stderr
    assert "queued full replace of buyers-meta" in queued.stdout
    assert "no worker is consuming queue" in queued.stdout  # nobody listens: say so, not just "queued"
    assert redis.Redis.from_url(redis_url).llen(f"{key_prefix}:celery:{key_prefix}-q") == 1
    again = cli("resync", "buyers-meta", cwd=tmp_path, env=env)
    assert "was already owed" in again.stdout  # coalesced: one task, not two
    assert redis.Redis.from_url(redis_url).llen(f"{key_prefix}:celery:{key_prefix}-q") == 1

    from tests.services import free_port

    down = cli(
        "resync", "buyers-file", cwd=tmp_path, env={"AUDIENCE_SYNC_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    )
    assert down.returncode == 2 and down.stdout == ""
    assert down.stderr.count("\n") == 1, down.stderr  # one line, no traceback
    assert "did not answer" in down.stderr and "--inline" in down.stderr

    status = cli("status", cwd=tmp_path)
    assert "buyers-file" in status.stdout and "pull" in status.stdout

    unknown = cli("resync", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "no mapping named 'nope'" in unknown.stderr


def test_a_bad_config_file_stops_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[source]\ntype = "shopify"\nshop_url = "https://x.myshopify.com"\n'
        '[destinations.d]\ntype = "meta"\nrequests_per_second = -1\n'
    )
    result = cli("run", cwd=tmp_path, env={"AUDIENCE_SYNC_CONFIG": str(bad)})
    assert result.returncode == 2
    assert f"{bad}: destinations.d.requests_per_second" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("platform", "kind", "given", "normalized"),
    [
        ("meta", "email", "  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("google", "phone", "(212) 565-0000", "+12125650000"),
        ("meta", "phone", "+44 20 7946 0958", "442079460958"),
    ],
)
def test_hash_prints_the_match_key_and_its_sha256(
    tmp_path: Path, platform: str, kind: str, given: str, normalized: str
) -> None:
    import hashlib

    result = cli("hash", "--platform", platform, "--kind", kind, cwd=tmp_path, stdin=f"{given}\n\nnot valid\n")
    first, blank, bad = result.stdout.splitlines()  # one output line per input line, blank lines included
    assert first == f"{normalized}\t{hashlib.sha256(normalized.encode()).hexdigest()}"
    assert blank == "invalid\t-\tempty line"
    assert bad.startswith("invalid\t-\tnot a valid ")
