from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import delete_prefix, postgres_database, redis_server
from worker.settings import Settings


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        if url is None:
            pytest.skip("no Redis answers and no redis-server binary to start one")
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"astest-{uuid.uuid4().hex[:10]}"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every store test runs on SQLite, and on PostgreSQL too when one answers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
        return
    url = request.getfixturevalue("postgres_url")
    if url is None:
        pytest.skip("PostgreSQL is not reachable at AUDIENCE_SYNC_TEST_POSTGRES_URL")
    from sqlalchemy import create_engine

    from worker.store.schema import metadata

    yield url
    engine = create_engine(url)
    metadata.drop_all(engine)  # tables in the per-session database this run created
    with engine.begin() as conn:  # and Alembic's version row, so the next test migrates a new database
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


def make_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **{"env_file": None, **overrides})  # type: ignore[call-arg,arg-type]


# -- privacy: no email address or secret in any log line of the whole test run --------------------

KNOWN_SECRETS = (
    "shpat_emulator_local_token_0001",
    "s3cret",
    "api-test-token-0123456789abcdefghijkl",
    "t" * 40,
    # every token the Shopify OAuth emulator issues (connectors/shopify/oauth_emulator.py)
    "shpat_rotating_",
    "shprt_rotating_",
)


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name}: {record.getMessage()}")
        except Exception:  # a broken format string must not break the run
            self.lines.append(f"{record.name}: {record.msg!r}")


LOG_COLLECTOR = _LogCollector()


def leaks(lines: list[str], secrets: tuple[str, ...] = KNOWN_SECRETS) -> list[str]:
    """Lines that contain an email address or a known secret."""
    from connectors.kernel.redact import _EMAIL

    return [line for line in lines if _EMAIL.search(line) or any(s in line for s in secrets)]


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(LOG_COLLECTOR)
    if root.level > logging.DEBUG or root.level == logging.NOTSET:
        root.setLevel(logging.DEBUG)
    # deliberately no redaction filter here: the scan checks what our code itself writes


@pytest.fixture(autouse=True)
def _no_pii_in_this_tests_logs() -> Iterator[None]:
    """Every test fails if a log line written while it ran carries an address or a known secret
    (per test, so it holds under parallel runs too; the session check below catches the rest)."""
    start = len(LOG_COLLECTOR.lines)
    yield
    found = leaks(LOG_COLLECTOR.lines[start:])
    if found:
        pytest.fail(f"PRIVACY: {len(found)} log lines carry an email address or a secret, e.g. {found[0][:200]!r}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = leaks(LOG_COLLECTOR.lines)
    if found:
        print(f"\nPRIVACY: {len(found)} log lines carry an email address or a secret, e.g.:")
        for line in found[:5]:
            print("   ", line[:200])
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- what ran: database back-ends and services, said at the end of every run ------------------------

_BACKENDS: dict[str, dict[str, int]] = {"sqlite": {"passed": 0, "skipped": 0}, "postgres": {"passed": 0, "skipped": 0}}
_SKIP_REASONS: dict[str, set[str]] = {"sqlite": set(), "postgres": set()}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for backend in _BACKENDS:
        if f"[{backend}" in report.nodeid or f"-{backend}]" in report.nodeid:
            if report.skipped:
                _BACKENDS[backend]["skipped"] += 1
                if isinstance(report.longrepr, tuple):
                    _SKIP_REASONS[backend].add(str(report.longrepr[2]).removeprefix("Skipped: "))
            elif report.when == "call" and report.passed:
                _BACKENDS[backend]["passed"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.services import DEFAULT_POSTGRES, DEFAULT_REDIS, _answers, describe_redis

    write = terminalreporter.write_line
    write("")
    write("back-ends and services this run used:")
    for backend, counts in _BACKENDS.items():
        ran = f"{counts['passed']} tests passed"
        reasons = "; ".join(sorted(_SKIP_REASONS[backend]))
        skipped = f"; {counts['skipped']} skipped ({reasons})" if counts["skipped"] else ""
        where = " at " + DEFAULT_POSTGRES.split("@")[-1] if backend == "postgres" else ""
        write(f"  {backend}{where}: {ran}{skipped}")
    used = describe_redis() or (
        "the local server" if _answers(DEFAULT_REDIS) else "throwaway redis-servers started by the test processes"
    )
    write(f"  redis: {used} (configured {DEFAULT_REDIS})")
