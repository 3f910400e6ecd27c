"""Theme registry: match a refitted model's themes to permanent theme ids.

Pure logic, no database: the store passes in the registry's themes and the record
assignments, and writes back what `match_themes` and `moved_records` decide.

Definitions used throughout:

- A *registry key* is a theme's permanent id; a *new theme id* is the id a freshly fitted
  `ThemeModel` gave it (`theme_ids_`).
- Matching is one-to-one between new themes and registry entries, chosen by
  `scipy.optimize.linear_sum_assignment` on centroid cosine similarity. Pairs below the
  threshold are ruled out before the assignment, so the assignment keeps as many pairs
  as possible, then the most similar ones.
- Curation is respected. A registry entry with `merged_into` set still takes part in
  matching with its own centroid, but a new theme matched to it gets the key it was
  merged into (following chains), so a merged pair stays merged even if the refit
  separates the two again. An entry marked `not_a_theme` matches like any other, so the
  junk it describes keeps its key and stays hidden; hiding is the caller's job (look the
  key up in the registry). A matched entry with a pinned (or person-renamed) label keeps
  that label.
- A registry key is *retired* when no new theme ends up with it. Records only move
  through new themes, so a retired key never has records left under the new assignment.
  Entries merged away by curation are never retired: they stay merged.
- Lineage is counted in key space over records present in both assignments (records
  added or dropped by the refit are ignored; old keys merged away are counted under the
  key they were merged into). A *split* of old key K: two or more new keys each receive a
  share >= `overlap_share` of K's records (share = records of K now under that key / all
  records of K). A *merge* into new key N: two or more old keys each supply a share >=
  `overlap_share` of N's records (share = records of N that came from that key / all
  records of N). A surviving key can be its own child or parent.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from themes.errors import ThemesError

log = logging.getLogger(__name__)

OUTLIER = -1
"""BERTopic's id for "no theme": records assigned to it are left out of lineage."""

_NORM_TOLERANCE = 1e-3


class RegistryError(ThemesError):
    """Theme registry matching got inputs it cannot use."""


class CentroidError(RegistryError):
    """A centroid array has the wrong shape, is not finite or is not L2-normalised."""


class DuplicateIdError(RegistryError):
    """A registry key or new theme id appears twice, or a new key would collide."""


class UnknownIdError(RegistryError):
    """An assignment, label or move refers to a theme id or key that does not exist."""


class CurationError(RegistryError):
    """A `merged_into` chain points to a missing key or loops back on itself."""


@dataclass(frozen=True)
class RegistryTheme:
    """A permanent theme as the registry knows it."""

    key: int
    """Permanent id."""
    label: str
    centroid: np.ndarray
    """L2-normalised, shape (d,)."""
    pinned: bool = False
    """Label pinned or renamed by a person: kept when the theme is matched."""
    merged_into: int | None = None
    """Curation merged this theme into that key; it stays merged."""
    not_a_theme: bool = False
    """Curation marked it as not a theme; it still matches, so it stays hidden."""


@dataclass(frozen=True)
class LineageEvent:
    """A split or merge seen in member overlap between the old and new assignments."""

    kind: str
    """"split" or "merge"."""
    parents: tuple[int, ...]
    """Registry keys before the refit (one for a split, several for a merge)."""
    children: tuple[int, ...]
    """Registry keys after matching, new keys included (several for a split, one for a
    merge)."""
    detail: dict
    """Split: {"parent_records": n, "shares": {child key: share of the parent's records}}.
    Merge: {"child_records": n, "shares": {parent key: share of the child's records}}."""


@dataclass(frozen=True)
class Matching:
    """What a refit means for the registry."""

    key_of: dict[int, int]
    """New theme id -> registry key to use (existing, or newly born)."""
    matched: dict[int, int]
    """New theme id -> registry entry it matched (one-to-one, similarity >= threshold).
    The entry may have been merged away by curation; `key_of` then gives the key it was
    merged into."""
    born: list[int]
    """New theme ids that got fresh keys, in the order the keys were given."""
    retired: list[int]
    """Registry keys no new theme ends up with (ascending)."""
    events: list[LineageEvent]
    """Splits (by parent key), then merges (by child key)."""
    similarity: dict[int, float]
    """New theme id -> cosine similarity to the entry it matched."""
    labels: dict[int, str]
    """Registry key -> label to use, for every key in `key_of`."""
    aliases: dict[int, int] = field(default_factory=dict)
    """Registry key merged away by curation -> key it is represented by."""

    @property
    def born_keys(self) -> list[int]:
        """The fresh keys, in the order of `born`."""
        return [self.key_of[t] for t in self.born]


