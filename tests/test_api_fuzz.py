"""The control API fuzzed from its own OpenAPI description: no 5xx, and every status it answers is
documented. schemathesis generates the requests, signed in as the admin."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import make_settings
from tests.helpers import seed_segment, write_config
from worker.api import create_app
from worker.store import open_store

TOKEN = "fuzz-admin-token-0123456789abcdefghijklmn"
_FOLDER = Path(tempfile.mkdtemp(prefix="as-fuzz-"))


def _app():  # type: ignore[no-untyped-def]
    config = write_config(
        _FOLDER / "c.toml",
        f'[destinations.out]\ntype = "file"\ndirectory = "{_FOLDER / "aud"}"\n'
        '[[mappings]]\nname = "buyers-out"\nsegment = "buyers"\ndestination = "out"\naudience = "buyers"\n',
    )
    database = f"sqlite:///{_FOLDER / 's.sqlite3'}"
    store = open_store(database)
    seed_segment(store, "buyers", 5)
    store.dispose()
    app_settings = make_settings(
        database_url=database, config=config, api_token=TOKEN, api_docs=True, shopify_webhook_secret="fuzz-secret"
    )
    return create_app(app_settings, enqueue=lambda name, full: "fuzz-task")


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"Authorization": f"Bearer {TOKEN}"})


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_only_documented_statuses(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance],
    )
