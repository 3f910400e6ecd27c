"""Similar-case search: filters, fusion, snippets, index persistence, near-duplicates."""

from __future__ import annotations

import csv
import json
import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from leaks import whole_word_leaks
from themes.errors import NotFoundError, ThemesError
from themes.records import text_hash
from themes.search import (
    fuse,
    make_filters,
    record_details,
    retrieve,
    search,
    snippet,
    update_index,
)
from themes.search_index import META_COLUMNS, Filters, SearchIndex
from themes.settings import SearchSettings
from themes.store import clean_texts, raw_records, utcnow

WORDS = [
    *("patient", "fell", "bed", "rails", "night", "nurse", "insulin", "dose", "missed"),
    *("pressure", "ulcer", "sepsis", "delay", "discharge", "ward", "theatre", "swab"),
    *("retained", "wrong", "site", "surgery", "oxygen", "observations"),
]
KINDS = ["incident", "complaint", "claim"]
SITES = ["Royal Infirmary", "General Hospital", "Community"]
SEVERITIES = ["No harm", "Low", "Moderate", "Severe", "Death"]


def _corpus(n: int, seed: int = 0) -> tuple[list[str], list[str], np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"R{i:05d}" for i in range(n)]
    texts = [" ".join(rng.choice(WORDS, 10)) for _ in range(n)]
    centres = rng.normal(size=(20, 24))
    vecs = centres[rng.integers(0, 20, n)] + 0.4 * rng.normal(size=(n, 24))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    meta = pd.DataFrame(
        {
            "record_id": ids,
            "event_date": [
                date(2024, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 700, n)
            ],
            "theme_id": rng.integers(-1, 6, n),
            "kind": rng.choice(KINDS, n),
            "site": rng.choice(SITES, n),
            "location": rng.choice(["Ward 1", "Ward 2", "ED", None], n),
            "specialty": rng.choice(["Surgery", "Medicine"], n),
            "severity": rng.choice(SEVERITIES, n),
            "status": rng.choice(["Open", "Closed"], n),
            "harm": rng.choice(["none", "low", "moderate", None], n),
        }
    )
    return ids, texts, vecs, meta


def _random_filters(rng: np.random.Generator) -> Filters:
    start = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 600)))
    return Filters(
        kind=[str(rng.choice(KINDS))] if rng.random() < 0.6 else None,
        site=[str(rng.choice(SITES)).upper()] if rng.random() < 0.5 else None,
        severity=list(rng.choice(SEVERITIES, 2)) if rng.random() < 0.4 else None,
        theme=[int(rng.integers(0, 6))] if rng.random() < 0.3 else None,
        since=start if rng.random() < 0.5 else None,
        until=start + timedelta(days=int(rng.integers(10, 300))) if rng.random() < 0.5 else None,
        status=["closed"] if rng.random() < 0.3 else None,
        harm=list(rng.choice(["none", "low", "moderate"], 2)) if rng.random() < 0.3 else None,
    )


def _satisfies(meta: pd.Series, f: Filters) -> bool:
    for col in META_COLUMNS:
        wanted = getattr(f, col)
        if wanted is not None:
            value = "" if meta[col] is None else str(meta[col]).lower()
            if value not in {w.lower() for w in wanted}:
                return False
    if f.theme is not None and meta["theme_id"] not in f.theme:
        return False
    if f.since is not None and meta["event_date"] < f.since:
        return False
    return not (f.until is not None and meta["event_date"] > f.until)


@pytest.mark.parametrize("ann_min_records", [10**9, 100], ids=["exact", "ann"])
def test_filters_never_return_a_record_outside_them(ann_min_records: int) -> None:
    ids, texts, vecs, meta = _corpus(3000)
    index = SearchIndex(ann_min_records=ann_min_records, prefilter_max_records=200).fit(
        ids, ids, texts, vecs, meta, model_id="test"
    )
    assert index.mode == ("ann" if ann_min_records == 100 else "exact")
    by_id = meta.set_index("record_id")
    settings = SearchSettings(candidates=50)
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(40):
        f = _random_filters(rng)
        q = int(rng.integers(0, len(ids)))
        for method in ("hybrid", "bm25", "dense"):
            hits = retrieve(
                index,
                tokens=index.query_tokens(texts[q]),
                vector=vecs[q],
                settings=settings,
                n=30,
                filters=f,
                method=method,
            )
            for pos, *_ in hits:
                assert _satisfies(by_id.loc[ids[pos]], f), (f, ids[pos])
                checked += 1
        # filtered dense search loses nothing against exact search over the same filter
        exact = index.dense(vecs[q], n=10, mask=index.mask(f), exact=True)[0]
        approx = index.dense(vecs[q], n=10, mask=index.mask(f))[0]
        assert len(set(exact) & set(approx)) >= 0.8 * len(exact)
    assert checked > 500


def test_exact_dense_search_under_a_filter_is_the_brute_force_top_n() -> None:
    """Small filters are gathered up front (`dense_search`), large ones scored in blocks:
    both give numpy's top n of the cosines inside the mask, in order."""
    ids, texts, vecs, meta = _corpus(3000, seed=5)
    index = SearchIndex(ann_min_records=10**9).fit(ids, ids, texts, vecs, meta, model_id="test")
    rng = np.random.default_rng(5)
    stored = np.asarray(index.vectors_, dtype=np.float32)
    for f in (
        Filters(location=["ED"]),
        Filters(kind=["claim"], since=date(2024, 6, 1)),
        Filters(site=["Community"], severity=["Low"], theme=[2]),
        None,
    ):
        mask = index.mask(f)
        keep = np.ones(len(ids), dtype=bool) if mask is None else mask
        for q in rng.integers(0, len(ids), 5):
            sims = np.where(keep, stored @ vecs[q], -np.inf)
            expected = np.argsort(-sims, kind="stable")[:10]
            search = index.dense_search(n=10, mask=mask)
            pos, score = search(vecs[q])
            assert np.all(keep[pos]), f
            np.testing.assert_allclose(score, sims[expected], atol=2e-3)
            assert len(set(pos) & set(expected)) >= 9, f  # ties in float16 may swap one


def test_a_filter_mask_keeps_exactly_the_matching_records() -> None:
    """Few wanted values are compared one by one, many through a lookup table: both keep
    exactly the records the filter names (any case, unknown values and blanks ignored)."""
    ids, texts, vecs, meta = _corpus(600, seed=3)
    wards = [f"Ward {i}" for i in range(12)]
    meta["location"] = np.random.default_rng(3).choice([*wards, None], len(ids))
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    by_id = meta.set_index("record_id")
    cases = [
        Filters(location=["ward 3"]),
        Filters(location=["WARD 3", "Ward 7", "no such ward"]),
        Filters(location=[*wards[:10], "no such ward"]),  # more than 8: the lookup table
        Filters(location=wards, kind=["claim", "Incident"], severity=["Low"]),
        Filters(location=["no such ward"]),
    ]
    for f in cases:
        expected = np.array([_satisfies(by_id.loc[i], f) for i in ids])
        assert np.array_equal(index.mask(f), expected), f
    assert 0 < index.mask(cases[2]).sum() < len(ids)
    assert not index.mask(cases[4]).any()


