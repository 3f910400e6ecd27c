"""Similar-case search: hybrid BM25 + dense retrieval over de-identified records.

The Python API the CLI and the web app call:

    from themes.search import Searcher
    with Searcher(settings) as searcher:     # opens the store and index, model loaded once
        searcher.search("fell from bed at night", filters=Filters(kind=["incident"]), k=10)
        searcher.similar("INC000123", k=10)

or, for one call, `themes.search.search(text, settings=..., kind=[...], k=10)`.
Every result carries only de-identified text. The JSON shape is in docs/cli.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from themes.errors import ConfigError, NotFoundError, ThemesError
from themes.phrases import rerank_order
from themes.records import check_kind
from themes.search_index import Filters, IndexCorruptError, SearchIndex
from themes.settings import SearchSettings, Settings
from themes.store import (
    Store,
    assignments,
    clean_texts,
    raw_records,
    themes_table,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the JSON shape returned by `Searcher.search` / `similar` (docs/cli.md)."""
METHODS = ("hybrid", "bm25", "dense")
_WORD = re.compile(r"(?u)\b\w\w+\b")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


# -- fusion ----------------------------------------------------------------------------------
def fuse(
    bm25: tuple[np.ndarray, np.ndarray],
    dense: tuple[np.ndarray, np.ndarray],
    *,
    method: str,
    rrf_k: float,
    dense_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse two ranked lists of (positions, scores), best first; returns the fused list.

    `rrf`: weighted reciprocal rank fusion, (1-w)/(k + rank_bm25) + w/(k + rank_dense).
    `convex`: min-max normalised scores, (1-w) * bm25 + w * dense (absent = 0).
    """
    fused: dict[int, float] = {}
    weights = (1.0 - dense_weight, dense_weight)
    for (pos, scores), w in zip((bm25, dense), weights, strict=True):
        if not len(pos):
            continue
        if method == "rrf":
            contrib = w / (rrf_k + np.arange(1, len(pos) + 1))
        elif method == "convex":
            lo, hi = float(np.min(scores)), float(np.max(scores))
            contrib = w * ((scores - lo) / (hi - lo) if hi > lo else np.ones(len(scores)))
        else:
            raise ThemesError(f"search.fusion must be 'rrf' or 'convex', not '{method}'")
        for p, c in zip(pos.tolist(), contrib.tolist(), strict=True):
            fused[p] = fused.get(p, 0.0) + c
    if not fused:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    items = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    return (
        np.array([p for p, _ in items], dtype=np.int64),
        np.array([s for _, s in items], dtype=np.float32),
    )


def rerank(
    index: SearchIndex,
    ranked: tuple[np.ndarray, np.ndarray],
    sequence: np.ndarray,
    settings: SearchSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """A long query's fused list with its top `search.rerank_depth` re-ordered by
    min-max(fused score) + `search.phrase_weight` x min-max(TF-IDF cosine over words and
    adjacent word pairs, `SearchIndex.phrase_cosines`); the rest follow in fused order.

    Scores stay on one scale: the rest get their fused score min-max scaled by the
    re-ranked top's range (at most 0). Weight 0 or a depth below 2 changes nothing.
    """
    positions, scores = ranked
    depth = min(settings.rerank_depth, len(positions))
    if settings.phrase_weight <= 0 or depth < 2 or not len(sequence):
        return ranked
    top = np.asarray(scores[:depth], dtype=np.float64)
    order, mixed = rerank_order(
        top, index.phrase_cosines(sequence, positions[:depth]), settings.phrase_weight
    )
    lo, hi = float(top.min()), float(top.max())
    rest = np.asarray(scores[depth:], dtype=np.float64) - lo
    rest = rest / (hi - lo) if hi > lo else rest
    return (
        np.concatenate([positions[:depth][order], positions[depth:]]),
        np.concatenate([mixed[order], rest]).astype(np.float32),
    )


def fusion_weight(settings: SearchSettings, *, long: bool) -> float:
    """The dense side's weight in the fusion: `search.long_query_dense_weight` (when set)
    for a long query, one whose BM25 terms are weighted (`query_weights`), else
    `search.dense_weight`."""
    if long and settings.long_query_dense_weight is not None:
        return settings.long_query_dense_weight
    return settings.dense_weight


def retrieve(
    index: SearchIndex,
    *,
    tokens: Sequence[int],
    vector: np.ndarray | Callable[[], np.ndarray] | None,
    settings: SearchSettings,
    n: int,
    filters: Filters | None = None,
    method: str = "hybrid",
    exclude: int | None = None,
    worker: QueryEmbedder | None = None,
    weights: np.ndarray | None = None,
    sequence: np.ndarray | None = None,
) -> list[tuple[int, float, int | None, int | None]]:
    """Ranked (position, score, bm25 rank, dense rank) for a query, filtered, best first.

    `weights` (one per token) weight the query's terms in BM25; None counts each once.
    A weighted query is a long one, and fuses with its own dense weight (`fusion_weight`);
    its fused list is then re-ranked with word-pair evidence (`rerank`) from `sequence`,
    the query's token ids in order (`SearchIndex.query_sequence` or `sequence_of`).

    `vector` may be a callable (e.g. a pending embedding's `Future.result`): it is called
    only after the filter mask is ready, so the query can be embedded meanwhile. With a
    `worker` (the query embedder that is computing it), the dense search also runs on
    the worker's thread, right after the embedding, while BM25 runs on this one (the
    rows of a filter small enough to be searched exactly are gathered on this one first).
    """
    if method not in METHODS:
        raise ThemesError(f"Unknown search method '{method}'; use one of {', '.join(METHODS)}.")
    mask = index.mask(filters)
    extra = 1 if exclude is not None else 0
    pool = max(settings.candidates, n) + extra
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
    dense_job = None
    if method != "bm25" and callable(vector) and worker is not None:
        pending = vector
        search = index.dense_search(n=pool, mask=mask)  # gathers a small filter's rows now
        dense_job = worker.run(lambda: search(pending()))
    lexical = index.bm25(tokens, n=pool, mask=mask, weights=weights) if method != "dense" else empty
    if dense_job is not None:
        semantic = dense_job.result()
    else:
        if callable(vector):
            vector = vector() if method != "bm25" else None
        semantic = (
            index.dense(vector, n=pool, mask=mask)
            if method != "bm25" and vector is not None
            else empty
        )
    if method == "bm25":
        ranked = lexical
    elif method == "dense":
        ranked = semantic
    else:
        ranked = fuse(
            lexical,
            semantic,
            method=settings.fusion,
            rrf_k=settings.rrf_k,
            dense_weight=fusion_weight(settings, long=weights is not None),
        )
    if exclude is not None:  # before the re-ranking, whose min-max scaling it would skew
        keep = ranked[0] != exclude
        ranked = (ranked[0][keep], ranked[1][keep])
    if method == "hybrid" and weights is not None and sequence is not None:
        ranked = rerank(index, ranked, sequence, settings)
    b_rank = {int(p): r for r, p in enumerate(lexical[0].tolist(), start=1)}
    d_rank = {int(p): r for r, p in enumerate(semantic[0].tolist(), start=1)}
    out = [
        (p, float(s), b_rank.get(p), d_rank.get(p))
        for p, s in zip(ranked[0].tolist(), ranked[1].tolist(), strict=True)
    ]
    return out[:n]


# -- snippets --------------------------------------------------------------------------------
def snippet(text: str, terms: set[str], *, width: int = 240) -> tuple[str, list[list[int]]]:
    """The window of `text` with the most query terms, and [start, end] spans of each term.

    Terms are lower-case words; a text shorter than `width` is returned whole.
    """
    words = [(m.start(), m.end()) for m in _WORD.finditer(text) if m.group().lower() in terms]
    start = 0
    if len(text) > width and words:
        best, j = 0, 0
        for i, (s, _) in enumerate(words):
            while words[j][0] < s - width + 40:
                j += 1
            if i - j + 1 > best:
                best, start = i - j + 1, max(0, words[j][0] - 40)
        while start > 0 and not text[start - 1].isspace():
            start -= 1
    end = min(len(text), start + width)
    while end < len(text) and not text[end - 1].isspace() and end - start < width + 30:
        end += 1
    piece = text[start:end]
    spans = [[s - start, e - start] for s, e in words if s >= start and e <= end]
    lead = "…" if start > 0 else ""
    tail = "…" if end < len(text) else ""
    shift = len(lead)
    flat = (lead + piece + tail).replace("\n", " ")
    return flat, [[a + shift, b + shift] for a, b in spans]


# -- the store side --------------------------------------------------------------------------
def index_path(settings: Settings) -> Path:
    """Where the search index lives (beside the store unless search.index_dir says)."""
    return settings.search.index_dir or settings.paths.data_dir / "search_index"


def current_records(store: Store) -> pd.DataFrame:
    """Every record with up-to-date clean text: id, clean hash, filter fields, theme.

    `harm` is the factors step's LFPSE level for the record's current clean text (None
    when the step has not judged it yet)."""
    from themes.factors import case_impacts
    from themes.factors import ensure_tables as ensure_factor_tables

    ensure_factor_tables(store)
    active = store.active_model()
    model_id = active["model_id"] if active else None
    a = assignments
    j = raw_records.join(clean_texts, clean_texts.c.record_id == raw_records.c.record_id)
    j = j.outerjoin(a, sa.and_(a.c.record_id == raw_records.c.record_id, a.c.model_id == model_id))
    # the harm level only while it was judged on the record's current clean text
    j = j.outerjoin(
        case_impacts,
        sa.and_(
            case_impacts.c.record_id == raw_records.c.record_id,
            case_impacts.c.clean_hash == clean_texts.c.clean_hash,
        ),
    )
    q = (
        sa.select(
            raw_records.c.record_id,
            clean_texts.c.clean_hash,
            raw_records.c.kind,
            raw_records.c.event_date,
            raw_records.c.site,
            raw_records.c.location,
            raw_records.c.specialty,
            raw_records.c.severity,
            raw_records.c.status,
            case_impacts.c.harm_level,
            a.c.theme_id,
        )
        .select_from(j)
        .where(clean_texts.c.raw_hash == raw_records.c.raw_hash)
        .order_by(raw_records.c.record_id)
    )
    with store.connect() as conn:
        rows = conn.execute(q).all()
    cols = ["record_id", "clean_hash", "kind", "event_date", "site", "location", "specialty"]
    cols += ["severity", "status", "harm", "theme_id"]
    return pd.DataFrame(rows, columns=cols)


def _clean_text_of(store: Store, ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    with store.connect() as conn:
        for start in range(0, len(ids), 900):
            q = sa.select(clean_texts.c.record_id, clean_texts.c.clean_text).where(
                clean_texts.c.record_id.in_(list(ids[start : start + 900]))
            )
            out.update({r[0]: r[1] for r in conn.execute(q)})
    return out


def _vectors_of(
    store: Store, model_id: str, ids: list[str], hashes: dict[str, str]
) -> tuple[list[str], np.ndarray, list[str]]:
    """Cached embeddings of the records, read in slices into one float16 array.

    Returns (ids that have a vector, their vectors, ids without one).
    """
    found: list[str] = []
    missing: list[str] = []
    parts: list[np.ndarray] = []
    for start in range(0, len(ids), 50_000):
        part = ids[start : start + 50_000]
        vectors = store.get_embeddings(model_id, [hashes[r] for r in part])
        have = [r for r in part if hashes[r] in vectors]
        missing += [r for r in part if hashes[r] not in vectors]
        if have:
            parts.append(np.stack([vectors[hashes[r]] for r in have]).astype(np.float16))
        found += have
    dim = parts[0].shape[1] if parts else 0
    return found, (np.concatenate(parts) if parts else np.zeros((0, dim), np.float16)), missing


T = TypeVar("T")


class QueryEmbedder:
    """Embeds one query at a time on a worker thread, so BM25 runs while the model does.

    On a 2-core machine a short query gains little from a second thread, but the filter
    mask and BM25 (numpy and numba, which release the GIL) fit on the other core.

    Args:
        embedder: Has `encode(texts)`, and optionally `encode_one(text)` (a faster path).
        threads: Torch threads for the query's forward pass.
        encoder: Embeds one text instead of `embedder` (e.g. an `OnnxQueryEncoder`).
    """

    def __init__(self, embedder: Any, threads: int = 1, encoder: Any = None) -> None:
        self.embedder = embedder
        self.threads = threads
        self.encoder = encoder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="themes-query")

    @property
    def encoder_threads(self) -> int:
        """Threads one query's forward pass uses."""
        if self.encoder is None:
            return self.threads
        return int(self.encoder.session.get_session_options().intra_op_num_threads)

    @property
    def backend(self) -> str:
        """ "onnx" when queries go through ONNX Runtime, else "torch"."""
        return "torch" if self.encoder is None else "onnx"

    def _encode(self, text: str) -> np.ndarray:
        if self.encoder is not None:
            return np.asarray(self.encoder.encode_one(text), dtype=np.float32)
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            one = getattr(self.embedder, "encode_one", None)
            vec = one(text) if one is not None else self.embedder.encode([text])[0]
            return np.asarray(vec, dtype=np.float32)
        finally:
            torch.set_num_threads(before)

    def submit(self, text: str) -> Future[np.ndarray]:
        """Start embedding `text`; the future's result is its L2-normalised vector."""
        return self._pool.submit(self._encode, text)

    def run(self, job: Callable[[], T]) -> Future[T]:
        """Run `job` on the worker thread after what was submitted before it."""
        return self._pool.submit(job)

    def __call__(self, text: str) -> np.ndarray:
        return self.submit(text).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_query_embedder(embedder: Any, settings: Settings) -> QueryEmbedder:
    """The query path `search.query_encoder` asks for, on its worker thread.

    "onnx" (the default) builds an `OnnxQueryEncoder` from a sentence-transformers
    embedder; if that fails, or the embedder is another kind, queries use the embedder
    itself, with a warning naming the reason.
    """
    from themes.embed import OnnxQueryEncoder, SentenceTransformerEmbedder

    threads = settings.search.query_threads
    encoder = None
    if settings.search.query_encoder == "onnx":
        if isinstance(embedder, SentenceTransformerEmbedder):
            try:
                encoder = OnnxQueryEncoder.build(
                    embedder,
                    settings.paths.data_dir / "query_encoder",
                    threads=threads or min(4, available_cores()),
                )
            except ConfigError as e:
                log.warning("search.query_encoder is onnx but %s; queries use torch", e)
        else:
            log.info("queries use %s (not a sentence-transformers model)", type(embedder).__name__)
    return QueryEmbedder(embedder, threads=threads or 1, encoder=encoder)


def text_query(
    index: SearchIndex,
    text: str,
    *,
    embed: QueryEmbedder | None,
    settings: SearchSettings,
    n: int,
    filters: Filters | None = None,
    method: str = "hybrid",
) -> tuple[list[int], list[tuple[int, float, int | None, int | None]]]:
    """A free-text query end to end: (its BM25 token ids, ranked hits as `retrieve`).

    The query is embedded, then searched densely, on `embed`'s worker thread while the
    mask and BM25 are computed on this one. A long query (`query_weights`) has its terms
    weighted in BM25.
    """
    pending = embed.submit(text) if embed is not None and method != "bm25" else None
    sequence = index.query_sequence(text)
    tokens, weights = lexical_query(index, text, settings, sequence=sequence)
    hits = retrieve(
        index,
        tokens=tokens,
        vector=pending.result if pending is not None else None,
        settings=settings,
        n=n,
        filters=filters,
        method=method,
        worker=embed,
        weights=weights,
        sequence=sequence,
    )
    return tokens, hits


def lexical_query(
    index: SearchIndex,
    text: str,
    settings: SearchSettings,
    *,
    sequence: np.ndarray | None = None,
) -> tuple[list[int], np.ndarray | None]:
    """A free-text query's BM25 terms (token ids) and their weights (`query_weights`);
    `sequence` is the text's `SearchIndex.query_sequence` when already computed."""
    if sequence is None:
        sequence = index.query_sequence(text)
    tokens, counts = index.sequence_terms(sequence)
    return tokens, query_weights(index, tokens, counts, settings)


def is_long_query(n_terms: int, settings: SearchSettings) -> bool:
    """Whether a query of `n_terms` distinct indexed words reaches
    `search.long_query_terms`, so that BM25 weights its terms (0: every query does)."""
    return n_terms >= max(1, settings.long_query_terms)


def query_weights(
    index: SearchIndex, tokens: Sequence[int], counts: Sequence[int], settings: SearchSettings
) -> np.ndarray | None:
    """BM25 weights of a query's terms: TF-IDF weights (`SearchIndex.term_weights`) for a
    query of at least `search.long_query_terms` distinct words, else None (each counts once).

    A few typed words are all meant; in a pasted narrative of dozens of words the common
    ones ("bed", "night", "family") would otherwise count as much as the specific ones.
    """
    if not is_long_query(len(tokens), settings):
        return None
    return index.term_weights(tokens, counts)


SIMILAR_TERMS = 64
"""How many of a record's terms "more like this" queries BM25 with: a long record's every
word would be slow on a large index and drown the specific ones (Lucene's default is 25)."""


def similar_terms(
    index: SearchIndex,
    pos: int,
    settings: SearchSettings,
    limit: int = SIMILAR_TERMS,
) -> tuple[list[int], np.ndarray | None]:
    """The BM25 query of "more like this" for the indexed record at `pos`: its terms that
    some other record also uses, and their weights.

    A record with at least `search.long_query_terms` such terms keeps the `limit` with
    the highest TF-IDF weight, (1 + ln count) x idf, weighted as a long typed query is
    (`query_weights`); a shorter record is every term once, as a short query is.
    """
    tokens, counts = index.record_terms(pos)
    frequency = index.document_frequency()
    if not tokens or not len(frequency):
        return [], None
    df = frequency[np.asarray(tokens, dtype=np.int64)]
    shared = df > 1  # a word only this record uses matches nothing else
    tok = np.asarray(tokens, dtype=np.int64)[shared]
    cnt = np.asarray(counts, dtype=np.int64)[shared]
    weights = query_weights(index, tok.tolist(), cnt.tolist(), settings)
    if weights is None:
        return tok.tolist(), None
    top = np.argsort(-weights, kind="stable")[:limit]
    kept = weights[top]  # scaled to mean 1 again over the terms kept, as `term_weights` does
    return tok[top].tolist(), (kept / kept.mean()).astype(np.float32)


def new_index(settings: SearchSettings) -> SearchIndex:
    """An unfitted index with the configured parameters."""
    return SearchIndex(
        ann_min_records=settings.ann_min_records,
        ann_connectivity=settings.ann_connectivity,
        ann_expansion_add=settings.ann_expansion_add,
        ann_expansion_search=settings.ann_expansion_search,
        ann_dtype=settings.ann_dtype,
        prefilter_max_records=settings.prefilter_max_records,
        bm25_k1=settings.bm25_k1,
        bm25_b=settings.bm25_b,
    )


@dataclass
class IndexUpdate:
    """What `update_index` did."""

    records: int
    added: int
    removed: int
    rebuilt: bool
    reason: str
    mode: str
    changed_ids: list[str]
    not_embedded: int
    meta_changed_ids: list[str] = field(default_factory=list)
    """Records whose text is unchanged but whose filter fields or event date changed (a
    corrected severity, a harm level judged since): their near-duplicate pairs are
    re-checked too."""

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["changed_ids"] = len(self.changed_ids)
        d["meta_changed_ids"] = len(self.meta_changed_ids)
        return d


def _build_structural_params(s: SearchSettings) -> dict[str, Any]:
    return {"ann_connectivity": s.ann_connectivity, "ann_dtype": s.ann_dtype}


def load_index(settings: Settings, *, read_only: bool = False) -> tuple[SearchIndex | None, str]:
    """The saved index (query-time settings applied) or None with the reason it is unusable.

    `read_only` memory-maps its large parts for serving (see `SearchIndex.load`).
    """
    path = index_path(settings)
    if not (path / "manifest.json").is_file():
        return None, f"no search index at {path}"
    s = settings.search
    try:
        index = SearchIndex.load(
            path,
            read_only=read_only,
            ann_min_records=s.ann_min_records,
            ann_expansion_search=s.ann_expansion_search,
            prefilter_max_records=s.prefilter_max_records,
        )
    except IndexCorruptError as e:
        return None, f"search index at {path} is corrupt ({e})"
    if index.model_id_ != settings.embed.model_id:
        return None, f"search index was built with {index.model_id_}, not {settings.embed.model_id}"
    saved = {k: v for k, v in index._params().items() if k in ("ann_connectivity", "ann_dtype")}
    if saved != _build_structural_params(s):
        return None, f"search index was built with {saved}; settings now ask for another graph"
    if (index.bm25_k1, index.bm25_b) != (s.bm25_k1, s.bm25_b):
        index.bm25_k1, index.bm25_b = s.bm25_k1, s.bm25_b
        index._build_bm25()
    return index, "loaded"


def update_index(store: Store, settings: Settings) -> tuple[SearchIndex, IndexUpdate]:
    """Bring the saved index up to date with the store: new and changed records only.

    A missing index is built from the store; a corrupt or incompatible one is rebuilt
    with a warning. Vectors come from the embeddings cache (the embed step computed them).
    """
    path = index_path(settings)
    current = current_records(store)
    first = not (path / "manifest.json").is_file()
    index, reason = load_index(settings)
    rebuilt = index is None
    if rebuilt:
        if first:
            log.info("building the search index at %s (%d records)", path, len(current))
        else:
            log.warning("%s; rebuilding it from the store (%d records)", reason, len(current))
        indexed: dict[str, str] = {}
    else:
        indexed = dict(zip(index.ids_.tolist(), index.hashes_.tolist(), strict=True))
    hashes = dict(zip(current["record_id"], current["clean_hash"], strict=True))
    keep = [rid for rid, h in hashes.items() if indexed.get(rid) == h]
    todo = [rid for rid, h in hashes.items() if indexed.get(rid) != h]
    todo, new_vectors, missing = _vectors_of(store, settings.embed.model_id, todo, hashes)
    if missing:
        log.warning(
            "%d records have no embedding yet (e.g. %s); they join the search index on the "
            "next run",
            len(missing),
            missing[:3],
        )
    texts = _clean_text_of(store, todo)
    meta = current[current["record_id"].isin(set(keep) | set(todo))]
    if rebuilt:
        index = new_index(settings.search).fit(
            todo,
            [hashes[r] for r in todo],
            [texts[r] for r in todo],
            new_vectors,
            meta,
            model_id=settings.embed.model_id,
        )
        removed = 0
        meta_changed: list[str] = []
    else:
        removed = len(indexed) - len(keep)
        meta_changed = index.meta_changed(meta, keep)
        index.update(
            keep, todo, [hashes[r] for r in todo], [texts[r] for r in todo], new_vectors, meta
        )
    index.save(path)
    info = IndexUpdate(
        records=index.size,
        added=len(todo),
        removed=removed,
        rebuilt=rebuilt,
        reason=reason,
        mode=index.mode,
        changed_ids=todo,
        not_embedded=len(missing),
        meta_changed_ids=meta_changed,
    )
    log.info(
        "search index: %d records (%s), %d added or changed, %d removed",
        info.records,
        info.mode,
        info.added,
        info.removed,
    )
    return index, info


def refresh(settings: Settings) -> dict[str, Any]:
    """The nightly step: update the search index, then the near-duplicate pairs."""
    from themes.duplicates import update_duplicates
    from themes.steps import open_store

    store = open_store(settings)
    index, info = update_index(store, settings)
    dups = update_duplicates(
        store, index, settings.search, changed_ids=[*info.changed_ids, *info.meta_changed_ids]
    )
    return {**info.as_dict(), "duplicates": dups}


# -- the searcher ----------------------------------------------------------------------------
class Searcher:
    """Search and "more like this" over the store's index; open once, query many times.

    Args:
        settings: The product settings (store, paths, embed and search sections are used).
        store: An open store (default: open the configured one).
        embedder: Embeds query text (default: the configured sentence-transformers model).
    """

    def __init__(self, settings: Settings, *, store: Store | None = None, embedder: Any = None):
        from themes.steps import open_store

        self.settings = settings
        self._owns_store = store is None
        self.store = store or open_store(settings)
        self._embedder = embedder
        index, reason = load_index(settings, read_only=True)
        if index is None:
            index, _ = update_index(self.store, settings)
        self.index = index
        self._query_embedder: QueryEmbedder | None = None

    def close(self) -> None:
        """Stop the query worker thread, and close the store if this searcher opened it."""
        if self._query_embedder is not None:
            self._query_embedder.close()
            self._query_embedder = None
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from themes.embed import SentenceTransformerEmbedder

            self._embedder = SentenceTransformerEmbedder(self.settings.embed)
        return self._embedder

    @property
    def query_embedder(self) -> QueryEmbedder:
        if self._query_embedder is None:
            self._query_embedder = make_query_embedder(self.embedder, self.settings)
        return self._query_embedder

    def embed_query(self, text: str) -> np.ndarray:
        """The query's vector (`search.query_encoder`, `search.query_threads`)."""
        return self.query_embedder(text)

    def search(
        self,
        text: str,
        *,
        filters: Filters | None = None,
        k: int = 10,
        offset: int = 0,
        method: str = "hybrid",
    ) -> dict[str, Any]:
        """Records like a free-text description, best first (see docs/cli.md for the shape)."""
        if not text.strip():
            raise ThemesError("The search text is empty; describe the event to look for.")
        filters = self._check(filters)
        tokens, hits = text_query(
            self.index,
            text,
            embed=self.query_embedder if method != "bm25" else None,
            settings=self.settings.search,
            n=offset + k + 1,
            filters=filters,
            method=method,
        )
        terms = {w.lower() for w in _WORD.findall(text)} & self._vocab_terms(tokens)
        return self._response({"text": text}, hits, terms, filters, k, offset, method)

    def similar(
        self,
        record_id: str,
        *,
        filters: Filters | None = None,
        k: int = 10,
        offset: int = 0,
        method: str = "hybrid",
    ) -> dict[str, Any]:
        """Records like an indexed record ("more like this"), the record itself left out."""
        filters = self._check(filters)
        pos = self.index.position(record_id)
        if pos is None:
            raise NotFoundError(
                f"Record '{record_id}' is not in the search index (unknown id, or not yet "
                "de-identified and embedded: run `themes run`)."
            )
        tokens, weights = similar_terms(self.index, pos, self.settings.search)
        vector = np.asarray(self.index.vectors_[pos], dtype=np.float32)
        hits = retrieve(
            self.index,
            tokens=tokens,
            weights=weights,
            vector=vector,
            settings=self.settings.search,
            n=offset + k + 1,
            filters=filters,
            method=method,
            exclude=pos,
            sequence=self.index.sequence_of(pos),
        )
        terms = self._vocab_terms(tokens)
        return self._response({"record_id": record_id}, hits, terms, filters, k, offset, method)

    def _check(self, filters: Filters | None) -> Filters | None:
        """Refuse filters no record can match by mistake (see `check_filters`), theme ids
        that are not themes of the active model and harm levels the harm scheme lacks;
        return the filters with each harm value as its level id."""
        from themes.queries import check_theme_ids

        if filters is None:
            return None
        check_filters(filters)
        if filters.theme is not None:
            check_theme_ids(self.store, filters.theme)
        if filters.harm is not None:
            filters = replace(filters, harm=[self._harm_level(v) for v in filters.harm])
        return filters

    def _harm_level(self, value: str) -> str:
        """The harm level id `value` names: the id ("moderate"), its label ("Moderate
        harm") or a severity value the scheme maps ("minor"), in any case."""
        from themes.harm import load_harm_scheme

        path = self.settings.factors.harm_file
        scheme = getattr(self, "_harm_scheme", None)
        if scheme is None:
            scheme = self._harm_scheme = load_harm_scheme(path)
        level = scheme.level_named(str(value))
        if level is None:
            raise ThemesError(
                f"--harm '{value}' is not a harm level; use one of "
                f"{', '.join(scheme.levels)} (or a label or severity value from {path})."
            )
        return level

    def _vocab_terms(self, tokens: Sequence[int]) -> set[str]:
        inverse = getattr(self, "_inverse", None)
        if inverse is None:
            inverse = {v: k for k, v in self.index.tokenizer_.get_vocab_dict().items()}
            self._inverse = inverse
        return {inverse[t] for t in tokens if t in inverse}

    def _response(
        self,
        query: dict[str, Any],
        hits: list[tuple[int, float, int | None, int | None]],
        terms: set[str],
        filters: Filters | None,
        k: int,
        offset: int,
        method: str,
    ) -> dict[str, Any]:
        page = hits[offset : offset + k]
        ids = [str(self.index.ids_[p]) for p, *_ in page]
        details = record_details(self.store, ids)
        width = self.settings.search.snippet_chars
        results = []
        for rank, ((_, score, b_rank, d_rank), rid) in enumerate(
            zip(page, ids, strict=True), start=offset + 1
        ):
            d = details.get(rid)
            if d is None:  # deleted since the index was built
                continue
            snip, spans = snippet(d.pop("text"), terms, width=width)
            results.append(
                {
                    "rank": rank,
                    **d,
                    "score": round(score, 6),
                    "bm25_rank": b_rank,
                    "dense_rank": d_rank,
                    "snippet": snip,
                    "highlights": spans,
                }
            )
        return {
            "schema_version": SCHEMA_VERSION,
            "query": query,
            "method": method,
            "filters": (filters or Filters()).as_dict(),
            "k": k,
            "offset": offset,
            "next_offset": offset + k if len(hits) > offset + k else None,
            "index": {"records": self.index.size, "mode": self.index.mode},
            "results": results,
        }


def record_details(store: Store, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """De-identified text, filter fields, harm level and current theme of the given records.

    `harm` is the factors step's LFPSE level for the record's current clean text (None
    where the step has not judged it, or has never run on this store)."""
    from themes.factors import case_impacts

    if not ids:
        return {}
    active = store.active_model()
    model_id = active["model_id"] if active else None
    a = assignments
    j = raw_records.join(clean_texts, clean_texts.c.record_id == raw_records.c.record_id)
    j = j.outerjoin(a, sa.and_(a.c.record_id == raw_records.c.record_id, a.c.model_id == model_id))
    j = j.outerjoin(
        themes_table,
        sa.and_(themes_table.c.model_id == model_id, themes_table.c.theme_id == a.c.theme_id),
    )
    # a reader creates no tables: without the factors step's table there is no harm level
    with_harm = sa.inspect(store.engine).has_table(case_impacts.name)
    harm: Any = sa.null()
    if with_harm:
        j = j.outerjoin(
            case_impacts,
            sa.and_(
                case_impacts.c.record_id == raw_records.c.record_id,
                case_impacts.c.clean_hash == clean_texts.c.clean_hash,
            ),
        )
        harm = case_impacts.c.harm_level
    q = (
        sa.select(
            raw_records.c.record_id,
            raw_records.c.kind,
            raw_records.c.event_date,
            raw_records.c.site,
            raw_records.c.location,
            raw_records.c.specialty,
            raw_records.c.severity,
            raw_records.c.status,
            a.c.theme_id,
            themes_table.c.label,
            clean_texts.c.clean_text,
            harm,
        )
        .select_from(j)
        .where(raw_records.c.record_id.in_(list(ids)))
    )
    with store.connect() as conn:
        rows = conn.execute(q).all()
    return {
        r[0]: {
            "record_id": r[0],
            "kind": r[1],
            "event_date": r[2].isoformat(),
            "site": r[3],
            "location": r[4],
            "specialty": r[5],
            "severity": r[6],
            "harm": r[11],
            "status": r[7],
            "theme_id": r[8],
            "theme_label": r[9],
            "text": r[10],
        }
        for r in rows
    }


def make_filters(
    *,
    kind: Sequence[str] | str | None = None,
    since: date | str | None = None,
    until: date | str | None = None,
    site: Sequence[str] | str | None = None,
    location: Sequence[str] | str | None = None,
    specialty: Sequence[str] | str | None = None,
    severity: Sequence[str] | str | None = None,
    status: Sequence[str] | str | None = None,
    harm: Sequence[str] | str | None = None,
    theme: Sequence[int] | int | None = None,
) -> Filters:
    """Filters from loose arguments: a single value or a list; dates as YYYY-MM-DD too.

    An unknown kind, a malformed date or `since` after `until` is a ThemesError naming the
    option and the value.
    """

    def many(v: Any) -> list[Any] | None:
        if v is None:
            return None
        return [v] if isinstance(v, str | int) else list(v)

    def day(v: date | str | None, name: str) -> date | None:
        if v is None or isinstance(v, date):
            return v
        bad = ThemesError(f"--{name} '{v}' is not a date; use YYYY-MM-DD.")
        if not _ISO_DAY.fullmatch(v.strip()):
            raise bad
        try:
            return date.fromisoformat(v.strip())
        except ValueError as e:
            raise bad from e

    return check_filters(
        Filters(
            kind=many(kind),
            site=many(site),
            location=many(location),
            specialty=many(specialty),
            severity=many(severity),
            status=many(status),
            harm=many(harm),
            theme=many(theme),
            since=day(since, "since"),
            until=day(until, "until"),
        )
    )


def check_filters(filters: Filters) -> Filters:
    """`filters`, if each kind is a record kind and `since` is not after `until`; else a
    ThemesError naming the option and the value."""
    for k in filters.kind or ():
        check_kind(k)
    if filters.since is not None and filters.until is not None and filters.since > filters.until:
        raise ThemesError(
            f"--since {filters.since.isoformat()} is after --until {filters.until.isoformat()}; "
            "no record can match."
        )
    return filters


def search(
    text: str,
    *,
    settings: Settings | None = None,
    k: int = 10,
    offset: int = 0,
    method: str = "hybrid",
    **filters: Any,
) -> dict[str, Any]:
    """One search with the configured store and index (opens them; see `Searcher`)."""
    from themes.settings import load_settings

    checked = make_filters(**filters)  # a bad filter fails before the index is opened
    with Searcher(settings or load_settings()) as searcher:
        return searcher.search(text, filters=checked, k=k, offset=offset, method=method)


def search_summary(store: Store, settings: Settings) -> dict[str, Any]:
    """Small facts for the governance report: index size and mode, duplicate groups."""
    from themes.duplicates import duplicate_groups

    path = index_path(settings)
    manifest: dict[str, Any] = {}
    if (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
    groups = duplicate_groups(store, limit=None)
    return {
        "indexed_records": manifest.get("records", 0),
        "mode": "ann" if manifest.get("ann") else "exact",
        "duplicate_groups": len(groups),
        "records_in_duplicate_groups": sum(len(g["records"]) for g in groups),
        "groups": groups[:10],
    }
