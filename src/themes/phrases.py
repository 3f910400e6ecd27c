"""Word-pair (phrase) evidence for re-ranking long queries.

BM25 scores words independently: a pasted narrative that says "failed to escalate" and a
report that says "escalate ... failed" elsewhere score alike. For a long query (a pasted
narrative, or "more like this"), the fused list's top candidates are re-scored by the
cosine of TF-IDF vectors over words *and adjacent word pairs* (after the index's stop
words are dropped), and the two scores are mixed (`rerank`). Measured on PFD reports
(benchmarks/bench_search.py): pairs carry what words alone do not.

`PhraseTable` holds the document frequency of every adjacent pair that two or more records
share, built from the index's token arrays. A pair absent from the table occurs in at most
one record, so a pair found in a candidate but not in the table has document frequency 1:
the cosines are exact without storing every pair.

TF-IDF here is scikit-learn's `TfidfVectorizer(sublinear_tf=True)` weighting: tf
1 + ln(count), smooth idf ln((1 + N) / (1 + df)) + 1, vectors L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SHIFT = 32
"""A pair (a, b) of token ids is one int64 code, a << SHIFT | b (token ids are int32)."""
SLICE_DOCS = 100_000
"""Records per slice when building the table (bounds the memory of one step)."""


class PhraseTable:
    """Document frequencies of adjacent token pairs shared by at least two records.

    Args:
        codes: Sorted pair codes (`pair_codes`), int64.
        df: Each code's document frequency, int32, all at least 2.
    """

    def __init__(self, codes: np.ndarray, df: np.ndarray) -> None:
        self.codes = codes
        self.df = df

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def build(cls, indptr: np.ndarray, ids: np.ndarray, *, skip: int | None = None) -> PhraseTable:
        """The table of a collection's token arrays (CSR: record i's tokens are
        `ids[indptr[i]:indptr[i+1]]`); `skip` is a token id that never forms a pair
        (bm25s's empty token)."""
        codes = np.zeros(0, dtype=np.int64)
        counts = np.zeros(0, dtype=np.int64)
        n = len(indptr) - 1
        for start in range(0, n, SLICE_DOCS):
            stop = min(n, start + SLICE_DOCS)
            c, k = _slice_frequencies(indptr[start : stop + 1], ids, skip)
            codes, counts = _merge(codes, counts, c, k)
        shared = counts >= 2
        return cls(codes[shared], counts[shared].astype(np.int32))

    def frequency(self, codes: np.ndarray) -> np.ndarray:
        """Document frequency of each pair code (0 where the table lacks it)."""
        codes = np.asarray(codes, dtype=np.int64)
        if not len(self.codes) or not len(codes):
            return np.zeros(len(codes), dtype=np.int64)
        at = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        found = np.asarray(self.codes[at]) == codes
        return np.where(found, np.asarray(self.df[at], dtype=np.int64), 0)


def pair_codes(tokens: np.ndarray, *, skip: int | None = None) -> np.ndarray:
    """Codes of a token sequence's adjacent pairs; a negative id (a word the index does
    not know) or `skip` breaks the sequence."""
    t = np.asarray(tokens, dtype=np.int64)
    return _adjacent(t, np.zeros(len(t), dtype=np.int64), skip)[1]


def _adjacent(
    tokens: np.ndarray, doc: np.ndarray, skip: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(record, code) of every adjacent pair in concatenated token sequences (`doc[i]` is
    token i's record): no pair spans two records, a negative id or `skip`."""
    if len(tokens) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a, b = tokens[:-1], tokens[1:]
    ok = (doc[:-1] == doc[1:]) & (a >= 0) & (b >= 0)
    if skip is not None:
        ok &= (a != skip) & (b != skip)
    return doc[:-1][ok], (a[ok] << SHIFT) | b[ok]


def smooth_idf(df: np.ndarray, n: int) -> np.ndarray:
    """ln((1 + n) / (1 + df)) + 1, scikit-learn's smooth idf."""
    return np.log((1.0 + n) / (1.0 + np.asarray(df, dtype=np.float64))) + 1.0


def cosines(
    query: Sequence[int] | np.ndarray,
    positions: np.ndarray,
    *,
    indptr: np.ndarray,
    ids: np.ndarray,
    word_df: np.ndarray,
    table: PhraseTable,
    n_records: int,
    skip: int | None = None,
) -> np.ndarray:
    """TF-IDF cosine (words and adjacent pairs) between a query's token sequence and each
    indexed record at `positions`, up to one positive factor shared by all of them (the
    query's norm, which does not change their order or min-max scaling)."""
    positions = np.asarray(positions, dtype=np.int64)
    out = np.zeros(len(positions), dtype=np.float64)
    q = np.asarray(query, dtype=np.int64)
    words = q[(q >= 0) & (q != (-1 if skip is None else skip))]
    if not len(positions) or not len(words):
        return out
    qw, qw_tf = np.unique(words, return_counts=True)
    qw_weight = (1.0 + np.log(qw_tf)) * _word_idf(qw, word_df, n_records)
    qp, qp_tf = np.unique(pair_codes(q, skip=skip), return_counts=True)
    # a query pair that a candidate also has occurs in some record: df >= 1
    qp_weight = (1.0 + np.log(qp_tf)) * smooth_idf(np.maximum(table.frequency(qp), 1), n_records)

    starts = np.asarray(indptr[positions], dtype=np.int64)
    ends = np.asarray(indptr[positions + 1], dtype=np.int64)
    lengths = ends - starts
    tokens = np.concatenate(
        [np.asarray(ids[s:e], dtype=np.int64) for s, e in zip(starts, ends, strict=True)]
    )
    doc = np.repeat(np.arange(len(positions)), lengths)
    norm2 = np.zeros(len(positions))
    dot = np.zeros(len(positions))

    keep = tokens != (-1 if skip is None else skip)
    d_doc, d_word, d_tf = _counted(doc[keep], tokens[keep])
    d_weight = (1.0 + np.log(d_tf)) * _word_idf(d_word, word_df, n_records)
    norm2 += np.bincount(d_doc, d_weight**2, minlength=len(positions))
    dot += _dot(d_doc, d_word, d_weight, qw, qw_weight, len(positions))

    p_doc, p_code, p_tf = _counted(*_adjacent(tokens, doc, skip))
    if len(p_code):
        p_weight = (1.0 + np.log(p_tf)) * smooth_idf(
            np.maximum(table.frequency(p_code), 1), n_records
        )
        norm2 += np.bincount(p_doc, p_weight**2, minlength=len(positions))
        dot += _dot(p_doc, p_code, p_weight, qp, qp_weight, len(positions))
    np.divide(dot, np.sqrt(norm2), out=out, where=norm2 > 0)
    return out


def rerank_order(
    fused: np.ndarray, phrase: np.ndarray, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """Order (indices, best first) of candidates by min-max(fused) + weight x
    min-max(phrase), ties kept in fused order; and the mixed scores in that order."""
    mixed = _minmax(fused) + weight * _minmax(phrase)
    return np.argsort(-mixed, kind="stable"), mixed


def _minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return x
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.ones_like(x)


def _word_idf(words: np.ndarray, word_df: np.ndarray, n: int) -> np.ndarray:
    df = np.ones(len(words))
    inside = words < len(word_df)
    df[inside] = np.maximum(word_df[words[inside]], 1)
    return smooth_idf(df, n)


def _counted(doc: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (doc, key) pairs and how often each occurs (doc ids are small)."""
    if not len(keys):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    uniq, inverse = np.unique(keys, return_inverse=True)
    combined = doc.astype(np.int64) * len(uniq) + inverse.reshape(-1)
    pairs, tf = np.unique(combined, return_counts=True)
    return pairs // len(uniq), uniq[pairs % len(uniq)], tf


def _dot(
    doc: np.ndarray,
    keys: np.ndarray,
    weights: np.ndarray,
    q_keys: np.ndarray,
    q_weights: np.ndarray,
    n_docs: int,
) -> np.ndarray:
    """Per document, the sum of weight x query weight over keys the query has (q_keys
    sorted)."""
    if not len(q_keys) or not len(keys):
        return np.zeros(n_docs)
    at = np.minimum(np.searchsorted(q_keys, keys), len(q_keys) - 1)
    hit = q_keys[at] == keys
    return np.bincount(doc[hit], weights[hit] * q_weights[at[hit]], minlength=n_docs)


def _slice_frequencies(
    indptr: np.ndarray, ids: np.ndarray, skip: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Pair codes of the records in one CSR slice and how many of them have each."""
    tokens = np.asarray(ids[int(indptr[0]) : int(indptr[-1])], dtype=np.int64)
    doc = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    pair_doc, codes = _adjacent(tokens, doc, skip)
    if not len(codes):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(codes, return_inverse=True)
    per_doc = np.unique(pair_doc.astype(np.int64) * len(uniq) + inverse.reshape(-1))
    return uniq, np.bincount(per_doc % len(uniq), minlength=len(uniq)).astype(np.int64)


def _merge(
    codes: np.ndarray, counts: np.ndarray, more: np.ndarray, more_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sum two sorted (code, count) tables."""
    if not len(codes):
        return more, more_counts
    all_codes = np.concatenate([codes, more])
    uniq, inverse = np.unique(all_codes, return_inverse=True)
    total = np.bincount(
        inverse.reshape(-1), np.concatenate([counts, more_counts]).astype(np.float64)
    )
    return uniq, total.astype(np.int64)
