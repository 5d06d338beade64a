"""Process settings, from ``AUDIENCE_SYNC_*`` environment variables and ``.env``.

What to sync (sources, destinations, segments, mappings) lives in the TOML config file named by
``AUDIENCE_SYNC_CONFIG``; this class holds what differs per deployment: URLs, secrets, schedules.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIENCE_SYNC_", env_file=".env", extra="ignore")

    #: SQLAlchemy URL; SQLite file by default, ``postgresql+psycopg://…`` in deployment
    database_url: str = "sqlite:///var/audience-sync.sqlite3"
    #: Celery broker and the shared locks / rate-limit buckets
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: the TOML file with sources, destinations, segments and mappings (built-in sandbox if unset)
    config: Path | None = None

    #: minutes between scheduled cycles (celery beat)
    cycle_minutes: float = 15.0
    #: re-read this many minutes before the watermark: late writes and equal timestamps
    overlap_minutes: float = 10.0
    #: broker visibility timeout: above the longest sync; also the longest allowed retry countdown
    visibility_timeout_seconds: int = 3600
    #: lock per mapping; renewed while a sync runs, expires if its worker dies
    lock_ttl_seconds: int = 120
    #: deliveries of one task id before it is given up as poison (e.g. killed by OOM every time)
    max_deliveries: int = 5
    key_prefix: str = "audience-sync"
    #: Celery queue name (tests use their own so they never touch a deployment's queue)
    queue: str = "audience-sync"

    #: customers in the built-in sandbox store (``sandbox`` URLs in the config)
    sandbox_customers: int = 5000
    #: region assumed for phone numbers written without a country code
    default_phone_region: str = "US"
    retry_attempts: int = 6
    retry_max_seconds: float = 300.0

    # -- secrets (never logged) --------------------------------------------------------
    shopify_access_token: SecretStr | None = None
    mailchimp_api_key: SecretStr | None = None
    meta_access_token: SecretStr | None = None
    #: the Shopify app's client secret: verifies mandatory compliance webhooks (customers/redact)
    shopify_webhook_secret: SecretStr | None = None
    api_token: SecretStr | None = Field(default=None, description="bearer token for the control API")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
