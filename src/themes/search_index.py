"""The similar-case search index: BM25 (bm25s) and dense vectors (exact, or usearch ANN).

One `SearchIndex` holds, for every indexed record, its id, the hash of its de-identified
text, the structured fields investigators filter on, its embedding and its BM25 tokens.
It is saved as a directory beside the store and updated incrementally: only new and
changed records are tokenised and added to the ANN graph; BM25 weights and the word-pair
document frequencies (`themes.phrases`, for re-ranking long queries) are recomputed from
the cached token ids (both depend on the whole collection).

Dense search is exact below `ann_min_records` and approximate (usearch HNSW) above it;
a filter that keeps few records is searched exactly over just those records
(pre-filter), otherwise the ANN result is over-fetched and filtered.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from themes.errors import NotFittedError, ThemesError
from themes.phrases import PhraseTable
from themes.phrases import cosines as phrase_cosines
from themes.records import IDENTIFIER_TYPES

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
"""2: adds the word-pair table (phrase_codes.npy, phrase_df.npy; themes.phrases).
3: adds the harm level (`harm`) to the filter fields."""
META_COLUMNS: tuple[str, ...] = (
    "kind",
    "site",
    "location",
    "specialty",
    "severity",
    "status",
    "harm",
)
"""Text fields a search can be filtered on (besides date and theme). `harm` is the LFPSE
level id the factors step gives each record (`case_impacts.harm_level`: from the severity
field, or estimated from the text where it is blank; "" before the step has run)."""
EPOCH = np.datetime64("1970-01-01", "D")
OVERFETCH = 1.2
"""A filtered ANN search first asks for this many times (wanted / share of records kept)."""
EXACT_BLOCK = 65_536
"""An exact search scores the records' vectors this many rows at a time."""


class IndexCorruptError(ThemesError):
    """A saved search index is missing, incomplete or does not match its manifest."""


def _field_values(column: pd.Series) -> pd.Series:
    """A filter field as the index holds it: stripped, lower case, "" where blank."""
    return column.fillna("").astype(str).str.strip().str.lower()


def _event_days(column: pd.Series) -> np.ndarray:
    """Event dates as days since 1970-01-01 (int32), as the index holds them."""
    days = pd.to_datetime(column).to_numpy(dtype="datetime64[D]")
    return (days - EPOCH).astype(np.int32)


@dataclass(frozen=True)
class Filters:
    """What investigators filter on; None means no filter on that field.

    Text fields match exactly, ignoring case; a list matches any of its values.
    """

    kind: Sequence[str] | None = None
    site: Sequence[str] | None = None
    location: Sequence[str] | None = None
    specialty: Sequence[str] | None = None
    severity: Sequence[str] | None = None
    status: Sequence[str] | None = None
    harm: Sequence[str] | None = None
    theme: Sequence[int] | None = None
    since: date | None = None
    until: date | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__dataclass_fields__)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            out[name] = value.isoformat() if isinstance(value, date) else list(value)
        return out


def tokenizer_stopwords() -> list[str]:
    """English stop words plus the de-identification placeholders ("[PERSON]" -> person)."""
    from bm25s.stopwords import STOPWORDS_EN

    return sorted(set(STOPWORDS_EN) | {t.lower() for t in IDENTIFIER_TYPES})