@dataclass(frozen=True)
class Move:
    """One record whose registry key changed in a refit."""

    record_id: str
    old_key: int | None
    """None when the record had no theme before (new, or an outlier)."""
    new_key: int
    reason: str
    """"theme matched", "split from K", "merged into K", "new theme born" or
    "theme K retired"."""


# -- validation --------------------------------------------------------------------------
def _is_unit(vectors: np.ndarray) -> np.ndarray:
    return np.abs(np.linalg.norm(vectors, axis=-1) - 1.0) <= _NORM_TOLERANCE


def _check_registry(registry: Sequence[RegistryTheme], dim: int) -> None:
    keys = [int(t.key) for t in registry]
    dupes = sorted(k for k, c in Counter(keys).items() if c > 1)
    if dupes:
        raise DuplicateIdError(
            f"Registry keys {dupes} appear more than once; each permanent theme must be "
            f"passed once."
        )
    for t in registry:
        c = np.asarray(t.centroid)
        if c.ndim != 1 or c.shape[0] != dim:
            raise CentroidError(
                f"Registry theme {t.key}: centroid has shape {c.shape}, expected ({dim},) "
                f"to match the new model's centroids. Were they made with another "
                f"embedding model?"
            )
        if not np.all(np.isfinite(c)) or not _is_unit(c.astype(np.float64)):
            raise CentroidError(
                f"Registry theme {t.key}: centroid is not a finite L2-normalised vector "
                f"(norm {float(np.linalg.norm(c)):.4f}); normalise it before matching."
            )


def _check_new(
    new_centroids: np.ndarray, new_ids: Sequence[int], new_labels: Mapping[int, str]
) -> np.ndarray:
    c = np.asarray(new_centroids)
    if c.ndim != 2 or c.shape[0] != len(new_ids):
        raise CentroidError(
            f"new_centroids has shape {c.shape}; expected ({len(new_ids)}, d), one row per "
            f"new theme id."
        )
    c = c.astype(np.float64)
    if not np.all(np.isfinite(c)):
        raise CentroidError("new_centroids holds NaN or infinite values.")
    bad = [int(new_ids[i]) for i in np.flatnonzero(~_is_unit(c))] if len(c) else []
    if bad:
        raise CentroidError(
            f"New themes {bad[:10]} have centroids that are not L2-normalised; normalise "
            f"the rows (themes.embed.l2_normalise) before matching."
        )
    dupes = sorted(t for t, n in Counter(int(t) for t in new_ids).items() if n > 1)
    if dupes:
        raise DuplicateIdError(f"New theme ids {dupes} appear more than once in new_ids.")
    negative = sorted(int(t) for t in new_ids if int(t) < 0)
    if negative:
        raise UnknownIdError(
            f"New theme ids {negative} are negative; {OUTLIER} is BERTopic's outlier id and "
            f"is not a theme. Drop it from new_ids and new_centroids."
        )
    missing = sorted(int(t) for t in new_ids if int(t) not in new_labels)
    if missing:
        raise UnknownIdError(f"new_labels has no label for new themes {missing}.")
    return c


def _resolve_aliases(registry: Sequence[RegistryTheme]) -> dict[int, int]:
    """Key merged away by curation -> final key it is represented by."""
    by_key = {int(t.key): t for t in registry}
    out: dict[int, int] = {}
    for t in registry:
        if t.merged_into is None:
            continue
        seen = [int(t.key)]
        target = int(t.merged_into)
        while True:
            if target not in by_key:
                raise CurationError(
                    f"Registry theme {seen[-1]} is merged into {target}, which is not in the "
                    f"registry. Pass every registry theme, retired ones included, or fix the "
                    f"curation record."
                )
            if target in seen:
                chain = " -> ".join(str(k) for k in [*seen, target])
                raise CurationError(f"Curation merges loop: {chain}. Undo one of the merges.")
            seen.append(target)
            nxt = by_key[target].merged_into
            if nxt is None:
                break
            target = int(nxt)
        out[int(t.key)] = target
    return out


def _check_assignments(
    old_assignments: Mapping[str, int] | None,
    new_assignments: Mapping[str, int] | None,
    registry_keys: set[int],
    new_ids: set[int],
) -> None:
    if (old_assignments is None) != (new_assignments is None):
        raise RegistryError(
            "Pass both old_assignments and new_assignments (to detect splits and merges) "
            "or neither."
        )
    if old_assignments is None or new_assignments is None:
        return
    unknown_old = sorted({int(k) for k in old_assignments.values()} - registry_keys)
    if unknown_old:
        raise UnknownIdError(
            f"old_assignments refers to registry keys {unknown_old[:10]} that are not in "
            f"the registry."
        )
    unknown_new = sorted({int(t) for t in new_assignments.values()} - new_ids - {OUTLIER})
    if unknown_new:
        raise UnknownIdError(
            f"new_assignments refers to theme ids {unknown_new[:10]} that are not in new_ids."
        )