def test_positions_of_ids_an_index_holds_twice_are_their_first_place() -> None:
    """Ids are unique in a product index, but one fitted with an id twice still answers
    (its first place, as the old scan did) rather than failing in the hash lookup."""
    ids, texts, vecs, meta = _corpus(50)
    ids[5] = ids[2]
    meta.loc[5, "record_id"] = ids[2]
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    assert index.positions([ids[6], ids[2], "nope"]).tolist() == [6, 2, -1]
    assert index.position(ids[2]) == 2 and index.position("nope") is None
    assert index.positions([]).tolist() == []


def test_word_overlap_weighs_rare_shared_facts_above_common_words() -> None:
    from themes.duplicates import candidates, word_overlap

    ids, texts, vecs, meta = _corpus(400)
    texts[0] = "patient fell bed night nurse enoxaparin haematoma"
    texts[1] = "nurse found patient bed night enoxaparin haematoma"  # same facts, re-worded
    texts[2] = "patient fell bed night nurse ward delay"  # common words only
    texts[3] = "patient fell bed night nurse enoxaparin haematoma"  # the same text
    meta.loc[:3, ["site", "location", "specialty", "severity"]] = ["A", "Ward 1", "S", "Low"]
    meta.loc[:3, "event_date"] = date(2025, 1, 1)
    vecs[:4] = vecs[0]  # equal embeddings: only the words can tell them apart
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    overlap = word_overlap(index, 0, np.array([1, 2, 3]))
    assert overlap[2] == pytest.approx(1.0, abs=1e-5)
    assert 0 <= overlap[1] < overlap[0] < 1
    cand, scores = candidates(
        index, 0, max_days=2, match_fields=["site", "location", "specialty", "severity"],
        lexical_weight=0.8,
    )  # fmt: skip
    assert cand.tolist()[:3] == [3, 1, 2]
    assert scores[0] == pytest.approx(1.0, abs=1e-3)
    assert np.all(np.diff(scores) <= 0)


def test_word_overlap_of_many_partners_at_once_matches_one_by_one() -> None:
    """The overlap is computed for all partners in one pass: each partner's value is the
    one it gets alone, a partner listed twice gets it twice, a record with no indexed word
    (only stop words) scores 0, and no partner gives an empty result."""
    from themes.duplicates import word_overlap

    ids, texts, vecs, meta = _corpus(300, seed=5)
    texts[7] = "the and of"  # stop words only: bm25s's empty token, no word
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    others = np.array([3, 7, 250, 3, 0, 120])
    for by_kind in (False, True):
        together = word_overlap(index, 0, others, idf_by_kind=by_kind)
        alone = [word_overlap(index, 0, np.array([o]), idf_by_kind=by_kind)[0] for o in others]
        np.testing.assert_array_equal(together, np.array(alone, dtype=np.float32))
        assert together[0] == together[3] > 0
        assert together[1] == 0.0
        assert together[4] == pytest.approx(1.0, abs=1e-6)  # itself
        assert word_overlap(index, 7, others, idf_by_kind=by_kind).tolist() == [0.0] * 6
    assert len(word_overlap(index, 0, np.array([], dtype=np.int64))) == 0


def test_word_overlap_discounts_words_that_look_alike_reports_all_use() -> None:
    from themes.duplicates import _context, word_overlap

    ids, texts, vecs, meta = _corpus(400)
    # ten look-alike reports share the theme's words; only 0 and 1 share the specific facts
    for i in range(10):
        texts[i] = f"pressure ulcer sacrum grade heel turning chart visit{i} reason{i}"
        vecs[i] = vecs[0]
    texts[0] += " enoxaparin haematoma"
    texts[1] += " enoxaparin haematoma"
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    plain = word_overlap(index, 0, np.array([1, 2]))
    near = _context(index, 0, 9)
    assert near is not None and set(near[0][:9].tolist()) == set(range(1, 10))
    local = word_overlap(index, 0, np.array([1, 2]), context=near)
    # without context the shared theme words make the look-alike (2) score close to the
    # duplicate (1); discounting what the neighbours all say sets them far apart
    assert plain[0] > plain[1] > 0.5 * plain[0]
    assert local[1] < 0.5 * plain[1]
    assert local[0] > 3 * local[1]


def test_idf_by_kind_discounts_the_phrasing_every_claim_uses() -> None:
    """Claims share legal phrasing that is rare among all records but common among claims:
    judged by kind, two claims that share only that phrasing no longer look alike, while
    a claim and an incident naming the same uncommon facts still do."""
    from themes.duplicates import kind_idf, word_overlap

    ids, texts, vecs, meta = _corpus(400, seed=5)
    meta["kind"] = ["claim"] * 40 + ["incident"] * 300 + ["complaint"] * 60
    for i in range(40):
        texts[i] = f"alleged defendant liability amenity damages breach {texts[i]}"
    texts[0] += " enoxaparin haematoma"
    texts[40] = "enoxaparin haematoma " + texts[40]  # an incident with claim 0's facts
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    # the per-kind IDF read from the BM25 matrix matches counting each kind's records
    table = kind_idf(index)
    kinds = index.meta_["kind"].cat.categories.tolist()
    for kind in ("claim", "incident"):
        members = [p for p in range(index.size) if meta["kind"][p] == kind]
        df = np.zeros(table.shape[1])
        for p in members:
            df[index.tokens_of(p)] += 1
        n = len(members)
        tokens = index.tokens_of(0) + index.tokens_of(40)
        expected = np.log1p((n - df[tokens] + 0.5) / (df[tokens] + 0.5))
        np.testing.assert_allclose(table[kinds.index(kind), tokens], expected)
    plain = word_overlap(index, 0, np.array([1, 40]))
    by_kind = word_overlap(index, 0, np.array([1, 40]), idf_by_kind=True)
    assert plain[0] > 0.4  # the shared legal phrasing makes two claims look alike
    assert by_kind[0] < 0.5 * plain[0]
    assert by_kind[1] > 2 * by_kind[0]  # the shared facts still count across kinds
    # the same from either side
    assert word_overlap(index, 40, np.array([0]), idf_by_kind=True)[0] == pytest.approx(
        by_kind[1], rel=1e-5
    )


