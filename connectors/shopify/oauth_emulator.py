"""Shopify's OAuth token endpoint for expiring offline tokens, installed on a :class:`ShopifyEmulator`.

``POST /admin/oauth/access_token`` (JSON or form) with ``client_id``, ``client_secret``,
``grant_type=refresh_token`` and ``refresh_token`` answers a new pair with ``expires_in`` and
``refresh_token_expires_in``; the refresh token rotates (a used one is refused, as is an expired
one) and only the newest access token works: a new grant revokes the ones before it, as Shopify
keeps one expiring token per app and shop. The GraphQL endpoint answers 401 to an expired or revoked
access token. Time is the injectable ``now``.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from connectors.kernel.emulator import Request, Response
from connectors.shopify.emulator import ShopifyEmulator
from connectors.shopify.tokens import TOKEN_PATH

#: prefixes of every token this emulator issues (the tests' log scan looks for them)
ACCESS_PREFIX, REFRESH_PREFIX = "shpat_rotating_", "shprt_rotating_"
INVALID_GRANT = "invalid_grant"


def _error(status: int, code: str, description: str) -> Response:
    return Response(status, {"error": code, "error_description": description})


class OAuthTokens:
    """Issues, rotates and checks expiring offline tokens for one shop's emulator."""

    def __init__(
        self,
        emulator: ShopifyEmulator,
        *,
        client_id: str,
        client_secret: str,
        now: Callable[[], datetime],
        lifetime: timedelta = timedelta(hours=1),
        refresh_lifetime: timedelta = timedelta(days=90),
    ) -> None:
        self.emulator, self.client_id, self.client_secret, self.now = emulator, client_id, client_secret, now
        self.lifetime, self.refresh_lifetime = lifetime, refresh_lifetime
        self._serial = itertools.count(1)
        #: the live access token and refresh token with their expiry (one pair per app and shop)
        self.access: tuple[str, datetime] | None = None
        self.refresh: tuple[str, datetime] | None = None
        self.spent: set[str] = set()
        self.exchanges = 0
        #: refused refresh attempts: (grant error, whether the token was one already spent)
        self.refused: list[tuple[str, bool]] = []
        emulator.token_check = self.check
        emulator.route("POST", TOKEN_PATH, self.token)

    def _mint(self, prefix: str) -> str:
        return f"{prefix}{next(self._serial):04d}_{secrets.token_hex(12)}"

    def grant(self) -> dict[str, Any]:
        """A new pair, as the app's OAuth grant (an install) gives it; earlier ones stop working."""
        with self.emulator.lock:
            if self.refresh is not None:
                self.spent.add(self.refresh[0])
            now = self.now()
            self.access = (self._mint(ACCESS_PREFIX), now + self.lifetime)
            self.refresh = (self._mint(REFRESH_PREFIX), now + self.refresh_lifetime)
            return {
                "access_token": self.access[0],
                "expires_in": int(self.lifetime.total_seconds()),
                "refresh_token": self.refresh[0],
                "refresh_token_expires_in": int(self.refresh_lifetime.total_seconds()),
                "scope": "read_orders,read_customers",
            }

    def expire_access(self) -> None:
        """The access token stops working now (its holder still believes it valid)."""
        with self.emulator.lock:
            if self.access is not None:
                self.access = (self.access[0], self.now())

    def revoke(self) -> None:
        """The app is uninstalled or its grant revoked: no token works any more."""
        with self.emulator.lock:
            if self.refresh is not None:
                self.spent.add(self.refresh[0])
            self.access = self.refresh = None

    def check(self, sent: str | None) -> bool:
        with self.emulator.lock:
            return self.access is not None and sent == self.access[0] and self.now() < self.access[1]

    def token(self, request: Request) -> Response:
        fields = self._fields(request)
        if fields.get("client_id") != self.client_id or fields.get("client_secret") != self.client_secret:
            return _error(401, "invalid_client", "Client authentication failed: unknown client or wrong secret.")
        if fields.get("grant_type") != "refresh_token":
            return _error(400, "unsupported_grant_type", "The authorization grant type is not supported.")
        sent = fields.get("refresh_token")
        with self.emulator.lock:
            live = self.refresh is not None and sent == self.refresh[0] and self.now() < self.refresh[1]
            if not live:
                self.refused.append((INVALID_GRANT, sent in self.spent))
                return _error(
                    400,
                    INVALID_GRANT,
                    "The provided refresh token is invalid, expired, revoked, or was already used.",
                )
            self.exchanges += 1
            return Response(200, self.grant())

    @staticmethod
    def _fields(request: Request) -> dict[str, str]:
        if "json" in (request.header("Content-Type") or ""):
            try:
                body = request.json()
            except ValueError:
                return {}
            return {str(k): str(v) for k, v in body.items()} if isinstance(body, dict) else {}
        return {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
