"""Themes over time in the store: permanent theme ids, refits, curation and history.

`registry.py` decides (pure logic); this module reads and writes the store around it.

- Every theme a person sees has a permanent *key*. `themes.theme_id` and
  `assignments.theme_id` hold keys; a model's own theme ids are mapped to keys in
  `theme_key_map`, one row per (model, model theme).
- A refit matches the new model's themes to the registry (`registry.match_themes`),
  records births, retirements, splits and merges as events, and every record whose key
  changed as a move with its reason.
- Curation (rename, pin, merge, split, not-a-theme) is stored as events with who and
  when, and later refits respect it: a renamed or pinned theme keeps its label when
  matched, a merged pair stays merged, the children of a split stay split (records of
  any child go to the nearest child), a theme marked "not a theme" stays hidden.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from themes.errors import NotFoundError, ThemesError
from themes.queries import _active_model_id
from themes.registry import RegistryTheme, match_themes, moved_records
from themes.store import (
    Store,
    assignments,
    embeddings,
    record_moves,
    theme_events,
    theme_key_map,
    theme_registry,
    themes_table,
    utcnow,
)

log = logging.getLogger(__name__)

SYSTEM = "nightly flow"
"""The actor recorded for events that a run, not a person, caused."""


class CurationError(ThemesError):
    """A curation action that cannot be applied (unknown theme, merged away, ...)."""


def default_actor() -> str:
    """Who is curating: the login name (override with --by)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def _vec(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


def _blob(v: np.ndarray) -> bytes:
    v = np.asarray(v, dtype=np.float32)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32).tobytes()


def _event(
    conn: Any, key: int, kind: str, detail: dict[str, Any], *, run_id: str | None, actor: str
) -> None:
    conn.execute(
        theme_events.insert().values(
            key=int(key),
            kind=kind,
            detail=json.dumps(detail, default=str, sort_keys=True),
            run_id=run_id,
            actor=actor,
            at=utcnow(),
        )
    )


def _registry_rows(conn: Any) -> dict[int, dict[str, Any]]:
    return {r["key"]: dict(r) for r in conn.execute(sa.select(theme_registry)).mappings()}


def resolve_key(key: int, rows: dict[int, dict[str, Any]]) -> int:
    """Follow curation merges from `key` to the key that now represents it."""
    seen = set()
    while key in rows and rows[key]["merged_into"] is not None:
        if key in seen:
            raise CurationError(f"Theme {key}: merge chain loops ({sorted(seen)}).")
        seen.add(key)
        key = rows[key]["merged_into"]
    return key


def _split_children(rows: dict[int, dict[str, Any]], key: int) -> list[int]:
    raw = rows.get(key, {}).get("split_into")
    return [int(k) for k in json.loads(raw)] if raw else []


def route(keys: np.ndarray, vectors: np.ndarray, rows: dict[int, dict[str, Any]]) -> np.ndarray:
    """Map keys through curation: merges to their target, splits to the nearest child.

    `vectors` are the records' L2-normalised embeddings, aligned with `keys`.
    """
    out = np.asarray(keys, dtype=np.int64).copy()
    for i, k in enumerate(out):
        if k < 0:
            continue
        k = resolve_key(int(k), rows)
        for _ in range(len(rows) + 1):  # a split child may itself have been split
            children = _split_children(rows, k)
            if not children:
                break
            cents = np.stack([_vec(rows[c]["centroid"]) for c in children])
            k = resolve_key(children[int(np.argmax(cents @ vectors[i]))], rows)
        out[i] = k
    return out


def _respect_splits(
    keys: np.ndarray, vectors: np.ndarray, rows: dict[int, dict[str, Any]]
) -> np.ndarray:
    """After a refit: records under any child of a curated split go to the nearest child."""
    out = keys.copy()
    for parent in rows.values():
        children = _split_children(rows, parent["key"])
        if not children:
            continue
        live = [c for c in children if rows[c]["status"] == "active"]
        if len(live) < 2:
            continue
        members = np.flatnonzero(np.isin(out, live))
        if not len(members):
            continue
        cents = np.stack([_vec(rows[c]["centroid"]) for c in live])
        out[members] = np.asarray(live)[np.argmax(vectors[members] @ cents.T, axis=1)]
    return out


