#!/usr/bin/env python3
"""Bootstrap and run: ``python3 dev.py demo`` or ``python3 dev.py test``. Needs only Python 3.11+.

Creates ``.venv`` on first use and installs the locked dependencies (again whenever the lock
file changes), then runs the demo or the whole check suite (lint, format, types, compose, tests).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
LOCK = ROOT / "requirements" / "dev.lock"
STAMP = VENV / ".installed"


def run(*cmd: str | Path, check: bool = True, env: dict[str, str] | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=check, env=env).returncode


def ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"audience-sync needs Python 3.11 or newer (this is {sys.version.split()[0]})")
    digest = hashlib.sha256(LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PY.exists():
        return
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    run(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "uv==0.13.9")
    run(PY, "-m", "uv", "pip", "install", "--quiet", "--python", PY, "-r", LOCK)
    run(PY, "-m", "uv", "pip", "install", "--quiet", "--python", PY, "--no-deps", "-e", ".")
    STAMP.write_text(digest)


def compose_command() -> list[str | Path] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1), whichever answers."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def demo(args: list[str]) -> int:
    return run(BIN / "audience-sync", "demo", *args, check=False)


def test(args: list[str]) -> int:
    steps: list[list[str | Path]] = [
        [BIN / "ruff", "check", "."],
        [BIN / "ruff", "format", "--check", "."],
        [BIN / "mypy"],
    ]
    compose = compose_command()
    if compose:
        # the compose file insists on a token; the check needs a placeholder only for its own process
        compose_env = {**os.environ, "AUDIENCE_SYNC_API_TOKEN": os.environ.get("AUDIENCE_SYNC_API_TOKEN", "x" * 43)}
        if run(*compose, "-f", "docker-compose.yml", "config", "--quiet", check=False, env=compose_env) != 0:
            print("FAILED: docker-compose.yml does not validate", flush=True)
            return 1
    else:
        print(
            "docker-compose.yml check skipped: no compose CLI here (neither the `docker compose` plugin "
            "nor `docker-compose`)",
            flush=True,
        )
    for step in steps:
        if run(*step, check=False) != 0:
            print(f"FAILED: {' '.join(str(s) for s in step)}", flush=True)
            return 1
    # tests spend much of their time waiting on workers, emulators and sockets: three processes fill two cores
    workers = [] if any(a.startswith("-n") for a in args) else ["-n", "3"]
    return run(PY, "-m", "pytest", *workers, *args, check=False)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"demo", "test", "setup"}:
        print(__doc__)
        return 2
    ensure_env()
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "setup":
        return 0
    return demo(rest) if command == "demo" else test(rest)


if __name__ == "__main__":
    sys.exit(main())
