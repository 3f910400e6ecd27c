"""The stable refit's assignment step (ThemeModel._anchor) on vectors with known answers."""

from __future__ import annotations

import numpy as np

from themes.embed import l2_normalise
from themes.model import ThemeModel

D = 8


def _blob(rng: np.random.Generator, axis: int, n: int, noise: float = 0.15) -> np.ndarray:
    centre = np.zeros(D)
    centre[axis] = 1.0
    return centre + rng.normal(0, noise, (n, D))


def test_existing_themes_kept_new_cluster_born_faded_theme_dropped() -> None:
    rng = np.random.default_rng(0)
    x = l2_normalise(np.vstack([_blob(rng, 0, 40), _blob(rng, 1, 40), _blob(rng, 2, 40)]))
    anchors = l2_normalise(np.eye(D)[[0, 1, 5]])  # theme on axis 5 has faded away
    discovered = np.repeat([0, 1, 2], 40)  # the fresh clustering also found axis 2
    out = ThemeModel(anchor_cover=0.8)._anchor(x, discovered, anchors, min_size=10)
    assert len(np.unique(out)) == 3
    for block in range(3):
        assert len(np.unique(out[block * 40 : (block + 1) * 40])) == 1, "each blob one theme"


def test_records_near_the_boundary_keep_their_theme() -> None:
    rng = np.random.default_rng(1)
    theta = np.radians(rng.uniform(43.5, 46.5, 10))  # between the two themes
    middle = np.zeros((10, D))
    middle[:, 0], middle[:, 1] = np.cos(theta), np.sin(theta)
    x = l2_normalise(np.vstack([_blob(rng, 0, 40), _blob(rng, 1, 40), middle]))
    anchors = l2_normalise(np.eye(D)[[0, 1]])
    sims = x @ anchors.T
    nearest = sims.argmax(1)
    # previous assignment: the *other* theme for records almost equidistant
    close = np.abs(sims[:, 0] - sims[:, 1]) < 0.03
    assert close.any()
    previous = np.where(close, 1 - nearest, nearest)
    sticky = ThemeModel(stickiness=0.05)._anchor(x, nearest, anchors, 5, previous)
    loose = ThemeModel(stickiness=0.0)._anchor(x, nearest, anchors, 5, previous)

    def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.all((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])))

    assert same_partition(sticky, previous), "boundary records stay where they were"
    assert same_partition(loose, nearest), "without stickiness every record goes nearest"
    # records clearly closer to the other theme move even if they were assigned wrongly
    far = np.flatnonzero(np.abs(sims[:, 0] - sims[:, 1]) > 0.2)
    wrong, anchors_ok = far[:3], far[3:]
    moved_prev = previous.copy()
    moved_prev[wrong] = 1 - nearest[wrong]
    out = ThemeModel(stickiness=0.05)._anchor(x, nearest, anchors, 5, moved_prev)
    for i in wrong:
        ref = next(j for j in anchors_ok if nearest[j] == nearest[i])
        assert out[i] == out[ref]
