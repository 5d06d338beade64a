"""Rotating OAuth credentials: what a connector asks for its current token, and where pairs are kept.

A :class:`CredentialStore` (the worker's is ``worker/credentials.py``: encrypted rows in SQL) keeps
one token pair per source and rotates it under a lock, so two workers never spend the same
single-use refresh token: the second finds the pair already replaced and uses the new one.
:class:`RefreshingAuth` puts the current token on every request and, on a 401, asks once for a
fresh one and sends the request again.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import httpx


@dataclass(frozen=True)
class TokenPair:
    """An access token (None: not known yet) and the refresh token that renews it."""

    access_token: str | None
    refresh_token: str
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None

    def __repr__(self) -> str:  # never a token in a traceback or a log line
        return f"TokenPair(expires_at={self.expires_at!r}, refresh_expires_at={self.refresh_expires_at!r})"


@dataclass(frozen=True, repr=False)
class StoredPair(TokenPair):
    """A pair as stored: ``version`` (its ``updated_at``) changes at every rotation; ``problem`` is the
    last refresh failure in words."""

    version: datetime | None = None
    problem: str | None = None


class CredentialStore(Protocol):
    def load(self, source: str) -> StoredPair | None:
        """The stored pair of ``source``, decrypted."""

    def put(self, source: str, pair: TokenPair, expected: datetime | None) -> bool:
        """Store ``pair`` (from the environment) if the row is still at version ``expected`` (None: no
        row yet); False when another process got there first."""

    def rotate(self, source: str, seen: datetime | None, exchange: Callable[[StoredPair], TokenPair]) -> StoredPair:
        """Under the row's lock: when the stored version is still ``seen``, spend its refresh token
        with ``exchange`` and store the new pair in the same transaction; else return what another
        process stored meanwhile without calling ``exchange``."""

    def note_problem(self, source: str, problem: str) -> None:
        """Record a refresh failure (the status command shows it)."""


class TokenSource(Protocol):
    def current(self) -> str:
        """The token to send now (renewed first when it is about to expire)."""

    def refreshed(self, rejected: str) -> str:
        """A token other than ``rejected``, which the API refused."""


class RefreshingAuth(httpx.Auth):
    """The current token in a header; a 401 gets one refresh and one more try (then the 401 stands)."""

    def __init__(self, tokens: TokenSource, header: str = "Authorization", template: str = "Bearer {}") -> None:
        self.tokens, self.header, self.template = tokens, header, template
        self.refreshed_on_401 = 0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.current()
        request.headers[self.header] = self.template.format(token)
        response = yield request
        if response.status_code == 401:
            self.refreshed_on_401 += 1
            request.headers[self.header] = self.template.format(self.tokens.refreshed(token))
            yield request
