"""Permanent theme ids through refits, curation that survives refits, and history.

The real store and the real refit path (`steps.update_themes`) are used; only the
clustering is replaced by a model whose themes the test chooses, so each refit's outcome
is known exactly (ThemeModel itself is tested in test_model.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from themes import lifecycle, steps
from themes.model import Theme
from themes.queries import list_themes
from themes.records import text_hash
from themes.store import assignments, clean_texts, record_moves, utcnow

DIM = 16
EMBED_ID = "all-MiniLM-L6-v2"


class ChosenModel:
    """A theme model whose clusters are given: record id -> group name."""

    seed_names: tuple[str, ...] = ()  # no taxonomy

    def __init__(self, groups: dict[str, str], order: list[str]) -> None:
        self.groups = groups
        self.order = order  # group names in the order of model theme ids (0, 1, ...)

    def fit(self, texts, vectors, *, record_ids, anchors=None, anchor_members=None):  # noqa: ANN001, ANN201
        ids = {g: i for i, g in enumerate(self.order)}
        self.labels_ = np.array([ids.get(self.groups.get(r, ""), -1) for r in record_ids])
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self.theme_ids_ = np.arange(len(self.order))
        cents = np.stack([v[self.labels_ == i].mean(0) for i in self.theme_ids_])
        self.centroids_ = (cents / np.linalg.norm(cents, axis=1, keepdims=True)).astype(np.float32)
        self.themes_ = [
            Theme(
                theme_id=i,
                label=f"model label {g}",
                keywords=[g, "word"],
                size=int((self.labels_ == i).sum()),
                representative_ids=[
                    r for r, t in zip(record_ids, self.labels_, strict=False) if t == i
                ][:3],
            )
            for i, g in enumerate(self.order)
        ]
        self.n_outliers_before_ = 0
        return self

    def save(self, path: Path, **_: object) -> Path:
        path.mkdir(parents=True)
        return path

    def fitted_scores(self, vectors: np.ndarray) -> np.ndarray:
        return np.ones(len(vectors), dtype=np.float32)

    def transform(self, vectors: np.ndarray):  # noqa: ANN201
        sims = vectors @ self.centroids_.T
        return self.theme_ids_[sims.argmax(1)], sims.max(1)


@pytest.fixture
def world(settings, store, monkeypatch):  # noqa: ANN001, ANN201
    """Four well-separated groups of records, A to D, stored with texts and embeddings."""
    rng = np.random.default_rng(0)
    centres = np.eye(DIM, dtype=np.float32)[:4] * 5
    ids, vecs, groups = [], [], {}
    for g, name in enumerate("ABCD"):
        for i in range(25):
            rid = f"{name}{i:02d}"
            ids.append(rid)
            vecs.append(centres[g] + rng.normal(0, 0.3, DIM))
            groups[rid] = name
    vectors = np.asarray(vecs, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"text of {r}" for r in ids]
    now = utcnow()
    with store.begin() as conn:
        conn.execute(
            clean_texts.insert(),
            [
                {
                    "record_id": r,
                    "raw_hash": "x",
                    "clean_text": t,
                    "clean_hash": text_hash(t),
                    "entity_counts": "{}",
                    "cleaned_at": now,
                }  # fmt: skip
                for r, t in zip(ids, texts, strict=False)
            ],
        )
    store.put_embeddings(EMBED_ID, {text_hash(t): v for t, v in zip(texts, vectors, strict=False)})

    runs = iter(range(100))

    def refit(order: list[str], grouping: dict[str, str] | None = None):  # noqa: ANN202
        model = ChosenModel(grouping or groups, order)
        monkeypatch.setattr(steps, "build_theme_model", lambda s, e=None: model)
        update = steps.update_themes(
            store, settings, ids, texts, vectors, refit=True, run_id=f"{next(runs):08d}"
        )
        return update, current()

    def current() -> dict[str, int]:
        with store.connect() as conn:
            rows = conn.execute(sa.select(assignments.c.record_id, assignments.c.theme_id))
            return {r: int(k) for r, k in rows}

    return {"ids": ids, "vectors": vectors, "groups": groups, "refit": refit, "current": current}


def _key(assigned: dict[str, int], group: str) -> int:
    keys = {k for r, k in assigned.items() if r.startswith(group)}
    assert len(keys) == 1, f"group {group} is spread over {keys}"
    return keys.pop()


def test_refit_keeps_ids_when_the_model_renumbers_its_themes(world, store) -> None:  # noqa: ANN001
    _, first = world["refit"](["A", "B", "C", "D"])
    keys = {g: _key(first, g) for g in "ABCD"}
    assert len(set(keys.values())) == 4
    update, second = world["refit"](["D", "C", "B", "A"])  # model ids reversed
    assert second == first, "same themes must keep the same permanent ids"
    assert update.extra["registry"]["ids_kept_share"] == 1.0
    assert update.extra["registry"]["born"] == 0
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(record_moves)).scalar() == 0


@pytest.mark.slow
def test_a_refit_with_a_taxonomy_reports_what_its_seeds_took(world, settings, monkeypatch) -> None:  # noqa: ANN001
    from themes.model import ThemeModel

    a = world["vectors"][[r.startswith("A") for r in world["ids"]]].mean(0)
    model = ThemeModel(
        seed=0,
        seed_names=["Group A", "Nowhere"],
        seed_vectors=np.stack([a, -a]),
        seed_min_similarity=0.8,
    )
    monkeypatch.setattr(steps, "build_theme_model", lambda s, e=None: model)
    texts = [f"text of {r}" for r in world["ids"]]
    update = steps.update_themes(
        steps.open_store(settings), settings, world["ids"], texts, world["vectors"], refit=True
    )
    taken = update.extra["taxonomy"]
    assert taken["seeds"] == 2 and taken["unused"] == ["Nowhere"]
    assert 20 <= taken["records_seeded"] <= 25 and taken["share_seeded"] <= 0.25
    assert "registry" in update.extra


def test_born_and_retired_themes_and_moves_are_recorded(world, store) -> None:  # noqa: ANN001
    _, first = world["refit"](["A", "B", "C", "D"])
    merged = {r: ("C" if g == "D" else g) for r, g in world["groups"].items()}
    update, second = world["refit"](["A", "B", "C"], merged)
    reg = update.extra["registry"]
    assert reg["retired"] == 1 and reg["moved_records"] == 25
    d_key, c_key = _key(first, "D"), _key(first, "C")
    hist = lifecycle.history(store, d_key)
    assert hist["status"] == "retired"
    assert [e["kind"] for e in hist["events"]][:1] == ["born"]
    assert "retired" in [e["kind"] for e in hist["events"]]
    assert hist["moves_out"] and hist["moves_out"][0]["records"] == 25
    kinds = [e["kind"] for e in lifecycle.history(store, c_key)["events"]]
    assert "merge" in kinds, "the model merging C and D is a lineage event"
    # a split: A comes back as two themes
    split = {
        r: (g + ("1" if int(r[1:]) < 12 else "2") if g == "A" else g) for r, g in merged.items()
    }
    update, third = world["refit"](["A1", "A2", "B", "C"], split)
    assert update.extra["registry"]["splits"] == 1
    assert {_key(third, "B"), _key(third, "C")} == {_key(first, "B"), c_key}
    a_kinds = [e["kind"] for e in lifecycle.history(store, _key(first, "A"))["events"]]
    assert "split" in a_kinds


def test_curation_survives_a_refit_and_appears_in_history(world, store) -> None:  # noqa: ANN001
    _, first = world["refit"](["A", "B", "C", "D"])
    a, b, c, d = (_key(first, g) for g in "ABCD")
    lifecycle.rename(store, a, "Falls on the ward", actor="alice")
    lifecycle.merge(store, c, d, actor="bob")
    lifecycle.mark_not_a_theme(store, b, actor="carol")
    seeds = [["A00", "A01"], ["A20", "A21"]]
    # split A by seed cases: the test's vectors are one blob per group, so seeds pick halves
    result = lifecycle.split(
        store, a, seeds, labels=["Falls at night", "Falls in the day"],
        embed_model_id=EMBED_ID, actor="dave",
    )  # fmt: skip
    children = [ch["theme_id"] for ch in result["children"]]
    assert sum(ch["size"] for ch in result["children"]) == 25
    after_curation = world["current"]()
    assert {after_curation[r] for r in world["ids"] if r[0] == "C"} == {d}

    # the model still finds A, B, C, D separately: curation must win
    update, after = world["refit"](["D", "A", "C", "B"])
    assert {after[r] for r in world["ids"] if r[0] in "CD"} == {d}, "merge undone by refit"
    assert {after[r] for r in world["ids"] if r[0] == "A"} <= set(children)
    assert after == after_curation, "a refit of the same data must not move curated records"
    themes = {t["theme_id"]: t for t in list_themes(store)}
    assert b not in themes, "'not a theme' must stay hidden"
    assert b in {t["theme_id"] for t in list_themes(store, include_hidden=True)}
    assert themes[children[0]]["label"] == "Falls at night"
    assert d in themes and c not in themes

    # every action is in the history, with who
    by_kind = {
        e["kind"]: e["actor"] for k in (a, b, c) for e in lifecycle.history(store, k)["events"]
    }
    assert by_kind["renamed"] == "alice"
    assert by_kind["merged"] == "bob"
    assert by_kind["not a theme"] == "carol"
    assert by_kind["split by curation"] == "dave"
    assert lifecycle.history(store, a)["split_into"] == children
    moves = lifecycle.record_history(store, "C00")
    assert moves and moves[0]["reason"] == f"curation: merged into {d}"

    # nightly assignment of a changed record also respects the split
    with store.begin() as conn:
        keys = lifecycle.keys_for_assignment(
            conn,
            store.active_model()["model_id"],
            np.array([1]),  # model theme 1 is A in this refit's order
            world["vectors"][[0]],
        )
    assert int(keys[0]) in children


def test_renamed_label_is_kept_and_bad_curation_is_refused(world, store) -> None:  # noqa: ANN001
    _, first = world["refit"](["A", "B", "C", "D"])
    a, b = _key(first, "A"), _key(first, "B")
    lifecycle.rename(store, a, "Medication errors", actor="x")
    world["refit"](["B", "A", "C", "D"])
    assert {t["theme_id"]: t["label"] for t in list_themes(store)}[a] == "Medication errors"
    with pytest.raises(lifecycle.CurationError, match="into itself"):
        lifecycle.merge(store, a, a)
    with pytest.raises(lifecycle.CurationError, match="No theme 999"):
        lifecycle.rename(store, 999, "x")
    with pytest.raises(lifecycle.CurationError, match="not in theme"):
        lifecycle.split(store, a, [["A00"], ["B00"]], embed_model_id=EMBED_ID)
    with pytest.raises(lifecycle.CurationError, match="at least two"):
        lifecycle.split(store, a, [["A00"]], embed_model_id=EMBED_ID)
    lifecycle.merge(store, b, a)
    with pytest.raises(lifecycle.CurationError, match="merged into"):
        lifecycle.rename(store, b, "y")
    events = json.dumps(lifecycle.history(store, b)["events"])
    assert "merged" in events


def test_nightly_reassignment_of_changed_text_is_recorded(world, store) -> None:  # noqa: ANN001
    _, first = world["refit"](["A", "B", "C", "D"])
    a, b = _key(first, "A"), _key(first, "B")
    with store.begin() as conn:
        moved = lifecycle.record_reassignments(conn, {"A00": b, "A01": a}, run_id="night")
    assert moved == 1
    assert lifecycle.record_history(store, "A00")[0]["reason"] == "text changed; reassigned"
    assert lifecycle.record_history(store, "A01") == []
