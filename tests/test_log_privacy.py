"""Failure paths log useful lines without email addresses or tokens."""

from __future__ import annotations

import logging

import pytest

from connectors.kernel.errors import ConfigError
from connectors.kernel.redact import redact
from tests.conftest import LOG_COLLECTOR, leaks


def test_redaction_masks_emails_tokens_and_query_strings() -> None:
    text = (
        "POST https://shop.example/admin?access_token=EAAB123456789abcdef failed for Jane.Doe+x@Example.co.uk "
        'with {"Authorization": "Bearer shpat_abcdefghijklmnop"} api_key=abc123'
    )
    cleaned = redact(text)
    assert "Jane" not in cleaned and "@Example" not in cleaned
    assert "EAAB" not in cleaned and "shpat_abc" not in cleaned and "abc123" not in cleaned
    assert "POST https://shop.example/admin?…" in cleaned


def test_an_auth_failure_is_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    from datetime import UTC, datetime

    from connectors.kernel.runtime import Runtime
    from connectors.shopify.emulator import ShopifyEmulator
    from connectors.shopify.source import ShopifyConfig, ShopifySource
    from connectors.shopify.synthetic import SyntheticStore

    secret = "shpat_wrong_token_that_must_not_leak_0001"
    with ShopifyEmulator(SyntheticStore(seed=1, customers=5, now=datetime(2026, 1, 1, tzinfo=UTC))) as emulator:
        source = ShopifySource(ShopifyConfig(shop_url=emulator.url), Runtime(sleep=lambda _: None), secret)
        with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as caught:
            list(source.pull("customers", None))
        source.close()
    assert secret not in str(caught.value)
    lines = [r.getMessage() for r in caplog.records]
    assert lines, "the failure should be logged"
    assert leaks(lines, (secret,)) == []


def test_a_leaking_line_would_be_caught() -> None:
    # the session-wide scan is only worth something if it recognises a leak
    assert leaks(["sent to jane@example.com"]) and leaks(["token shpat_emulator_local_token_0001"])
    assert LOG_COLLECTOR in logging.getLogger().handlers
