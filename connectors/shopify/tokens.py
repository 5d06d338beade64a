"""Shopify expiring offline access tokens: refreshed before they expire, rotated pairs stored durably.

An app with expiring offline tokens gets an access token that lasts ``expires_in`` seconds (an
hour) and a refresh token (90 days) that rotates at every use. ``POST {shop}/admin/oauth/access_token``
with ``client_id``, ``client_secret``, ``grant_type=refresh_token`` and ``refresh_token`` answers
``{access_token, expires_in, refresh_token, refresh_token_expires_in, scope}``. The first pair comes
from the environment and is stored on first use, then renewed at once (its expiry is unknown); from
then on the stored pair is the truth (the environment's refresh token was spent by that rotation). A
refused refresh is a :class:`ConfigError` recorded with the pair, and nothing is sent again until a
new refresh token is put in the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from connectors.kernel.credentials import CredentialStore, StoredPair, TokenPair
from connectors.kernel.error_table import ErrorTable, Found, Rule
from connectors.kernel.errors import ConfigError
from connectors.kernel.http import HttpConnector

log = logging.getLogger(__name__)

TOKEN_PATH = "/admin/oauth/access_token"  # noqa: S105 - a path, not a secret
#: a token this close to its expiry is renewed before it is sent
REFRESH_MARGIN = timedelta(minutes=5)
REFRESH_VARIABLE = "AUDIENCE_SYNC_SHOPIFY_REFRESH_TOKEN"
REAUTHORISE = (
    "re-authorise the app on the shop (reinstall it or run its OAuth grant again) and put the new "
    f"refresh token in {REFRESH_VARIABLE} (and the access token in AUDIENCE_SYNC_SHOPIFY_ACCESS_TOKEN, "
    "or leave it empty); the next pull stores and uses them"
)


def _oauth_error(response: httpx.Response, body: Any) -> Found:
    """OAuth's ``{"error": "invalid_grant", "error_description": …}``."""
    if response.status_code < 400:
        return Found(None, "")
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return Found(body["error"], str(body.get("error_description") or body["error"]))
    return Found(str(response.status_code), response.text[:300])


ERRORS = ErrorTable(
    "shopify token refresh",
    [
        Rule(
            ConfigError, code="invalid_client", hint="check [source] client_id and AUDIENCE_SYNC_SHOPIFY_CLIENT_SECRET"
        ),
        Rule(ConfigError, status=(400, 401, 403), hint=REAUTHORISE),
    ],
    extract=_oauth_error,
)


class TokenEndpoint(HttpConnector):
    """The shop's OAuth token endpoint (one attempt per exchange: the caller decides what follows)."""

    name = "shopify-oauth"
    errors = ERRORS
    timeout = 20.0

    def exchange(self, client_id: str, client_secret: str, refresh_token: str, now: datetime) -> TokenPair:
        body = self.send_json_once(
            "POST",
            TOKEN_PATH,
            json={
                "client_id": client_id,
                "client_secret": client_secret,
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            },
        )
        try:
            access, refresh = str(body["access_token"]), str(body["refresh_token"])
            expires_in = float(body["expires_in"])
            refresh_in = body.get("refresh_token_expires_in")
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"shopify token refresh: the answer lacks a new token pair: {REAUTHORISE}") from None
        return TokenPair(
            access,
            refresh,
            now + timedelta(seconds=expires_in),
            now + timedelta(seconds=float(refresh_in)) if refresh_in is not None else None,
        )


class ShopifyTokens:
    """The access token the Shopify client sends: from the store, renewed near expiry or on a 401."""

    source = "shopify"

    def __init__(
        self,
        shop_url: str,
        *,
        client_id: str | None,
        client_secret: str | None,
        seed: TokenPair,
        store: CredentialStore | None,
        now: Callable[[], datetime],
    ) -> None:
        self.shop_url, self.client_id, self.client_secret = shop_url, client_id, client_secret
        self.seed, self.store, self.now = seed, store, now
        self.endpoint: TokenEndpoint | None = None
        self.pair: StoredPair | None = None
        #: refresh-token exchanges this process made (another worker's rotation is not counted)
        self.refreshes = 0

    # -- what the client asks ----------------------------------------------------------------------
    def current(self) -> str:
        pair = self.pair or self._load()
        # a pair from the environment has no known expiry: renewed at once, so its expiry is known
        if pair.access_token is None or pair.expires_at is None or pair.expires_at - REFRESH_MARGIN <= self.now():
            pair = self._rotate(pair)
        assert pair.access_token is not None
        return pair.access_token

    def refreshed(self, rejected: str) -> str:
        pair = self._load()  # another worker may have rotated (and so revoked ours) already
        if pair.access_token is not None and pair.access_token != rejected:
            return pair.access_token
        pair = self._rotate(pair)
        assert pair.access_token is not None
        return pair.access_token

    # -- the store ---------------------------------------------------------------------------------
    def _store(self) -> CredentialStore:
        if self.store is None:
            raise ConfigError("shopify: expiring tokens need the durable store to keep the rotated pair")
        if not self.client_id or not self.client_secret:
            raise ConfigError(
                f"shopify: {REFRESH_VARIABLE} is set, so refreshing needs the app's client id ([source] client_id) "
                "and client secret (AUDIENCE_SYNC_SHOPIFY_CLIENT_SECRET)"
            )
        return self.store

    def _load(self) -> StoredPair:
        store = self._store()
        pair = store.load(self.source)
        # the environment's refresh token counts once: when it is one never stored before (the first
        # start, a re-authorisation) it replaces the stored pair; after that the stored pair rules
        seeded_key = f"{self.source}:seed"
        seeded = store.load(seeded_key)
        if pair is None or seeded is None or seeded.refresh_token != self.seed.refresh_token:
            if store.put(self.source, self.seed, None if pair is None else pair.version):
                log.info("shopify: stored the token pair from the environment")
            store.put(seeded_key, TokenPair(None, self.seed.refresh_token), None if seeded is None else seeded.version)
            pair = store.load(self.source)
        if pair is None:
            raise ConfigError("shopify: the stored token pair vanished while it was being read; run again")
        if pair.problem is not None:
            raise ConfigError(pair.problem)
        self.pair = pair
        return pair

    def _rotate(self, pair: StoredPair) -> StoredPair:
        store = self._store()
        try:
            rotated = store.rotate(self.source, pair.version, self._exchange)
        except ConfigError as exc:
            store.note_problem(self.source, exc.message)
            raise
        if rotated.problem is not None:  # another worker's refresh was refused meanwhile
            raise ConfigError(rotated.problem)
        self.pair = rotated
        return rotated

    def _exchange(self, pair: StoredPair) -> TokenPair:
        if self.endpoint is None:
            self.endpoint = TokenEndpoint(self.shop_url)
        assert self.client_id is not None and self.client_secret is not None
        new = self.endpoint.exchange(self.client_id, self.client_secret, pair.refresh_token, self.now())
        self.refreshes += 1
        log.info("shopify: access token refreshed; the new one expires at %s", new.expires_at)
        return new

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