def test_the_neighbour_context_tapers_so_near_ties_cannot_swing_the_overlap() -> None:
    """Context weights: full to rank n/2, then falling by 1/n a rank to 0 at 3n/2; they
    sum to n. Swapping two neighbouring ranks moves the overlap a little, not a lot."""
    from themes.duplicates import _context, word_overlap

    ids, texts, vecs, meta = _corpus(400, seed=3)
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    positions, weights = _context(index, 0, 10)
    assert len(positions) == 15 and 0 not in positions.tolist()
    assert weights.sum() == pytest.approx(10.0)
    assert weights[:5].tolist() == [1.0] * 5 and weights[-1] == pytest.approx(0.05)
    assert np.all(np.diff(weights) <= 0)
    others = np.arange(1, 60)
    base = word_overlap(index, 0, others, context=(positions, weights))
    swapped = positions.copy()
    swapped[[9, 10]] = swapped[[10, 9]]  # ranks 10 and 11 trade places
    moved = word_overlap(index, 0, others, context=(swapped, weights))
    hard = word_overlap(index, 0, others, context=positions[:10])
    hard_moved = word_overlap(index, 0, others, context=swapped[:10])
    assert np.abs(moved - base).max() < 0.5 * np.abs(hard_moved - hard).max()
    # positions alone count one each, as before
    ones = word_overlap(index, 0, others, context=(positions[:10], np.ones(10)))
    np.testing.assert_allclose(hard, ones)


def test_a_pairs_score_is_the_same_whichever_record_is_checked() -> None:
    """A nightly run checks only its new records: whether two reports pair must not depend
    on which of them is the new one."""
    from themes.duplicates import candidates, find_pairs

    ids, texts, vecs, meta = _corpus(400, seed=4)
    meta["event_date"] = date(2025, 1, 1)  # everyone a candidate of everyone
    meta[["site", "location", "specialty", "severity"]] = ["A", "Ward 1", "S", "Low"]
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    fields = ["site", "location", "specialty", "severity"]
    kw = {"max_days": 1, "match_fields": fields, "lexical_weight": 0.8, "context": 10}
    for a in (0, 7, 42):
        cand, scores = candidates(index, a, **kw)
        for b, s_ab in list(zip(cand.tolist(), scores.tolist(), strict=True))[:5]:
            back, back_scores = candidates(index, b, **kw)
            assert back_scores[back.tolist().index(a)] == pytest.approx(s_ab, abs=1e-5)
    kw["threshold"] = float(np.quantile(candidates(index, 0, **kw)[1], 0.9))
    del kw["max_days"]
    one = {(a, b) for a, b, *_ in find_pairs(index, np.array([0]), max_days=1, **kw)}
    others = np.array(sorted({b for _, b in one} | {a for a, _ in one} - {0}))
    two = {(a, b) for a, b, *_ in find_pairs(index, others, max_days=1, **kw)}
    assert one and one <= two  # every pair found from record 0 is found from its partners


def test_pairs_of_two_kinds_are_judged_by_their_own_threshold() -> None:
    """A complaint against an incident report pairs from `cross_kind_threshold`, two
    records of one kind from `threshold`; without it, one threshold judges every pair."""
    from themes.duplicates import candidates, find_pairs

    ids, texts, vecs, meta = _corpus(400, seed=5)
    meta["event_date"] = date(2025, 1, 1)
    fields: list[str] = []
    kw = {"max_days": 1, "match_fields": fields, "lexical_weight": 0.5}
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    kinds = meta["kind"].to_numpy()
    rows = np.arange(40)
    scores = {}
    for a in rows.tolist():
        cand, sc = candidates(index, a, **kw)
        for b, v in zip(cand.tolist(), sc.tolist(), strict=True):
            scores[(min(a, b), max(a, b))] = v
    high, low = (float(x) for x in np.quantile(list(scores.values()), [0.95, 0.8]))

    def found(**thresholds: float) -> set[tuple[int, int]]:
        return {(a, b) for a, b, *_ in find_pairs(index, rows, **kw, **thresholds)}

    def expected(same: float, cross: float) -> set[tuple[int, int]]:
        return {p for p, v in scores.items()
                if v >= (cross if kinds[p[0]] != kinds[p[1]] else same)}  # fmt: skip

    two = found(threshold=high, cross_kind_threshold=low)
    assert two == expected(high, low)
    assert any(kinds[a] == kinds[b] for a, b in two)
    assert any(kinds[a] != kinds[b] for a, b in two)
    assert found(threshold=low, cross_kind_threshold=high) == expected(low, high)
    assert found(threshold=high) == expected(high, high) != two


def test_the_nightly_check_stores_the_pairs_of_both_configured_thresholds(tmp_path) -> None:  # noqa: ANN001
    """`update_duplicates` (what the nightly flow calls) judges pairs of one kind and pairs
    of two kinds by their own settings, and stores what `find_pairs` finds with them."""
    from themes.duplicates import duplicate_groups, find_pairs, update_duplicates
    from themes.settings import SearchSettings
    from themes.store import Store

    ids, texts, vecs, meta = _corpus(300, seed=6)
    meta["event_date"] = date(2025, 1, 1)
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    settings = SearchSettings(duplicate_threshold=0.3, duplicate_cross_kind_threshold=0.2,
                              duplicate_lexical_weight=0.0, duplicate_match_fields=["site"],
                              duplicate_sex_conflict_penalty=0.0)  # fmt: skip
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    update_duplicates(store, index, settings, changed_ids=ids)
    stored = {tuple(sorted(map(str, pair))) for g in duplicate_groups(store, limit=None)
              for pair in ((p["record_a"], p["record_b"]) for p in g["pairs"])}  # fmt: skip
    kw = {"max_days": 1, "match_fields": ["site"]}
    both = find_pairs(index, np.arange(300), threshold=0.3, cross_kind_threshold=0.2, **kw)
    expected = {tuple(sorted((str(ids[a]), str(ids[b])))) for a, b, *_ in both}
    assert stored == expected
    one = find_pairs(index, np.arange(300), threshold=0.3, **kw)
    assert len(expected) > len(one) > 0  # the lower cross-kind threshold adds pairs


def test_reports_about_a_man_and_a_woman_are_not_one_event() -> None:
    from themes.duplicates import candidates, sex_conflicts, subject_sex

    ids, texts, vecs, meta = _corpus(400)
    texts[0] = "she fell from bed at night enoxaparin haematoma her head"
    texts[1] = "he fell from bed at night enoxaparin haematoma his head"  # another patient
    texts[2] = "found on the floor by bed at night enoxaparin haematoma"  # says neither
    texts[3] = "she was found by bed at night enoxaparin haematoma he said"  # says both
    texts[4] = "her fall from bed at night enoxaparin haematoma"  # the same patient
    meta.loc[:4, ["site", "location", "specialty", "severity"]] = ["A", "Ward 1", "S", "Low"]
    meta.loc[:4, "event_date"] = date(2025, 1, 1)
    vecs[:5] = vecs[0]
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    assert subject_sex(index)[:5].tolist() == [2, 1, 0, 0, 2]
    assert sex_conflicts(index, 0, np.array([1, 2, 3, 4])).tolist() == [1.0, 0.0, 0.0, 0.0]
    fields = ["site", "location", "specialty", "severity"]

    def scores(penalty: float) -> dict[int, float]:
        cand, sc = candidates(
            index, 0, max_days=2, match_fields=fields, lexical_weight=0.8,
            sex_conflict_penalty=penalty,
        )  # fmt: skip
        return dict(zip(cand.tolist(), sc.tolist(), strict=True))

    plain, checked = scores(0.0), scores(1.0)
    assert checked[1] == pytest.approx(plain[1] - 1.0, abs=1e-5)
    for other in (2, 3, 4):
        assert checked[other] == pytest.approx(plain[other], abs=1e-6)


