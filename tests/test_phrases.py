"""Word-pair evidence for long queries: the pair table, the TF-IDF cosine, the re-ranking."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from themes import phrases
from themes.phrases import PhraseTable, pair_codes
from themes.search import rerank, text_query
from themes.search_index import META_COLUMNS, SearchIndex
from themes.settings import SearchSettings


def _csr(docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    ids = np.array([t for d in docs for t in d], dtype=np.int32)
    return indptr, ids


def _random_docs(n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 12, int(rng.integers(0, 15))).tolist() for _ in range(n)]


def _features(seq: list[int], skip: int | None = None) -> list[str]:
    """Words and adjacent pairs of a token sequence, as sklearn features (brute force)."""
    words = [str(t) for t in seq if t >= 0 and t != skip]
    pairs = [
        f"{a}_{b}"
        for a, b in zip(seq[:-1], seq[1:], strict=True)
        if min(a, b) >= 0 and skip not in (a, b)
    ]
    return words + pairs


@pytest.mark.parametrize("slice_docs", [7, 100_000])
def test_the_pair_table_counts_the_records_sharing_each_adjacent_pair(
    monkeypatch: pytest.MonkeyPatch, slice_docs: int
) -> None:
    monkeypatch.setattr(phrases, "SLICE_DOCS", slice_docs)  # several slices, merged
    docs = _random_docs(60)
    docs[5] = [3, 3, 3, 3]  # a pair repeated in one record counts once for it
    docs[6] = [9, 0, 4, 0]  # 0 is the skipped token: no pair with it
    table = PhraseTable.build(*_csr(docs), skip=0)
    truth = Counter(
        (a << 32) | b
        for d in docs
        for a, b in {(a, b) for a, b in zip(d[:-1], d[1:], strict=True) if 0 not in (a, b)}
    )
    shared = {c: n for c, n in truth.items() if n >= 2}
    assert dict(zip(table.codes.tolist(), table.df.tolist(), strict=True)) == shared
    assert table.codes.tolist() == sorted(shared)
    absent = np.array([(11 << 32) | 99, (0 << 32) | 4], dtype=np.int64)
    assert table.frequency(absent).tolist() == [0, 0]


def test_pairs_never_span_an_unknown_word() -> None:
    assert pair_codes(np.array([1, 2, -1, 3, 4])).tolist() == [(1 << 32) | 2, (3 << 32) | 4]
    assert pair_codes(np.array([1, 5, 2]), skip=5).tolist() == []


def test_cosines_are_scikit_learns_tfidf_cosine_over_words_and_pairs() -> None:
    docs = _random_docs(80, seed=1)
    docs[3] = []  # an empty record scores 0
    query = [4, 7, 7, 2, -1, 9, 4, 7, 11]
    indptr, ids = _csr(docs)
    table = PhraseTable.build(indptr, ids)
    word_df = np.bincount(np.concatenate([np.unique(d) for d in docs if d]), minlength=12)
    positions = np.arange(len(docs))
    ours = phrases.cosines(
        query, positions, indptr=indptr, ids=ids, word_df=word_df, table=table,
        n_records=len(docs),
    )  # fmt: skip
    vec = TfidfVectorizer(analyzer=_features, sublinear_tf=True, lowercase=False)
    matrix = vec.fit_transform(docs)
    truth = (matrix @ vec.transform([query]).T).toarray().ravel()
    assert ours[3] == 0 and truth[3] == 0
    nonzero = truth > 0
    assert nonzero.sum() > 20
    ratio = ours[nonzero] / truth[nonzero]  # one positive factor: the query's norm
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    assert np.all(ours[~nonzero] == 0)


def _index(texts: list[str]) -> SearchIndex:
    ids = [f"R{i}" for i in range(len(texts))]
    meta = pd.DataFrame(
        {"record_id": ids, "event_date": pd.Timestamp("2024-01-01"), "theme_id": -1,
         **{c: "" for c in META_COLUMNS}}
    )  # fmt: skip
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(texts), 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="m")


def _phrase_corpus() -> tuple[SearchIndex, str]:
    """Two records with the same words; only R1 has them in the query's order. Background
    records use the pairs often enough to be shared, and the words elsewhere."""
    rng = np.random.default_rng(2)
    vocab = [f"word{i}" for i in range(30)]
    background = [" ".join(rng.choice(vocab, 12)) for _ in range(40)]
    scrambled = "escalate sepsis failed screening observations missed"
    ordered = "failed escalate missed observations sepsis screening"
    query = ordered + " " + " ".join(vocab[:20])
    return _index(
        [scrambled, ordered, *background, "failed escalate", "missed observations"]
    ), query


def test_a_long_query_ranks_the_record_with_its_word_pairs_above_one_with_its_words() -> None:
    index, query = _phrase_corpus()
    plain = SearchSettings(long_query_terms=5, phrase_weight=0.0)
    phrased = SearchSettings(long_query_terms=5, phrase_weight=1.0, rerank_depth=30)
    seq = index.query_sequence(query)
    cos = index.phrase_cosines(seq, np.array([0, 1]))
    assert cos[1] > cos[0] > 0  # same words, but only R1 shares the pairs
    top = {}
    for name, s in (("plain", plain), ("phrased", phrased)):
        _, hits = text_query(index, query, embed=None, settings=s, n=5, method="hybrid")
        top[name] = [index.ids_[h[0]] for h in hits]
    assert top["plain"][:2] == ["R0", "R1"]  # a tie without pairs: R0 comes first
    assert top["phrased"][:2] == ["R1", "R0"]
    # a short query (fewer than long_query_terms distinct words) is never re-ranked
    short, off = (SearchSettings(long_query_terms=50, phrase_weight=w) for w in (100.0, 0.0))
    _, hits = text_query(index, query, embed=None, settings=short, n=5, method="hybrid")
    _, plain_hits = text_query(index, query, embed=None, settings=off, n=5, method="hybrid")
    assert hits == plain_hits


def test_rerank_mixes_min_max_scores_and_keeps_the_rest_below() -> None:
    index, query = _phrase_corpus()
    seq = index.query_sequence(query)
    positions = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    scores = np.array([1.0, 0.9, 0.5, 0.4, 0.1], dtype=np.float32)
    s = SearchSettings(rerank_depth=3, phrase_weight=0.7)
    pos, out = rerank(index, (positions, scores), seq, s)
    cos = index.phrase_cosines(seq, positions[:3])
    fused = (scores[:3] - 0.5) / 0.5
    phr = (cos - cos.min()) / (cos.max() - cos.min())
    mixed = fused + 0.7 * phr
    order = np.argsort(-mixed, kind="stable")
    assert pos.tolist() == [*positions[:3][order].tolist(), 3, 4]
    np.testing.assert_allclose(out[:3], mixed[order], rtol=1e-6)
    np.testing.assert_allclose(out[3:], [(0.4 - 0.5) / 0.5, (0.1 - 0.5) / 0.5], rtol=1e-6)
    assert out[3] <= out[:3].min()
    off = SearchSettings(rerank_depth=3, phrase_weight=0.0)
    assert rerank(index, (positions, scores), seq, off)[0].tolist() == positions.tolist()


def test_the_pair_table_is_saved_and_loaded_with_the_index(tmp_path) -> None:  # noqa: ANN001
    index, query = _phrase_corpus()
    assert len(index.phrases_) > 0
    index.save(tmp_path / "ix")
    seq = index.query_sequence(query)
    everyone = np.arange(index.size)
    for read_only in (False, True):
        loaded = SearchIndex.load(tmp_path / "ix", read_only=read_only)
        assert np.array_equal(np.asarray(loaded.phrases_.codes), index.phrases_.codes)
        np.testing.assert_allclose(
            loaded.phrase_cosines(seq, everyone), index.phrase_cosines(seq, everyone)
        )


def test_an_update_recounts_the_pairs() -> None:
    index, _ = _phrase_corpus()
    texts = ["failed escalate again", "failed escalate once more"]
    meta_ids = [*index.ids_.tolist(), "N1", "N2"]
    meta = pd.DataFrame(
        {"record_id": meta_ids, "event_date": pd.Timestamp("2024-01-01"), "theme_id": -1,
         **{c: "" for c in META_COLUMNS}}
    )  # fmt: skip
    vocab = index.tokenizer_.get_vocab_dict()
    code = np.array([(vocab["failed"] << 32) | vocab["escalate"]], dtype=np.int64)
    before = int(index.phrases_.frequency(code)[0])
    vecs = np.ones((2, 8), dtype=np.float32) / np.sqrt(8)
    index.update(index.ids_.tolist(), ["N1", "N2"], ["N1", "N2"], texts, vecs, meta)
    assert int(index.phrases_.frequency(code)[0]) == before + 2
