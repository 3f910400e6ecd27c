"""The index's BM25 matrix, built from its token arrays, is the one bm25s builds itself."""

from __future__ import annotations

import numpy as np
import pytest

from themes.bm25 import CsrCorpus, CsrTokens, bm25s, csr_bm25


def _corpus(seed: int) -> tuple[list[list[int]], dict[str, int]]:
    rng = np.random.default_rng(seed)
    vocab = {f"w{i}": i for i in range(300)}  # some never used: document frequency 0
    # lengths from 0 (bm25s's empty token stands in for it in the product) to 40, with
    # repeated words (term frequency > 1) drawn from a skewed vocabulary
    docs = [(rng.zipf(1.6, rng.integers(0, 41)) % 250).tolist() for _ in range(500)]
    docs[3] = [vocab["w299"]] * 5
    return docs, vocab


@pytest.mark.parametrize("method", ["robertson", "lucene", "atire", "bm25l"])
@pytest.mark.parametrize(("seed", "chunk"), [(0, 100_000), (1, 7)])
def test_matrix_from_token_arrays_is_bm25s_own(
    method: str, seed: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the slice of records counted at a time (one slice, or 7 records each)."""
    monkeypatch.setattr("themes.bm25.CHUNK_RECORDS", chunk)
    docs, vocab = _corpus(seed)
    plain = bm25s().BM25(k1=1.5, b=0.75, method=method)
    plain.index((docs, dict(vocab)), show_progress=False)
    lengths = np.array([len(d) for d in docs])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.array([t for d in docs for t in d], dtype=np.int32)
    fast = csr_bm25(k1=1.5, b=0.75, method=method)
    fast.index(CsrCorpus(CsrTokens(indptr, ids), dict(vocab)), show_progress=False)
    for key in ("data", "indices", "indptr"):
        assert fast.scores[key].dtype == plain.scores[key].dtype, key
        np.testing.assert_array_equal(fast.scores[key], plain.scores[key], err_msg=key)
    assert fast.scores["num_docs"] == plain.scores["num_docs"] == len(docs)
    assert fast.vocab_dict == plain.vocab_dict
    query = [vocab["w1"], vocab["w7"], vocab["w299"]]
    np.testing.assert_array_equal(fast.get_scores(query), plain.get_scores(query))