def test_a_read_only_index_answers_as_the_loaded_one_and_refuses_updates(tmp_path) -> None:  # noqa: ANN001
    from themes.errors import ThemesError

    ids, texts, vecs, meta = _corpus(400, seed=3)
    SearchIndex(ann_min_records=100).fit(
        ids, [text_hash(t) for t in texts], texts, vecs, meta, model_id="m"
    ).save(tmp_path / "index")
    writable = SearchIndex.load(tmp_path / "index")
    mapped = SearchIndex.load(tmp_path / "index", read_only=True)
    assert mapped.mode == writable.mode == "ann"
    rng = np.random.default_rng(4)
    for i in range(20):
        f = _random_filters(rng) if i % 2 else None
        mask = writable.mask(f)
        assert np.array_equal(mask, mapped.mask(f))
        tokens = writable.query_tokens(texts[i])
        a, b = writable.bm25(tokens, n=10, mask=mask), mapped.bm25(tokens, n=10, mask=mask)
        assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
        a, b = writable.dense(vecs[i], n=10, mask=mask), mapped.dense(vecs[i], n=10, mask=mask)
        assert np.array_equal(a[0], b[0])
        assert mapped.tokens_of(i) == writable.tokens_of(i)
    assert isinstance(mapped.tok_ids_, np.memmap) and isinstance(mapped.vectors_, np.memmap)
    assert "hashes_" not in vars(mapped)  # read when first asked for
    assert mapped.hashes_.tolist() == writable.hashes_.tolist()
    with pytest.raises(ThemesError, match="read-only"):
        mapped.update(ids[:-1], [], [], [], np.zeros((0, vecs.shape[1])), meta[:-1])


def test_an_index_saved_with_tokens_npz_still_loads(tmp_path) -> None:  # noqa: ANN001
    """Indexes saved before the token arrays became plain .npy files keep working."""
    ids, texts, vecs, meta = _corpus(120, seed=5)
    built = SearchIndex().fit(ids, [text_hash(t) for t in texts], texts, vecs, meta, model_id="m")
    built.save(tmp_path / "index")
    path = tmp_path / "index"
    np.savez(path / "tokens.npz", indptr=built.tok_indptr_, ids=built.tok_ids_)
    (path / "token_ids.npy").unlink()
    (path / "token_indptr.npy").unlink()
    for read_only in (False, True):
        loaded = SearchIndex.load(path, read_only=read_only)
        assert [loaded.tokens_of(i) for i in range(120)] == [built.tokens_of(i) for i in range(120)]


