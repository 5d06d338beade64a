"""The Shopify 2026-04 Admin schema for contract tests: validity and deprecation of a query."""

from __future__ import annotations

from graphql import GraphQLSchema, parse, specified_rules
from graphql.validation import NoDeprecatedCustomRule

from connectors.shopify.emulator import load_schema, validate_query


def admin_schema() -> GraphQLSchema:
    return load_schema()  # the carried copy; a missing file raises SpecMissing, never skips


def query_problems(query: str) -> list[str]:
    """Validation errors plus every deprecated field, argument or enum value the query uses."""
    rules = [*specified_rules, NoDeprecatedCustomRule]
    return [error.message for error in validate_query(admin_schema(), parse(query), rules)]
