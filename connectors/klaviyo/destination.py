"""Klaviyo lists (API revision 2026-07-15): the audience is a list, its members profiles consented at Klaviyo.

Adds first import the people as profiles (a bulk import job: an upsert of the address and names that
never touches consent, and never with a list attached, since a job's list takes in every row whatever
its consent), then read each profile's email-marketing consent, and add to the list only those
SUBSCRIBED at Klaviyo as well; everyone else is a rejection carrying Klaviyo's state. Removes take
profiles off the list and leave them, and their consent, alone. The subscribe and unsubscribe jobs are
never called: the unsubscribe job unsubscribes globally everyone not on the given list.
CONTRACT.md §3-§5, api-contracts.md §4.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import Field

from connectors.kernel.destination import (
    BatchResult,
    Destination,
    DestinationConfig,
    MappingOptions,
    Rejection,
    chunks,
)
from connectors.kernel.errors import ConfigError, PermanentError
from connectors.kernel.identifiers import normalize_email
from connectors.kernel.paginate import NextLinkPaginator, pages
from connectors.kernel.records import Consent, Member
from connectors.kernel.runtime import Runtime
from connectors.klaviyo.client import KlaviyoClient
from connectors.klaviyo.imports import ImportJobs

#: profile ids per list add or remove call (the operations' descriptions in stable.json)
MAX_LIST_MEMBERS = 1000
#: emails per profile look-up: the page-size cap of GET /api/profiles, so one look-up is one page
LOOKUP_EMAILS = 100
PAGE_SIZE = 100
SUBSCRIBED = "SUBSCRIBED"
#: the sparse fieldset of a consent look-up: the address, the consent and the global suppressions
CONSENT_FIELDS = "email,subscriptions.email.marketing.consent,subscriptions.email.marketing.suppression"


class KlaviyoConfig(DestinationConfig):
    type: Literal["klaviyo"] = "klaviyo"
    base_url: str = "https://a.klaviyo.com"
    #: multiplies Klaviyo's documented per-endpoint limits for our buckets: below 1 leaves room for
    #: other apps using the same private key (they share the account's quota)
    rate_scale: float = Field(default=1.0, gt=0)
    #: how long one batch waits for its import jobs before the run fails (and the next one re-sends)
    import_wait_seconds: float = Field(default=600.0, gt=0)


class KlaviyoOptions(MappingOptions):
    #: import our names onto the profiles (creating the missing ones, never subscribed); false: only
    #: look profiles up, so someone Klaviyo does not know yet is rejected instead of created
    update_profiles: bool = True


@dataclass(frozen=True)
class KlaviyoProfile:
    id: str
    #: email-marketing consent as Klaviyo says it ("" when it was not asked for)
    consent: str = ""
    #: global suppressions (HARD_BOUNCE, SPAM_COMPLAINT, ...): Klaviyo will not email the profile
    suppressed: tuple[str, ...] = ()


def any_email(emails: Iterable[str]) -> str:
    """Klaviyo's filter ``any(email,["a@x.com",...])``, strings quoted and escaped."""
    quoted = ('"' + e.replace("\\", "\\\\").replace('"', '\\"') + '"' for e in emails)
    return f"any(email,[{','.join(quoted)}])"


def profiles_path(emails: Sequence[str], *, consent: bool) -> str:
    """``GET /api/profiles`` for these addresses (one page: at most 100 of them, page size 100).

    The filter is written as Klaviyo's reference examples write it, parentheses, commas and brackets
    as they are (sub-delimiters a query may carry): each address then stands alone in a logged URL,
    so the scanners that mask addresses in log lines stay linear instead of backtracking over one
    3 kB run of percent-encoded characters.
    """
    params: dict[str, Any] = {"filter": any_email(emails), "page[size]": PAGE_SIZE, "fields[profile]": "email"}
    if consent:
        params.update({"additional-fields[profile]": "subscriptions", "fields[profile]": CONSENT_FIELDS})
    return "/api/profiles?" + urlencode(params, quote_via=quote, safe="(),[]")


def next_path(body: dict[str, Any]) -> str | None:
    """``links.next`` followed verbatim, but only its path and query: the key is never sent to a host
    an answer names."""
    link = (body.get("links") or {}).get("next")
    if not isinstance(link, str) or not link:
        return None
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def profile_of(resource: Any) -> tuple[str, KlaviyoProfile] | None:
    """``(normalized email, profile)`` of a profile resource, or None without an id or an address."""
    if not isinstance(resource, dict) or not resource.get("id"):
        return None
    attributes = resource.get("attributes") or {}
    email = normalize_email(str(attributes.get("email") or ""))
    if email is None:
        return None
    marketing = ((attributes.get("subscriptions") or {}).get("email") or {}).get("marketing") or {}
    suppressed = tuple(str(s.get("reason") or "") for s in marketing.get("suppression") or [] if isinstance(s, dict))
    return email, KlaviyoProfile(str(resource["id"]), str(marketing.get("consent") or "").upper(), suppressed)


