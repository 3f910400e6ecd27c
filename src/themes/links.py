"""Links between the trust's themes and cases and the recommendation corpus, in the store.

`update_links` (the nightly step) loads the configured recommendation sets, scores every
de-identified record against every recommendation with the hybrid `Linker`, keeps each
record's top links, and ranks recommendations for each theme by the mean score of its
cases, with evidence: the theme's best-matching cases and, for each, the passage of the
case and the passage of the recommendation that match best and the words they share.
It does nothing when neither the themes, the records nor the corpus changed. A link's id
is derived from (theme id, recommendation id), so it is the same across runs.

`theme_links`, `case_links` and `flagged_actions` are the read side for the CLI and the
governance report.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import sqlalchemy as sa

from themes import recommendations as rec_mod
from themes.actions import OPEN_STATUSES, list_actions
from themes.actions import ensure_tables as ensure_action_tables
from themes.errors import NotFoundError
from themes.linker import SCORING_VERSION, Linker, Weights, passages, tokens
from themes.recommendations import Recommendation
from themes.settings import LinkSettings, Settings
from themes.store import Store, assignments, clean_texts, metadata, themes_table, utcnow

log = logging.getLogger(__name__)

BLOCK = 512
"""Records scored at a time (bounds memory: BLOCK x corpus size)."""

theme_links_table = sa.Table(
    "theme_links",
    metadata,
    sa.Column("link_id", sa.String, primary_key=True),
    sa.Column("theme_id", sa.Integer, nullable=False, index=True),
    sa.Column("rec_id", sa.String, nullable=False, index=True),
    sa.Column("model_id", sa.String, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("strong", sa.Boolean, nullable=False),
    sa.Column("n_cases", sa.Integer, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("current", sa.Boolean, nullable=False),
    sa.Column("first_linked_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

case_links_table = sa.Table(
    "case_links",
    metadata,
    sa.Column("record_id", sa.String, primary_key=True),
    sa.Column("rec_id", sa.String, primary_key=True),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("clean_hash", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

link_state = sa.Table(
    "link_state",
    metadata,
    sa.Column("key", sa.String, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

TABLES = [theme_links_table, case_links_table, link_state]


def ensure_tables(store: Store) -> None:
    """Create the link, recommendation and action tables if they do not exist yet."""
    ensure_action_tables(store)
    metadata.create_all(store.engine, tables=TABLES)


def link_id(theme_id: int, rec_id: str) -> str:
    """The stable id of the link between a theme and a recommendation."""
    return "lnk-" + hashlib.sha256(f"{theme_id}\x1f{rec_id}".encode()).hexdigest()[:12]


def weights_from(links: LinkSettings) -> Weights:
    """The fusion weights and calibration configured in `links`."""
    return Weights(
        lexical=links.w_lexical,
        dense=links.w_dense,
        document=links.w_document,
        tfidf=links.w_tfidf,
        calibration_slope=links.calibration_slope,
        calibration_size=links.calibration_size,
        calibration_intercept=links.calibration_intercept,
    )


class StoreEncoder:
    """Passage embeddings through the store's embedding cache (by model id and text hash)."""

    def __init__(self, store: Store, embedder: Any) -> None:
        self.store = store
        self.embedder = embedder

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from themes.embed import embed_cached

        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        vectors, _ = embed_cached(self.store, self.embedder, list(texts))
        return vectors


def build_linker(store: Store, settings: Settings, *, embedder: Any = None) -> Linker:
    """A Linker over the stored corpus, with the configured weights and BM25 parameters."""
    if embedder is None:
        from themes.embed import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(settings.embed)
    links = settings.links
    linker = Linker(
        encoder=StoreEncoder(store, embedder),
        weights=weights_from(links),
        k1=links.bm25_k1,
        b=links.bm25_b,
        passage_words=links.passage_words,
    )
    return linker.fit(rec_mod.load_store(store))


