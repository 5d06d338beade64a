"""Email engagement from Mailchimp: the last open or click per address, from campaign reports.

Reads ``GET /reports`` (campaigns sent since the lookback) and each campaign's
``GET /reports/{id}/email-activity?since=…``; bounces are not engagement. Reuses the Mailchimp
destination's client (same key, same connection cap). api-contracts.md §3.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from connectors.kernel.identifiers import normalize_email
from connectors.mailchimp.destination import MailchimpDestination

PAGE = 1000
ENGAGED_ACTIONS = frozenset({"open", "click"})
#: campaigns keep collecting opens for weeks after they are sent
CAMPAIGN_LOOKBACK = timedelta(days=90)


def _time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


class MailchimpActivity:
    def __init__(self, destination: MailchimpDestination) -> None:
        self.destination = destination

    def last_engaged(self, since: datetime | None, now: datetime) -> Iterator[dict[str, datetime]]:
        """Pages of {normalized email: latest open/click} for activity after ``since``."""
        client = self.destination.client
        oldest = (since or now - timedelta(days=365)) - CAMPAIGN_LOOKBACK
        offset = 0
        while True:
            body = client.send_json(
                "GET", "/reports", params={"since_send_time": oldest.isoformat(), "count": PAGE, "offset": offset}
            )
            reports = body.get("reports") or []
            for report in reports:
                yield from self._campaign(str(report.get("id")), since)
            offset += len(reports)
            if not reports or offset >= int(body.get("total_items") or 0):
                return

    def _campaign(self, campaign_id: str, since: datetime | None) -> Iterator[dict[str, datetime]]:
        client = self.destination.client
        offset = 0
        while True:
            params: dict[str, str | int] = {"count": PAGE, "offset": offset}
            if since is not None:
                params["since"] = since.isoformat()
            body = client.send_json("GET", f"/reports/{campaign_id}/email-activity", params=params)
            emails = body.get("emails") or []
            latest: dict[str, datetime] = {}
            for entry in emails:
                email = normalize_email(str(entry.get("email_address") or ""))
                times = [
                    t
                    for a in entry.get("activity") or []
                    if a.get("action") in ENGAGED_ACTIONS and (t := _time(a.get("timestamp"))) is not None
                ]
                if email and times:
                    latest[email] = max(times + ([latest[email]] if email in latest else []))
            if latest:
                yield latest
            offset += len(emails)
            if not emails or offset >= int(body.get("total_items") or 0):
                return