def refusal(email: str, profile: KlaviyoProfile | None, *, created: bool) -> Rejection | None:
    """Why Klaviyo's side keeps ``email`` off the list (our consent rule, CONTRACT.md §3.2), or None."""
    if profile is None:
        reason = "no Klaviyo profile has this address" + ("" if created else " (update_profiles is off)")
        return Rejection(email, reason, "klaviyo_no_profile")
    if profile.consent != SUBSCRIBED:
        state = profile.consent or "unknown"
        reason = f"email marketing consent is {state} in Klaviyo; not added to the list without an opt-in there"
        return Rejection(email, reason, "klaviyo_" + "".join(c if c.isalnum() else "_" for c in state.lower()))
    if profile.suppressed:
        reasons = ", ".join(sorted(set(profile.suppressed)))
        return Rejection(email, f"suppressed in Klaviyo ({reasons}): it would never be emailed", "klaviyo_suppressed")
    return None


class KlaviyoDestination(Destination):
    kind = "klaviyo"
    audience_kind = "email"
    #: what the engine hands us; imports, look-ups and list calls are chunked inside
    batch_size = 10_000
    readable = True
    Config = KlaviyoConfig
    Options = KlaviyoOptions

    def __init__(self, name: str, config: DestinationConfig, runtime: Runtime) -> None:
        super().__init__(name, config, runtime)
        assert isinstance(config, KlaviyoConfig)
        self.kv_config = config
        self._lock = threading.Lock()
        #: email -> profile id, from every look-up this process made (consent is always read afresh)
        self._ids: dict[str, str] = {}
        self._lists_seen: set[str] = set()

    def build_client(self) -> KlaviyoClient:
        key = self.credential()
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
        return KlaviyoClient(
            self.kv_config.base_url,
            key,
            limiter=lambda op, rate, capacity: self.runtime.rate_limiter(f"klaviyo:{fingerprint}:{op}", rate, capacity),
            sleep=self.runtime.sleep,
            clock=self.runtime.clock,
            rate_scale=self.kv_config.rate_scale,
            retry=self.runtime.retry_policy(),
        )

    @property
    def api(self) -> KlaviyoClient:
        client = self.client
        assert isinstance(client, KlaviyoClient)
        return client

    def identity(self, member: Member, options: MappingOptions) -> str:
        raw = member.email or ""
        return normalize_email(raw) or raw.strip().lower()

    # -- reading Klaviyo ------------------------------------------------------------------------
    def _check_list(self, list_id: str) -> None:
        """A wrong list id is a config error before anything is imported (once per list and process)."""
        if list_id in self._lists_seen:
            return
        self.api.send_json("GET", f"/api/lists/{quote(list_id, safe='')}", params={"fields[list]": "name"})
        self._lists_seen.add(list_id)

    def lookup(self, emails: Sequence[str], *, consent: bool) -> dict[str, KlaviyoProfile]:
        """The profiles with these (normalized) addresses; with ``consent``, their marketing consent too."""
        wanted = set(emails)
        found: dict[str, KlaviyoProfile] = {}
        for chunk in chunks(list(dict.fromkeys(emails)), LOOKUP_EMAILS):
            path: str | None = profiles_path(chunk, consent=consent)
            while path is not None:
                body = self.api.send_json("GET", path)
                for resource in body.get("data") or []:
                    pair = profile_of(resource)
                    if pair is not None and pair[0] in wanted:
                        found[pair[0]] = pair[1]
                path = next_path(body)
        with self._lock:
            self._ids.update({email: profile.id for email, profile in found.items()})
        self.counters["profiles_looked_up"] += len(wanted)
        return found

    def _known_ids(self, emails: Sequence[str]) -> dict[str, str]:
        """Profile ids, from this process's cache where it has them, else looked up."""
        with self._lock:
            known = {e: self._ids[e] for e in emails if e in self._ids}
        missing = [e for e in emails if e not in known]
        if missing:
            known.update({e: p.id for e, p in self.lookup(missing, consent=False).items()})
        return known

    def members(self, audience: str, options: MappingOptions) -> set[str]:
        """The list's members, read back (``reconcile``): their normalized addresses."""
        self._check_list(audience)
        path = f"/api/lists/{quote(audience, safe='')}/profiles"
        params = {"fields[profile]": "email", "page[size]": PAGE_SIZE}
        held: set[str] = set()
        for body, _ in pages(self.api, path, NextLinkPaginator(), params):
            for resource in body.get("data") or []:
                raw = str((resource.get("attributes") or {}).get("email") or "")
                if raw:
                    held.add(normalize_email(raw) or raw.strip().lower())
        return held

    # -- list membership ---------------------------------------------------------------------------
    def _membership(self, method: str, list_id: str, ids: dict[str, str]) -> set[str]:
        """Add (POST) or remove (DELETE) these profiles, at most 1,000 a call; the addresses whose
        profile no longer exists (merged or deleted since the look-up) come back."""
        path = f"/api/lists/{quote(list_id, safe='')}/relationships/profiles"
        vanished: set[str] = set()
        for chunk in chunks(list(ids), MAX_LIST_MEMBERS):
            document = {"data": [{"type": "profile", "id": ids[e]} for e in chunk]}
            try:
                self.api.send_document(method, path, document)
                continue
            except PermanentError as exc:
                if isinstance(exc, ConfigError) or exc.status != 404:
                    raise
            # Klaviyo refused the whole call for an id it does not know: look the chunk up again, once
            self.counters["stale_profile_ids"] += 1
            with self._lock:
                for email in chunk:
                    self._ids.pop(email, None)
            fresh = {e: p.id for e, p in self.lookup(chunk, consent=False).items()}
            vanished |= set(chunk) - set(fresh)
            if fresh:
                self.api.send_document(method, path, {"data": [{"type": "profile", "id": i} for i in fresh.values()]})
        return vanished

    # -- I/O -------------------------------------------------------------------------------------------
    def _eligible(self, members: Sequence[Member], options: MappingOptions, result: BatchResult) -> dict[str, Member]:
        """Normalized address -> member for those we may send (the engine filtered already; this
        keeps a direct caller from subscribing anyone by mistake)."""
        wanted: dict[str, Member] = {}
        for member in members:
            email = normalize_email(member.email)
            if email is None:
                result.rejected.append(Rejection(self.identity(member, options), "invalid email", "no_email"))
            elif member.email_consent != Consent.SUBSCRIBED:
                result.rejected.append(Rejection(email, "no marketing consent", "no_consent"))
            else:
                wanted.setdefault(email, member)
        return wanted

    def add(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        opts = self.opts(options, KlaviyoOptions)
        result = BatchResult()
        wanted = self._eligible(members, options, result)
        self._check_list(audience)
        if opts.update_profiles and wanted:
            jobs = ImportJobs(self.api, self.runtime.sleep, self.kv_config.import_wait_seconds, self.counters)
            for rejection in jobs.run(list(wanted.items())).values():
                result.rejected.append(rejection)
                del wanted[rejection.identity]
        profiles = self.lookup(list(wanted), consent=True)
        ids: dict[str, str] = {}
        for email in wanted:
            refused = refusal(email, profiles.get(email), created=opts.update_profiles)
            if refused is None:
                ids[email] = profiles[email].id
            else:
                result.rejected.append(refused)
                self.counters[refused.code] += 1
        vanished = self._membership("POST", audience, ids)
        for email in ids:
            if email in vanished:
                result.rejected.append(Rejection(email, "the Klaviyo profile no longer exists", "klaviyo_no_profile"))
            else:
                result.accepted.append(email)
        return result

    def remove(self, audience: str, identities: Sequence[str], options: MappingOptions) -> BatchResult:
        """Take profiles off the list; someone Klaviyo does not know is not on it (accepted)."""
        self.opts(options, KlaviyoOptions)
        unique = list(dict.fromkeys(identities))
        self._check_list(audience)
        ids = self._known_ids([i for i in unique if normalize_email(i) == i])
        self._membership("DELETE", audience, ids)
        return BatchResult(accepted=unique)

    def validate(self, audience: str, members: Sequence[Member], options: MappingOptions) -> BatchResult:
        """A dry run: who the list would take, by the profiles' consent at Klaviyo now; nothing changes."""
        opts = self.opts(options, KlaviyoOptions)
        result = BatchResult()
        wanted = self._eligible(members, options, result)
        self._check_list(audience)
        profiles = self.lookup(list(wanted), consent=True)
        for email in wanted:
            refused = refusal(email, profiles.get(email), created=opts.update_profiles)
            if refused is None:
                result.accepted.append(email)
            elif refused.code == "klaviyo_no_profile" and opts.update_profiles:
                reason = "no Klaviyo profile yet: the import would create it never subscribed, so it is not added"
                result.rejected.append(Rejection(email, reason, "klaviyo_never_subscribed"))
            else:
                result.rejected.append(refused)
        return result
