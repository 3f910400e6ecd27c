from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from themes.errors import ModelError, NotFittedError
from themes.model import (
    ThemeModel,
    auto_min_cluster_size,
    exact_neighbours,
    keyword_sample,
    load_stop_words,
    make_label,
    merge_similar,
)

TOPIC_WORDS = [
    ("fall", "floor", "bedside", "hip"),
    ("insulin", "dose", "prescription", "omitted"),
    ("sacral", "ulcer", "pressure", "heel"),
    ("discharge", "transport", "medication", "home"),
    ("sepsis", "antibiotic", "lactate", "escalation"),
    ("appointment", "cancelled", "letter", "clinic"),
]


def planted(seed: int, per_topic: int = 80, dim: int = 48):  # noqa: ANN201
    """Texts and embeddings with six planted topics plus identifier placeholders."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(TOPIC_WORDS), dim))
    docs, vecs, truth = [], [], []
    for t, words in enumerate(TOPIC_WORDS):
        for _ in range(per_topic):
            w = rng.choice(words, size=5)
            docs.append(f"[PERSON] reported {' '.join(w)} at [STREET_ADDRESS] on the ward")
            vecs.append(centres[t] + rng.normal(scale=0.35, size=dim))
            truth.append(t)
    vecs = np.asarray(vecs, dtype=np.float32)
    return docs, vecs / np.linalg.norm(vecs, axis=1, keepdims=True), np.asarray(truth)


def fit(seed: int) -> tuple[ThemeModel, np.ndarray, np.ndarray]:
    docs, vecs, truth = planted(seed)
    model = ThemeModel(seed=seed, stop_words=load_stop_words(Path("config/stop_words.txt")))
    return model.fit(docs, vecs, record_ids=[f"R{i}" for i in range(len(docs))]), vecs, truth


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_planted_themes_recovered_for_any_seed(seed: int) -> None:
    model, _, truth = fit(seed)
    assert adjusted_rand_score(truth, model.labels_) >= 0.9
    assert (model.labels_ >= 0).all()  # outliers reassigned
    keywords = {w for th in model.themes_ for w in th.keywords}
    for words in TOPIC_WORDS:
        assert keywords & set(words), words
    # placeholders and healthcare stop words never become keywords
    assert not keywords & {"person", "street_address", "ward", "street", "address"}


@pytest.mark.slow
def test_save_load_round_trip_assigns_identically(tmp_path: Path) -> None:
    model, vecs, _ = fit(3)
    path = model.save(tmp_path / "m", config_hash="abc", embed_model_id="all-MiniLM-L6-v2")
    assert {p.name for p in path.iterdir()} >= {
        "config.json",
        "topics.json",
        "arrays.safetensors",
        "manifest.json",
    }
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.pickle"))
    loaded = ThemeModel.load(path)
    a, sa_ = model.transform(vecs)
    b, sb = loaded.transform(vecs)
    assert np.array_equal(a, b) and np.allclose(sa_, sb)
    assert [t.label for t in loaded.themes_] == [t.label for t in model.themes_]
    assert loaded.manifest_["config_hash"] == "abc"
    assert "bertopic" in loaded.manifest_["packages"]
    # a fitted record is assigned to the theme it was fitted into
    assert (a == model.labels_).mean() > 0.95


def test_transform_before_fit_is_a_clear_error() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        ThemeModel().transform(np.zeros((2, 4), dtype=np.float32))


def test_incomplete_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="missing topics.json"):
        ThemeModel.load(tmp_path)


def test_merge_similar_joins_near_identical_centroids() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=16), rng.normal(size=16)
    vecs = np.stack([a + 0.01 * rng.normal(size=16) for _ in range(10)] + [b] * 5)
    topics = np.array([0] * 5 + [1] * 5 + [2] * 5)
    merged = merge_similar(vecs.astype(np.float32), topics, 0.9)
    assert len(set(merged[:10])) == 1 and merged[10] != merged[0]
    assert merged[0] == 0  # largest group gets id 0


def test_labels_are_readable() -> None:
    assert make_label(["pressure ulcer", "pressure", "ulcer", "heel", "sacral"]) == (
        "Pressure ulcer, heel, sacral"
    )
    assert make_label([]) == "Unlabelled theme"


def test_auto_min_cluster_size_scales() -> None:
    assert auto_min_cluster_size(500) == 10
    assert auto_min_cluster_size(20000) == 100


def test_exact_neighbours_are_the_brute_force_nearest_with_self_first() -> None:
    rng = np.random.default_rng(4)
    vecs = rng.normal(size=(300, 12)).astype(np.float32)
    vecs[7] = vecs[3]  # an exact copy must not displace a record from its own first place
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx, dist = exact_neighbours(vecs, 6)
    assert idx.shape == dist.shape == (300, 6) and idx.dtype == np.int64
    assert (idx[:, 0] == np.arange(300)).all() and (dist[:, 0] == 0).all()
    assert idx[3, 1] == 7 and idx[7, 1] == 3 and dist[3, 1] < 1e-5
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    brute = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    for row in range(300):
        assert set(idx[row, 1:]) == set(brute[row]), row
    assert np.allclose(dist[:, 1:], 1 - np.take_along_axis(vecs @ vecs.T, idx[:, 1:], 1), atol=1e-5)
    assert (np.diff(dist, axis=1) >= -1e-6).all()  # nearest first


def test_keyword_sample_caps_each_theme_and_repeats_for_a_seed() -> None:
    topics = np.array([0] * 900 + [1] * 40 + [-1] * 700 + [2] * 501)
    sample = keyword_sample(topics, 500, seed=1)
    assert list(sample) == sorted(set(sample.tolist()))
    counts = {t: int((topics[sample] == t).sum()) for t in (-1, 0, 1, 2)}
    assert counts == {-1: 500, 0: 500, 1: 40, 2: 500}
    assert np.array_equal(sample, keyword_sample(topics, 500, seed=1))
    assert not np.array_equal(sample, keyword_sample(topics, 500, seed=2))
    assert np.array_equal(keyword_sample(topics, 0, seed=1), np.arange(len(topics)))


@pytest.mark.slow
def test_lemmas_from_worker_processes_equal_the_serial_ones() -> None:
    from themes.model import Lemmatiser

    texts = [
        f"[PERSON] fell twice near bed {i}; the falls were reviewed and injuries recorded."
        for i in range(Lemmatiser.CHUNK * 3 + 5)
    ]
    serial = Lemmatiser(n_process=1)(texts)
    assert Lemmatiser(n_process=2)(texts) == serial
    assert serial[0] == "fall twice near bed fall review injury record"