# -- refit -------------------------------------------------------------------------------
def register_refit(
    conn: Any,
    model: Any,
    model_id: str,
    record_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    threshold: float,
    overlap_share: float,
    run_id: str | None,
) -> tuple[np.ndarray, dict[int, dict[str, Any]], dict[str, Any]]:
    """Match a freshly fitted model to the registry inside transaction `conn`.

    Returns (key per record, aligned with `record_ids`; theme rows per key for the
    `themes` table; a summary of what changed). Writes the registry, key map, events and
    record moves.
    """
    now = utcnow()
    rows = _registry_rows(conn)
    old = {
        r[0]: int(r[1])
        for r in conn.execute(
            sa.select(assignments.c.record_id, assignments.c.theme_id).where(
                assignments.c.theme_id >= 0
            )
        )
    }
    # only keys the registry knows take part (records of a hidden or retired key count too)
    old = {rid: resolve_key(k, rows) for rid, k in old.items() if k in rows}
    candidates = {
        k
        for k, r in rows.items()
        if (r["status"] == "active" or r["merged_into"] is not None) and r["centroid"]
    }
    for k in list(candidates):  # merge targets must be present
        candidates.add(resolve_key(k, rows))
    registry = [
        RegistryTheme(
            key=k,
            label=rows[k]["label"],
            centroid=_vec(rows[k]["centroid"]),
            pinned=bool(rows[k]["pinned"]),
            merged_into=rows[k]["merged_into"],
            not_a_theme=bool(rows[k]["not_a_theme"]),
        )
        for k in sorted(candidates)
        if rows[k]["centroid"] is not None
    ]
    new_ids = [int(t) for t in model.theme_ids_]
    by_new = {th.theme_id: th for th in model.themes_}
    new_labels = {t: by_new[t].label for t in new_ids}
    new_assign = {rid: int(t) for rid, t in zip(record_ids, model.labels_, strict=True)}
    next_key = max(rows, default=0) + 1
    matching = match_themes(
        registry,
        model.centroids_,
        new_ids,
        new_labels,
        threshold=threshold,
        old_assignments={r: k for r, k in old.items() if k in {t.key for t in registry}},
        new_assignments=new_assign,
        next_key=next_key,
        overlap_share=overlap_share,
    )
    keys = np.array(
        [matching.key_of[int(t)] if t >= 0 else -1 for t in model.labels_], dtype=np.int64
    )
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    # registry rows: born and matched themes take the new centroids
    centroid_of = {int(t): model.centroids_[i] for i, t in enumerate(new_ids)}
    for t in matching.born:
        key = matching.key_of[t]
        conn.execute(
            theme_registry.insert().values(
                key=key,
                label=new_labels[t],
                status="active",
                pinned=False,
                not_a_theme=False,
                centroid=_blob(centroid_of[t]),
                born_at=now,
                born_run=run_id,
                updated_at=now,
            )
        )
        _event(conn, key, "born", {"model_id": model_id, "label": new_labels[t]},
               run_id=run_id, actor=SYSTEM)  # fmt: skip
    # children of a curated split keep the centroids their seed cases gave them, so the
    # split stays where the curator put it
    curated = {c for k in rows for c in _split_children(rows, k)}
    for t, entry in matching.matched.items():
        key = matching.key_of[t]
        values: dict[str, Any] = {"status": "active", "retired_at": None, "updated_at": now}
        if entry == key and key not in curated:  # a merged-away entry keeps its own
            values["centroid"] = _blob(centroid_of[t])
        conn.execute(theme_registry.update().where(theme_registry.c.key == key).values(**values))
        if entry != key and entry not in curated:
            conn.execute(
                theme_registry.update()
                .where(theme_registry.c.key == entry)
                .values(centroid=_blob(centroid_of[t]), updated_at=now)
            )
    rows = _registry_rows(conn)
    keys = _respect_splits(keys, vectors, rows)
    used = set(int(k) for k in np.unique(keys) if k >= 0) | set(matching.key_of.values())
    retired = [k for k, r in rows.items() if r["status"] == "active" and k not in used]
    for k in retired:
        conn.execute(
            theme_registry.update()
            .where(theme_registry.c.key == k)
            .values(status="retired", retired_at=now, updated_at=now)
        )
        _event(conn, k, "retired", {"model_id": model_id}, run_id=run_id, actor=SYSTEM)
    for e in matching.events:
        detail = {
            "parents": list(e.parents),
            "children": list(e.children),
            **{k: v for k, v in e.detail.items() if k != "shares"},
            "shares": {str(k): round(v, 3) for k, v in e.detail.get("shares", {}).items()},
        }
        for k in sorted(set(e.parents) | set(e.children)):
            _event(conn, k, e.kind, detail, run_id=run_id, actor=SYSTEM)

    # key map: every model theme -> key (merges already resolved by match_themes)
    conn.execute(
        theme_key_map.insert(),
        [{"model_id": model_id, "model_theme_id": t, "key": matching.key_of[t]} for t in new_ids],
    )

    # moves, with reasons (records new to the store are not moves)
    known_new = set(matching.key_of.values())
    known_old = known_new | set(matching.retired) | set(matching.aliases)
    new_by_key = {rid: int(k) for rid, k in zip(record_ids, keys, strict=True) if k >= 0}
    old_known = {r: k for r, k in old.items() if k in known_old}
    moves = [
        (m.record_id, m.old_key, m.new_key, m.reason)
        for m in moved_records(
            old_known, {r: k for r, k in new_by_key.items() if k in known_new}, matching
        )
        if m.old_key is not None
    ]
    moves += [
        (r, old[r], k, "kept apart by a curated split")
        for r, k in new_by_key.items()
        if k not in known_new and r in old and old[r] != k
    ]
    if moves:
        conn.execute(
            record_moves.insert(),
            [
                {
                    "record_id": r,
                    "old_key": o,
                    "new_key": n,
                    "reason": why,
                    "run_id": run_id,
                    "actor": SYSTEM,
                    "at": now,
                }  # fmt: skip
                for r, o, n, why in moves
            ],
        )

    # one themes row per key (curation merges can send several model themes to one key)
    rows = _registry_rows(conn)
    theme_rows: dict[int, dict[str, Any]] = {}
    for th in sorted(model.themes_, key=lambda th: -th.size):
        key = matching.key_of[th.theme_id]
        if key in theme_rows:
            theme_rows[key]["representative_ids"] += th.representative_ids
            continue
        theme_rows[key] = {
            "model_id": model_id,
            "theme_id": key,
            "label": rows[key]["label"] if key in rows else th.label,
            "keywords": list(th.keywords),
            "representative_ids": list(th.representative_ids),
        }
    counts = Counter(int(k) for k in keys if k >= 0)
    for key in counts:  # children of a curated split that only _respect_splits filled
        if key not in theme_rows:
            parent = _parent_of(rows, key)
            src = theme_rows.get(parent, {}) if parent is not None else {}
            theme_rows[key] = {
                "model_id": model_id,
                "theme_id": key,
                "label": rows[key]["label"],
                "keywords": list(src.get("keywords", [])),
                "representative_ids": [],
            }
    for key, row in theme_rows.items():
        row["size"] = counts.get(key, 0)
    kept = sum(1 for k in {t.key for t in registry if t.merged_into is None} if k in used)
    summary = {
        "matched": len(matching.matched),
        "born": len(matching.born),
        "retired": len(retired),
        "splits": sum(e.kind == "split" for e in matching.events),
        "merges": sum(e.kind == "merge" for e in matching.events),
        "moved_records": len(moves),
        "ids_kept_share": round(kept / max(1, sum(t.merged_into is None for t in registry)), 3)
        if registry
        else None,
    }
    return keys, theme_rows, summary


