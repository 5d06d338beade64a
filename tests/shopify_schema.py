"""The Shopify 2026-04 Admin schema for contract tests: validity and deprecation of a query."""

from __future__ import annotations

import pytest
from graphql import GraphQLSchema, parse, specified_rules, validate
from graphql.validation import NoDeprecatedCustomRule

from connectors.emulators.shopify import DEFAULT_SCHEMA_PATH, load_schema


def admin_schema() -> GraphQLSchema:
    if not DEFAULT_SCHEMA_PATH.exists():
        pytest.skip(f"Shopify schema not available at {DEFAULT_SCHEMA_PATH}")
    return load_schema(DEFAULT_SCHEMA_PATH)


def query_problems(query: str) -> list[str]:
    """Validation errors plus every deprecated field, argument or enum value the query uses."""
    rules = [*specified_rules, NoDeprecatedCustomRule]
    return [error.message for error in validate(admin_schema(), parse(query), rules)]
