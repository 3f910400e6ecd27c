"""Theme registry matching (themes.registry): synthetic centroids and assignments."""

from __future__ import annotations

import numpy as np
import pytest

from themes.errors import ThemesError
from themes.registry import (
    CentroidError,
    CurationError,
    DuplicateIdError,
    LineageEvent,
    Move,
    RegistryError,
    RegistryTheme,
    UnknownIdError,
    match_themes,
    moved_records,
)

DIM = 16


def unit(i: int) -> np.ndarray:
    """Basis vector i: orthogonal themes, similarity 0 to each other."""
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


def blend(i: int, j: int, cos: float) -> np.ndarray:
    """Unit vector with cosine `cos` to unit(i), tilted towards unit(j)."""
    v = cos * unit(i) + np.sqrt(1.0 - cos**2) * unit(j)
    return v.astype(np.float32)


def registry(*themes: tuple[int, str, np.ndarray]) -> list[RegistryTheme]:
    return [RegistryTheme(key=k, label=label, centroid=c) for k, label, c in themes]


def labels_for(ids: list[int]) -> dict[int, str]:
    return {t: f"new label {t}" for t in ids}


def records(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


BASE = registry((10, "falls", unit(0)), (11, "pressure ulcers", unit(1)), (12, "meds", unit(2)))


def test_identity_refit_keeps_every_key() -> None:
    old = {r: 10 for r in records("a", 5)} | {r: 11 for r in records("b", 5)}
    old |= {r: 12 for r in records("c", 5)}
    new = {r: {10: 0, 11: 1, 12: 2}[k] for r, k in old.items()}
    m = match_themes(
        BASE,
        np.stack([unit(0), unit(1), unit(2)]),
        [0, 1, 2],
        labels_for([0, 1, 2]),
        old_assignments=old,
        new_assignments=new,
        next_key=13,
    )
    assert m.key_of == {0: 10, 1: 11, 2: 12}
    assert m.matched == {0: 10, 1: 11, 2: 12}
    assert m.born == [] and m.retired == [] and m.events == []
    assert m.similarity == pytest.approx({0: 1.0, 1: 1.0, 2: 1.0})
    by_key = {r: m.key_of[t] for r, t in new.items()}
    assert moved_records(old, by_key, m) == []


def test_permuted_new_ids_map_to_the_same_keys() -> None:
    # New model numbered the themes differently and listed them in another order.
    m = match_themes(
        BASE,
        np.stack([unit(2), unit(0), unit(1)]),
        [5, 3, 4],
        labels_for([3, 4, 5]),
        next_key=13,
    )
    assert m.key_of == {3: 10, 4: 11, 5: 12}
    assert m.born == [] and m.retired == []


def test_similar_theme_matches_dissimilar_one_is_born_and_old_retired() -> None:
    m = match_themes(
        BASE,
        np.stack([blend(0, 5, 0.95), unit(1), unit(7)]),
        [0, 1, 2],
        labels_for([0, 1, 2]),
        next_key=20,
    )
    assert m.key_of == {0: 10, 1: 11, 2: 20}
    assert m.similarity[0] == pytest.approx(0.95, abs=1e-6)
    assert m.born == [2]
    assert m.born_keys == [20]
    assert m.retired == [12]
    assert m.labels == {10: "new label 0", 11: "new label 1", 20: "new label 2"}


def test_born_keys_follow_ascending_new_id() -> None:
    m = match_themes(
        BASE,
        np.stack([unit(9), unit(8), unit(0)]),
        [7, 4, 1],
        labels_for([1, 4, 7]),
        next_key=100,
    )
    assert m.key_of == {1: 10, 4: 100, 7: 101}
    assert m.retired == [11, 12]


@pytest.mark.parametrize(("threshold", "matched"), [(0.8, False), (0.7, True)])
def test_threshold_is_respected(threshold: float, matched: bool) -> None:
    reg = registry((10, "falls", unit(0)))
    m = match_themes(
        reg, blend(0, 3, 0.75)[None, :], [0], labels_for([0]), threshold=threshold, next_key=11
    )
    if matched:
        assert m.key_of == {0: 10} and m.retired == [] and m.born == []
    else:
        assert m.key_of == {0: 11} and m.retired == [10] and m.born == [0]
        assert m.matched == {} and m.similarity == {}


def test_one_to_one_best_match_wins_other_is_born_and_split_recorded() -> None:
    reg = registry((10, "falls", unit(0)))
    old = {r: 10 for r in records("f", 10)}
    # 6 of the falls records stay with the closest new theme, 4 move to the other one.
    new = {r: (0 if i < 6 else 1) for i, r in enumerate(sorted(old))}
    m = match_themes(
        reg,
        np.stack([blend(0, 4, 0.95), blend(0, 5, 0.85)]),
        [0, 1],
        labels_for([0, 1]),
        old_assignments=old,
        new_assignments=new,
        next_key=11,
    )
    assert m.matched == {0: 10}
    assert m.key_of == {0: 10, 1: 11}
    assert m.born == [1] and m.retired == []
    assert m.events == [
        LineageEvent(
            kind="split",
            parents=(10,),
            children=(10, 11),
            detail={"parent_records": 10, "shares": {10: 0.6, 11: 0.4}},
        )
    ]
    by_key = {r: m.key_of[t] for r, t in new.items()}
    moves = moved_records(old, by_key, m)
    assert [mv.record_id for mv in moves] == sorted(old)[6:]
    assert {mv.reason for mv in moves} == {"split from 10"}
    assert all(mv.old_key == 10 and mv.new_key == 11 for mv in moves)


def test_small_share_is_not_a_split() -> None:
    reg = registry((10, "falls", unit(0)))
    old = {r: 10 for r in records("f", 10)}
    new = {r: (0 if i < 8 else 1) for i, r in enumerate(sorted(old))}
    m = match_themes(
        reg,
        np.stack([unit(0), unit(6)]),
        [0, 1],
        labels_for([0, 1]),
        old_assignments=old,
        new_assignments=new,
        next_key=11,
        overlap_share=0.3,
    )
    assert m.events == []
    moves = moved_records(old, {r: m.key_of[t] for r, t in new.items()}, m)
    assert [(mv.new_key, mv.reason) for mv in moves] == [(11, "new theme born")] * 2


def test_merge_detected_and_absorbed_theme_retired() -> None:
    reg = registry((10, "falls", unit(0)), (11, "slips", unit(1)))
    old = {r: 10 for r in records("f", 6)} | {r: 11 for r in records("s", 4)}
    new = dict.fromkeys(old, 0)
    m = match_themes(
        reg,
        blend(0, 1, 0.9)[None, :],
        [0],
        labels_for([0]),
        old_assignments=old,
        new_assignments=new,
        next_key=12,
    )
    assert m.key_of == {0: 10}
    assert m.retired == [11]
    assert m.events == [
        LineageEvent(
            kind="merge",
            parents=(10, 11),
            children=(10,),
            detail={"child_records": 10, "shares": {10: 0.6, 11: 0.4}},
        )
    ]
    moves = moved_records(old, {r: 10 for r in new}, m)
    assert moves == [Move(r, 11, 10, "merged into 10") for r in records("s", 4)]


def test_retired_theme_records_say_so() -> None:
    reg = registry((10, "falls", unit(0)), (11, "slips", unit(1)))
    old = {r: 10 for r in records("f", 9)} | {"s000": 11}
    new = dict.fromkeys(old, 0)
    m = match_themes(
        reg,
        unit(0)[None, :],
        [0],
        labels_for([0]),
        old_assignments=old,
        new_assignments=new,
        next_key=12,
    )
    assert m.retired == [11] and m.events == []
    assert moved_records(old, {r: 10 for r in new}, m) == [Move("s000", 11, 10, "theme 11 retired")]


def test_pinned_label_kept_unpinned_takes_new_label() -> None:
    reg = [
        RegistryTheme(key=10, label="Falls from bed", centroid=unit(0), pinned=True),
        RegistryTheme(key=11, label="ulcer pressure skin", centroid=unit(1)),
    ]
    m = match_themes(
        reg,
        np.stack([unit(0), unit(1)]),
        [0, 1],
        {0: "fall bed patient", 1: "pressure ulcer grade"},
        next_key=12,
    )
    assert m.labels == {10: "Falls from bed", 11: "pressure ulcer grade"}


def test_pinned_label_not_carried_to_a_born_theme() -> None:
    reg = [RegistryTheme(key=10, label="Falls from bed", centroid=unit(0), pinned=True)]
    m = match_themes(reg, unit(3)[None, :], [0], {0: "parking"}, next_key=11)
    assert m.labels == {11: "parking"}
    assert m.retired == [10]


def test_merged_pair_stays_merged() -> None:
    # Curation merged 11 into 10. The refit separates them again: both new themes get 10.
    reg = [
        RegistryTheme(key=10, label="Falls", centroid=unit(0), pinned=True),
        RegistryTheme(key=11, label="Slips", centroid=unit(1), merged_into=10),
        RegistryTheme(key=12, label="Meds", centroid=unit(2)),
    ]
    old = {"a": 10, "b": 11, "c": 12}
    new = {"a": 0, "b": 1, "c": 2}
    m = match_themes(
        reg,
        np.stack([unit(0), unit(1), unit(2)]),
        [0, 1, 2],
        labels_for([0, 1, 2]),
        old_assignments=old,
        new_assignments=new,
        next_key=13,
    )
    assert m.key_of == {0: 10, 1: 10, 2: 12}
    assert m.matched == {0: 10, 1: 11, 2: 12}
    assert m.born == [] and m.retired == []
    assert m.aliases == {11: 10}
    assert m.labels == {10: "Falls", 12: "new label 2"}
    assert m.events == []  # 11 is counted as 10 on both sides: no split, no merge
    moves = moved_records(old, {r: m.key_of[t] for r, t in new.items()}, m)
    assert moves == [Move("b", 11, 10, "merged into 10")]


def test_merge_chain_is_followed_and_merged_key_never_retired() -> None:
    reg = [
        RegistryTheme(key=10, label="A", centroid=unit(0), merged_into=11),
        RegistryTheme(key=11, label="B", centroid=unit(1), merged_into=12),
        RegistryTheme(key=12, label="C", centroid=unit(2)),
    ]
    m = match_themes(reg, unit(0)[None, :], [0], labels_for([0]), next_key=13)
    assert m.key_of == {0: 12}
    assert m.aliases == {10: 12, 11: 12}
    assert m.retired == []
    assert m.labels == {12: "new label 0"}


def test_not_a_theme_still_matches_so_it_stays_hidden() -> None:
    reg = [
        RegistryTheme(key=10, label="Falls", centroid=unit(0)),
        RegistryTheme(key=11, label="test records", centroid=unit(1), not_a_theme=True),
    ]
    m = match_themes(reg, np.stack([unit(1), unit(0)]), [0, 1], labels_for([0, 1]), next_key=12)
    assert m.key_of == {0: 11, 1: 10}
    assert m.born == []


def test_new_records_and_outliers() -> None:
    reg = registry((10, "falls", unit(0)))
    old = {"a": 10, "b": 10}
    new = {"a": 0, "b": -1, "n": 1}
    m = match_themes(
        reg,
        np.stack([unit(0), unit(5)]),
        [0, 1],
        labels_for([0, 1]),
        old_assignments=old,
        new_assignments=new,
        next_key=11,
    )
    assert m.key_of == {0: 10, 1: 11} and m.events == []
    by_key = {r: m.key_of[t] for r, t in new.items() if t != -1}
    assert moved_records(old, by_key, m) == [Move("n", None, 11, "new theme born")]


def test_matching_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    old_c = rng.normal(size=(6, DIM))
    old_c /= np.linalg.norm(old_c, axis=1, keepdims=True)
    reg = [RegistryTheme(key=20 + i, label=f"t{i}", centroid=c) for i, c in enumerate(old_c)]
    new_c = old_c + 0.15 * rng.normal(size=old_c.shape)
    new_c /= np.linalg.norm(new_c, axis=1, keepdims=True)
    ids = [5, 4, 3, 2, 1, 0]
    first = match_themes(reg, new_c, ids, labels_for(ids), threshold=0.5, next_key=30)
    perm = [3, 0, 5, 1, 4, 2]
    second = match_themes(
        reg, new_c[perm], [ids[i] for i in perm], labels_for(ids), threshold=0.5, next_key=30
    )
    assert first == second
    assert first.key_of == {5 - i: 20 + i for i in range(6)}


def test_errors_are_themes_errors() -> None:
    assert issubclass(RegistryError, ThemesError)
    for cls in (CentroidError, DuplicateIdError, UnknownIdError, CurationError):
        assert issubclass(cls, RegistryError)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"new_centroids": np.ones((2, DIM))}, CentroidError, "L2-normalised"),
        ({"new_centroids": unit(0)}, CentroidError, "shape"),
        ({"new_centroids": np.stack([unit(0)] * 3)}, CentroidError, "one row per"),
        ({"new_ids": [0, 0]}, DuplicateIdError, "more than once"),
        ({"new_ids": [0, -1]}, UnknownIdError, "outlier"),
        ({"new_labels": {0: "x"}}, UnknownIdError, "no label"),
        ({"next_key": 10}, DuplicateIdError, "collide"),
        ({"threshold": 1.5}, RegistryError, "threshold"),
        ({"overlap_share": 0.0}, RegistryError, "overlap_share"),
        ({"old_assignments": {"a": 10}}, RegistryError, "both"),
        (
            {"old_assignments": {"a": 99}, "new_assignments": {"a": 0}},
            UnknownIdError,
            "99",
        ),
        (
            {"old_assignments": {"a": 10}, "new_assignments": {"a": 7}},
            UnknownIdError,
            "7",
        ),
        (
            {"registry": [RegistryTheme(key=10, label="x", centroid=unit(0))] * 2},
            DuplicateIdError,
            "10",
        ),
        (
            {"registry": [RegistryTheme(key=10, label="x", centroid=np.ones(DIM))]},
            CentroidError,
            "theme 10",
        ),
        (
            {"registry": [RegistryTheme(key=10, label="x", centroid=np.ones(3) / np.sqrt(3))]},
            CentroidError,
            "shape",
        ),
        (
            {"registry": [RegistryTheme(key=10, label="x", centroid=unit(0), merged_into=9)]},
            CurationError,
            "not in the registry",
        ),
        (
            {
                "registry": [
                    RegistryTheme(key=10, label="x", centroid=unit(0), merged_into=11),
                    RegistryTheme(key=11, label="y", centroid=unit(1), merged_into=10),
                ]
            },
            CurationError,
            "loop",
        ),
    ],
)
def test_bad_input_raises_clear_error(kwargs: dict, error: type, message: str) -> None:
    args = {
        "registry": registry((10, "falls", unit(0))),
        "new_centroids": np.stack([unit(0), unit(1)]),
        "new_ids": [0, 1],
        "new_labels": labels_for([0, 1]),
        "next_key": 12,
    } | kwargs
    with pytest.raises(error, match=message):
        match_themes(args.pop("registry"), args.pop("new_centroids"), args.pop("new_ids"), **args)


def test_moved_records_rejects_unknown_keys() -> None:
    m = match_themes(BASE, unit(0)[None, :], [0], labels_for([0]), next_key=13)
    with pytest.raises(UnknownIdError, match="key_of"):
        moved_records({"a": 10}, {"a": 0}, m)
    with pytest.raises(UnknownIdError, match="not in the registry"):
        moved_records({"a": 99}, {"a": 10}, m)
