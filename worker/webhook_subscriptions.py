"""``audience-sync webhooks register``: the shop's subscriptions to our store topics, created once.

Lists the existing ``webhookSubscriptions`` of our topics first and creates only the missing ones with
``webhookSubscriptionCreate`` (the endpoint in the input's ``uri``; ``callbackUrl`` is deprecated in
2026-04), each pointing at the control API's route for its topic. Running it again creates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from worker.inbox import STORE_TOPICS

LIST_SUBSCRIPTIONS = """
query WebhookSubscriptions($first: Int!, $after: String, $topics: [WebhookSubscriptionTopic!]) {
  webhookSubscriptions(first: $first, after: $after, topics: $topics) {
    nodes { id topic uri }
    pageInfo { hasNextPage endCursor }
  }
}
"""

CREATE_SUBSCRIPTION = """
mutation WebhookSubscriptionCreate($topic: WebhookSubscriptionTopic!, $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}
"""


class GraphQL(Protocol):
    def query(self, document: str, variables: dict[str, Any]) -> dict[str, Any]: ...

    def query_once(self, document: str, variables: dict[str, Any]) -> dict[str, Any]: ...


def enum_topic(topic: str) -> str:
    """``orders/create`` -> ``ORDERS_CREATE`` (the ``WebhookSubscriptionTopic`` value)."""
    return topic.replace("/", "_").upper()


def endpoint(address: str, topic: str) -> str:
    return f"{address.rstrip('/')}/webhooks/shopify/{topic}"


@dataclass
class Registration:
    #: (topic, uri) already subscribed, and created now
    existing: list[tuple[str, str]] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)
    #: (topic, message) the shop refused
    refused: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"exists   {topic:<45} {uri}" for topic, uri in self.existing]
        out += [f"created  {topic:<45} {uri}" for topic, uri in self.created]
        out += [f"refused  {topic:<45} {message}" for topic, message in self.refused]
        return out


def subscriptions(client: GraphQL, topics: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        body = client.query(LIST_SUBSCRIPTIONS, {"first": 100, "after": after, "topics": topics})
        page = body["data"]["webhookSubscriptions"]
        found += page["nodes"]
        cursor = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"] or not cursor or cursor == after:
            return found
        after = cursor


def register(client: GraphQL, address: str, topics: tuple[str, ...] = STORE_TOPICS) -> Registration:
    """Subscribe every topic to its route under ``address`` (the control API's public base URL)."""
    result = Registration()
    wanted = {enum_topic(t): (t, endpoint(address, t)) for t in topics}
    have = {(s["topic"], s["uri"]) for s in subscriptions(client, list(wanted))}
    for value, (topic, uri) in wanted.items():
        if (value, uri) in have:
            result.existing.append((topic, uri))
            continue
        body = client.query_once(
            CREATE_SUBSCRIPTION, {"topic": value, "webhookSubscription": {"uri": uri, "format": "JSON"}}
        )
        answer = body["data"]["webhookSubscriptionCreate"]
        if answer["userErrors"]:
            result.refused.append((topic, "; ".join(e["message"] for e in answer["userErrors"])))
        else:
            result.created.append((topic, uri))
    return result


def register_inline(settings: Any, address: str, echo: Any = print) -> Registration:
    """Register against the configured shop (the sandbox's emulator when ``shop_url = "sandbox"``)."""
    from connectors.shopify.webhook_emulator import WebhookSubscriptions
    from worker.config import load_config
    from worker.factory import build_source, make_runtime
    from worker.sandbox import SANDBOX, Sandbox
    from worker.settings import Settings

    assert isinstance(settings, Settings)
    config = load_config(settings.config)
    if getattr(config.source, "shop_url", None) != SANDBOX:
        return _register_with(config, settings, address, echo, build_source, make_runtime)
    from worker.cycle import utc_now

    with Sandbox(utc_now(), customers=settings.sandbox_customers, state_dir=settings.sandbox_dir) as sandbox:
        resolved, _ = sandbox.resolve(config, settings)
        emulator = sandbox.emulator("shopify")
        if emulator is not None:
            WebhookSubscriptions().install(emulator)  # type: ignore[arg-type]
        echo("(sandbox: the emulator's subscriptions last for this command only)")
        return _register_with(resolved, settings, address, echo, build_source, make_runtime)


def _register_with(
    config: Any, settings: Any, address: str, echo: Any, build_source: Any, make_runtime: Any
) -> Registration:
    if config.source.type != "shopify":
        raise ValueError(f"webhooks are Shopify's; the configured source is {config.source.type!r}")
    source = build_source(config.source, settings, make_runtime(settings))
    try:
        result = register(source.client, address)
    finally:
        source.close()
    for line in result.lines():
        echo(line)
    echo(f"{len(result.existing)} existed, {len(result.created)} created, {len(result.refused)} refused")
    return result
