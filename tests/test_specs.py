"""The project carries the API descriptions it validates against, and a missing one fails loudly."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.kernel import specs
from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.shopify.emulator import ShopifyEmulator
from connectors.shopify.synthetic import SyntheticStore

CARRIED = [
    ("shopify", "admin_2026-04.json.gz", False),
    ("mailchimp", "marketing-3.0.55.UNOFFICIAL-openapi-generator.yaml.gz", True),
    ("klaviyo", "stable.json.gz", True),
    ("google", "datamanager.v1.json.gz", True),
]


@pytest.mark.parametrize(("vendor", "name", "unpacked"), CARRIED)
def test_each_carried_spec_is_the_copy_its_readme_names(vendor: str, name: str, unpacked: bool) -> None:
    readme = (specs.ROOT / vendor / "spec" / "README.md").read_text(encoding="utf-8")
    listed = re.search(rf"`{re.escape(name)}`.*`([0-9a-f]{{64}})`", readme)
    assert listed, f"{vendor}/spec/README.md does not list {name} with its checksum"
    data = specs.spec_bytes(vendor, name) if unpacked else specs.spec_path(vendor, name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == listed.group(1)
    assert specs.load_spec(vendor, name)  # and it parses


def test_a_missing_spec_stops_the_emulators_instead_of_accepting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import connectors.mailchimp.emulator as mc
    import connectors.shopify.emulator as shopify

    monkeypatch.setattr(specs, "ROOT", tmp_path)
    specs.load_spec.cache_clear()
    monkeypatch.setattr(shopify, "_SCHEMAS", {})
    monkeypatch.setattr(
        mc, "SPEC", specs.OpenApiSchemas("mailchimp", "marketing-3.0.55.UNOFFICIAL-openapi-generator.yaml.gz")
    )
    with pytest.raises(specs.SpecMissing, match=r"mailchimp/spec/marketing-3\.0\.55.*is missing"):
        MailchimpEmulator()
    with pytest.raises(specs.SpecMissing, match=r"shopify/spec/admin_2026-04\.json\.gz is missing"):
        ShopifyEmulator(SyntheticStore(seed=1, customers=1, now=datetime(2026, 1, 1, tzinfo=UTC)))