# -- matching ----------------------------------------------------------------------------
def _assign(similarity: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Optimal one-to-one pairs (row, col) with similarity >= threshold.

    Pairs below the threshold get a penalty larger than any total similarity, so the
    assignment first keeps as many allowed pairs as it can, then maximises similarity.
    """
    if similarity.size == 0:
        return []
    allowed = similarity >= threshold
    penalty = 2.0 * min(similarity.shape) + 1.0
    weights = np.where(allowed, similarity, -penalty)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]


def _lineage(
    old_assignments: Mapping[str, int],
    new_assignments: Mapping[str, int],
    aliases: Mapping[int, int],
    key_of: Mapping[int, int],
    overlap_share: float,
) -> list[LineageEvent]:
    pairs: Counter[tuple[int, int]] = Counter()
    for record_id, old in old_assignments.items():
        new = new_assignments.get(record_id)
        if new is None or int(new) == OUTLIER:
            continue
        old_key = aliases.get(int(old), int(old))
        pairs[(old_key, key_of[int(new)])] += 1
    from_old: dict[int, dict[int, int]] = defaultdict(dict)
    into_new: dict[int, dict[int, int]] = defaultdict(dict)
    for (o, n), count in pairs.items():
        from_old[o][n] = count
        into_new[n][o] = count

    def big_shares(counts: dict[int, int]) -> tuple[int, dict[int, float]]:
        total = sum(counts.values())
        shares = {k: c / total for k, c in counts.items() if c / total >= overlap_share}
        ordered = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
        return total, dict(ordered)

    events = []
    for parent in sorted(from_old):
        total, shares = big_shares(from_old[parent])
        if len(shares) >= 2:
            events.append(
                LineageEvent(
                    kind="split",
                    parents=(parent,),
                    children=tuple(shares),
                    detail={"parent_records": total, "shares": shares},
                )
            )
    for child in sorted(into_new):
        total, shares = big_shares(into_new[child])
        if len(shares) >= 2:
            events.append(
                LineageEvent(
                    kind="merge",
                    parents=tuple(shares),
                    children=(child,),
                    detail={"child_records": total, "shares": shares},
                )
            )
    return events


def match_themes(
    registry: Sequence[RegistryTheme],
    new_centroids: np.ndarray,
    new_ids: Sequence[int],
    new_labels: Mapping[int, str],
    *,
    threshold: float = 0.8,
    old_assignments: Mapping[str, int] | None = None,
    new_assignments: Mapping[str, int] | None = None,
    next_key: int,
    overlap_share: float = 0.3,
) -> Matching:
    """Match a refitted model's themes to the registry's permanent themes.

    Args:
        registry: every permanent theme, merged-away ones included (retired ones may be
            left out unless a merge points to them).
        new_centroids: (k, d) L2-normalised centroids of the new model, rows in the order
            of `new_ids`.
        new_ids: the new model's theme ids (`ThemeModel.theme_ids_`), non-negative.
        new_labels: new theme id -> label the new model gave it.
        threshold: minimum cosine similarity for a match.
        old_assignments: record id -> registry key before the refit.
        new_assignments: record id -> new theme id (-1 means no theme). Give both
            assignments or neither; without them no lineage is detected.
        next_key: first fresh key; must be above every registry key. Born themes get
            `next_key, next_key + 1, ...` in ascending order of new theme id.
        overlap_share: minimum share for a split child or a merge parent (see the module
            docstring for how shares are counted).

    Returns:
        The `Matching`. Deterministic: the order of `new_ids` does not matter.

    Raises:
        RegistryError: (or a subclass) when inputs are inconsistent.
    """
    if not -1.0 <= threshold <= 1.0:
        raise RegistryError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}.")
    if not 0.0 < overlap_share <= 1.0:
        raise RegistryError(f"overlap_share must be in (0, 1], got {overlap_share}.")
    centroids = _check_new(new_centroids, new_ids, new_labels)
    dim = centroids.shape[1]
    _check_registry(registry, dim)
    keys = {int(t.key) for t in registry}
    if keys and next_key <= max(keys):
        raise DuplicateIdError(
            f"next_key {next_key} is not above the largest registry key {max(keys)}; fresh "
            f"keys would collide with existing ones."
        )
    aliases = _resolve_aliases(registry)
    ids = [int(t) for t in new_ids]
    _check_assignments(old_assignments, new_assignments, keys, set(ids))

    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ids_sorted = [ids[i] for i in order]
    entries = sorted(registry, key=lambda t: int(t.key))
    if entries and ids_sorted:
        reg = np.stack([np.asarray(t.centroid, dtype=np.float64) for t in entries])
        sims = centroids[order] @ reg.T
    else:
        sims = np.zeros((len(ids_sorted), len(entries)))

    matched: dict[int, int] = {}
    similarity: dict[int, float] = {}
    for row, col in _assign(sims, threshold):
        matched[ids_sorted[row]] = int(entries[col].key)
        similarity[ids_sorted[row]] = float(sims[row, col])

    key_of: dict[int, int] = {}
    born: list[int] = []
    fresh = next_key
    for t in ids_sorted:
        if t in matched:
            key_of[t] = aliases.get(matched[t], matched[t])
        else:
            key_of[t] = fresh
            born.append(t)
            fresh += 1

    used = set(key_of.values())
    retired = sorted(k for k in keys if k not in aliases and k not in used)

    by_key = {int(t.key): t for t in registry}
    labels: dict[int, str] = {}
    for key in sorted(used):
        theme = by_key.get(key)
        if theme is not None and theme.pinned:
            labels[key] = theme.label
            continue
        # The new theme matched to the key's own entry names it; failing that (the key is
        # reached only through a curation merge), the most similar one does.
        candidates = [t for t in ids_sorted if key_of[t] == key]
        own = [t for t in candidates if matched.get(t) == key]
        chosen = own[0] if own else max(candidates, key=lambda t: (similarity.get(t, -2.0), -t))
        labels[key] = str(new_labels[chosen])

    events: list[LineageEvent] = []
    if old_assignments is not None and new_assignments is not None:
        events = _lineage(old_assignments, new_assignments, aliases, key_of, overlap_share)

    log.info(
        "Registry matching: %d matched, %d born, %d retired, %d lineage events",
        len(matched),
        len(born),
        len(retired),
        len(events),
    )
    return Matching(
        key_of=key_of,
        matched=matched,
        born=born,
        retired=retired,
        events=events,
        similarity=similarity,
        labels=labels,
        aliases=aliases,
    )


def moved_records(
    old_assignments: Mapping[str, int],
    new_assignments_by_key: Mapping[str, int],
    matching: Matching,
) -> list[Move]:
    """Every record whose registry key changed, with a reason a person can read.

    Args:
        old_assignments: record id -> registry key before the refit.
        new_assignments_by_key: record id -> registry key after the refit (new theme ids
            already mapped through `matching.key_of`). Records left without a theme are
            simply absent.
        matching: the result of `match_themes` for this refit.

    Returns:
        Moves sorted by record id. Records whose key did not change are not listed;
        records with no old key (new, or outliers before) are listed with `old_key=None`.
        Reasons, first that applies: "merged into K" (the old key was merged into K by
        curation, or a merge event joins it into K), "split from K" (a split event of the
        old key K lists the new key), "theme K retired", "new theme born", and otherwise
        "theme matched" (the record now belongs to another existing theme).

    Raises:
        UnknownIdError: a key is neither in the matching nor known to the registry.
    """
    new_keys = set(matching.key_of.values())
    known_old = new_keys | set(matching.retired) | set(matching.aliases)
    unknown_new = sorted({int(k) for k in new_assignments_by_key.values()} - new_keys)
    if unknown_new:
        raise UnknownIdError(
            f"new_assignments_by_key uses keys {unknown_new[:10]} that the matching does not "
            f"give to any new theme; map new theme ids through matching.key_of first."
        )
    unknown_old = sorted({int(k) for k in old_assignments.values()} - known_old)
    if unknown_old:
        raise UnknownIdError(
            f"old_assignments uses keys {unknown_old[:10]} that were not in the registry "
            f"passed to match_themes."
        )
    split_children = {e.parents[0]: set(e.children) for e in matching.events if e.kind == "split"}
    merge_parents = {e.children[0]: set(e.parents) for e in matching.events if e.kind == "merge"}
    born = set(matching.born_keys)
    retired = set(matching.retired)

    moves = []
    for record_id in sorted(new_assignments_by_key):
        new = int(new_assignments_by_key[record_id])
        raw = old_assignments.get(record_id)
        old = None if raw is None else int(raw)
        if old == new:
            continue
        via = None if old is None else matching.aliases.get(old, old)
        if via is not None and (via == new or via in merge_parents.get(new, ())):
            reason = f"merged into {new}"
        elif via is not None and new in split_children.get(via, ()):
            reason = f"split from {via}"
        elif via is not None and via in retired:
            reason = f"theme {via} retired"
        elif new in born:
            reason = "new theme born"
        else:
            reason = "theme matched"
        moves.append(Move(record_id=record_id, old_key=old, new_key=new, reason=reason))
    return moves