def _parent_of(rows: dict[int, dict[str, Any]], key: int) -> int | None:
    for k in rows:
        if key in _split_children(rows, k):
            return k
    return None


def anchors_for_refit(
    conn: Any, record_ids: Sequence[str]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """For a stable refit: the centroids of the registry's current themes (hidden ones
    included, so junk stays junk) and each record's current row among them (-1: none).
    (None, None) when the registry is empty."""
    rows = conn.execute(
        sa.select(theme_registry.c.key, theme_registry.c.centroid).where(
            theme_registry.c.status == "active", theme_registry.c.centroid.is_not(None)
        )
    ).all()
    if not rows:
        return None, None
    row_of = {int(k): i for i, (k, _) in enumerate(rows)}
    current = dict(conn.execute(sa.select(assignments.c.record_id, assignments.c.theme_id)).all())
    members = np.array([row_of.get(int(current.get(r, -1)), -1) for r in record_ids])
    return np.stack([_vec(c) for _, c in rows]), members


def model_key_map(conn: Any, model_id: str) -> dict[int, int]:
    """Model theme id -> permanent key for a model."""
    return {
        int(r[0]): int(r[1])
        for r in conn.execute(
            sa.select(theme_key_map.c.model_theme_id, theme_key_map.c.key).where(
                theme_key_map.c.model_id == model_id
            )
        )
    }


def keys_for_assignment(
    conn: Any, model_id: str, model_theme_ids: np.ndarray, vectors: np.ndarray
) -> np.ndarray:
    """Permanent keys for records a saved model assigned (nightly, no refit)."""
    mapping = model_key_map(conn, model_id)
    keys = np.array([mapping.get(int(t), -1) if t >= 0 else -1 for t in model_theme_ids])
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return route(keys, vectors, _registry_rows(conn))


def record_reassignments(conn: Any, new_keys: dict[str, int], *, run_id: str | None) -> int:
    """Record a move for every already-themed record whose key a nightly assignment
    changes (its text changed); returns how many moved."""
    ids = list(new_keys)
    old: dict[str, int] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        old.update(
            conn.execute(
                sa.select(assignments.c.record_id, assignments.c.theme_id).where(
                    assignments.c.record_id.in_(chunk)
                )
            ).all()
        )
    now = utcnow()
    moves = [
        {
            "record_id": r,
            "old_key": old[r],
            "new_key": k,
            "reason": "text changed; reassigned",
            "run_id": run_id,
            "actor": SYSTEM,
            "at": now,
        }  # fmt: skip
        for r, k in new_keys.items()
        if r in old and old[r] >= 0 and old[r] != k
    ]
    if moves:
        conn.execute(record_moves.insert(), moves)
    return len(moves)


# -- curation ----------------------------------------------------------------------------
def _require(rows: dict[int, dict[str, Any]], key: int, *, live: bool = True) -> dict[str, Any]:
    if key not in rows:
        raise CurationError(f"No theme {key}; `themes themes --all` lists every theme id.")
    row = rows[key]
    if live and row["merged_into"] is not None:
        raise CurationError(
            f"Theme {key} was merged into {row['merged_into']}; act on {row['merged_into']}."
        )
    if live and row["status"] in ("retired", "split"):
        raise CurationError(f"Theme {key} is {row['status']}; act on a current theme.")
    return row


def _curate(
    store: Store,
    key: int,
    values: dict[str, Any],
    kind: str,
    detail: Any,
    actor: str | None,
) -> dict[str, Any]:
    """Update one live theme's registry row and record the curation event; returns the
    row as it was. `detail(row)` builds the event detail from the old row."""
    with store.begin() as conn:
        row = _require(_registry_rows(conn), key)
        conn.execute(
            theme_registry.update()
            .where(theme_registry.c.key == key)
            .values(**values, updated_at=utcnow())
        )
        if "label" in values:
            conn.execute(
                themes_table.update()
                .where(themes_table.c.theme_id == key)
                .values(label=values["label"])
            )
        _event(conn, key, kind, detail(row), run_id=None, actor=actor or default_actor())
    return row


def rename(store: Store, key: int, label: str, *, actor: str | None = None) -> dict[str, Any]:
    """Give a theme a label a person chose; it is kept through refits (pinned)."""
    label = label.strip()
    if not label:
        raise CurationError("A theme label cannot be empty.")
    _curate(store, key, {"label": label, "pinned": True}, "renamed",
            lambda row: {"from": row["label"], "to": label}, actor)  # fmt: skip
    return {"theme_id": key, "label": label, "pinned": True}


def pin(store: Store, key: int, *, unpin: bool = False, actor: str | None = None) -> dict[str, Any]:
    """Pin (or unpin) a theme's current label so refits keep it."""
    row = _curate(store, key, {"pinned": not unpin}, "unpinned" if unpin else "pinned",
                  lambda row: {"label": row["label"]}, actor)  # fmt: skip
    return {"theme_id": key, "label": row["label"], "pinned": not unpin}


def mark_not_a_theme(
    store: Store, key: int, *, undo: bool = False, actor: str | None = None
) -> dict[str, Any]:
    """Hide a theme that is not a real theme (or show it again); refits keep it hidden."""
    _curate(store, key, {"not_a_theme": not undo}, "is a theme" if undo else "not a theme",
            lambda row: {"label": row["label"]}, actor)  # fmt: skip
    return {"theme_id": key, "not_a_theme": not undo}


def _move(
    conn: Any, record_ids: Sequence[str], old: int, new: int, reason: str, actor: str
) -> None:
    if not record_ids:
        return
    now = utcnow()
    for start in range(0, len(record_ids), 500):
        chunk = list(record_ids[start : start + 500])
        conn.execute(
            assignments.update()
            .where(assignments.c.record_id.in_(chunk))
            .values(theme_id=new, method="curation", assigned_at=now)
        )
    conn.execute(
        record_moves.insert(),
        [
            {
                "record_id": r,
                "old_key": old,
                "new_key": new,
                "reason": reason,
                "run_id": None,
                "actor": actor,
                "at": now,
            }  # fmt: skip
            for r in record_ids
        ],
    )


def _members(conn: Any, key: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            sa.select(assignments.c.record_id).where(assignments.c.theme_id == key)
        )
    ]


