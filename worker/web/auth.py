"""Who is asking: a bearer token (scripts) or a browser session (people), and what their role allows.

Each role has its own token (``AUDIENCE_SYNC_API_TOKEN`` is the admin's, ``…_OPERATOR_TOKEN`` and
``…_VIEWER_TOKEN`` the others'), compared in constant time. A browser exchanges a token for a session:
the cookie holds a random id (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS) and the store
holds only its SHA-256, the role, an expiry and the session's CSRF token, which every form must send.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum

from fastapi import HTTPException, Request
from sqlalchemy import delete, select

from worker.settings import Settings
from worker.store import Store, as_utc, schema, utcnow

COOKIE = "audience_sync_session"
MIN_TOKEN_LENGTH = 32
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"  # noqa: S105 - a command


class Role(IntEnum):
    viewer = 1
    operator = 2
    admin = 3


class TokenError(SystemExit):
    """A role's token is missing or too short to be safe; the message says how to make one."""


@dataclass(frozen=True)
class Principal:
    role: Role
    #: the session's CSRF token (None for bearer-token requests, which carry no cookie to forge)
    csrf: str | None = None

    def may(self, role: Role) -> bool:
        return self.role >= role


def role_tokens(settings: Settings) -> dict[Role, str]:
    """The configured tokens by role; the admin's is required, every one must be long enough."""
    configured = {
        Role.admin: settings.api_token,
        Role.operator: settings.operator_token,
        Role.viewer: settings.viewer_token,
    }
    tokens: dict[Role, str] = {}
    for role, secret in configured.items():
        value = secret.get_secret_value().strip() if secret is not None else ""
        if role is not Role.admin and not value:
            continue
        if len(value) < MIN_TOKEN_LENGTH:
            variable = "AUDIENCE_SYNC_API_TOKEN" if role is Role.admin else f"AUDIENCE_SYNC_{role.name.upper()}_TOKEN"
            what = "is not set" if not value else f"is {len(value)} characters long"
            raise TokenError(
                f"{variable} {what}; the control API needs tokens of at least {MIN_TOKEN_LENGTH} characters. "
                f"Make one with: {MAKE_TOKEN}"
            )
        tokens[role] = value
    return tokens


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Sessions:
    def __init__(self, store: Store, settings: Settings, tokens: dict[Role, str]) -> None:
        self.store, self.settings, self.tokens = store, settings, tokens

    def role_of(self, presented: str) -> Role | None:
        presented = presented.strip()
        if not presented:
            return None
        for role, token in self.tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                return role
        return None

    def open(self, role: Role) -> tuple[str, str]:
        """A new session: (cookie value, CSRF token)."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = utcnow()
        with self.store.engine.begin() as conn:
            conn.execute(delete(schema.web_sessions).where(schema.web_sessions.c.expires_at < now))
            conn.execute(
                schema.web_sessions.insert().values(
                    id_sha256=_digest(session_id),
                    role=role.name,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + timedelta(hours=self.settings.session_hours),
                )
            )
        return session_id, csrf

    def close(self, session_id: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(delete(schema.web_sessions).where(schema.web_sessions.c.id_sha256 == _digest(session_id)))

    def find(self, session_id: str) -> Principal | None:
        w = schema.web_sessions.c
        with self.store.engine.connect() as conn:
            row = conn.execute(select(w.role, w.csrf, w.expires_at).where(w.id_sha256 == _digest(session_id))).first()
        if row is None or (as_utc(row.expires_at) or utcnow()) < utcnow():
            return None
        return Principal(Role[row.role], row.csrf)

    def principal(self, request: Request) -> Principal | None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            role = self.role_of(presented)
            return Principal(role) if role is not None else None
        cookie = request.cookies.get(COOKIE)
        return self.find(cookie) if cookie else None


def secure_request(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"


def check_csrf(principal: Principal, submitted: str | None) -> None:
    """A form posted from a browser session must carry the session's token (bearer requests need none)."""
    if principal.csrf is not None and not (submitted and hmac.compare_digest(submitted, principal.csrf)):
        raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")