def _current_texts(store: Store, model_id: str) -> list[tuple[str, int, str, str]]:
    """(record_id, theme_id, clean_text, clean_hash) of every record assigned now."""
    j = assignments.join(clean_texts, clean_texts.c.record_id == assignments.c.record_id)
    q = (
        sa.select(
            assignments.c.record_id,
            assignments.c.theme_id,
            clean_texts.c.clean_text,
            clean_texts.c.clean_hash,
        )
        .select_from(j)
        .where(assignments.c.model_id == model_id)
        .order_by(assignments.c.record_id)
    )
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(q)]


def _fingerprint(parts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\x1e")
    return h.hexdigest()[:24]


def _get_state(store: Store, key: str) -> str | None:
    with store.connect() as conn:
        row = conn.execute(sa.select(link_state.c.value).where(link_state.c.key == key)).first()
    return row[0] if row else None


def update_links(store: Store, settings: Settings, *, embedder: Any = None) -> dict[str, Any]:
    """Recompute case and theme links when themes, records or the corpus changed.

    Returns a small summary: whether links were recomputed (and why not), corpus size,
    records and themes linked, strong links, and the sets loaded from the config folder.
    """
    ensure_tables(store)
    links = settings.links
    synced = rec_mod.sync_dir(store, links.recommendations_dir)
    recs = rec_mod.load_store(store)
    summary: dict[str, Any] = {
        "recommendations": len(recs),
        "config_sets": {k: synced[k] for k in ("inserted", "updated", "unchanged", "rejected")},
        "recomputed": False,
    }
    if synced["rejected"]:
        summary["config_rejects"] = synced["reasons"]
    active = store.active_model()
    if not recs or active is None:
        summary["reason"] = "no recommendations" if not recs else "no theme model yet"
        return summary
    rows = _current_texts(store, active["model_id"])
    fingerprint = _fingerprint(
        [
            active["model_id"],
            rec_mod.corpus_hash(recs),
            settings.section_hash("links", "embed"),
            f"scoring {SCORING_VERSION}",
            *(f"{rid}:{tid}:{h}" for rid, tid, _, h in rows),
        ]
    )
    if _get_state(store, "fingerprint") == fingerprint:
        summary["reason"] = "themes, records and recommendations unchanged"
        return summary
    linker = build_linker(store, settings, embedder=embedder)
    result = compute_links(linker, rows, links)
    _write(store, linker, active["model_id"], rows, result, links)
    with store.begin() as conn:
        store.upsert(
            conn,
            link_state,
            [{"key": "fingerprint", "value": fingerprint, "updated_at": utcnow()}],
            keys=["key"],
        )
    summary.update(
        recomputed=True,
        records=len(rows),
        themes=len(result["themes"]),
        strong_links=sum(1 for t in result["themes"].values() for x in t if x["strong"]),
    )
    log.info("links: %s", summary)
    return summary


def compute_links(
    linker: Linker, rows: Sequence[tuple[str, int, str, str]], links: LinkSettings
) -> dict[str, Any]:
    """Each case's top recommendations and each theme's ranked recommendations.

    `rows` are (record_id, theme_id, de-identified text, clean hash); theme -1 (outliers)
    gets no theme links. A theme's links are ranked by what its cases match more than the
    trust's cases in general: its score for a recommendation is the mean final score of its
    cases less `links.theme_contrast` times the mean over all rows, so an item that every
    case matches a little (being kept informed, candour) does not top every theme. Its
    probability comes from the linker's calibration of the plain mean (the calibration is
    fitted on single queries, which have no contrast). Records are scored in blocks of
    `BLOCK`, so memory stays bounded for large stores.
    """
    n_recs = len(linker.ids_)
    theme_ids = sorted({tid for _, tid, _, _ in rows if tid >= 0})
    index = {t: i for i, t in enumerate(theme_ids)}
    sums = np.zeros((len(theme_ids), n_recs))
    counts = np.zeros(len(theme_ids))
    all_sum = np.zeros(n_recs)
    case_top: dict[str, list[tuple[int, float]]] = {}
    e = links.evidence_cases
    # per theme: the best e cases for every recommendation (scores and row numbers)
    best_score = {t: np.full((0, n_recs), -np.inf) for t in theme_ids}
    best_row = {t: np.zeros((0, n_recs), dtype=np.int64) for t in theme_ids}
    for start in range(0, len(rows), BLOCK):
        block = rows[start : start + BLOCK]
        scores = linker.score([r[2] for r in block])
        tids = np.array([r[1] for r in block])
        all_sum += scores.sum(axis=0)
        for i, rid in enumerate(r[0] for r in block):
            order = np.argsort(-scores[i])[: links.case_top_k]
            case_top[rid] = [(int(j), float(scores[i, j])) for j in order]
        for tid in set(tids[tids >= 0].tolist()):
            members = np.flatnonzero(tids == tid)
            sums[index[tid]] += scores[members].sum(axis=0)
            counts[index[tid]] += len(members)
            cand_s = np.vstack([best_score[tid], scores[members]])
            cand_r = np.vstack(
                [best_row[tid], np.repeat((start + members)[:, None], n_recs, axis=1)]
            )
            keep = np.argsort(-cand_s, axis=0)[:e]
            best_score[tid] = np.take_along_axis(cand_s, keep, axis=0)
            best_row[tid] = np.take_along_axis(cand_r, keep, axis=0)
    base = all_sum / max(len(rows), 1)
    themes: dict[int, list[dict[str, Any]]] = {}
    for tid, i in index.items():
        mean = sums[i] / max(counts[i], 1)
        lifted = mean - links.theme_contrast * base
        order = np.argsort(-lifted, kind="stable")[: links.theme_top_k]
        probs = linker.weights.probability(mean[order], n_items=n_recs)
        themes[tid] = [
            {
                "rec_index": int(j),
                "score": float(lifted[j]),
                "probability": float(p),
                "strong": bool(p >= links.strong_link_probability),
                "n_cases": int(counts[i]),
                "cases": [
                    (float(best_score[tid][k, j]), int(best_row[tid][k, j]))
                    for k in range(best_score[tid].shape[0])
                ],
            }
            for j, p in zip(order, probs, strict=True)
        ]
    return {"cases": case_top, "themes": themes}


def evidence(
    linker: Linker, case_text: str, rec: Recommendation, *, max_terms: int = 8
) -> dict[str, Any]:
    """Which phrase of a case matches which phrase of a recommendation, and shared words."""
    case_p = passages(case_text, max_words=linker.passage_words)
    rec_p = passages(f"{rec.title}. {rec.text}" if rec.title else rec.text, max_words=30)
    vecs = linker.encoder.encode(case_p + rec_p)
    sims = vecs[: len(case_p)] @ vecs[len(case_p) :].T
    i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
    shared = set(tokens(case_p[i])) & set(tokens(rec_p[j])) or (
        set(tokens(case_text)) & set(tokens(rec.text))
    )
    idf = _idf(linker)
    terms = sorted(shared, key=lambda t: -idf.get(t, 0.0))[:max_terms]
    return {
        "case_phrase": case_p[i],
        "recommendation_phrase": rec_p[j],
        "similarity": round(float(sims[i, j]), 3),
        "shared_terms": terms,
    }


def _idf(linker: Linker) -> dict[str, float]:
    cached = getattr(linker, "_idf_cache", None)
    if cached is None:
        df: dict[str, int] = {}
        for r in linker.recs_:
            for t in set(tokens(r.text)):
                df[t] = df.get(t, 0) + 1
        n = len(linker.recs_)
        cached = {t: float(np.log((n + 1) / (c + 0.5))) for t, c in df.items()}
        linker._idf_cache = cached  # type: ignore[attr-defined]
    return cached


def _write(
    store: Store,
    linker: Linker,
    model_id: str,
    rows: Sequence[tuple[str, int, str, str]],
    result: dict[str, Any],
    links: LinkSettings,
) -> None:
    """Replace case links; upsert theme links by stable id, retire the ones not found now."""
    now = utcnow()
    recs = linker.recs_
    case_rows = [
        {
            "record_id": rid,
            "rec_id": linker.ids_[j],
            "rank": rank,
            "score": round(s, 4),
            "probability": round(float(linker.weights.probability(s, n_items=len(linker.ids_))), 4),
            "clean_hash": h,
            "updated_at": now,
        }
        for rid, _, _, h in rows
        for rank, (j, s) in enumerate(result["cases"].get(rid, []), start=1)
    ]
    with store.connect() as conn:
        first = {
            r[0]: r[1]
            for r in conn.execute(
                sa.select(theme_links_table.c.link_id, theme_links_table.c.first_linked_at)
            )
        }
    theme_rows = []
    for tid, ranked in result["themes"].items():
        for rank, item in enumerate(ranked, start=1):
            rec = recs[item["rec_index"]]
            lid = link_id(tid, rec.id)
            ev = []
            with_phrases = rank <= links.evidence_links or item["strong"]
            for score, row_index in item["cases"] if with_phrases else []:
                rid, _, text, _ = rows[row_index]
                ev.append(
                    {"record_id": rid, "score": round(score, 4), **evidence(linker, text, rec)}
                )
            theme_rows.append(
                {
                    "link_id": lid,
                    "theme_id": tid,
                    "rec_id": rec.id,
                    "model_id": model_id,
                    "rank": rank,
                    "score": round(item["score"], 4),
                    "probability": round(item["probability"], 4),
                    "strong": item["strong"],
                    "n_cases": item["n_cases"],
                    "evidence": json.dumps(ev, ensure_ascii=False),
                    "current": True,
                    "first_linked_at": first.get(lid, now),
                    "updated_at": now,
                }
            )
    with store.begin() as conn:
        conn.execute(case_links_table.delete())
        store.upsert(conn, case_links_table, case_rows, keys=["record_id", "rec_id"])
        conn.execute(theme_links_table.update().values(current=False))
        store.upsert(conn, theme_links_table, theme_rows, keys=["link_id"])


# -- read side ---------------------------------------------------------------------------------
def _recs_by_id(store: Store, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    t = rec_mod.recommendations_table
    with store.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.rec_id.in_(list(set(ids))))).mappings().all()
    return {
        r["rec_id"]: {
            "rec_id": r["rec_id"],
            "source": r["source"],
            "number": r["number"],
            "title": r["title"],
            "text": r["text"],
            "url": r["url"],
            "year": r["year"],
        }
        for r in rows
    }