def merge(store: Store, source: int, target: int, *, actor: str | None = None) -> dict[str, Any]:
    """Merge theme `source` into `target`: its records move, and later refits keep them
    together (the source id then always resolves to the target)."""
    if source == target:
        raise CurationError(f"Cannot merge theme {source} into itself.")
    actor = actor or default_actor()
    model_id = _active_model_id(store)
    with store.begin() as conn:
        rows = _registry_rows(conn)
        src, dst = _require(rows, source), _require(rows, target)
        members = _members(conn, source)
        _move(conn, members, source, target, f"curation: merged into {target}", actor)
        conn.execute(
            theme_registry.update()
            .where(theme_registry.c.key == source)
            .values(merged_into=target, status="merged", updated_at=utcnow())
        )
        conn.execute(theme_key_map.update().where(theme_key_map.c.key == source).values(key=target))
        if model_id:
            _merge_theme_rows(conn, model_id, source, target)
        detail = {"source": source, "target": target, "source_label": src["label"],
                  "target_label": dst["label"], "records_moved": len(members)}  # fmt: skip
        _event(conn, source, "merged", detail, run_id=None, actor=actor)
        _event(conn, target, "merged", detail, run_id=None, actor=actor)
    return {"source": source, "target": target, "records_moved": len(members)}


