"""bm25s, imported once with its logger tamed.

bm25s sets its own logger to DEBUG when imported, so every index build printed "Building
index from tokens" to the CLI and the nightly log. Importing it through `bm25s()` puts that
logger back to INFO (a `-v` run still shows its warnings and info lines).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np


def bm25s() -> ModuleType:
    """The bm25s module, with its logger at INFO rather than DEBUG."""
    import bm25s as module

    logging.getLogger("bm25s").setLevel(logging.INFO)
    return module


@dataclass(frozen=True)
class CsrTokens:
    """Every record's token ids as CSR arrays: record i's are ids[indptr[i]:indptr[i + 1]]."""

    indptr: np.ndarray
    ids: np.ndarray

    def as_lists(self) -> list[list[int]]:
        return [d.tolist() for d in np.split(np.asarray(self.ids), np.asarray(self.indptr)[1:-1])]


@dataclass(frozen=True)
class CsrCorpus:
    """A corpus for `BM25.index`: bm25s takes any object with `ids` and `vocab`."""

    ids: CsrTokens
    vocab: dict[str, int]


_CSR_BM25: type | None = None
CHUNK_RECORDS = 100_000
"""Records whose (record, token) pairs `csr_bm25` counts at a time."""


def csr_bm25(**params: Any) -> Any:
    """A bm25s `BM25` that builds its score matrix from `CsrTokens` in a few array
    operations, where bm25s loops over the records in Python (a `Counter` and a list per
    record: most of a nightly index update at 1,000,000 records, and gigabytes of Python
    lists). It overrides `build_index_from_ids`, the hook bm25s documents for building an
    index another way; bm25s's own idf and term-frequency scorers and its CSC layout are
    used, so the matrix is the one bm25s builds (tests compare them). Variants that need
    bm25s's non-occurrence array, or its scipy layout, take bm25s's own path."""
    global _CSR_BM25
    if _CSR_BM25 is None:
        module = bm25s()
        from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

        class CsrBM25(module.BM25):  # type: ignore[misc, name-defined]
            def build_index_from_ids(
                self,
                unique_token_ids: list[int],
                corpus_token_ids: Any,
                show_progress: bool = True,
                leave_progress: bool = False,
            ) -> dict[str, Any]:
                plain = (
                    self.method in self.methods_requiring_nonoccurrence
                    or self.csc_backend != "numpy"
                )
                chunk_records = CHUNK_RECORDS
                if not isinstance(corpus_token_ids, CsrTokens) or plain:
                    if isinstance(corpus_token_ids, CsrTokens):
                        corpus_token_ids = corpus_token_ids.as_lists()
                    return super().build_index_from_ids(
                        unique_token_ids, corpus_token_ids, show_progress, leave_progress
                    )
                self.nonoccurrence_array = None  # as bm25s sets it for these variants
                indptr = np.asarray(corpus_token_ids.indptr, dtype=np.int64)
                tokens = corpus_token_ids.ids
                n_docs, n_vocab = len(indptr) - 1, len(unique_token_ids)
                lengths = np.diff(indptr)
                avg_doc_len = lengths.mean()
                # (record, token) pairs made distinct, with their counts, a slice of records
                # at a time (bounded memory); record-major, as bm25s lists them
                docs, vocs, tfs = [], [], []
                for lo in range(0, n_docs, chunk_records):
                    hi = min(n_docs, lo + chunk_records)
                    doc = np.repeat(np.arange(hi - lo, dtype=np.int64), lengths[lo:hi])
                    part = np.asarray(tokens[indptr[lo] : indptr[hi]]).astype(np.int64)
                    keys, tf = np.unique(doc * n_vocab + part, return_counts=True)
                    docs.append((keys // n_vocab + lo).astype(self.int_dtype))
                    vocs.append((keys % n_vocab).astype(self.int_dtype))
                    tfs.append(tf.astype(self.dtype))
                    del doc, part, keys, tf
                doc_idx, voc_idx = np.concatenate(docs), np.concatenate(vocs)
                tf = np.concatenate(tfs)
                del docs, vocs, tfs
                df = np.bincount(voc_idx, minlength=n_vocab)
                idf_of = _select_idf_scorer(self.idf_method)
                # bm25s's scorer once per distinct document frequency (0 for unused tokens)
                values, where = np.unique(df, return_inverse=True)
                per_value = [idf_of(v, N=n_docs) if v else 0.0 for v in values.tolist()]
                idf_array = np.array(per_value, dtype=self.dtype)[where]
                tfc_of = _select_tfc_scorer(self.method)
                scores = np.empty(len(tf), dtype=self.dtype)
                for lo in range(0, len(tf), chunk_records * 64):
                    sl = slice(lo, lo + chunk_records * 64)
                    tfc = tfc_of(
                        tf_array=tf[sl], l_d=lengths[doc_idx[sl]], l_avg=avg_doc_len,
                        k1=self.k1, b=self.b, delta=self.delta,
                    )  # fmt: skip
                    scores[sl] = idf_array[voc_idx[sl]] * tfc
                del tf
                data, indices, csc_indptr = self._np_csc(
                    data=scores,
                    rows=doc_idx,
                    cols=voc_idx,
                    shape=(n_docs, n_vocab),
                )
                return {"data": data.astype(self.dtype), "indices": indices,
                        "indptr": csc_indptr, "num_docs": n_docs}  # fmt: skip

        _CSR_BM25 = CsrBM25
    return _CSR_BM25(**params)