def test_query_encoder_falls_back_to_torch_with_a_warning(
    settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:  # noqa: ANN001
    from themes.embed import OnnxQueryEncoder, SentenceTransformerEmbedder
    from themes.errors import ConfigError
    from themes.search import make_query_embedder

    def fail(*_a: object, **_k: object) -> None:
        raise ConfigError("onnxruntime is not installed (test)")

    monkeypatch.setattr(OnnxQueryEncoder, "build", fail)
    embedder = SentenceTransformerEmbedder(settings.embed)  # loads nothing until used
    with caplog.at_level(logging.WARNING, logger="themes.search"):
        assert make_query_embedder(embedder, settings).backend == "torch"
    assert "onnxruntime is not installed (test); queries use torch" in caplog.text
    torch_settings = settings.model_copy(
        update={"search": settings.search.model_copy(update={"query_encoder": "torch"})}
    )
    caplog.clear()
    assert make_query_embedder(embedder, torch_settings).backend == "torch"
    assert caplog.text == ""


def test_fusion_follows_the_formulas() -> None:
    bm25 = (np.array([7, 3, 5]), np.array([9.0, 4.0, 1.0]))
    dense = (np.array([5, 8]), np.array([0.9, 0.5]))
    pos, score = fuse(bm25, dense, method="rrf", rrf_k=10, dense_weight=0.25)
    expected = {7: 0.75 / 11, 3: 0.75 / 12, 5: 0.75 / 13 + 0.25 / 11, 8: 0.25 / 12}
    assert dict(zip(pos.tolist(), score.tolist(), strict=True)) == pytest.approx(expected)
    assert pos.tolist() == sorted(expected, key=lambda p: -expected[p])
    pos, score = fuse(bm25, dense, method="convex", rrf_k=0, dense_weight=0.5)
    got = dict(zip(pos.tolist(), score.tolist(), strict=True))
    assert got == pytest.approx({7: 0.5, 3: 0.5 * 3 / 8, 5: 0.5, 8: 0.0})


def test_a_long_query_fuses_with_its_own_dense_weight() -> None:
    """A query whose BM25 terms are weighted (a long one) fuses with
    `long_query_dense_weight`; a short one, and every query when it is None, with
    `dense_weight`."""
    ids, texts, vecs, meta = _corpus(300, seed=5)
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    tokens, _ = index.query_terms(texts[0])
    weights = np.linspace(0.5, 1.5, len(tokens)).astype(np.float32)
    query = vecs[1]
    s = SearchSettings(dense_weight=0.6, long_query_dense_weight=0.05)

    def expected(w: np.ndarray | None, dense_weight: float) -> list[int]:
        b = index.bm25(tokens, n=s.candidates, weights=w)
        d = index.dense(query, n=s.candidates)
        pos, _ = fuse(b, d, method=s.fusion, rrf_k=s.rrf_k, dense_weight=dense_weight)
        return pos[:10].tolist()

    def got(w: np.ndarray | None, settings: SearchSettings) -> list[int]:
        hits = retrieve(index, tokens=tokens, vector=query, settings=settings, n=10, weights=w)
        return [h[0] for h in hits]

    assert got(weights, s) == expected(weights, 0.05)
    assert got(None, s) == expected(None, 0.6)
    one = s.model_copy(update={"long_query_dense_weight": None})
    assert got(weights, one) == expected(weights, 0.6)
    assert expected(weights, 0.05) != expected(weights, 0.6)  # the weights rank differently


def test_snippet_highlights_the_query_terms() -> None:
    text = (
        "Routine observations. " * 30
        + "Insulin dose was missed at night on the ward. "
        + ("Nothing else. " * 30)
    )
    snip, spans = snippet(text, {"insulin", "night"}, width=120)
    assert len(snip) <= 160
    marked = [snip[a:b].lower() for a, b in spans]
    assert "insulin" in marked and "night" in marked


def test_a_query_of_unknown_words_matches_nothing_lexically() -> None:
    """bm25s gives a text with no known word its empty token; a query made only of words
    the collection never used must not match the records that hold only placeholders."""
    texts = ["[PERSON] [PERSON]", "Insulin dose missed at night.", "Patient fell from bed."]
    ids = [f"R{i}" for i in range(len(texts))]
    meta = _corpus(len(texts))[3].assign(record_id=ids)
    index = SearchIndex().fit(
        ids, ids, texts, np.eye(len(texts), 8, dtype=np.float32), meta, model_id="m"
    )
    assert index.query_tokens("zebra quokka") == []
    assert len(index.bm25(index.query_tokens("zebra quokka"), n=5)[0]) == 0
    hits = index.bm25(index.query_tokens("zebra insulin"), n=5)[0]
    assert index.ids_[hits].tolist() == ["R1"]


def test_records_of_only_placeholders_share_no_words() -> None:
    """Two records that are only placeholders have no word in common, so the word overlap
    cannot make them one event and "more like this" has no terms to search with."""
    from themes.duplicates import word_overlap

    texts = ["[PERSON] [PERSON].", "[PERSON] and [PERSON]", "Insulin dose missed at night."]
    ids = [f"R{i}" for i in range(len(texts))]
    meta = _corpus(len(texts))[3].assign(record_id=ids)
    index = SearchIndex().fit(
        ids, ids, texts, np.eye(len(texts), 8, dtype=np.float32), meta, model_id="m"
    )
    assert index.tokens_of(0) == index.tokens_of(1) == []
    assert word_overlap(index, 0, np.array([1, 2])).tolist() == [0.0, 0.0]
    assert len(index.tokens_of(2)) == 4


def _fill_store(store, n: int, *, start: int = 0, dim: int = 16, seed: int = 0) -> list[str]:  # noqa: ANN001
    """Records with clean texts and cached embeddings, as the flow leaves them."""
    rng = np.random.default_rng(seed)
    ids, now, vecs = [], utcnow(), {}
    raw, clean = [], []
    for i in range(start, start + n):
        rid = f"INC{i:06d}"
        text = " ".join(rng.choice(WORDS, 8))
        h = text_hash(text)
        ids.append(rid)
        raw.append(
            {
                "record_id": rid,
                "kind": "incident",
                "source": "t",
                "file": "t.csv",
                "row_number": i,
                "event_date": date(2025, 1, 1) + timedelta(days=i % 50),
                "site": SITES[i % 3],
                "narrative": text,
                "raw_hash": h,
                "first_seen": now,
                "updated_at": now,
            }  # fmt: skip
        )
        clean.append(
            {
                "record_id": rid,
                "raw_hash": h,
                "clean_text": text,
                "clean_hash": h,
                "entity_counts": "{}",
                "cleaned_at": now,
            }  # fmt: skip
        )
        v = rng.normal(size=dim)
        vecs[h] = (v / np.linalg.norm(v)).astype(np.float32)
    with store.begin() as conn:
        store.upsert(conn, raw_records, raw, keys=["record_id"])
        store.upsert(conn, clean_texts, clean, keys=["record_id"])
    store.put_embeddings("all-MiniLM-L6-v2", vecs)
    return ids


def test_index_updates_only_new_and_changed_records(settings, store) -> None:  # noqa: ANN001
    _fill_store(store, 60)
    index, info = update_index(store, settings)
    assert (info.rebuilt, info.added, index.size) == (True, 60, 60)
    index, info = update_index(store, settings)
    assert (info.rebuilt, info.added, info.removed) == (False, 0, 0)
    assert index.positions(["INC000007", "NOPE", "INC000059"]).tolist() == [
        index.position("INC000007"), -1, index.position("INC000059")]  # fmt: skip
    _fill_store(store, 5, start=60, seed=1)
    new_text = "retained swab after theatre"
    with store.begin() as conn:
        conn.execute(
            clean_texts.update()
            .where(clean_texts.c.record_id == "INC000003")
            .values(clean_text=new_text, clean_hash=text_hash(new_text))
        )
        conn.execute(raw_records.delete().where(raw_records.c.record_id == "INC000007"))
    store.put_embeddings("all-MiniLM-L6-v2", {text_hash(new_text): np.eye(16, dtype=np.float32)[0]})
    index, info = update_index(store, settings)
    assert (info.added, info.removed, index.size) == (6, 2, 64)
    assert sorted(info.changed_ids)[0] == "INC000003"
    assert index.position("INC000007") is None
    # the id lookup follows the update: every id at its own position, the removed one gone
    ids = index.ids_.tolist()
    assert index.positions([*ids, "INC000007"]).tolist() == [*range(len(ids)), -1]
    hits = index.bm25(index.query_tokens("retained swab"), n=3)[0]
    assert index.ids_[hits[0]] == "INC000003"


@pytest.mark.parametrize("damage", ["manifest", "vectors", "tokens", "ann", "phrases", "missing"])
def test_a_corrupt_index_is_rebuilt_with_a_warning_and_a_missing_one_built(
    settings,
    store,
    damage: str,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    settings = settings.model_copy(
        update={"search": settings.search.model_copy(update={"ann_min_records": 10})}
    )
    _fill_store(store, 40)
    index, _ = update_index(store, settings)
    assert index.mode == "ann"
    path = settings.paths.data_dir / "search_index"
    if damage == "manifest":
        (path / "manifest.json").write_text("{not json")
    elif damage == "vectors":
        data = (path / "vectors.npy").read_bytes()
        (path / "vectors.npy").write_bytes(data[: len(data) // 2])
    elif damage == "tokens":
        data = (path / "token_ids.npy").read_bytes()
        (path / "token_ids.npy").write_bytes(data[: len(data) - 8])
    elif damage == "ann":
        (path / "ann.usearch").write_bytes(b"\0" * 64)
    elif damage == "phrases":  # a readable file of the wrong length
        np.save(path / "phrase_df.npy", np.ones(1, dtype=np.int32))
    else:
        import shutil

        shutil.rmtree(path)
    with caplog.at_level(logging.INFO, logger="themes.search"):
        index, info = update_index(store, settings)
    assert info.rebuilt and index.size == 40
    # a damaged index is a warning; a missing one (a first run) is built without one
    expected = ("building the search index", logging.INFO) if damage == "missing" else (
        "rebuilding it from the store", logging.WARNING)  # fmt: skip
    lines = [(r.getMessage(), r.levelno) for r in caplog.records]
    assert any(expected[0] in m and level == expected[1] for m, level in lines), lines
    assert all(level < logging.WARNING for _, level in lines) or damage != "missing", lines
    again, info = update_index(store, settings)
    assert not info.rebuilt and again.size == 40


def test_bad_filters_are_refused_by_the_python_api_too(settings) -> None:  # noqa: ANN001
    with pytest.raises(ThemesError, match="--kind 'accident' is not a record kind"):
        search("fell", settings=settings, kind="accident")
    with pytest.raises(ThemesError, match="--since 2025-06-01 is after --until 2025-01-01"):
        make_filters(since="2025-06-01", until=date(2025, 1, 1))
    with pytest.raises(ThemesError, match="--since '2025-W01-1' is not a date"):
        make_filters(since="2025-W01-1")
    same_day = make_filters(kind=["Incident"], since="2025-01-01", until="2025-01-01")
    assert same_day.kind == ["Incident"] and same_day.since == same_day.until


def test_a_theme_filter_must_name_a_theme_of_the_active_model(settings, theme_model) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from themes.cli import app
    from themes.search import Searcher
    from themes.store import assignments

    store = theme_model
    ids = _fill_store(store, 30)
    with store.begin() as conn:
        q = sa.select(clean_texts.c.record_id, clean_texts.c.clean_hash)
        hashes = dict(conn.execute(q).all())
        conn.execute(
            assignments.insert(),
            [
                {"record_id": rid, "model_id": "m", "theme_id": i % 3 + 1, "score": 1.0,
                 "method": "fit", "clean_hash": hashes[rid], "assigned_at": utcnow()}
                for i, rid in enumerate(ids)
            ],
        )  # fmt: skip
    update_index(store, settings)
    with Searcher(settings, store=store) as searcher:
        found = searcher.similar(ids[0], filters=make_filters(theme=2), k=5)
        assert found["results"] and {r["theme_id"] for r in found["results"]} == {2}
        for missing in (99, 7):  # 7 is a theme of an earlier model only
            with pytest.raises(NotFoundError, match=f"--theme {missing}: no such theme"):
                searcher.similar(ids[0], filters=make_filters(theme=[2, missing]))
        with pytest.raises(NotFoundError, match="`themes themes` lists the ids"):
            searcher.search("patient fell", filters=make_filters(theme=99), method="bm25")
        with pytest.raises(ThemesError, match="is after --until"):
            searcher.search(
                "patient fell",
                filters=Filters(since=date(2025, 2, 1), until=date(2025, 1, 1)),
                method="bm25",
            )
    result = CliRunner().invoke(app, ["similar", ids[0], "--theme", "99"])
    assert result.exit_code == 1 and "--theme 99: no such theme" in result.stderr


# -- end to end on the shared demo flow run ---------------------------------------------
def _planted(demo_run) -> tuple[set[str], list[tuple[str, str]]]:  # noqa: ANN001
    identifiers, pairs = set(), []
    with demo_run["manifest"].labels_path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            identifiers |= {i["value"] for i in json.loads(row["identifiers"] or "[]")}
            if row["is_duplicate_of"]:
                pairs.append((row["record_id"], row["is_duplicate_of"]))
    return identifiers, pairs


@pytest.fixture(scope="module")
def searcher(demo_run):  # noqa: ANN001, ANN201
    from themes.search import Searcher

    with Searcher(demo_run["settings"]) as searcher:
        yield searcher


@pytest.mark.slow
def test_search_finds_the_kind_of_event_and_respects_filters(demo_run, searcher) -> None:  # noqa: ANN001
    assert demo_run["summary"]["search"]["records"] > 800
    data = searcher.search("patient fell out of bed at night and hit their head", k=10)
    assert len(data["results"]) == 10
    top = data["results"][0]
    assert {"record_id", "kind", "event_date", "theme_label", "score", "snippet"} <= set(top)
    assert any(top["snippet"][a:b].lower() in {"fell", "bed", "night", "head"}
               for a, b in top["highlights"])  # fmt: skip
    page2 = searcher.search("patient fell out of bed at night and hit their head", k=10, offset=10)
    assert not {r["record_id"] for r in data["results"]} & {
        r["record_id"] for r in page2["results"]
    }
    f = Filters(kind=["complaint"], since=date(2025, 1, 1))
    filtered = searcher.search("patient fell out of bed", filters=f, k=20)
    assert filtered["results"]
    assert all(r["kind"] == "complaint" and r["event_date"] >= "2025-01-01"
               for r in filtered["results"])  # fmt: skip


@pytest.mark.slow
def test_planted_near_duplicates_rank_first(demo_run, searcher) -> None:  # noqa: ANN001
    from themes.duplicates import candidates, check_args

    _, pairs = _planted(demo_run)
    index, s = searcher.index, demo_run["settings"].search
    pairs = [
        (a, b) for a, b in pairs if index.position(a) is not None and index.position(b) is not None
    ]
    assert len(pairs) >= 5
    for dup, original in pairs:
        cand, _ = candidates(index, index.position(dup), **check_args(s))
        assert index.ids_[cand[0]] == original, (dup, original)


@pytest.mark.slow
def test_planted_near_duplicates_are_grouped(demo_run, searcher) -> None:  # noqa: ANN001
    from themes.duplicates import duplicate_groups

    _, pairs = _planted(demo_run)
    index = searcher.index
    pairs = [
        (a, b) for a, b in pairs if index.position(a) is not None and index.position(b) is not None
    ]
    groups = duplicate_groups(searcher.store, limit=None)
    grouped = [{r["record_id"] for r in g["records"]} for g in groups]
    found = sum(any({a, b} <= g for g in grouped) for a, b in pairs)
    # This store plants 9 pairs, too few to measure the target's 0.9 recall (one miss costs
    # 0.11); bench_search.py measures it per seed on 200 held-out pairs. Here: at most one
    # miss (now INC000290/INC000292, two incident reports scoring 0.361 against 0.38).
    assert len(pairs) >= 8
    assert found >= len(pairs) - 1
    assert len(groups) <= 1.2 * len(pairs) + 1


@pytest.mark.slow
def test_search_outputs_never_contain_a_planted_identifier(demo_run, searcher) -> None:  # noqa: ANN001
    from themes.duplicates import duplicate_groups

    identifiers, pairs = _planted(demo_run)
    outputs = [
        searcher.search(q, k=50)
        for q in ("patient fell", "complaint about the attitude of staff", "medication error")
    ]
    outputs += [searcher.similar(a, k=20) for a, _ in pairs[:3]]
    outputs.append(duplicate_groups(searcher.store, limit=None))
    text = json.dumps(outputs, ensure_ascii=False)
    leaked = whole_word_leaks(identifiers, text)
    assert len(identifiers) > 100
    assert not leaked, leaked[:3]
    with searcher.store.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(raw_records)).scalar_one()
    assert n > 0


@pytest.mark.slow
def test_search_commands_print_the_documented_json(demo_run) -> None:  # noqa: ANN001
    """`themes search`, `similar` and `duplicates` on the demo store, as an investigator
    runs them: the JSON keeps its documented keys and the filters hold."""
    from typer.testing import CliRunner

    from themes.cli import app

    runner = CliRunner()
    found = runner.invoke(
        app, ["search", "patient fell out of bed", "--kind", "incident", "-k", "3", "--json"]
    )
    assert found.exit_code == 0, found.output
    data = json.loads(found.stdout)
    assert len(data["results"]) == 3
    assert {r["kind"] for r in data["results"]} == {"incident"}
    first = data["results"][0]
    assert data["schema_version"] and data["filters"]["kind"] == ["incident"]
    assert {"record_id", "kind", "event_date", "harm", "theme_label", "score", "snippet"} <= set(
        first
    )
    # the harm level the factors step judged, named as the export grades it
    harmed = runner.invoke(
        app, ["search", "patient fell out of bed", "--harm", "Moderate harm", "-k", "5", "--json"]
    )
    assert harmed.exit_code == 0, harmed.output
    moderate = json.loads(harmed.stdout)
    assert moderate["filters"]["harm"] == ["moderate"] and moderate["results"]
    assert {r["harm"] for r in moderate["results"]} == {"moderate"}
    table = runner.invoke(app, ["search", "patient fell out of bed", "--harm", "moderate"])
    assert table.exit_code == 0 and "harm" in table.stdout and "moderate" in table.stdout
    like = runner.invoke(app, ["similar", first["record_id"], "-k", "2", "--json"])
    assert like.exit_code == 0, like.output
    others = [r["record_id"] for r in json.loads(like.stdout)["results"]]
    assert len(others) == 2 and first["record_id"] not in others
    groups = runner.invoke(app, ["duplicates", "--json"])
    assert groups.exit_code == 0, groups.output
    assert isinstance(json.loads(groups.stdout), list | dict)
    missing = runner.invoke(app, ["similar", "NO-SUCH-RECORD"])
    assert missing.exit_code != 0 and "NO-SUCH-RECORD" in missing.output


def _long_query_corpus(with_query: bool = False) -> tuple[SearchIndex, str]:
    """A decoy record that shares many everyday words with a long query, and the target,
    which shares its few specific ones; 60 background records make the everyday words
    common and the specific ones rare. `with_query` indexes the query too (R62), with a
    word no other record uses."""
    rng = np.random.default_rng(3)
    common = [f"everyday{i}" for i in range(20)]
    specific = ["gentamicin", "nomogram", "trough", "ototoxicity", "aminoglycoside"]
    texts = [" ".join(rng.choice(common, 6, replace=False)) + " routine" for _ in range(60)]
    filler = " ".join(f"filler{i}" for i in range(13))  # the same length as the decoy
    texts += [" ".join(common), " ".join(specific) + " " + " ".join(common[:2]) + " " + filler]
    query = " ".join(common) + " " + " ".join(specific * 2)
    if with_query:
        texts.append(query + " onlyhere")
    ids = [f"R{i}" for i in range(len(texts))]
    meta = _corpus(len(texts))[3].assign(record_id=ids)
    vecs = np.eye(len(texts), 8, dtype=np.float32) + 1e-3
    index = SearchIndex(bm25_k1=2.5, bm25_b=1.0).fit(ids, ids, texts, vecs, meta, model_id="m")
    return index, query


def test_a_long_query_weights_its_specific_words_above_its_everyday_ones() -> None:
    from themes.search import text_query

    index, query = _long_query_corpus()
    tokens, counts = index.query_terms(query)
    assert len(tokens) == 25 and sorted(set(counts)) == [1, 2]
    # plain BM25 (every query word once): the decoy's twenty everyday words win
    plain = index.bm25(tokens, n=3)[0]
    assert index.ids_[plain[0]] == "R60"
    weights = index.term_weights(tokens, counts)
    vocab = index.tokenizer_.get_vocab_dict()
    w = dict(zip(tokens, weights.tolist(), strict=True))
    assert w[vocab["gentamicin"]] > 2 * w[vocab["everyday0"]]
    assert weights.mean() == pytest.approx(1.0)
    # the product's path: 25 distinct words >= long_query_terms, so the terms are weighted
    s = SearchSettings(long_query_terms=20)
    _, hits = text_query(index, query, embed=None, settings=s, n=3, method="bm25")
    assert index.ids_[hits[0][0]] == "R61"
    # above the threshold's reach, the same query is plain BM25 again
    s = SearchSettings(long_query_terms=26)
    _, hits = text_query(index, query, embed=None, settings=s, n=3, method="bm25")
    assert [h[0] for h in hits] == plain.tolist()


def test_more_like_this_weights_a_long_records_specific_words_and_keeps_the_top_ones() -> None:
    from themes.search import similar_terms

    index, _ = _long_query_corpus(with_query=True)
    me = index.position("R62")
    vocab = index.tokenizer_.get_vocab_dict()
    s = SearchSettings(long_query_terms=20)
    tokens, weights = similar_terms(index, me, s)
    assert vocab["onlyhere"] not in tokens and len(tokens) == 25  # it matches nothing else
    assert weights is not None and weights.mean() == pytest.approx(1.0)
    hits = [int(p) for p in index.bm25(tokens, n=3, weights=weights)[0] if p != me]
    assert index.ids_[hits[0]] == "R61"  # the specific words, not the decoy's everyday ones
    unweighted = [int(p) for p in index.bm25(tokens, n=3)[0] if p != me]
    assert index.ids_[unweighted[0]] == "R60"
    # a limit keeps the terms of highest TF-IDF weight: the five specific words
    top, _ = similar_terms(index, me, s, limit=5)
    specific = {"gentamicin", "nomogram", "trough", "ototoxicity", "aminoglycoside"}
    assert set(top) == {vocab[w] for w in specific}
    # below long_query_terms the record is a short query: every shared term once
    tokens, weights = similar_terms(index, me, SearchSettings(long_query_terms=26))
    assert weights is None and len(tokens) == 25


def test_weighted_bm25_with_unit_weights_is_plain_bm25_and_respects_the_mask() -> None:
    index, query = _long_query_corpus()
    tokens, counts = index.query_terms(query)
    ones = np.ones(len(tokens), dtype=np.float32)
    p1, s1 = index.bm25(tokens, n=62)
    p2, s2 = index.bm25(tokens, n=62, weights=ones)
    assert p1.tolist() == p2.tolist() and s1 == pytest.approx(s2, rel=1e-5)
    # weighted scores are the weighted sum of bm25s's own one-term scores
    weights = index.term_weights(tokens, counts)
    one_term = [index.bm25_.get_scores([int(t)]) for t in tokens]
    reference = sum(w * s for w, s in zip(weights, one_term, strict=True))
    pos, got = index.bm25(tokens, n=62, weights=weights)
    assert got == pytest.approx(reference[pos], rel=1e-5)
    assert set(pos.tolist()) == set(np.flatnonzero(reference > 0).tolist())
    mask = np.zeros(index.size, dtype=bool)
    mask[::7] = True
    pos, _ = index.bm25(tokens, n=62, mask=mask, weights=index.term_weights(tokens, counts))
    assert len(pos) and set(pos.tolist()) <= set(np.flatnonzero(mask).tolist())
    with pytest.raises(ValueError, match="2 weights for 25 query terms"):
        index.bm25(tokens, n=5, weights=ones[:2])


def test_the_harm_level_of_the_current_text_is_a_filter_and_a_changed_field_is_rechecked(
    settings,
    store,  # noqa: ANN001
) -> None:
    from themes.factors import case_impacts, ensure_tables

    _fill_store(store, 40)
    # a store the factors step has never touched: a reader shows no harm level
    case_impacts.drop(store.engine, checkfirst=True)
    assert record_details(store, ["INC000003"])["INC000003"]["harm"] is None
    index, info = update_index(store, settings)
    assert info.meta_changed_ids == [] and set(index.meta_["harm"].tolist()) == {""}
    ensure_tables(store)
    with store.begin() as conn:
        q = sa.select(clean_texts.c.record_id, clean_texts.c.clean_hash)
        hashes = {r[0]: r[1] for r in conn.execute(q)}

        def impact(rid: str, clean_hash: str, level: str) -> dict:
            return {"record_id": rid, "clean_hash": clean_hash, "config_hash": "c",
                    "harm_level": level, "harm_source": "estimated", "harm_confidence": 1.0,
                    "harm_evidence": "", "structured_value": None, "outcomes": "[]",
                    "n_factors": 0, "tagged_at": utcnow()}  # fmt: skip

        conn.execute(
            case_impacts.insert(),
            [
                impact("INC000003", hashes["INC000003"], "moderate"),
                impact("INC000004", "0" * 64, "severe"),  # judged on an older text
            ],
        )
        # a corrected severity: a new raw row, the same clean text
        conn.execute(
            raw_records.update()
            .where(raw_records.c.record_id == "INC000005")
            .values(severity="Low harm", raw_hash="1" * 64)
        )
        conn.execute(
            clean_texts.update()
            .where(clean_texts.c.record_id == "INC000005")
            .values(raw_hash="1" * 64)
        )
    index, info = update_index(store, settings)
    assert info.added == 0
    assert sorted(info.meta_changed_ids) == ["INC000003", "INC000005"]
    harm = dict(zip(index.ids_.tolist(), index.meta_["harm"].tolist(), strict=True))
    assert (harm["INC000003"], harm["INC000004"]) == ("moderate", "")
    hits = np.flatnonzero(index.mask(make_filters(harm="Moderate")))
    assert index.ids_[hits].tolist() == ["INC000003"]
    assert update_index(store, settings)[1].meta_changed_ids == []
    # results show the level judged on the current text only
    details = record_details(store, ["INC000003", "INC000004", "INC000005"])
    harms = [details[r]["harm"] for r in ("INC000003", "INC000004", "INC000005")]
    assert harms == ["moderate", None, None]
    # a level is named by its id, its label or a severity value the scheme maps
    from themes.search import Searcher

    with Searcher(settings, store=store) as searcher:
        for said in ("moderate", "Moderate harm", "MODERATE"):
            found = searcher.similar("INC000010", filters=make_filters(harm=said), method="bm25")
            assert [(r["record_id"], r["harm"]) for r in found["results"]] == [
                ("INC000003", "moderate")
            ]
            assert found["filters"]["harm"] == ["moderate"]
        # the NRLS grading "catastrophic" is mapped (to fatal); a typo is refused
        fatal = searcher.search("fell", filters=make_filters(harm="Catastrophic"), method="bm25")
        assert fatal["filters"]["harm"] == ["fatal"] and fatal["results"] == []
        with pytest.raises(ThemesError, match="--harm 'moderat' is not a harm level"):
            searcher.search("fell", filters=make_filters(harm="moderat"), method="bm25")


def test_a_pair_is_dropped_and_restored_as_a_judged_harm_level_changes(settings, store) -> None:  # noqa: ANN001
    from themes.duplicates import near_duplicates
    from themes.factors import case_impacts, ensure_tables
    from themes.search import refresh

    _fill_store(store, 40)
    # INC000004 reports INC000001's event again: same site (both SITES[1]), day and text
    with store.begin() as conn:
        one = conn.execute(
            sa.select(clean_texts.c.clean_text, clean_texts.c.clean_hash).where(
                clean_texts.c.record_id == "INC000001"
            )
        ).one()
        conn.execute(
            clean_texts.update()
            .where(clean_texts.c.record_id == "INC000004")
            .values(clean_text=one[0], clean_hash=one[1])
        )
        conn.execute(
            raw_records.update()
            .where(raw_records.c.record_id == "INC000004")
            .values(event_date=date(2025, 1, 2))
        )

    def pairs() -> list[tuple[str, str]]:
        with store.connect() as conn:
            q = sa.select(near_duplicates.c.record_a, near_duplicates.c.record_b)
            return sorted(tuple(r) for r in conn.execute(q))

    def judge(levels: dict[str, str]) -> None:
        ensure_tables(store)
        with store.begin() as conn:
            conn.execute(case_impacts.delete())
            conn.execute(
                case_impacts.insert(),
                [{"record_id": rid, "clean_hash": one[1], "config_hash": "c",
                  "harm_level": level, "harm_source": "estimated", "harm_confidence": 1.0,
                  "harm_evidence": "", "structured_value": None, "outcomes": "[]",
                  "n_factors": 0, "tagged_at": utcnow()} for rid, level in levels.items()],
            )  # fmt: skip

    assert refresh(settings)["duplicates"]["pairs_total"] == 1
    assert pairs() == [("INC000001", "INC000004")]
    judge({"INC000001": "none", "INC000004": "moderate"})  # the text says otherwise
    summary = refresh(settings)
    assert (summary["added"], summary["meta_changed_ids"]) == (0, 2)
    assert pairs() == []
    judge({"INC000001": "none", "INC000004": "none"})
    assert refresh(settings)["meta_changed_ids"] == 1
    assert pairs() == [("INC000001", "INC000004")]


def test_a_complainants_relative_says_who_the_patient_is() -> None:
    from themes.duplicates import sex_conflicts, subject_sex

    ids, texts, vecs, meta = _corpus(60)
    texts[0] = "my husband fell from bed at night"
    texts[1] = "my mum fell from bed at night"
    texts[2] = "my father fell; a daughter had to translate"  # the daughter is not the patient
    texts[3] = "my wife fell from bed and he said so"  # both: not judged
    texts[4] = "daughter fell from bed at night"  # no "my": not judged
    texts[5] = "fell from bed at night"
    texts[6] = "my"  # "my" ends this record ...
    texts[7] = "son visited"  # ... and does not make the next one about a son
    index = SearchIndex().fit(ids, ids, texts, vecs, meta, model_id="test")
    assert subject_sex(index)[:8].tolist() == [1, 2, 1, 0, 0, 0, 0, 0]
    assert sex_conflicts(index, 0, np.array([1, 2, 3, 4, 5])).tolist() == [1, 0, 0, 0, 0]