def _merge_theme_rows(conn: Any, model_id: str, source: int, target: int) -> None:
    rows = {
        r["theme_id"]: dict(r)
        for r in conn.execute(
            sa.select(themes_table).where(
                themes_table.c.model_id == model_id, themes_table.c.theme_id.in_([source, target])
            )
        ).mappings()
    }
    if source not in rows:
        return
    if target in rows:
        reps = json.loads(rows[target]["representative_ids"]) + json.loads(
            rows[source]["representative_ids"]
        )
        conn.execute(
            themes_table.update()
            .where(themes_table.c.model_id == model_id, themes_table.c.theme_id == target)
            .values(
                size=rows[target]["size"] + rows[source]["size"],
                representative_ids=json.dumps(reps),
            )
        )
    conn.execute(
        themes_table.delete().where(
            themes_table.c.model_id == model_id, themes_table.c.theme_id == source
        )
    )


def split(
    store: Store,
    key: int,
    seeds: Sequence[Sequence[str]],
    *,
    labels: Sequence[str] | None = None,
    embed_model_id: str,
    actor: str | None = None,
) -> dict[str, Any]:
    """Split a theme by seed cases: one group of record ids per new theme.

    Every record of the theme goes to the child whose seed centroid is nearest; the parent
    id is kept in the history (status "split"), and later refits keep the children apart
    (records matched to any child go to the nearest child).
    """
    from themes.records import text_hash
    from themes.store import clean_texts

    if len(seeds) < 2:
        raise CurationError("A split needs at least two groups of seed cases (--seed twice).")
    if labels is not None and len(labels) != len(seeds):
        raise CurationError(f"{len(seeds)} seed groups but {len(labels)} labels.")
    actor = actor or default_actor()
    model_id = _active_model_id(store)
    now = utcnow()
    with store.begin() as conn:
        rows = _registry_rows(conn)
        parent = _require(rows, key)
        members = _members(conn, key)
        member_set = set(members)
        for group in seeds:
            if not group:
                raise CurationError("An empty group of seed cases.")
            outside = [r for r in group if r not in member_set]
            if outside:
                raise CurationError(
                    f"Seed case(s) {', '.join(outside[:5])} are not in theme {key}; "
                    f"`themes records --theme {key}` lists its cases."
                )
        text_of = dict(
            conn.execute(
                sa.select(clean_texts.c.record_id, clean_texts.c.clean_text).where(
                    clean_texts.c.record_id.in_(members)
                )
            ).all()
        )
        hashes = {r: text_hash(text_of[r]) for r in members if r in text_of}
        vec_of = {
            h: np.frombuffer(v, dtype=np.float32)
            for h, v in conn.execute(
                sa.select(embeddings.c.text_hash, embeddings.c.vector).where(
                    embeddings.c.model_id == embed_model_id,
                    embeddings.c.text_hash.in_(list(set(hashes.values()))),
                )
            )
        }
        missing = [r for r in members if hashes.get(r) not in vec_of]
        if missing:
            raise CurationError(
                f"{len(missing)} case(s) of theme {key} have no embedding yet "
                f"(e.g. {missing[0]}); run the nightly flow first."
            )
        mat = np.stack([vec_of[hashes[r]] for r in members]).astype(np.float32)
        mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        index = {r: i for i, r in enumerate(members)}
        cents = np.stack([mat[[index[r] for r in g]].mean(0) for g in seeds])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        choice = np.argmax(mat @ cents.T, axis=1)
        next_key = max(rows) + 1
        children = list(range(next_key, next_key + len(seeds)))
        names = list(labels) if labels else [
            f"{parent['label']} ({i + 1})" for i in range(len(seeds))
        ]  # fmt: skip
        parent_theme = None
        if model_id:
            parent_theme = (
                conn.execute(
                    sa.select(themes_table).where(
                        themes_table.c.model_id == model_id, themes_table.c.theme_id == key
                    )
                )
                .mappings()
                .first()
            )
        sizes = {}
        for i, child in enumerate(children):
            conn.execute(
                theme_registry.insert().values(
                    key=child, label=names[i], status="active", pinned=bool(labels),
                    not_a_theme=False, centroid=_blob(cents[i]), born_at=now,
                    born_run=None, updated_at=now,
                )
            )  # fmt: skip
            moved = [members[j] for j in np.flatnonzero(choice == i)]
            sizes[child] = len(moved)
            _move(conn, moved, key, child, f"curation: split from {key}", actor)
            if model_id:
                conn.execute(
                    themes_table.insert().values(
                        model_id=model_id, theme_id=child, label=names[i],
                        keywords=parent_theme["keywords"] if parent_theme else "[]",
                        size=len(moved), representative_ids=json.dumps(list(seeds[i])[:5]),
                    )
                )  # fmt: skip
        conn.execute(
            theme_registry.update()
            .where(theme_registry.c.key == key)
            .values(status="split", split_into=json.dumps(children), updated_at=now)
        )
        if model_id:
            conn.execute(
                themes_table.delete().where(
                    themes_table.c.model_id == model_id, themes_table.c.theme_id == key
                )
            )
        detail = {"parent": key, "children": children, "labels": names, "sizes": sizes,
                  "seeds": [list(g) for g in seeds]}  # fmt: skip
        for k in [key, *children]:
            _event(conn, k, "split by curation", detail, run_id=None, actor=actor)
    return {"parent": key, "children": [{"theme_id": c, "label": n, "size": sizes[c]}
                                        for c, n in zip(children, names, strict=True)]}  # fmt: skip


