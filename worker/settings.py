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
    #: broker visibility timeout: a task left unacknowledged this long (its worker died) is delivered
    #: again. Every task stops at ``task_budget_seconds`` and continues in a new one, so it can be short.
    visibility_timeout_seconds: int = 600
    #: a task starts no new batch or page after this long; a continuation goes on from the checkpoint
    task_budget_seconds: float = 120.0
    #: lock per mapping (and per cycle); a heartbeat renews it while its holder lives
    lock_ttl_seconds: int = 30
    #: how long a task waits for a lock held by a live worker before it records a ``deferred`` run
    lock_wait_seconds: int = 900
    #: deliveries of one task id before it is given up as poison (e.g. killed by OOM every time)
    max_deliveries: int = 5
    #: a sync with more adds and removes than this is written as parts that several workers send at
    #: once (Celery workers; 0: never split); each part holds about ``sync_part_members``, in whole batches
    split_sync_over: int = Field(default=100_000, ge=0)
    sync_part_members: int = Field(default=25_000, ge=1)
    key_prefix: str = "audience-sync"
    #: Celery queue name (tests use their own so they never touch a deployment's queue)
    queue: str = "audience-sync"

    #: where downloaded bulk exports are kept until stored (default: beside a SQLite database, else var/bulk)
    bulk_dir: Path | None = None
    #: records per stored chunk of a bulk export (a killed worker resumes after the last one)
    bulk_chunk_rows: int = Field(default=5000, ge=1)
    #: longest wait between two polls of a running bulk export
    bulk_poll_max_seconds: float = 30.0
    #: customers in the built-in sandbox store (``sandbox`` URLs in the config)
    sandbox_customers: int = 5000
    #: where the sandbox keeps its shop's recipe and its destinations' audiences between commands
    sandbox_dir: Path | None = Path("var/sandbox")
    #: region assumed for phone numbers written without a country code
    default_phone_region: str = "US"
    retry_attempts: int = 6
    retry_max_seconds: float = 300.0

    #: serve the OpenAPI description and Swagger UI (behind the token, assets from the package)
    api_docs: bool = False

    # -- secrets (never logged) --------------------------------------------------------
    #: vendors' secrets by environment variable, set by the sandbox and tests; in deployment each is
    #: read from its own variable (``AUDIENCE_SYNC_MAILCHIMP_API_KEY`` …, see each vendor's declaration)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    #: the ``.env`` file the vendors' secrets are also read from (None: the environment only)
    env_file: Path | None = Path(".env")
    #: the Shopify app's client secret: verifies mandatory compliance webhooks (customers/redact)
    shopify_webhook_secret: SecretStr | None = None
    #: Fernet key(s) encrypting rotating source tokens at rest (comma-separated: the first encrypts)
    secret_key: SecretStr | None = None
    api_token: SecretStr | None = Field(default=None, description="bearer token for the control API")
    #: tokens of the web app's other roles (each at least 32 characters when set): an operator may dry-run,
    #: resync and replace; a viewer only reads. ``api_token`` is the admin's.
    operator_token: SecretStr | None = None
    viewer_token: SecretStr | None = None
    #: how long a browser session lasts after sign-in
    session_hours: float = 8.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
