"""Read-side queries shared by the CLI and (later) the web app. Only de-identified text."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from themes.errors import NotFoundError
from themes.records import check_kind
from themes.store import (
    Store,
    assignments,
    clean_texts,
    raw_records,
    theme_registry,
    themes_table,
)


def _active_model_id(store: Store) -> str | None:
    active = store.active_model()
    return active["model_id"] if active else None


def check_theme_ids(store: Store, theme_ids: Iterable[int], *, option: str = "--theme") -> None:
    """Raise NotFoundError naming the ids that are not themes of the active theme model."""
    wanted = sorted({int(t) for t in theme_ids})
    if not wanted:
        return
    model_id = _active_model_id(store)
    with store.connect() as conn:
        known = set(
            conn.execute(
                sa.select(themes_table.c.theme_id).where(
                    themes_table.c.model_id == model_id, themes_table.c.theme_id.in_(wanted)
                )
            ).scalars()
        )
    missing = [t for t in wanted if t not in known]
    if not missing:
        return
    shown = ", ".join(str(t) for t in missing)
    if model_id is None:
        raise NotFoundError(f"{option} {shown}: there are no themes yet; run `themes run` first.")
    raise NotFoundError(
        f"{option} {shown}: no such theme in the current theme model; `themes themes` lists "
        "the ids."
    )


def list_themes(store: Store, *, include_hidden: bool = False) -> list[dict[str, Any]]:
    """Themes of the active model with their current size (records assigned now).

    Theme ids are permanent (see lifecycle.py). Themes curated as "not a theme" are left
    out unless `include_hidden`.
    """
    model_id = _active_model_id(store)
    if model_id is None:
        return []
    size = (
        sa.select(assignments.c.theme_id, sa.func.count().label("n"))
        .where(assignments.c.model_id == model_id)
        .group_by(assignments.c.theme_id)
        .subquery()
    )
    q = (
        sa.select(
            themes_table,
            sa.func.coalesce(size.c.n, 0).label("n"),
            theme_registry.c.pinned,
            theme_registry.c.not_a_theme,
            theme_registry.c.born_at,
        )
        .select_from(
            themes_table.outerjoin(size, size.c.theme_id == themes_table.c.theme_id).outerjoin(
                theme_registry, theme_registry.c.key == themes_table.c.theme_id
            )
        )
        .where(themes_table.c.model_id == model_id)
        .order_by(sa.desc("n"), themes_table.c.theme_id)
    )
    with store.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [
        {
            "theme_id": r["theme_id"],
            "label": r["label"],
            "size": int(r["n"]),
            "keywords": json.loads(r["keywords"]),
            "model_id": model_id,
            "pinned": bool(r["pinned"]),
            "not_a_theme": bool(r["not_a_theme"]),
            "born_at": r["born_at"].isoformat(timespec="seconds") if r["born_at"] else None,
        }
        for r in rows
        if include_hidden or not r["not_a_theme"]
    ]


def show_theme(store: Store, theme_id: int) -> dict[str, Any]:
    """One theme with its representative de-identified cases and its mix of kinds."""
    model_id = _active_model_id(store)
    with store.connect() as conn:
        row = (
            conn.execute(
                sa.select(themes_table).where(
                    themes_table.c.model_id == model_id, themes_table.c.theme_id == theme_id
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFoundError(
                f"No theme {theme_id} in the current model; `themes themes` lists them."
            )
        rep_ids = json.loads(row["representative_ids"])
        reps = conn.execute(
            sa.select(
                raw_records.c.record_id,
                raw_records.c.kind,
                raw_records.c.event_date,
                clean_texts.c.clean_text,
            )
            .select_from(
                raw_records.join(clean_texts, clean_texts.c.record_id == raw_records.c.record_id)
            )
            .where(raw_records.c.record_id.in_(rep_ids))
        ).all()
        kinds = conn.execute(
            sa.select(raw_records.c.kind, sa.func.count())
            .select_from(
                assignments.join(raw_records, raw_records.c.record_id == assignments.c.record_id)
            )
            .where(assignments.c.model_id == model_id, assignments.c.theme_id == theme_id)
            .group_by(raw_records.c.kind)
        ).all()
    by_id = {r[0]: r for r in reps}
    return {
        "theme_id": theme_id,
        "label": row["label"],
        "keywords": json.loads(row["keywords"]),
        "size": sum(n for _, n in kinds),
        "kinds": {k: n for k, n in kinds},
        "model_id": model_id,
        "representatives": [
            {
                "record_id": rid,
                "kind": by_id[rid][1],
                "event_date": by_id[rid][2].isoformat(),
                "text": by_id[rid][3],
            }
            for rid in rep_ids
            if rid in by_id
        ],
    }


def list_records(
    store: Store,
    *,
    kind: str | None = None,
    theme_id: int | None = None,
    limit: int = 20,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """De-identified records with their current theme, newest first.

    An unknown `kind`, or a `theme_id` that is not a theme of the active model, is an error.
    """
    if kind is not None:
        kind = check_kind(kind)
    if theme_id is not None:
        check_theme_ids(store, [theme_id])
    model_id = _active_model_id(store)
    a = assignments
    j = raw_records.join(clean_texts, clean_texts.c.record_id == raw_records.c.record_id)
    j = j.outerjoin(a, sa.and_(a.c.record_id == raw_records.c.record_id, a.c.model_id == model_id))
    j = j.outerjoin(
        themes_table,
        sa.and_(themes_table.c.model_id == model_id, themes_table.c.theme_id == a.c.theme_id),
    )
    q = sa.select(
        raw_records.c.record_id,
        raw_records.c.kind,
        raw_records.c.event_date,
        raw_records.c.site,
        raw_records.c.location,
        raw_records.c.specialty,
        raw_records.c.severity,
        a.c.theme_id,
        themes_table.c.label,
        clean_texts.c.clean_text,
    ).select_from(j)
    if kind is not None:
        q = q.where(raw_records.c.kind == kind)
    if theme_id is not None:
        q = q.where(a.c.theme_id == theme_id)
    q = q.order_by(raw_records.c.event_date.desc(), raw_records.c.record_id)
    q = q.limit(limit).offset(offset)
    with store.connect() as conn:
        rows = conn.execute(q).all()
    return [
        {
            "record_id": r[0],
            "kind": r[1],
            "event_date": r[2].isoformat(),
            "site": r[3],
            "location": r[4],
            "specialty": r[5],
            "severity": r[6],
            "theme_id": r[7],
            "theme_label": r[8],
            "text": r[9],
        }
        for r in rows
    ]


def list_quarantine(store: Store, *, limit: int = 50) -> list[dict[str, Any]]:
    """Quarantined rows (file, row, reason); raw cell values are not returned."""
    from themes.store import quarantine

    with store.connect() as conn:
        rows = conn.execute(
            sa.select(
                quarantine.c.file,
                quarantine.c.row_number,
                quarantine.c.record_id,
                quarantine.c.reason,
            )
            .order_by(quarantine.c.file, quarantine.c.row_number)
            .limit(limit)
        ).all()
    return [{"file": r[0], "row_number": r[1], "record_id": r[2], "reason": r[3]} for r in rows]