# -- reading -----------------------------------------------------------------------------
def hidden_keys(store: Store) -> set[int]:
    """Keys marked "not a theme" (kept out of lists, trends and reports)."""
    with store.connect() as conn:
        return {
            int(r[0])
            for r in conn.execute(
                sa.select(theme_registry.c.key).where(theme_registry.c.not_a_theme.is_(True))
            )
        }


def history(store: Store, key: int) -> dict[str, Any]:
    """A theme's life: registry entry, every event (births, refits, curation) and moves."""
    with store.connect() as conn:
        rows = _registry_rows(conn)
        if key not in rows:
            raise NotFoundError(f"No theme {key}; `themes themes --all` lists theme ids.")
        row = rows[key]
        events = (
            conn.execute(
                sa.select(theme_events)
                .where(theme_events.c.key == key)
                .order_by(theme_events.c.at, theme_events.c.event_id)
            )
            .mappings()
            .all()
        )
        moves_in = conn.execute(
            sa.select(record_moves.c.reason, record_moves.c.run_id, sa.func.count())
            .where(record_moves.c.new_key == key)
            .group_by(record_moves.c.reason, record_moves.c.run_id)
        ).all()
        moves_out = conn.execute(
            sa.select(record_moves.c.reason, record_moves.c.new_key, sa.func.count())
            .where(record_moves.c.old_key == key)
            .group_by(record_moves.c.reason, record_moves.c.new_key)
        ).all()
        size = conn.execute(
            sa.select(sa.func.count()).select_from(assignments).where(assignments.c.theme_id == key)
        ).scalar_one()
    return {
        "theme_id": key,
        "label": row["label"],
        "status": row["status"],
        "pinned": bool(row["pinned"]),
        "not_a_theme": bool(row["not_a_theme"]),
        "merged_into": row["merged_into"],
        "split_into": _split_children(rows, key),
        "born_at": row["born_at"].isoformat(timespec="seconds"),
        "retired_at": row["retired_at"].isoformat(timespec="seconds")
        if row["retired_at"]
        else None,
        "size": int(size),
        "events": [
            {
                "at": e["at"].isoformat(timespec="seconds"),
                "kind": e["kind"],
                "actor": e["actor"],
                "run_id": e["run_id"],
                "detail": json.loads(e["detail"]),
            }
            for e in events
        ],
        "moves_in": [{"reason": r, "run_id": run, "records": n} for r, run, n in moves_in],
        "moves_out": [{"reason": r, "to": to, "records": n} for r, to, n in moves_out],
    }


def record_history(store: Store, record_id: str) -> list[dict[str, Any]]:
    """Every theme change of one record, oldest first."""
    with store.connect() as conn:
        rows = (
            conn.execute(
                sa.select(record_moves)
                .where(record_moves.c.record_id == record_id)
                .order_by(record_moves.c.at, record_moves.c.move_id)
            )
            .mappings()
            .all()
        )
    return [
        {
            "at": r["at"].isoformat(timespec="seconds"),
            "from": r["old_key"],
            "to": r["new_key"],
            "reason": r["reason"],
            "actor": r["actor"],
            "run_id": r["run_id"],
        }  # fmt: skip
        for r in rows
    ]
