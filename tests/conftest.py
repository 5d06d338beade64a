from __future__ import annotations

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
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


def make_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
