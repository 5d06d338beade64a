"""A small HTML overview of the last runs and segment sizes (the marketer's web app replaces it)."""

from __future__ import annotations

import html

from worker.config import AppConfig
from worker.status import status_report
from worker.store import Store


def _cell(value: object) -> str:
    return "-" if value is None else html.escape(str(value))


def render_dashboard(store: Store, config: AppConfig) -> str:
    report = status_report(store)
    rows = "".join(
        f"<tr><td>{_cell(r['mapping'])}</td><td>{_cell(r['finished_at'])}</td><td>{_cell(r['outcome'])}</td>"
        f"<td>{_cell(r['eligible'])}</td><td>{_cell(r['added'])}</td><td>{_cell(r['removed'])}</td>"
        f"<td>{_cell(r['rejected'])}</td></tr>"
        for r in report["mappings"]
    )
    sizes = store.segment_sizes()
    segments = "".join(f"<tr><td>{_cell(k)}</td><td>{v}</td></tr>" for k, v in sorted(sizes.items()))
    return (
        "<!doctype html><title>audience-sync</title><h1>audience-sync</h1>"
        "<h2>Mappings</h2><table border=1><tr><th>mapping</th><th>finished</th><th>outcome</th><th>eligible</th>"
        f"<th>added</th><th>removed</th><th>rejected</th></tr>{rows}</table>"
        f"<h2>Segments</h2><table border=1><tr><th>segment</th><th>members</th></tr>{segments}</table>"
    )
