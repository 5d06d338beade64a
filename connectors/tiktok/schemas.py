"""JSON Schemas of the TikTok request bodies we send, written by hand (TikTok publishes no machine-readable spec).

The official SDK (``tiktok/tiktok-business-api-sdk``, generated from TikTok's own swagger) covers the
``dmp/custom_audience/*`` file API but not the streaming Segment API, and TikTok publishes no OpenAPI or
JSON Schema for either. These schemas follow the official reference pages:

- "Create/Delete an audience segment": ``POST /open_api/v1.3/segment/audience/``
- the Segment API's mapping endpoint: ``POST /open_api/v1.3/segment/mapping/``
- both reached from the Audience (Segment) API section, https://business-api.tiktok.com/portal/docs?id=1739940504185857
- "Delete audiences": ``POST /open_api/v1.3/dmp/custom_audience/delete/``, docs?id=1739940539757569, the one body
  here that the official SDK describes (``python_sdk/docs/CustomAudienceDeleteBody.md``)

We could not read those pages' tables here, so the field names, enums and nesting come from two
integrations that send these bodies in production: Segment's action-destinations
(``tiktok-audiences/functions.ts``, ``syncAudience/functions.ts``, ``api/index.ts``) and RudderStack's
transformer (``v0/destinations/tiktok_audience``). ``connectors/tiktok/CONTRACT.md`` says where each
fact was checked and which are unverified ([U]).

Tightened with our own rules: every ``id`` is lowercase hex of the right length (we never send
raw PII), ids are digit strings, and a row holds at most ``MAX_MAPPING_ROWS`` entries (an assumed
limit: TikTok documents none that we could find).
"""

from __future__ import annotations

from typing import Any

#: ``id_schema`` values seen in Segment and RudderStack, with the hex length of each hash
ID_TYPES: dict[str, int] = {
    "EMAIL_SHA256": 64,
    "PHONE_SHA256": 64,
    "IDFA_SHA256": 64,
    "AAID_SHA256": 64,
    "GAID_SHA256": 64,
    "IDFA_MD5": 32,
    "AAID_MD5": 32,
}
#: what audience-sync itself sends
OUR_ID_TYPES: tuple[str, ...] = ("EMAIL_SHA256", "PHONE_SHA256")
#: rows per ``segment/mapping`` request: [U] our assumption (Tealium's TikTok connector batches up to 1,000;
#: TikTok states no limit that we found)
MAX_MAPPING_ROWS = 1000
#: longer audience names are cut to 67 characters plus "..." (Segment's field description)
MAX_AUDIENCE_NAME = 70

DIGITS: dict[str, Any] = {"type": "string", "pattern": "^[0-9]{1,32}$"}
HASH: dict[str, Any] = {"type": "string", "pattern": "^([0-9a-f]{32}|[0-9a-f]{64})$"}

#: one column of a row: ``{}`` when the person has no value of that type (Segment and RudderStack send it)
MAPPING_CELL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "dependentRequired": {"id": ["audience_ids"], "audience_ids": ["id"]},
    "properties": {
        "id": HASH,
        "audience_ids": {"type": "array", "minItems": 1, "uniqueItems": True, "items": DIGITS},
    },
}

MAPPING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["advertiser_ids", "action", "id_schema", "batch_data"],
    "additionalProperties": False,
    "properties": {
        "advertiser_ids": {"type": "array", "minItems": 1, "uniqueItems": True, "items": DIGITS},
        "action": {"enum": ["add", "delete"]},
        "id_schema": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(ID_TYPES)}},
        "batch_data": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_MAPPING_ROWS,
            # the row length must equal len(id_schema): JSON Schema cannot say so, the emulator checks it
            "items": {"type": "array", "minItems": 1, "items": MAPPING_CELL},
        },
    },
}

AUDIENCE_CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["advertiser_id", "custom_audience_name", "action"],
    "additionalProperties": False,
    "properties": {
        "advertiser_id": DIGITS,
        "action": {"const": "create"},
        "custom_audience_name": {"type": "string", "minLength": 1},
        "id_type": {"enum": list(ID_TYPES)},
    },
}

#: [U] the delete body's id field name is our guess (the create answer calls it ``audience_id``)
AUDIENCE_DELETE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["advertiser_id", "audience_id", "action"],
    "additionalProperties": False,
    "properties": {"advertiser_id": DIGITS, "action": {"const": "delete"}, "audience_id": DIGITS},
}

#: ``POST dmp/custom_audience/delete/`` (official SDK: ``CustomAudienceDeleteBody``, 1 to 100 ids)
CUSTOM_AUDIENCE_DELETE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["advertiser_id", "custom_audience_ids"],
    "additionalProperties": False,
    "properties": {
        "advertiser_id": DIGITS,
        "custom_audience_ids": {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True, "items": DIGITS},
    },
}

#: ``segment/audience/`` bodies by ``action``
AUDIENCE_SCHEMAS: dict[str, dict[str, Any]] = {"create": AUDIENCE_CREATE_SCHEMA, "delete": AUDIENCE_DELETE_SCHEMA}
