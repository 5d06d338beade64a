"""The documented deployment passes every secret the program reads, so no feature is dead on arrival."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_docker_compose_passes_every_secret_setting_to_the_app_services() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    secrets = {
        f"AUDIENCE_SYNC_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if field.annotation in (SecretStr, SecretStr | None)
    }
    from connectors.kernel.vendor import secret_variables

    secrets |= set(secret_variables())  # every vendor's declared secret too
    assert {"AUDIENCE_SYNC_SHOPIFY_WEBHOOK_SECRET", "AUDIENCE_SYNC_MAILCHIMP_API_KEY"} <= secrets
    for service in ("worker", "beat", "api"):
        environment = compose["services"][service]["environment"]
        missing = secrets - set(environment)
        assert not missing, f"{service} does not get {sorted(missing)}"
