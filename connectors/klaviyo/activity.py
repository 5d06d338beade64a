"""Email engagement from Klaviyo: the last open or click per address, from the account's events.

Finds the "Opened Email" and "Clicked Email" metrics (``GET /api/metrics``), then reads each one's
events after the watermark (``GET /api/events``, ``greater-than(datetime,…)``, oldest first), with the
profile included for its address. Reuses the Klaviyo destination's client (same key, same shared
buckets). CONTRACT.md §7.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.kernel.identifiers import normalize_email
from connectors.kernel.paginate import NextLinkPaginator, pages
from connectors.klaviyo.destination import KlaviyoDestination

#: Klaviyo's built-in email metrics that count as engagement (bounces and receipts do not)
ENGAGEMENT_METRICS = ("Opened Email", "Clicked Email")
#: the events page size: the parameter allows 1,000, the operation's description says at most 200
EVENTS_PAGE = 200
FIRST_LOOKBACK = timedelta(days=365)


def _time(value: object) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def filter_time(value: datetime) -> str:
    """A datetime as Klaviyo's filters take it: unquoted ISO 8601, in UTC."""
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class KlaviyoActivity:
    def __init__(self, destination: KlaviyoDestination) -> None:
        self.destination = destination

    def metric_ids(self) -> list[str]:
        """Ids of the engagement metrics (a name may appear more than once: every one counts)."""
        return [
            str(metric["id"])
            for body, _ in pages(self.destination.api, "/api/metrics", NextLinkPaginator(), {"fields[metric]": "name"})
            for metric in body.get("data") or []
            if (metric.get("attributes") or {}).get("name") in ENGAGEMENT_METRICS and metric.get("id")
        ]

    def last_engaged(self, since: datetime | None, now: datetime) -> Iterator[dict[str, datetime]]:
        """Pages of {normalized email: latest open/click} for events after ``since``."""
        after = filter_time(since or now - FIRST_LOOKBACK)
        for metric_id in self.metric_ids():
            params = {
                "filter": f'equals(metric_id,"{metric_id}"),greater-than(datetime,{after})',
                "include": "profile",
                "fields[event]": "datetime",
                "fields[profile]": "email",
                "sort": "datetime",
                "page[size]": EVENTS_PAGE,
            }
            for body, _ in pages(self.destination.api, "/api/events", NextLinkPaginator(), params):
                latest = self._latest(body)
                if latest:
                    yield latest

    @staticmethod
    def _latest(body: dict[str, Any]) -> dict[str, datetime]:
        emails = {
            str(resource.get("id")): email
            for resource in body.get("included") or []
            if resource.get("type") == "profile"
            and (email := normalize_email(str((resource.get("attributes") or {}).get("email") or "")))
        }
        latest: dict[str, datetime] = {}
        for event in body.get("data") or []:
            profile = ((event.get("relationships") or {}).get("profile") or {}).get("data") or {}
            email = emails.get(str(profile.get("id")))
            at = _time((event.get("attributes") or {}).get("datetime"))
            if email is not None and at is not None and (email not in latest or at > latest[email]):
                latest[email] = at
        return latest
