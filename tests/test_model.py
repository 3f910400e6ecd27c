from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from themes.errors import ModelError, NotFittedError
from themes.model import (
    ThemeModel,
    auto_min_cluster_size,
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
