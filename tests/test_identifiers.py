"""Normalization and hashing fixtures (api-contracts.md §0, §5.6, §6.4): normalize once, hash once."""

from __future__ import annotations

import hashlib

import pytest

from connectors.kernel.identifiers import (
    hashed,
    is_sha256_hex,
    match_key,
    normalize_country,
    normalize_email,
    normalize_name,
    normalize_phone,
    phone_for_platform,
    sha256_hex,
)

TEST_EMAIL_SHA256 = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"


def test_known_sha256_of_test_at_example_com() -> None:
    assert sha256_hex("test@example.com") == TEST_EMAIL_SHA256
    assert sha256_hex(normalize_email("  Test@Example.COM\t") or "") == TEST_EMAIL_SHA256


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  John.Doe@Example.COM ", "john.doe@example.com"),
        ("Jane.Doe@Gmail.com", "jane.doe@gmail.com"),  # gmail dots kept
        ("first+tag@example.co.uk", "first+tag@example.co.uk"),  # plus tags kept
        ("a..b@example.com", None),
        (".a@example.com", None),
        ("no-at-sign", None),
        ("user@localhost", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_normalize_email(raw: str | None, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("(212) 555-0100", "US", "+12125550100"),
        ("+1 212-555-0100", "GB", "+12125550100"),
        ("020 7946 0018", "GB", "+442079460018"),
        ("+44 (0)20 7946 0018", "US", "+442079460018"),
        ("0044 20 7946 0018", "GB", "+442079460018"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("123", "US", None),
        ("not a phone", "US", None),
        ("", "US", None),
        (None, "US", None),
    ],
)
def test_normalize_phone_to_e164(raw: str | None, region: str, e164: str | None) -> None:
    assert normalize_phone(raw, region) == e164


def test_phone_form_per_platform() -> None:
    assert phone_for_platform("+442079460018", "meta") == "442079460018"
    assert phone_for_platform("+442079460018", "tiktok") == "442079460018"
    assert phone_for_platform("+442079460018", "google") == "+442079460018"
    assert match_key("(212) 555-0100", kind="phone", platform="meta") == (
        "12125550100",
        sha256_hex("12125550100"),
    )
    assert match_key("(212) 555-0100", kind="phone", platform="google") == (
        "+12125550100",
        sha256_hex("+12125550100"),
    )
    assert match_key("nope", kind="phone", platform="meta") is None
    assert match_key(" Test@Example.com", kind="email", platform="meta") == ("test@example.com", TEST_EMAIL_SHA256)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Zoë ", "zoë"),
        ("Zoe\u0308", "zoë"),  # decomposed input is NFC-composed, so both hash alike
        ("José María", "josémaría"),
        ("O'Brien-Smith", "obriensmith"),
        ("Müller", "müller"),
        ("ÅSA", "åsa"),
        ("123", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_name_keeps_letters_including_accents(raw: str | None, expected: str | None) -> None:
    assert normalize_name(raw) == expected


def test_composed_and_decomposed_names_hash_the_same() -> None:
    assert sha256_hex(normalize_name("Zoe\u0308") or "") == sha256_hex(normalize_name("Zo\u00eb") or "")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("US", "us"), (" gb ", "gb"), ("u.s.", "us"), ("USA", None), ("", None), (None, None)],
)
def test_normalize_country(raw: str | None, expected: str | None) -> None:
    assert normalize_country(raw) == expected


def test_hashes_are_lowercase_hex_sha256_of_utf8() -> None:
    digest = sha256_hex("zoë")
    assert digest == hashlib.sha256("zoë".encode()).hexdigest()
    assert is_sha256_hex(digest) and digest == digest.lower()
    assert not is_sha256_hex(digest.upper()) and not is_sha256_hex("abc")


def test_pre_hashed_values_pass_through_once() -> None:
    assert hashed(TEST_EMAIL_SHA256, pre_hashed=True) == TEST_EMAIL_SHA256
    assert hashed(f" {TEST_EMAIL_SHA256.upper()} ", pre_hashed=True) == TEST_EMAIL_SHA256
    assert hashed("test@example.com") == TEST_EMAIL_SHA256
    assert hashed(TEST_EMAIL_SHA256) != TEST_EMAIL_SHA256  # undeclared: hashed again, by design
    with pytest.raises(ValueError, match="pre-hashed"):
        hashed("test@example.com", pre_hashed=True)