class SearchIndex:
    """Hybrid retrieval over de-identified records (scikit-learn style: `fit`, then query).

    Args:
        ann_min_records: Collections at least this large get a usearch HNSW index.
        ann_connectivity: HNSW graph degree (usearch `connectivity`).
        ann_expansion_add: usearch `expansion_add` (build quality).
        ann_expansion_search: usearch `expansion_search` (query quality).
        ann_dtype: How usearch stores vectors ("f32", "f16", "i8").
        prefilter_max_records: A filter keeping at most this many records is searched
            exactly over those records; larger filtered sets use ANN with over-fetch.
        bm25_k1: BM25 term-frequency saturation.
        bm25_b: BM25 length normalisation.
        threads: Threads for ANN build and search (0 = all cores).
    """

    def __init__(
        self,
        *,
        ann_min_records: int = 50_000,
        ann_connectivity: int = 16,
        ann_expansion_add: int = 128,
        ann_expansion_search: int = 384,
        ann_dtype: str = "f16",
        prefilter_max_records: int = 50_000,
        bm25_k1: float = 1.5,
        bm25_b: float = 0.75,
        threads: int = 0,
    ) -> None:
        self.ann_min_records = ann_min_records
        self.ann_connectivity = ann_connectivity
        self.ann_expansion_add = ann_expansion_add
        self.ann_expansion_search = ann_expansion_search
        self.ann_dtype = ann_dtype
        self.prefilter_max_records = prefilter_max_records
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.threads = threads
        self.read_only_ = False

    # -- building ------------------------------------------------------------------------
    def fit(
        self,
        ids: Sequence[str],
        hashes: Sequence[str],
        texts: Sequence[str],
        vectors: np.ndarray,
        meta: pd.DataFrame,
        *,
        model_id: str,
    ) -> SearchIndex:
        """Index records from scratch. `meta` has one row per id (see `set_meta`)."""
        from themes.bm25 import bm25s as _bm25s

        bm25s = _bm25s()

        self.model_id_ = model_id
        self.read_only_ = False
        self.tokenizer_ = bm25s.tokenization.Tokenizer(stopwords=tokenizer_stopwords())
        self.ids_ = np.asarray(list(ids), dtype=object)
        self.hashes_ = np.asarray(list(hashes), dtype=object)
        self.keys_ = np.arange(len(self.ids_), dtype=np.int64)
        self.next_key_ = len(self.ids_)
        vectors = _check_vectors(vectors, len(self.ids_))
        self.vectors_ = vectors.astype(np.float16, copy=False)
        self.dim_ = int(vectors.shape[1]) if len(vectors) else 0
        self.tok_indptr_, self.tok_ids_ = self._tokenise(texts)
        self.ann_ = None
        self.set_meta(meta)
        self._build_bm25()
        self._build_phrases()
        self._sync_ann(added=self.keys_, removed=np.zeros(0, dtype=np.int64))
        return self

    def update(
        self,
        keep: Sequence[str],
        new_ids: Sequence[str],
        new_hashes: Sequence[str],
        new_texts: Sequence[str],
        new_vectors: np.ndarray,
        meta: pd.DataFrame,
    ) -> SearchIndex:
        """Keep the indexed records in `keep`, drop the rest, append the new ones.

        A changed record is passed as dropped (not in `keep`) and new. `meta` covers the
        final set of ids and replaces every record's filter fields.
        """
        self._check_fitted()
        if self.read_only_:
            raise ThemesError(
                "this search index was loaded read-only (memory-mapped, for queries); "
                "load it with read_only=False to update it"
            )
        # a hash lookup: numpy's isin on object arrays compares every pair (62 s for
        # 100,000 ids, so about 100 minutes at 1,000,000)
        keep_mask = np.asarray(pd.Index(self.ids_).isin(list(keep)), dtype=bool)
        removed = self.keys_[~keep_mask]
        new_vectors = _check_vectors(new_vectors, len(new_ids))
        if len(new_ids) and not self.dim_:
            self.dim_ = int(new_vectors.shape[1])
        new_vectors = new_vectors.reshape(len(new_ids), self.dim_)
        added = np.arange(self.next_key_, self.next_key_ + len(new_ids), dtype=np.int64)
        self.next_key_ += len(new_ids)
        lengths = np.diff(self.tok_indptr_)
        kept_tokens = self.tok_ids_[np.repeat(keep_mask, lengths)]
        kept_indptr = np.concatenate([[0], np.cumsum(lengths[keep_mask])])
        new_indptr, new_tokens = self._tokenise(new_texts)
        self.tok_ids_ = np.concatenate([kept_tokens, new_tokens]).astype(np.int32)
        self.tok_indptr_ = np.concatenate([kept_indptr, kept_indptr[-1] + new_indptr[1:]])
        self.ids_ = np.concatenate([self.ids_[keep_mask], np.asarray(list(new_ids), object)])
        self.hashes_ = np.concatenate(
            [self.hashes_[keep_mask], np.asarray(list(new_hashes), dtype=object)]
        )
        self.keys_ = np.concatenate([self.keys_[keep_mask], added])
        old = np.asarray(self.vectors_[keep_mask], dtype=np.float16).reshape(
            int(keep_mask.sum()), self.dim_
        )
        self.vectors_ = np.concatenate([old, new_vectors.astype(np.float16, copy=False)])
        self.set_meta(meta)
        self._build_bm25()
        self._build_phrases()
        self._sync_ann(added=added, removed=removed)
        return self

    def set_meta(self, meta: pd.DataFrame) -> None:
        """Replace the filter fields: columns record_id, event_date, theme_id, META_COLUMNS."""
        missing = {"record_id", "event_date", "theme_id", *META_COLUMNS} - set(meta.columns)
        if missing:
            raise ThemesError(f"search index metadata lacks columns: {sorted(missing)}")
        m = meta.drop_duplicates("record_id").set_index("record_id")
        absent = [i for i in self.ids_ if i not in m.index]
        if absent:
            raise ThemesError(f"search index metadata lacks {len(absent)} ids, e.g. {absent[:3]}")
        m = m.loc[list(self.ids_)]
        self.meta_ = pd.DataFrame(
            {col: pd.Categorical(_field_values(m[col])) for col in META_COLUMNS}
        )
        self.days_ = _event_days(m["event_date"])
        self.themes_ = m["theme_id"].fillna(-1).astype(np.int32).to_numpy()
        self._cache_codes()

    def meta_changed(self, meta: pd.DataFrame, ids: Sequence[str]) -> list[str]:
        """Of the indexed records `ids`, those whose filter fields or event date in `meta`
        (columns as for `set_meta`) differ from what the index holds."""
        self._check_fitted()
        if not len(ids):
            return []
        m = meta.drop_duplicates("record_id").set_index("record_id").loc[list(ids)]
        pos = self.positions(ids)
        if (pos < 0).any():
            missing = [r for r, p in zip(ids, pos.tolist(), strict=True) if p < 0]
            raise KeyError(f"not indexed: {missing[:3]}")
        differs = _event_days(m["event_date"]) != self.days_[pos]
        for col in META_COLUMNS:
            held = np.asarray(self.meta_[col].cat.categories, dtype=object)[self.codes_[col][pos]]
            differs |= _field_values(m[col]).to_numpy(dtype=object) != held
        return [r for r, d in zip(ids, differs.tolist(), strict=True) if d]

    def _cache_codes(self) -> None:
        """Category codes of the filter fields as plain arrays (a mask is a table lookup).

        Every fit, update, metadata change and load passes here, so `version_` also moves
        on: what other modules derive from the index and cache on it (duplicates.py) is
        recomputed when it changes.
        """
        self.codes_ = {c: self.meta_[c].cat.codes.to_numpy() for c in META_COLUMNS}
        self.version_ = getattr(self, "version_", 0) + 1

    def _tokenise(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of texts as CSR arrays (indptr, ids), in slices to bound memory."""
        lengths: list[np.ndarray] = []
        flats: list[np.ndarray] = []
        for start in range(0, len(texts), 50_000):
            lists = self.tokenizer_.tokenize(
                list(texts[start : start + 50_000]),
                update_vocab=True,
                return_as="ids",
                show_progress=False,
            )
            n = np.array([len(t) for t in lists], dtype=np.int64)
            lengths.append(n)
            flats.append(np.fromiter((i for t in lists for i in t), np.int32, int(n.sum())))
        n_all = np.concatenate([np.zeros(0, np.int64), *lengths])
        indptr = np.concatenate([[0], np.cumsum(n_all)]).astype(np.int64)
        return indptr, np.concatenate([np.zeros(0, np.int32), *flats])

    def _build_bm25(self) -> None:
        from themes.bm25 import CsrCorpus, CsrTokens, csr_bm25

        self.bm25_ = None
        if not len(self.ids_):
            return
        vocab = dict(self.tokenizer_.get_vocab_dict())
        # bm25s's matrix, built from the token arrays the index already holds (see csr_bm25)
        corpus = CsrCorpus(CsrTokens(self.tok_indptr_, self.tok_ids_), vocab)
        self.bm25_ = csr_bm25(k1=self.bm25_k1, b=self.bm25_b)
        self.bm25_.index(corpus, show_progress=False)
        _use_gil_free_scorer(self.bm25_)

    def _build_phrases(self) -> None:
        """The document frequencies of word pairs that records share (`PhraseTable`)."""
        self.phrases_ = PhraseTable.build(self.tok_indptr_, self.tok_ids_, skip=self.empty_token)

    @property
    def empty_token(self) -> int | None:
        """bm25s's empty token id (a record of only placeholders and stop words), if any."""
        return self.tokenizer_.get_vocab_dict().get("")

    def _sync_ann(self, *, added: np.ndarray, removed: np.ndarray) -> None:
        from usearch.index import Index

        if len(self.ids_) < self.ann_min_records:
            self.ann_ = None
            return
        if self.ann_ is None:
            self.ann_ = Index(
                ndim=self.dim_,
                metric="cos",
                dtype=self.ann_dtype,
                connectivity=self.ann_connectivity,
                expansion_add=self.ann_expansion_add,
                expansion_search=self.ann_expansion_search,
            )
            added, removed = self.keys_, np.zeros(0, dtype=np.int64)
            log.info("building the ANN index over %d records", len(added))
        if len(removed):
            self.ann_.remove(removed)
        if len(added):
            pos = np.searchsorted(self.keys_, added)
            self.ann_.add(added, np.asarray(self.vectors_[pos]), threads=self.threads)

    # -- querying ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        self._check_fitted()
        return len(self.ids_)

    @property
    def mode(self) -> str:
        """ "ann" when an approximate index is in use, else "exact"."""
        self._check_fitted()
        return "ann" if self.ann_ is not None else "exact"

    def position(self, record_id: str) -> int | None:
        """Where a record sits in the index, or None if it is not indexed."""
        pos = int(self.positions([record_id])[0])
        return pos if pos >= 0 else None

    def positions(self, record_ids: Sequence[str]) -> np.ndarray:
        """Where each record sits in the index, -1 where it is not indexed.

        A hash lookup built once per index version (`version_`): a scan of the ids took
        6.4 ms a record at 1,000,000 records, so checking every record for near-duplicates
        (a first run) spent hours finding them.
        """
        self._check_fitted()
        cached = self.__dict__.get("_id_lookup")
        if cached is None or cached[0] != self.version_:
            ids = pd.Index(self.ids_)
            first = ~ids.duplicated(keep="first")  # an id held twice: its first place
            cached = (self.version_, ids[first], np.flatnonzero(first))
            self._id_lookup = cached
        _, lookup, where = cached
        hits = lookup.get_indexer(list(record_ids)).astype(np.int64)
        found = hits >= 0
        hits[found] = where[hits[found]]
        return hits

    def mask(self, filters: Filters | None) -> np.ndarray | None:
        """Boolean mask of the records a filter keeps (None = all records)."""
        self._check_fitted()
        if filters is None or filters.is_empty():
            return None
        keep = np.ones(len(self.ids_), dtype=bool)
        for col in META_COLUMNS:
            wanted = getattr(filters, col)
            if wanted is None:
                continue
            categories = self.meta_[col].cat.categories
            values = {str(w).strip().lower() for w in wanted}
            codes = sorted(categories.get_loc(v) for v in values if v in categories)
            column = self.codes_[col]
            if len(codes) <= 8:
                # comparisons: indexing a table by 1,000,000 small-integer codes took
                # 6.5 ms, a comparison 0.1
                hit = np.zeros(len(column), dtype=bool)
                for c in codes:
                    hit |= column == c
            else:
                lookup = np.zeros(len(categories) + 1, dtype=bool)  # the last slot is code -1
                lookup[codes] = True
                hit = np.take(lookup, column)
            keep &= hit
        if filters.theme is not None:
            keep &= np.isin(self.themes_, np.asarray(list(filters.theme), dtype=np.int32))
        if filters.since is not None:
            keep &= self.days_ >= _day(filters.since)
        if filters.until is not None:
            keep &= self.days_ <= _day(filters.until)
        return keep

    def query_tokens(self, text: str) -> list[int]:
        """Token ids of a query (words the collection never used are dropped)."""
        return self.query_terms(text)[0]

    def query_sequence(self, text: str) -> np.ndarray:
        """A query's token ids in order (stop words dropped as in the index); a word the
        collection never used is -1, so that no word pair spans it."""
        self._check_fitted()
        vocab = self.tokenizer_.get_vocab_dict()
        lists = self.tokenizer_.tokenize(
            [text], update_vocab=False, return_as="string", show_progress=False
        )
        return np.array([vocab.get(t, -1) for t in lists[0]], dtype=np.int64)

    def sequence_of(self, pos: int) -> np.ndarray:
        """The indexed token ids of one record, in order."""
        self._check_fitted()
        return np.asarray(self.tok_ids_[self.tok_indptr_[pos] : self.tok_indptr_[pos + 1]])

    def phrase_cosines(self, sequence: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """TF-IDF cosine over words and adjacent word pairs between a token sequence and
        the records at `positions` (`themes.phrases.cosines`; up to a shared factor)."""
        self._check_fitted()
        return phrase_cosines(
            sequence,
            positions,
            indptr=self.tok_indptr_,
            ids=self.tok_ids_,
            word_df=self.document_frequency(),
            table=self.phrases_,
            n_records=self.size,
            skip=self.empty_token,
        )

    def query_terms(self, text: str) -> tuple[list[int], list[int]]:
        """Distinct token ids of a query in first-seen order, and how often each occurs."""
        return self.sequence_terms(self.query_sequence(text))

    def sequence_terms(self, sequence: np.ndarray) -> tuple[list[int], list[int]]:
        """`query_terms` of a query already tokenised by `query_sequence`."""
        return self._counted(t for t in np.asarray(sequence).tolist() if t >= 0)

    def term_weights(self, tokens: Sequence[int], counts: Sequence[int]) -> np.ndarray:
        """TF-IDF weights of a long query's terms, (1 + ln count) x idf, scaled to mean 1.

        idf is BM25's own (`idf`), so a word in most records adds little and a rare,
        specific one counts for more, as in "more like this".
        """
        self._check_fitted()
        if not len(tokens):
            return np.zeros(0, dtype=np.float32)
        if self.bm25_ is None:
            return np.ones(len(tokens), dtype=np.float32)
        idf = self.idf()[np.asarray(tokens, dtype=np.int64)]
        weights = (1.0 + np.log(np.asarray(counts, dtype=np.float64))) * idf
        mean = float(weights.mean())
        return (weights / mean if mean > 0 else np.ones(len(tokens))).astype(np.float32)

    def record_terms(self, pos: int) -> tuple[list[int], list[int]]:
        """Distinct token ids of one indexed record in first-seen order, and how often
        each occurs in it (as `query_terms` for a query)."""
        self._check_fitted()
        ids = self.tok_ids_[self.tok_indptr_[pos] : self.tok_indptr_[pos + 1]]
        return self._counted(ids.tolist())

    def tokens_of(self, pos: int) -> list[int]:
        """The indexed token ids of one record (for "more like this" and word overlap),
        without bm25s's empty token, which stands for "no word" in a record of only
        placeholders and stop words."""
        self._check_fitted()
        return self._terms(self.tok_ids_[self.tok_indptr_[pos] : self.tok_indptr_[pos + 1]])

    def _counted(self, ids: Iterable[int]) -> tuple[list[int], list[int]]:
        """`_terms` of `ids`, and how often each occurs in them."""
        counts = Counter(ids)
        tokens = self._terms(counts)
        return tokens, [counts[t] for t in tokens]

    def _terms(self, ids: Iterable[int]) -> list[int]:
        """Distinct token ids in first-seen order, without bm25s's empty token: it stands
        for "no word" (a text of only placeholders and stop words), not a term to match."""
        terms = dict.fromkeys(ids)
        terms.pop(self.empty_token, None)
        return list(terms)

    def bm25(
        self,
        tokens: Sequence[int],
        *,
        n: int,
        mask: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n positions and BM25 scores (only records sharing a term, inside the mask).

        `weights` (one per token, e.g. `term_weights`) scale each term's contribution;
        None counts every term once, as plain BM25 does.
        """
        self._check_fitted()
        if self.bm25_ is None or not len(tokens):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        weight = None if mask is None else mask.astype(np.float32)
        if weights is None:
            scores = self.bm25_.get_scores([int(t) for t in tokens], weight_mask=weight)
        else:
            if len(weights) != len(tokens):
                raise ValueError(f"{len(weights)} weights for {len(tokens)} query terms")
            sc = self.bm25_.scores
            scores = _weighted_scorer()(
                sc["data"],
                sc["indptr"],
                sc["indices"],
                int(sc["num_docs"]),
                np.asarray(tokens, dtype=np.int64),
                np.asarray(weights, dtype=np.float32),
            )
            if weight is not None:
                scores *= weight
        return _top(scores, n, positive_only=True)

    def dense(
        self,
        vector: np.ndarray,
        *,
        n: int,
        mask: np.ndarray | None = None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n positions and cosine similarities to `vector`, inside the mask."""
        return self.dense_search(n=n, mask=mask, exact=exact)(vector)

    def dense_search(
        self, *, n: int, mask: np.ndarray | None = None, exact: bool = False
    ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """`dense` for one filter, prepared before the query's vector is known.

        When a filter keeps few enough records to be searched exactly, their vectors are
        gathered here, so a caller can prepare the search while the query is
        embedded and the search itself is only the scoring (gathering 21,000 rows from
        the mapped vectors took 7 ms at 1,000,000 records, scoring them 4).
        """
        self._check_fitted()
        none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        if not len(self.ids_):
            return lambda vector: none
        kept = None if mask is None else int(np.count_nonzero(mask))
        if kept == 0:
            return lambda vector: none
        if exact or self.ann_ is None or (kept is not None and kept <= self.prefilter_max_records):
            if mask is not None and kept is not None and kept <= EXACT_BLOCK:
                allowed = np.flatnonzero(mask)
                block = np.ascontiguousarray(self.vectors_[allowed])
                return lambda vector: self._exact_blocks(_query(vector), n, [(allowed, block)])
            return lambda vector: self._exact(_query(vector), n, mask)
        return lambda vector: self._ann(_query(vector), n, mask, kept)

    def _exact(
        self, q: np.ndarray, n: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over all records (or those in the mask), in slices of EXACT_BLOCK."""
        allowed = None if mask is None else np.flatnonzero(mask)
        total = len(self.ids_) if allowed is None else len(allowed)

        def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for start in range(0, total, EXACT_BLOCK):
                if allowed is None:
                    stop = min(total, start + EXACT_BLOCK)
                    yield np.arange(start, stop), self.vectors_[start:stop]
                else:
                    part = allowed[start : start + EXACT_BLOCK]
                    yield part, self.vectors_[part]

        return self._exact_blocks(q, n, blocks())

    def _exact_blocks(
        self, q: np.ndarray, n: int, blocks: Iterable[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top n over (positions, their vectors) blocks.

        usearch's exact search scores the float16 rows with SIMD kernels instead of
        converting them to float32 for numpy (exact-mode queries at 1,000,000 records went
        from 361 to 139 ms p50; benchmarks/bench_search_speed.py).
        """
        from usearch.index import MetricKind
        from usearch.index import search as exact_search

        best_pos: list[np.ndarray] = []
        best_score: list[np.ndarray] = []
        for part, block in blocks:
            found = exact_search(
                np.ascontiguousarray(block),
                q,
                min(n, len(part)),
                MetricKind.IP,
                exact=True,
                threads=self.threads,
            )
            best_pos.append(part[np.asarray(found.keys, dtype=np.int64)])
            best_score.append(1.0 - np.asarray(found.distances, dtype=np.float32))
        pos, score = np.concatenate(best_pos), np.concatenate(best_score)
        order, vals = _top(score, n)
        return pos[order], vals

    def _ann(
        self, q: np.ndarray, n: int, mask: np.ndarray | None, kept: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """HNSW search; with a filter (`kept` records in `mask`), over-fetch by the inverse
        share kept, then retry."""
        total = len(self.ids_)
        share = 1.0 if kept is None else kept / total
        count = min(total, max(n, math.ceil(n / share * OVERFETCH)))
        while True:
            found = self.ann_.search(q, count, threads=1)
            pos = np.searchsorted(self.keys_, np.asarray(found.keys, dtype=np.int64))
            sims = 1.0 - np.asarray(found.distances, dtype=np.float32)
            if mask is not None:
                ok = mask[pos]
                pos, sims = pos[ok], sims[ok]
            if len(pos) >= n or count >= total:
                return pos[:n].astype(np.int64), sims[:n]
            if count >= 8 * self.prefilter_max_records:
                return self._exact(q, n, mask)
            count = min(total, count * 4)

    def neighbours(self, positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n nearest other records of each given record: (positions, cosines), (m, n).

        Missing neighbours (a collection smaller than n + 1) are -1 with cosine -inf.
        """
        self._check_fitted()
        positions = np.asarray(positions, dtype=np.int64)
        out_pos = np.full((len(positions), n), -1, dtype=np.int64)
        out_sim = np.full((len(positions), n), -np.inf, dtype=np.float32)
        if not len(positions):
            return out_pos, out_sim
        count = min(n + 1, len(self.ids_))
        for start in range(0, len(positions), 1024):
            rows = positions[start : start + 1024]
            queries = np.asarray(self.vectors_[rows], dtype=np.float32)
            if self.ann_ is not None:
                found = self.ann_.search(queries, count, threads=self.threads)
                keys = np.asarray(found.keys, dtype=np.int64).reshape(len(rows), -1)
                pos = np.searchsorted(self.keys_, keys)
                sims = 1.0 - np.asarray(found.distances, dtype=np.float32).reshape(len(rows), -1)
            else:
                sims = np.concatenate(
                    [
                        queries @ np.asarray(self.vectors_[b : b + 65_536], np.float32).T
                        for b in range(0, len(self.ids_), 65_536)
                    ],
                    axis=1,
                )
                pos = np.argsort(-sims, axis=1, kind="stable")[:, :count]
                sims = np.take_along_axis(sims, pos, axis=1)
            for i, row in enumerate(rows):
                others = pos[i] != row
                p, s = pos[i][others][:n], sims[i][others][:n]
                out_pos[start + i, : len(p)] = p
                out_sim[start + i, : len(s)] = s
        return out_pos, out_sim

    def document_frequency(self) -> np.ndarray:
        """How many records contain each token id (from the BM25 matrix)."""
        self._check_fitted()
        if self.bm25_ is None:
            return np.zeros(0, dtype=np.int64)
        return np.diff(np.asarray(self.bm25_.scores["indptr"]))

    def idf(self) -> np.ndarray:
        """BM25's idf of every token id, ln(1 + (N - df + 0.5) / (df + 0.5)), read-only and
        cached until the index changes (`version_`)."""
        self._check_fitted()
        cached = self.__dict__.get("_idf")
        if cached is None or cached[0] != self.version_:
            df = self.document_frequency().astype(np.float64)
            idf = np.log1p((float(self.size) - df + 0.5) / (df + 0.5))
            idf.setflags(write=False)
            cached = (self.version_, idf)
            self._idf = cached
        return cached[1]

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the index as a directory, atomically (a temporary folder, then a rename)."""
        self._check_fitted()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        table = pd.DataFrame(
            {
                "record_id": self.ids_.astype(str),
                "clean_hash": self.hashes_.astype(str),
                "key": self.keys_,
                "day": self.days_,
                "theme_id": self.themes_,
                **{c: self.meta_[c].astype(str) for c in META_COLUMNS},
            }
        )
        table.to_parquet(tmp / "records.parquet", index=False)
        np.save(tmp / "vectors.npy", np.asarray(self.vectors_, dtype=np.float16))
        # plain .npy files (not one .npz) so that a read-only load can memory-map them
        np.save(tmp / "token_indptr.npy", np.asarray(self.tok_indptr_, dtype=np.int64))
        np.save(tmp / "token_ids.npy", np.asarray(self.tok_ids_, dtype=np.int32))
        (tmp / "vocab.json").write_text(json.dumps(self.tokenizer_.get_vocab_dict()))
        if self.bm25_ is not None:
            self.bm25_.save(str(tmp / "bm25"), show_progress=False)
        if self.ann_ is not None:
            self.ann_.save(str(tmp / "ann.usearch"))
        np.save(tmp / "phrase_codes.npy", np.asarray(self.phrases_.codes, dtype=np.int64))
        np.save(tmp / "phrase_df.npy", np.asarray(self.phrases_.df, dtype=np.int32))
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id_,
            "records": len(self.ids_),
            "dim": self.dim_,
            "next_key": self.next_key_,
            "ann": self.ann_ is not None,
            "ann_records": len(self.ann_) if self.ann_ is not None else 0,
            "tokens": int(len(self.tok_ids_)),
            "phrases": len(self.phrases_),
            "params": self._params(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: Path, *, read_only: bool = False, **params: Any) -> SearchIndex:
        """Read a saved index; IndexCorruptError if anything is missing or inconsistent.

        `params` override the saved query-time parameters (e.g. ann_expansion_search);
        a change of ann_min_records, dtype or graph degree needs a rebuild.

        `read_only` (for serving queries) memory-maps the ANN graph and the BM25 matrix
        instead of reading them into memory: a query touches only the pages it needs, and
        those are page cache that several processes share and the kernel can drop. Such an
        index cannot be updated (`update` raises ThemesError; `fit` builds a new, writable
        one in memory). The nightly flow
        saves a new index by renaming a new folder into place, so a mapped one stays valid.
        """
        from themes.bm25 import bm25s as _bm25s

        bm25s = _bm25s()
        import pyarrow.parquet as pq
        from usearch.index import Index

        path = Path(path)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
            if manifest.get("format_version") != FORMAT_VERSION:
                raise IndexCorruptError(
                    f"search index format {manifest.get('format_version')} is not {FORMAT_VERSION}"
                )
            saved = dict(manifest["params"])
            index = cls(**{**saved, **params})
            # a searcher never compares text hashes (only `update` does): it reads them
            # when first asked for, sparing about 0.1 GB per million records
            records = path / "records.parquet"
            columns = pq.read_schema(records).names
            if read_only:
                columns.remove("clean_hash")
            table = pd.read_parquet(records, columns=columns)
            tokens = _load_tokens(path, mmap=read_only)
            vectors = np.load(path / "vectors.npy", mmap_mode="r")
            vocab = json.loads((path / "vocab.json").read_text())
            n = int(manifest["records"])
            if len(table) != n or vectors.shape[0] != n or len(tokens["indptr"]) != n + 1:
                raise IndexCorruptError(
                    f"search index parts disagree: manifest {n} records, records.parquet "
                    f"{len(table)}, vectors {vectors.shape[0]}, tokens {len(tokens['indptr']) - 1}"
                )
            index.model_id_ = manifest["model_id"]
            index.dim_ = int(manifest["dim"])
            index.next_key_ = int(manifest["next_key"])
            index.ids_ = table["record_id"].to_numpy(dtype=object)
            if read_only:
                index._records_path = records
            else:
                index.hashes_ = table["clean_hash"].to_numpy(dtype=object)
            index.keys_ = table["key"].to_numpy(dtype=np.int64)
            index.days_ = table["day"].to_numpy(dtype=np.int32)
            index.themes_ = table["theme_id"].to_numpy(dtype=np.int32)
            index.meta_ = pd.DataFrame(
                {c: pd.Categorical(table[c].astype(str)) for c in META_COLUMNS}
            )
            index._cache_codes()
            index.vectors_ = vectors
            index.tok_indptr_, index.tok_ids_ = tokens["indptr"], tokens["ids"]
            if index.tok_indptr_[-1] != len(index.tok_ids_) or int(manifest["tokens"]) != len(
                index.tok_ids_
            ):
                raise IndexCorruptError("search index token arrays are truncated")
            index.tokenizer_ = bm25s.tokenization.Tokenizer(stopwords=tokenizer_stopwords())
            index.tokenizer_.word_to_id = vocab
            index.phrases_ = _load_phrases(path, mmap=read_only, expected=manifest["phrases"])
            index.bm25_ = None
            if n:
                index.bm25_ = bm25s.BM25.load(
                    str(path / "bm25"), load_corpus=False, mmap=read_only, show_progress=False
                )
                if int(index.bm25_.scores["num_docs"]) != n:
                    raise IndexCorruptError("the BM25 matrix does not match the records")
                _use_gil_free_scorer(index.bm25_)
            index.ann_ = None
            if manifest["ann"] and n >= index.ann_min_records:
                index.ann_ = Index.restore(str(path / "ann.usearch"), view=read_only)
                if index.ann_ is None or len(index.ann_) != manifest["ann_records"]:
                    raise IndexCorruptError("the ANN file ann.usearch is unreadable or truncated")
                index.ann_.expansion_search = index.ann_expansion_search
            index.read_only_ = read_only
            if read_only:
                _prefetch(path)
        except IndexCorruptError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise IndexCorruptError(
                f"cannot read the search index at {path}: {e.__class__.__name__}: {e}"
            ) from e
        return index

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes not set: a read-only index's text hashes, read late
        if name == "hashes_" and "_records_path" in self.__dict__:
            try:
                column = pd.read_parquet(self._records_path, columns=["clean_hash"])
            except (OSError, ValueError) as e:
                raise IndexCorruptError(f"cannot read {self._records_path}: {e}") from e
            if len(column) != len(self.ids_):
                raise IndexCorruptError(f"{self._records_path} changed after the index was loaded")
            self.hashes_ = column["clean_hash"].to_numpy(dtype=object)
            return self.hashes_
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _params(self) -> dict[str, Any]:
        return {
            "ann_min_records": self.ann_min_records,
            "ann_connectivity": self.ann_connectivity,
            "ann_expansion_add": self.ann_expansion_add,
            "ann_expansion_search": self.ann_expansion_search,
            "ann_dtype": self.ann_dtype,
            "prefilter_max_records": self.prefilter_max_records,
            "bm25_k1": self.bm25_k1,
            "bm25_b": self.bm25_b,
            "threads": self.threads,
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "ids_"):
            raise NotFittedError("SearchIndex is not built; call fit() or SearchIndex.load().")


_SCORER: Any = None


def _use_gil_free_scorer(bm25: Any) -> None:
    """Score queries with bm25s's own numba-ready kernel, compiled with the GIL released.

    bm25s's numpy scorer (`np.add.at`) holds the GIL while it scores (BM25 takes about
    11 ms a query at 1,000,000 records; benchmarks/profile_search_query.py), which stalls a
    query embedding running on another thread; the same kernel compiled `nogil` lets both
    run at once. Without numba (or with NUMBA_DISABLE_JIT set)
    bm25s's default scorer stays.
    """
    global _SCORER
    if os.environ.get("NUMBA_DISABLE_JIT"):
        return
    if _SCORER is None:
        try:
            from bm25s.scoring import _compute_relevance_from_scores_jit_ready
            from numba import njit
        except ImportError:
            return
        _SCORER = njit(nogil=True, cache=True)(_compute_relevance_from_scores_jit_ready)
    bm25._compute_relevance_from_scores = _SCORER


def _weighted_scores(
    data: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    num_docs: int,
    tokens: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """BM25 scores of every record for weighted query terms: the sum over the query's terms
    of weight x the term's precomputed BM25 score in the record (bm25s's kernel, weighted)."""
    scores = np.zeros(num_docs, dtype=np.float32)
    for i in range(len(tokens)):
        w = weights[i]
        for j in range(indptr[tokens[i]], indptr[tokens[i] + 1]):
            scores[indices[j]] += w * data[j]
    return scores


_WEIGHTED: Any = None


def _weighted_scorer() -> Callable[..., np.ndarray]:
    """`_weighted_scores` compiled with numba with the GIL released, as
    `_use_gil_free_scorer` does for the plain kernel (numba is a dependency; with
    NUMBA_DISABLE_JIT set the same function runs as plain Python)."""
    global _WEIGHTED
    if _WEIGHTED is None:
        from numba import njit

        _WEIGHTED = njit(nogil=True, cache=True)(_weighted_scores)
    return _WEIGHTED


def _check_vectors(vectors: np.ndarray, n: int) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.dtype not in (np.float16, np.float32):
        vectors = vectors.astype(np.float32)
    if n == 0:
        return vectors.reshape(0, vectors.shape[1] if vectors.ndim == 2 else 0)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ThemesError(f"expected {n} vectors, got an array of shape {vectors.shape}")
    return vectors


def _load_tokens(path: Path, *, mmap: bool) -> dict[str, np.ndarray]:
    """Each record's BM25 token ids (`ids`, split by `indptr`): memory-mapped when `mmap`
    (they are read only for "more like this" and near-duplicates). An index saved before
    the tokens were plain .npy files has them in tokens.npz, which is read into memory."""
    if not (path / "token_ids.npy").is_file() and (path / "tokens.npz").is_file():
        with np.load(path / "tokens.npz") as old:
            # asarray, not astype: no second copy of the token ids
            return {
                "indptr": np.asarray(old["indptr"], dtype=np.int64),
                "ids": np.asarray(old["ids"], dtype=np.int32),
            }
    mode = "r" if mmap else None
    out = {
        "indptr": np.load(path / "token_indptr.npy", mmap_mode=mode),
        "ids": np.load(path / "token_ids.npy", mmap_mode=mode),
    }
    if out["indptr"].dtype != np.int64 or out["ids"].dtype != np.int32:
        raise IndexCorruptError(
            f"search index token arrays have types {out['indptr'].dtype}, {out['ids'].dtype}"
        )
    return out


def _load_phrases(path: Path, *, mmap: bool, expected: int) -> PhraseTable:
    """The word-pair table, memory-mapped when `mmap`."""
    mode = "r" if mmap else None
    codes = np.load(path / "phrase_codes.npy", mmap_mode=mode)
    df = np.load(path / "phrase_df.npy", mmap_mode=mode)
    if codes.dtype != np.int64 or df.dtype != np.int32 or len(codes) != len(df):
        raise IndexCorruptError("search index word-pair arrays disagree (phrase_*.npy)")
    if len(codes) != int(expected):
        raise IndexCorruptError(
            f"search index word-pair table has {len(codes)} pairs, the manifest {expected}"
        )
    return PhraseTable(codes, df)


def _query(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector, dtype=np.float32).reshape(-1)


def _day(d: date) -> int:
    return int((np.datetime64(d, "D") - EPOCH).astype(np.int64))


def _prefetch(path: Path) -> None:
    """Ask the kernel to read a mapped index's files into the page cache in the background.

    A read-only index maps its large files instead of reading them; without this, the
    first queries after a restart (or after other work pushed the files out of the cache)
    wait on disk for each page they touch. Pages read ahead this way are page cache, not
    the process's memory, until a query touches them.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:  # not on this platform: pages are read on first touch
        return
    for file in (
        path / "ann.usearch",
        path / "vectors.npy",
        path / "phrase_codes.npy",
        *sorted((path / "bm25").glob("*.npy")),
    ):
        try:
            fd = os.open(file, os.O_RDONLY)
        except OSError:
            continue
        try:
            advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError as e:
            log.debug("cannot prefetch %s: %s", file, e)
        finally:
            os.close(fd)


def _top(
    scores: np.ndarray, n: int, *, positive_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the n largest scores, best first."""
    scores = np.asarray(scores)
    if positive_only:
        cand = np.flatnonzero(scores > 0)
        if len(cand) > n:
            cand = cand[np.argpartition(-scores[cand], n - 1)[:n]]
    elif len(scores) > n:
        cand = np.argpartition(-scores, n - 1)[:n]
    else:
        cand = np.arange(len(scores))
    order = cand[np.argsort(-scores[cand], kind="stable")]
    return order.astype(np.int64), scores[order].astype(np.float32)
