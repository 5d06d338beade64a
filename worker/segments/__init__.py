"""The segment engine: customer table from orders, segment definitions as data, vectorized masks.

Pure: no I/O, the clock is a parameter. See ``frames`` for input schemas, ``table`` for how customers
are keyed and aggregated, ``conditions``/``config`` for the definition language and ``defaults`` for
the shipped segments.
"""

from worker.segments.conditions import DefinitionError
from worker.segments.config import SegmentDefinition, SegmentsConfig, Windows
from worker.segments.engine import compute_segments, rfm_scores, segment_masks, segment_revenue_share
from worker.segments.facts import Facts
from worker.segments.frames import (
    CUSTOMER_COLUMNS,
    LINE_COLUMNS,
    OPTIONAL_ORDER_COLUMNS,
    ORDER_COLUMNS,
    FrameSchemaError,
    empty_customers,
    empty_lines,
    empty_orders,
)
from worker.segments.table import CustomerTable, build_customer_table, table_from_facts

__all__ = [
    "CUSTOMER_COLUMNS",
    "LINE_COLUMNS",
    "OPTIONAL_ORDER_COLUMNS",
    "ORDER_COLUMNS",
    "CustomerTable",
    "DefinitionError",
    "Facts",
    "FrameSchemaError",
    "SegmentDefinition",
    "SegmentsConfig",
    "Windows",
    "build_customer_table",
    "compute_segments",
    "empty_customers",
    "empty_lines",
    "empty_orders",
    "rfm_scores",
    "segment_masks",
    "segment_revenue_share",
    "table_from_facts",
]
