"""Secrets by the environment variable each vendor declares: never in the config file, never logged.

Looked up in the process's own overrides (the sandbox, tests), then the environment, then the
``.env`` file beside the process (as pydantic-settings reads it for the declared settings).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from pydantic import SecretStr

from worker.settings import Settings


@cache
def _dotenv(path: str) -> dict[str, str | None]:
    from dotenv import dotenv_values

    return dict(dotenv_values(path)) if Path(path).is_file() else {}


def read_secret(settings: Settings, variable: str) -> SecretStr | None:
    if variable in settings.secrets:
        return settings.secrets[variable]
    value = os.environ.get(variable)
    if value is None and settings.env_file:
        value = _dotenv(str(settings.env_file)).get(variable)
    return SecretStr(value) if value else None
