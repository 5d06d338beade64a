"""Recompute results: profiles (who each customer key is) and segment membership."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from connectors.kernel.records import PROFILE_FIELDS, Member, member_from_profile
from worker.store import schema
from worker.store.base import StoreBase, as_utc, chunks


class ResultsQueries(StoreBase):
    def bump_results(self, conn: Connection) -> int:
        """Profiles or memberships are being written: returns the new results version (see persist.py)."""
        state = schema.results_state.c
        conn.execute(update(schema.results_state).values(version=state.version + 1))
        return int(conn.execute(select(state.version)).scalar_one())

    def results_marker(self) -> tuple[str, int] | None:
        """(database instance, results version): what a process-local cache of results is keyed by."""
        with self.engine.connect() as conn:
            instance = conn.execute(select(schema.ingest_state.c.instance)).scalar()
            version = conn.execute(select(schema.results_state.c.version)).scalar()
        return None if instance is None or version is None else (str(instance), int(version))

    def all_members(self) -> dict[str, Member]:
        """Every profile as a member, in one read (the syncs of one results version share it)."""
        p = schema.profiles.c
        columns = [p.customer_key, p.email, p.phone, p.first_name, p.last_name, p.country, p.email_consent]
        found: dict[str, Member] = {}
        with self.engine.connect() as conn:
            result = conn.execute(select(*columns))
            while rows := result.fetchmany(100_000):
                for row in rows:
                    found[row[0]] = member_from_profile(row[0], dict(zip(PROFILE_FIELDS, row[1:], strict=True)))
        return found

    # -- recompute results -------------------------------------------------------------
    def replace_profiles(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self.engine.begin() as conn:
            self.bump_results(conn)
            conn.execute(delete(schema.profiles))
            for chunk in chunks(list(rows), 5000):
                conn.execute(schema.profiles.insert(), list(chunk))

    def replace_segments(self, members: Mapping[str, Iterable[str]]) -> dict[str, dict[str, int]]:
        """Store new membership; returns per segment the size, joined and left counts."""
        changes: dict[str, dict[str, int]] = {}
        with self.engine.begin() as conn:
            self.bump_results(conn)
            for segment, keys in members.items():
                new = set(keys)
                old = {
                    r[0]
                    for r in conn.execute(
                        select(schema.segment_members.c.customer_key).where(schema.segment_members.c.segment == segment)
                    )
                }
                joined, left = new - old, old - new
                for chunk in chunks(sorted(left)):
                    conn.execute(
                        delete(schema.segment_members).where(
                            schema.segment_members.c.segment == segment,
                            schema.segment_members.c.customer_key.in_(chunk),
                        )
                    )
                for chunk in chunks(sorted(joined), 5000):
                    conn.execute(
                        schema.segment_members.insert(),
                        [{"segment": segment, "customer_key": k} for k in chunk],
                    )
                changes[segment] = {"size": len(new), "joined": len(joined), "left": len(left)}
            stale = conn.execute(select(schema.segment_members.c.segment).distinct()).scalars().all()
            for segment in set(stale) - set(members):
                conn.execute(delete(schema.segment_members).where(schema.segment_members.c.segment == segment))
        return changes

    def segment_keys(self, segment: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(schema.segment_members.c.customer_key).where(schema.segment_members.c.segment == segment)
                ).scalars()
            )

    def segment_sample(self, segment: str, limit: int) -> list[str]:
        """The first ``limit`` member keys in key order: a page's samples, without reading the segment."""
        m = schema.segment_members.c
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(m.customer_key).where(m.segment == segment).order_by(m.customer_key).limit(limit)
                ).scalars()
            )

    def segment_size(self, segment: str) -> int:
        m = schema.segment_members.c
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(m.segment == segment)).scalar_one())

    def segment_sizes(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.segment_members.c.segment, func.count()).group_by(schema.segment_members.c.segment)
            ).all()
        return {str(segment): int(n) for segment, n in rows}

    def members(self, keys: Iterable[str]) -> dict[str, Member]:
        """Profiles of ``keys`` as destination members (keys with no profile are left out)."""
        wanted = sorted(set(keys))
        found: dict[str, Member] = {}
        p = schema.profiles.c
        columns = [p.customer_key, *(p[f] for f in PROFILE_FIELDS)]
        with self.engine.connect() as conn:
            for chunk in chunks(wanted, self.in_chunk):
                for row in conn.execute(select(*columns).where(self._among(p.customer_key, chunk))):
                    found[row[0]] = member_from_profile(row[0], dict(zip(PROFILE_FIELDS, row[1:], strict=True)))
        return found

    def profile_values(self, keys: Sequence[str]) -> dict[str, tuple[str | None, ...]]:
        """Profiles of ``keys`` as values in :data:`PROFILE_FIELDS` order (a change log replay's)."""
        p = schema.profiles.c
        columns = [p.customer_key, *(p[f] for f in PROFILE_FIELDS)]
        found: dict[str, tuple[str | None, ...]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(keys), self.in_chunk):
                for row in conn.execute(select(*columns).where(self._among(p.customer_key, chunk))):
                    found[row[0]] = tuple(row[1:])
        return found

    # -- history (the pages read it; nothing is recomputed on request) ------------------------------
    def record_segment_history(
        self, run_id: int, at: datetime, changes: Mapping[str, Mapping[str, int]], stats: Mapping[str, Any]
    ) -> None:
        rows = [
            {
                "run_id": run_id,
                "segment": name,
                "at": at,
                "size": int(change["size"]),
                "joined": int(change.get("joined", 0)),
                "left": int(change.get("left", 0)),
                "revenue_share": float(stats[name].revenue_share) if name in stats else 0.0,
                "overlaps": json.dumps(stats[name].overlaps if name in stats else {}),
            }
            for name, change in changes.items()
        ]
        with self.engine.begin() as conn:
            if rows:
                conn.execute(schema.segment_history.insert(), rows)

    def segment_history(self, segment: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first: per recompute, size, joined, left, revenue share and overlaps."""
        h = schema.segment_history.c
        query = select(schema.segment_history).order_by(h.run_id.desc()).limit(limit)
        if segment is not None:
            query = query.where(h.segment == segment)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [{**dict(r._mapping), "at": as_utc(r.at), "overlaps": json.loads(r.overlaps or "{}")} for r in rows]

    def latest_segment_stats(self) -> dict[str, dict[str, Any]]:
        """The newest recompute's row of every segment."""
        h = schema.segment_history.c
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(h.run_id))).scalar()
            if newest is None:
                return {}
            rows = conn.execute(select(schema.segment_history).where(h.run_id == newest)).all()
        return {
            r.segment: {**dict(r._mapping), "at": as_utc(r.at), "overlaps": json.loads(r.overlaps or "{}")}
            for r in rows
        }
