"""Rows written straight into the store by tests that need no export file."""

from __future__ import annotations

from typing import Any

from themes.store import utcnow


def raw_row(rid: str, narrative: str = "Description: fall", raw_hash: str = "h") -> dict[str, Any]:
    """A `raw_records` row for an incident with the given id, narrative and raw hash."""
    now = utcnow()
    return {
        "record_id": rid,
        "kind": "incident",
        "source": "datix_incident",
        "file": "x.csv",
        "row_number": 2,
        "event_date": now.date(),
        "narrative": narrative,
        "raw_hash": raw_hash,
        "first_seen": now,
        "updated_at": now,
    }