def _action_summary(actions: list[dict[str, Any]]) -> str:
    if not actions:
        return "no action"
    if any(a["overdue"] for a in actions):
        return "overdue"
    for status in ("in progress", "open", "done", "not applicable"):
        if any(a["status"] == status for a in actions):
            return status
    return actions[-1]["status"]


def theme_links(
    store: Store, theme_id: int, *, actions: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """A theme's ranked recommendations with score, probability, strong flag, evidence and
    the trust's actions on them (`action_status`: no action, open, in progress, done, not
    applicable, or overdue): those on the recommendation for this theme or for no theme.

    `actions` are the actions to show (as `list_actions` gives them; the governance report
    passes them as they stood at its period's end); default: every action, as of today.
    """
    ensure_tables(store)
    t = theme_links_table
    with store.connect() as conn:
        exists = conn.execute(
            sa.select(themes_table.c.theme_id).where(themes_table.c.theme_id == theme_id)
        ).first()
        rows = (
            conn.execute(
                sa.select(t)
                .where(t.c.theme_id == theme_id, t.c.current.is_(True))
                .order_by(t.c.rank)
            )
            .mappings()
            .all()
        )
    if exists is None and not rows:
        raise NotFoundError(f"No theme {theme_id}; `themes themes` lists them.")
    recs = _recs_by_id(store, [r["rec_id"] for r in rows])
    every = list(actions) if actions is not None else list_actions(store) if rows else []
    out = []
    for r in rows:
        acts = [
            a for a in every if a["rec_id"] == r["rec_id"] and a["theme_id"] in (None, theme_id)
        ]
        out.append(
            {
                "link_id": r["link_id"],
                "theme_id": r["theme_id"],
                "rank": r["rank"],
                "score": r["score"],
                "probability": r["probability"],
                "strong": bool(r["strong"]),
                "n_cases": r["n_cases"],
                "recommendation": recs.get(r["rec_id"], {"rec_id": r["rec_id"]}),
                "evidence": json.loads(r["evidence"]),
                "actions": acts,
                "action_status": _action_summary(acts),
                "first_linked_at": r["first_linked_at"].isoformat(timespec="seconds"),
            }
        )
    return out


def case_links(
    store: Store,
    record_id: str,
    *,
    linker: Linker | None = None,
    strong_at: float = 0.5,
) -> dict[str, Any]:
    """A case's top recommendations (from the last link update), with evidence when a
    fitted `linker` is given; a link is strong from probability `strong_at`
    (`links.strong_link_probability`)."""
    ensure_tables(store)
    with store.connect() as conn:
        text_row = conn.execute(
            sa.select(clean_texts.c.clean_text).where(clean_texts.c.record_id == record_id)
        ).first()
        rows = (
            conn.execute(
                sa.select(case_links_table)
                .where(case_links_table.c.record_id == record_id)
                .order_by(case_links_table.c.rank)
            )
            .mappings()
            .all()
        )
    if text_row is None:
        raise NotFoundError(f"No de-identified record '{record_id}'; `themes records` lists them.")
    recs = _recs_by_id(store, [r["rec_id"] for r in rows])
    by_id = {r.id: r for r in linker.recs_} if linker is not None else {}
    out = []
    for r in rows:
        item = {
            "rank": r["rank"],
            "score": r["score"],
            "probability": r["probability"],
            "strong": r["probability"] >= strong_at,
            "recommendation": recs.get(r["rec_id"], {"rec_id": r["rec_id"]}),
        }
        if r["rec_id"] in by_id:
            item["evidence"] = evidence(linker, text_row[0], by_id[r["rec_id"]])
        out.append(item)
    return {"record_id": record_id, "links": out, "computed": bool(rows)}


def flagged_actions(
    store: Store,
    *,
    today: date | None = None,
    actions: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Overdue actions, and current strong theme links with no action recorded.

    `actions` are the actions to judge (as `list_actions` gives them; the governance report
    passes them as they stood at its period's end); default: every action, overdue as of
    `today`. A link is actioned by an action on its recommendation for its theme or for no
    theme.
    """
    ensure_tables(store)
    acts = list(actions) if actions is not None else list_actions(store, today=today)
    acted = {(a["rec_id"], a["theme_id"]) for a in acts}
    t = theme_links_table
    with store.connect() as conn:
        strong = (
            conn.execute(
                sa.select(t.c.link_id, t.c.theme_id, t.c.rec_id, t.c.probability, t.c.rank)
                .where(t.c.current.is_(True), t.c.strong.is_(True))
                .order_by(t.c.theme_id, t.c.rank)
            )
            .mappings()
            .all()
        )
        active = store.active_model()
        labels = dict(
            conn.execute(
                sa.select(themes_table.c.theme_id, themes_table.c.label).where(
                    themes_table.c.model_id == (active["model_id"] if active else None)
                )
            ).all()
        )
    rows = [
        r
        for r in strong
        if (r["rec_id"], None) not in acted and (r["rec_id"], r["theme_id"]) not in acted
    ]
    recs = _recs_by_id(store, [r["rec_id"] for r in rows])
    return {
        "overdue": [a for a in acts if a["overdue"]],
        "strong_without_action": [
            {
                "link_id": r["link_id"],
                "theme_id": r["theme_id"],
                "theme_label": labels.get(r["theme_id"], ""),
                "rec_id": r["rec_id"],
                "title": recs.get(r["rec_id"], {}).get("title", ""),
                "source": recs.get(r["rec_id"], {}).get("source", ""),
                "probability": r["probability"],
            }
            for r in rows
        ],
        "open_statuses": list(OPEN_STATUSES),
    }
