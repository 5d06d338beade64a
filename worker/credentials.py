"""Rotating source tokens in SQL (``source_credentials``), encrypted with ``AUDIENCE_SYNC_SECRET_KEY``.

Tokens are Fernet-encrypted (AES-128-CBC with HMAC-SHA256): a copy of the database or a backup
holds no usable token. The key may list several comma-separated keys: the first encrypts, any
decrypts (key rotation). A rotation runs in one transaction that first takes the row's write
lock with a no-op update (the row lock on PostgreSQL, the database's write lock on SQLite), so a
second worker waits, then sees the new version and uses the new pair instead of spending the old
refresh token again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from connectors.kernel.credentials import StoredPair, TokenPair
from connectors.kernel.errors import ConfigError
from worker.store import Store, as_utc, schema, utcnow

KEY_VARIABLE = "AUDIENCE_SYNC_SECRET_KEY"
MAKE_KEY = "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
_TABLE = schema.source_credentials


def cipher(key: SecretStr | None) -> MultiFernet:
    """The Fernet keys of the setting, or a ConfigError saying how to make one."""
    if key is None or not key.get_secret_value().strip():
        raise ConfigError(
            f"{KEY_VARIABLE} is not set: expiring source tokens are stored encrypted with it. "
            f"Make one with `{MAKE_KEY}`, put it in .env (the same value for every worker) and run again"
        )
    try:
        return MultiFernet([Fernet(k.strip()) for k in key.get_secret_value().split(",") if k.strip()])
    except ValueError:
        raise ConfigError(
            f"{KEY_VARIABLE} is not a Fernet key (32 url-safe base64-encoded bytes); make one with `{MAKE_KEY}`"
        ) from None


class SqlCredentials:
    """:class:`connectors.kernel.credentials.CredentialStore` over the worker's store."""

    def __init__(self, store: Store, key: SecretStr | None) -> None:
        self.engine = store.engine
        self.key = key
        self._cipher: MultiFernet | None = None

    @property
    def fernet(self) -> MultiFernet:
        if self._cipher is None:
            self._cipher = cipher(self.key)
        return self._cipher

    def _seal(self, value: str) -> str:
        return self.fernet.encrypt(value.encode()).decode("ascii")

    def _open(self, value: str) -> str:
        try:
            return self.fernet.decrypt(value.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise ConfigError(
                f"the stored source tokens cannot be decrypted with {KEY_VARIABLE} (was it changed? list the old "
                "key after the new one, comma-separated), or re-authorise the app and put the new refresh token "
                "in AUDIENCE_SYNC_SHOPIFY_REFRESH_TOKEN"
            ) from None

    def _pair(self, row: Row[tuple[object, ...]]) -> StoredPair:
        sealed_access = row.access_token
        return StoredPair(
            access_token=self._open(sealed_access) if sealed_access else None,
            refresh_token=self._open(row.refresh_token) if row.refresh_token else "",
            expires_at=as_utc(row.expires_at),
            refresh_expires_at=as_utc(row.refresh_expires_at),
            version=as_utc(row.updated_at),
            problem=row.problem,
        )

    def _values(self, pair: TokenPair, previous: datetime | None) -> dict[str, object]:
        now = utcnow()
        if previous is not None and now <= previous:  # the version must change at every write
            now = previous + timedelta(microseconds=1)
        return {
            # the column is NOT NULL: an unknown access token is stored as an empty string
            "access_token": self._seal(pair.access_token) if pair.access_token else "",
            "refresh_token": self._seal(pair.refresh_token),
            "expires_at": pair.expires_at,
            "refresh_expires_at": pair.refresh_expires_at,
            "updated_at": now,
            "problem": None,
        }

    def _row(self, conn: Connection, source: str) -> Row[tuple[object, ...]] | None:
        return conn.execute(select(_TABLE).where(_TABLE.c.source == source)).first()

    def load(self, source: str) -> StoredPair | None:
        with self.engine.connect() as conn:
            row = self._row(conn, source)
        return None if row is None else self._pair(row)

    def put(self, source: str, pair: TokenPair, expected: datetime | None) -> bool:
        with self.engine.begin() as conn:
            if expected is None:
                if self._row(conn, source) is not None:
                    return False
                try:
                    with conn.begin_nested():
                        conn.execute(_TABLE.insert().values(source=source, **self._values(pair, None)))
                except IntegrityError:  # another process stored its pair first
                    return False
                return True
            done = conn.execute(
                update(_TABLE)
                .where(_TABLE.c.source == source, _TABLE.c.updated_at == expected)
                .values(**self._values(pair, expected))
            )
            return done.rowcount == 1

    def rotate(self, source: str, seen: datetime | None, exchange: Callable[[StoredPair], TokenPair]) -> StoredPair:
        with self.engine.begin() as conn:
            # the lock, before reading: a no-op write held until this transaction ends
            conn.execute(update(_TABLE).where(_TABLE.c.source == source).values(problem=_TABLE.c.problem))
            row = self._row(conn, source)
            if row is None:
                raise ConfigError("the stored source tokens were removed while refreshing; run again")
            stored = self._pair(row)
            if stored.version != seen:  # another worker rotated first: use its pair
                return stored
            values = self._values(exchange(stored), stored.version)
            conn.execute(update(_TABLE).where(_TABLE.c.source == source).values(**values))
        rotated = self.load(source)
        assert rotated is not None
        return rotated

    def note_problem(self, source: str, problem: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(_TABLE).where(_TABLE.c.source == source).values(problem=problem[:2000]))


def credential_problems(store: Store) -> dict[str, str]:
    """Each source's last refresh failure, for the status command (readable without the key)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(_TABLE.c.source, _TABLE.c.problem).where(_TABLE.c.problem.is_not(None)))
        return {str(r.source): str(r.problem) for r in rows}
