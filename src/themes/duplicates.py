"""Near-duplicates: the same event reported twice (two incident reports, or a complaint or
claim about an event also reported as an incident).

Two records are a pair when their event dates are at most `search.duplicate_max_days`
apart, they agree on `search.duplicate_match_fields` (site, location, specialty, severity
and harm level by default; an empty field does not count against them; the harm level is
the factors step's, so where one report leaves severity blank its text can still say "no
harm" against the other's "moderate harm"), and their duplicate score is at
least `search.duplicate_threshold` (two records of one kind) or
`search.duplicate_cross_kind_threshold` (a complaint or claim against an incident: one
event told by a relative and by staff shares fewer words than two staff reports of it).
The score mixes the embeddings' cosine (same kind of event, any wording) with an
IDF-weighted overlap of their words (the same specific facts: which drug, which device,
which finding; with `search.duplicate_idf_by_kind`, a word's rarity is judged among
records of the pair's kinds, so claims' and complaint responses' stock phrasing counts
for little), weighted by `search.duplicate_lexical_weight`; the weight and the two
thresholds are calibrated on the demo's planted duplicates
(benchmarks/bench_search.py). Two reports of one event are about one patient: when one
refers to its subject only as "he" (or "my husband", "my father", ...) and the other only
as "she" ("my wife", "my mum", ...), the pair's score drops by
`search.duplicate_sex_conflict_penalty` (de-identification keeps pronouns and relations; a
record using both, or neither, is not judged). Pairs are kept in the `near_duplicates`
table and found again only for new and changed records (and records whose filter fields
changed); groups are the connected components of the pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa

from themes.errors import ConfigError
from themes.search_index import META_COLUMNS, SearchIndex
from themes.settings import SearchSettings
from themes.store import Store, metadata, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

near_duplicates = sa.Table(
    "near_duplicates",
    metadata,
    sa.Column("record_a", sa.String, primary_key=True),
    sa.Column("record_b", sa.String, primary_key=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("day_gap", sa.Integer, nullable=False),
    sa.Column("found_at", sa.DateTime, nullable=False),
)


def ensure_table(store: Store) -> None:
    """Create the near_duplicates table if it is not there yet."""
    metadata.create_all(store.engine, tables=[near_duplicates])


def candidates(
    index: SearchIndex,
    pos: int,
    *,
    max_days: int,
    match_fields: Sequence[str],
    lexical_weight: float = 0.0,
    context: int = 0,
    sex_conflict_penalty: float = 0.0,
    idf_by_kind: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Records that could report the same event as record `pos`, most similar first.

    Blocking: event dates at most `max_days` apart, and equal `match_fields` (a field
    empty in either record does not block). The score is
    `(1 - lexical_weight) * cosine + lexical_weight * word overlap` (see `word_overlap`;
    `context` > 0 discounts the words that record's `context` nearest neighbours share;
    `idf_by_kind` weighs words by their rarity among records of the pair's kinds), less
    `sex_conflict_penalty` where `sex_conflicts` says the two are about different
    patients. Returns (positions, scores).
    """
    order, days = _by_day(index)
    d = int(index.days_[pos])
    # the bounds in the days' own dtype: a list of Python ints made numpy convert all the
    # days on every call (0.17 ms a record at 1,000,000 records, against 1 µs)
    lo, hi = np.searchsorted(days, np.array([d - max_days, d + max_days + 1], dtype=days.dtype))
    cand = order[lo:hi]
    cand = cand[cand != pos]
    empties = _derived(index, "_dup_empty_codes", _empty_codes)
    for field in match_fields:
        codes = index.codes_[field]
        empty = empties[field]
        mine = codes[pos]
        if mine != empty:
            cand = cand[(codes[cand] == mine) | (codes[cand] == empty)]
    if not len(cand):
        return cand.astype(np.int64), np.zeros(0, dtype=np.float32)
    cand = np.sort(cand)
    q = np.asarray(index.vectors_[pos], dtype=np.float32)
    sims = np.asarray(index.vectors_[cand], dtype=np.float32) @ q
    if lexical_weight:
        overlap = pair_overlap(index, pos, cand, context=context, idf_by_kind=idf_by_kind)
        sims = (1.0 - lexical_weight) * sims + lexical_weight * overlap
    if sex_conflict_penalty:
        sims = sims - sex_conflict_penalty * sex_conflicts(index, pos, cand)
    best = np.argsort(-sims, kind="stable")
    return cand[best].astype(np.int64), sims[best].astype(np.float32)


def word_overlap(
    index: SearchIndex,
    pos: int,
    others: np.ndarray,
    *,
    context: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
    idf_by_kind: bool = False,
) -> np.ndarray:
    """IDF-weighted cosine of the word sets of record `pos` and each of `others` (0..1).

    Words are the search index's BM25 tokens (stop words removed); a word shared by few
    records counts for much more than one that most records use, so two reports that name
    the same uncommon drug, device or finding score high even when worded differently.

    With `idf_by_kind`, a word's rarity is judged among the records of each record's kind
    (incident, complaint, claim), and the pair uses the lower of the two (`kind_idf`):
    the phrasing that every claim ("it is alleged that the Defendant", "loss of amenity")
    or every complaint response ("we apologised for the distress caused") uses is rare
    among all records but common among its own kind, and says nothing about whether two
    reports are of one event.

    With `context` (positions of records like `pos`, e.g. its nearest neighbours, alone or
    with a weight each, as `_context` gives them), a word is further discounted by how many
    of them use it: the words every report of that kind of event uses ("pressure ulcer",
    "sacrum") say little about whether two reports are of the *same* event; the facts that
    set this report apart from its look-alikes say much.
    """
    others = np.asarray(others, dtype=np.int64)
    discount: np.ndarray | None = None
    if isinstance(context, tuple):
        positions, shares = context
    else:
        positions = context
        shares = None if context is None else np.ones(len(context))
    if positions is not None and len(positions):
        m = float(np.sum(shares))
        df = np.zeros(len(index.idf()), dtype=np.float64)
        for other, share in zip(
            np.asarray(positions, dtype=np.int64).tolist(), shares.tolist(), strict=True
        ):
            df[np.asarray(index.tokens_of(other), dtype=np.int64)] += share
        discount = np.log1p(m / (df + 0.5)) / np.log1p(m / 0.5)
    idf = index.idf()
    per_kind = kind_idf(index) if idf_by_kind else None
    kinds = index.codes_["kind"]  # indexed before any conversion: arrays span the index
    out = np.zeros(len(others), dtype=np.float32)
    mine = np.asarray(index.tokens_of(pos), dtype=np.int64)
    if not len(others) or not len(mine):
        return out
    # every partner's distinct tokens at once (a Python loop per pair cost 20 µs a pair):
    # (partner, token) keys from the CSR token arrays, made distinct, the empty token out
    starts = np.asarray(index.tok_indptr_[others], dtype=np.int64)
    lengths = np.asarray(index.tok_indptr_[others + 1], dtype=np.int64) - starts
    seg = np.repeat(np.arange(len(others), dtype=np.int64), lengths)
    at = np.arange(len(seg), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    vocab = len(idf)
    keys = np.unique(seg * vocab + index.tok_ids_[at + starts[seg]].astype(np.int64))
    seg, tok = keys // vocab, keys % vocab
    empty = index.empty_token
    if empty is not None:
        seg, tok = seg[tok != empty], tok[tok != empty]
    # a word's weight for the pair: its idf, or the lower of the two kinds' (`kind_idf`),
    # times the context's discount; the same from either side of the pair
    if per_kind is None:
        w = idf[tok]
        w_mine = np.full(len(others), float((_discounted(idf[mine], discount, mine) ** 2).sum()))
    else:
        my_kind, theirs_kind = int(kinds[pos]), kinds[others].astype(np.int64)
        w = np.minimum(per_kind[my_kind, tok], per_kind[theirs_kind[seg], tok])
        w_mine = np.zeros(len(others))
        for k in np.unique(theirs_kind).tolist():
            wk = np.minimum(per_kind[my_kind, mine], per_kind[k, mine])
            w_mine[theirs_kind == k] = float((_discounted(wk, discount, mine) ** 2).sum())
    w2 = _discounted(w, discount, tok) ** 2
    norm_theirs = np.bincount(seg, weights=w2, minlength=len(others))
    shared = np.isin(tok, mine)
    overlap = np.bincount(seg[shared], weights=w2[shared], minlength=len(others))
    ok = (w_mine > 0) & (norm_theirs > 0)
    out[ok] = overlap[ok] / np.sqrt(w_mine[ok] * norm_theirs[ok])
    return out


def _discounted(w: np.ndarray, discount: np.ndarray | None, tokens: np.ndarray) -> np.ndarray:
    """Word weights `w` of `tokens`, times the context's discount where there is one."""
    return w if discount is None else w * discount[tokens]


def kind_idf(index: SearchIndex) -> np.ndarray:
    """BM25's idf of every token among the records of one kind only: one row per kind, in
    the order of the index's kind codes. Cached on the index until it changes."""
    return _derived(index, "_dup_kind_idf", _kind_idf)


def _kind_idf(index: SearchIndex) -> np.ndarray:
    codes = np.asarray(index.codes_["kind"], dtype=np.int64)
    n_kinds = len(index.meta_["kind"].cat.categories)
    vocab = len(index.idf())
    if index.bm25_ is None or not vocab or not n_kinds:
        return np.zeros((max(n_kinds, 1), vocab), dtype=np.float64)
    # the BM25 matrix lists, for each token, the records that use it
    indptr = np.asarray(index.bm25_.scores["indptr"], dtype=np.int64)[: vocab + 1]
    records = np.asarray(index.bm25_.scores["indices"], dtype=np.int64)[: indptr[-1]]
    token = np.repeat(np.arange(vocab, dtype=np.int64), np.diff(indptr))
    df = np.bincount(codes[records] * vocab + token, minlength=n_kinds * vocab)
    df = df.reshape(n_kinds, vocab).astype(np.float64)
    n = np.bincount(codes, minlength=n_kinds).astype(np.float64)[:, None]
    return np.log1p((n - df + 0.5) / (df + 0.5))


MALE_WORDS = ("he", "him", "his", "himself")
FEMALE_WORDS = ("she", "her", "hers", "herself")
MALE_RELATIVES = ("husband", "father", "dad", "son", "brother", "grandfather", "grandad",
                  "grandson", "uncle", "nephew")  # fmt: skip
FEMALE_RELATIVES = ("wife", "mother", "mum", "daughter", "sister", "grandmother", "gran",
                    "nan", "nana", "nanna", "granddaughter", "aunt", "niece")  # fmt: skip
"""Who a complainant writes about: "my husband", "my mum" (right after "my" only: "a
daughter had to translate" names a relative, not the patient)."""


def subject_sex(index: SearchIndex) -> np.ndarray:
    """Per record: 1 when its text refers to its subject only as male (pronouns, or "my"
    and a male relative: "my husband"), 2 only as female, 0 both or neither.

    Cached on the index until it changes.
    """
    return _derived(index, "_dup_sex", _subject_sex)


def _subject_sex(index: SearchIndex) -> np.ndarray:
    vocab = index.tokenizer_.get_vocab_dict()
    out = np.zeros(index.size, dtype=np.int8)
    if index.size and len(index.tok_ids_):
        tokens = index.tok_ids_
        indptr = np.asarray(index.tok_indptr_, dtype=np.int64)
        starts = indptr[:-1]
        # "my" right before a token of the same record (not the last token of the previous)
        after_my = np.zeros(len(tokens), dtype=bool)
        if "my" in vocab:
            after_my[1:] = tokens[:-1] == vocab["my"]
            after_my[starts[starts < len(tokens)]] = False
        # per record from the CSR layout; reduceat over the non-empty records only (an
        # empty record has no segment of its own and says neither)
        filled = starts < indptr[1:]
        has = []
        for words, relatives in ((MALE_WORDS, MALE_RELATIVES), (FEMALE_WORDS, FEMALE_RELATIVES)):
            ids = np.array([vocab[w] for w in words if w in vocab], dtype=tokens.dtype)
            rel = np.array([vocab[w] for w in relatives if w in vocab], dtype=tokens.dtype)
            hit = np.isin(tokens, ids)
            hit |= after_my & np.isin(tokens, rel)
            says = np.zeros(index.size, dtype=bool)
            says[filled] = np.logical_or.reduceat(hit, starts[filled])
            has.append(says)
        male, female = has
        out[male & ~female] = 1
        out[female & ~male] = 2
    return out


def sex_conflicts(index: SearchIndex, pos: int, others: np.ndarray) -> np.ndarray:
    """1.0 where record `pos` and another each name one sex, and not the same one."""
    sex = subject_sex(index)
    mine = sex[pos]
    theirs = sex[np.asarray(others, dtype=np.int64)]
    return ((mine > 0) & (theirs > 0) & (theirs != mine)).astype(np.float32)


def pair_overlap(
    index: SearchIndex, pos: int, others: np.ndarray, *, context: int, idf_by_kind: bool = False
) -> np.ndarray:
    """The word overlap of record `pos` with each of `others`, the same from either side:
    the mean of `word_overlap` seen from `pos` (its words discounted by its own `context`
    nearest neighbours) and from the other record (by its neighbours). One-sided, a pair's
    score depended on which record was checked, so whether two reports paired could
    depend on which of them a nightly run saw as new."""
    others = np.asarray(others, dtype=np.int64)
    mine = word_overlap(
        index, pos, others, context=_cached_context(index, pos, context), idf_by_kind=idf_by_kind
    )
    if context <= 0:
        return mine  # without context the overlap is symmetric already
    theirs = np.array(
        [
            word_overlap(
                index,
                o,
                np.array([pos]),
                context=_cached_context(index, o, context),
                idf_by_kind=idf_by_kind,
            )[0]
            for o in others.tolist()
        ],
        dtype=np.float32,
    )
    return (mine + theirs) / 2.0


def _cached_context(index: SearchIndex, pos: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`_context`, remembered on the index until it changes (pairs share records)."""
    cache = _derived(index, "_contexts", lambda _ix: {})
    key = (pos, n)
    if key not in cache:
        cache[key] = _context(index, pos, n)
    return cache[key]


def _context(index: SearchIndex, pos: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The nearest records of `pos` by embedding and how much each counts as its context
    (None when n is 0): ranks up to n/2 count fully, then the weight falls linearly to 0
    by rank 3n/2, so the weights sum to n. A hard cut at rank n made the score jump when
    two neighbours about as near as each other swapped places, as a change of the
    embedding's arithmetic (float32 to bfloat16) did; now a swap of neighbouring ranks
    moves a weight by 1/n."""
    if n <= 0 or index.size < 2:
        return None
    reach = n + (n + 1) // 2
    near, _ = index.neighbours(np.array([pos], dtype=np.int64), reach)
    ranks = np.arange(1, reach + 1, dtype=np.float64)
    weights = np.clip((1.5 * n + 0.5 - ranks) / n, 0.0, 1.0)
    found = near[0] >= 0
    return near[0][found], weights[found]


def _derived(index: SearchIndex, name: str, build: Callable[[SearchIndex], T]) -> T:
    """`build(index)`, cached on the index as `name` until the index changes (`version_`)."""
    cached = getattr(index, name, None)
    if cached is None or cached[0] != index.version_:
        cached = (index.version_, build(index))
        setattr(index, name, cached)
    return cached[1]


def _empty_codes(index: SearchIndex) -> dict[str, int]:
    """Each filter field's category code for "empty" (-2 where no record leaves it empty)."""
    out = {}
    for field in index.codes_:
        cats = index.meta_[field].cat.categories
        out[field] = int(cats.get_loc("")) if "" in cats else -2
    return out


def _by_day(index: SearchIndex) -> tuple[np.ndarray, np.ndarray]:
    """Positions in event-date order and their days, cached on the index until it changes."""

    def build(index: SearchIndex) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(index.days_, kind="stable")
        return order, index.days_[order]

    return _derived(index, "_day_order", build)


def find_pairs(
    index: SearchIndex,
    positions: np.ndarray,
    *,
    threshold: float,
    max_days: int,
    match_fields: Sequence[str],
    lexical_weight: float = 0.0,
    context: int = 0,
    sex_conflict_penalty: float = 0.0,
    idf_by_kind: bool = False,
    cross_kind_threshold: float | None = None,
) -> list[tuple[int, int, float, int]]:
    """(position a, position b, score, day gap) with a < b, for pairs involving `positions`
    whose score reaches `threshold`, or `cross_kind_threshold` (when given) for a pair of
    records of different kinds."""
    out: dict[tuple[int, int], tuple[float, int]] = {}
    kinds = index.codes_["kind"]
    cross = threshold if cross_kind_threshold is None else cross_kind_threshold
    for row in np.asarray(positions, dtype=np.int64).tolist():
        cand, sims = candidates(
            index, row, max_days=max_days, match_fields=match_fields,
            lexical_weight=lexical_weight, context=context,
            sex_conflict_penalty=sex_conflict_penalty, idf_by_kind=idf_by_kind,
        )  # fmt: skip
        bar = np.where(kinds[cand] != kinds[row], cross, threshold)
        keep = sims.astype(np.float64) >= bar  # compared as Python floats, like the settings
        cand, sims = cand[keep], sims[keep]
        for other, sim in zip(cand.tolist(), sims.tolist(), strict=True):
            gap = abs(int(index.days_[row]) - int(index.days_[other]))
            out[(min(row, other), max(row, other))] = (sim, gap)
    return [(a, b, s, g) for (a, b), (s, g) in sorted(out.items())]


def check_args(settings: SearchSettings) -> dict[str, Any]:
    """`candidates` arguments (blocking and scoring) as `settings` configure the check;
    `find_pairs` takes them with the two thresholds."""
    return {
        "max_days": settings.duplicate_max_days,
        "match_fields": settings.duplicate_match_fields,
        "lexical_weight": settings.duplicate_lexical_weight,
        "context": settings.duplicate_context,
        "sex_conflict_penalty": settings.duplicate_sex_conflict_penalty,
        "idf_by_kind": settings.duplicate_idf_by_kind,
    }


def update_duplicates(
    store: Store,
    index: SearchIndex,
    settings: SearchSettings,
    *,
    changed_ids: Sequence[str],
) -> dict[str, Any]:
    """Re-check pairs of new and changed records; drop pairs of records no longer indexed."""
    ensure_table(store)
    unknown = [f for f in settings.duplicate_match_fields if f not in META_COLUMNS]
    if unknown:
        raise ConfigError(
            f"search.duplicate_match_fields has {unknown}; use any of {', '.join(META_COLUMNS)}."
        )
    with store.connect() as conn:
        existing = [
            tuple(r)
            for r in conn.execute(sa.select(near_duplicates.c.record_a, near_duplicates.c.record_b))
        ]
    at = index.positions([x for pair in existing for x in pair]).reshape(-1, 2)
    stale = [pair for pair, (a, b) in zip(existing, at.tolist(), strict=True) if a < 0 or b < 0]
    found = index.positions(list(changed_ids))
    changed = [i for i, p in zip(changed_ids, found.tolist(), strict=True) if p >= 0]
    positions = found[found >= 0]
    pairs = find_pairs(
        index,
        positions,
        threshold=settings.duplicate_threshold,
        cross_kind_threshold=settings.duplicate_cross_kind_threshold,
        **check_args(settings),
    )
    now = utcnow()
    rows = [
        {
            "record_a": str(index.ids_[a]),
            "record_b": str(index.ids_[b]),
            "score": float(s),
            "day_gap": int(g),
            "found_at": now,
        }
        for a, b, s, g in pairs
    ]
    with store.begin() as conn:
        for start in range(0, len(changed), 400):
            part = changed[start : start + 400]
            conn.execute(
                near_duplicates.delete().where(
                    sa.or_(
                        near_duplicates.c.record_a.in_(part), near_duplicates.c.record_b.in_(part)
                    )
                )
            )
        for a, b in stale:
            conn.execute(
                near_duplicates.delete().where(
                    near_duplicates.c.record_a == a, near_duplicates.c.record_b == b
                )
            )
        store.upsert(conn, near_duplicates, rows, keys=["record_a", "record_b"])
    with store.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(near_duplicates)).scalar_one()
    log.info("near-duplicates: %d pairs checked for %d records; %d pairs in all",
             len(rows), len(changed), total)  # fmt: skip
    return {"checked": len(changed), "pairs_found": len(rows), "pairs_total": int(total)}


def group_pairs(pairs: Sequence[tuple[str, str, float]]) -> list[list[str]]:
    """Connected components of the pairs (union-find), each sorted, largest first."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def duplicate_groups(store: Store, *, limit: int | None = 100) -> list[dict[str, Any]]:
    """Groups of records that report the same event, strongest first (de-identified)."""
    from themes.search import record_details, snippet

    ensure_table(store)
    with store.connect() as conn:
        pairs = [
            (r[0], r[1], float(r[2]), int(r[3]))
            for r in conn.execute(
                sa.select(
                    near_duplicates.c.record_a,
                    near_duplicates.c.record_b,
                    near_duplicates.c.score,
                    near_duplicates.c.day_gap,
                )
            )
        ]
    groups = group_pairs([(a, b, s) for a, b, s, _ in pairs])
    by_member = {m: i for i, g in enumerate(groups) for m in g}
    out: list[dict[str, Any]] = []
    for i, members in enumerate(groups):
        mine = [p for p in pairs if by_member[p[0]] == i]
        out.append(
            {
                "members": members,
                "max_score": max(p[2] for p in mine),
                "pairs": [
                    {"record_a": a, "record_b": b, "score": round(s, 4), "day_gap": g}
                    for a, b, s, g in sorted(mine, key=lambda p: -p[2])
                ],
            }
        )
    out.sort(key=lambda g: (-g["max_score"], g["members"][0]))
    if limit is not None:
        out = out[:limit]
    details = record_details(store, [m for g in out for m in g["members"]])
    result = []
    for n, g in enumerate(out, start=1):
        records = []
        for m in g["members"]:
            d = details.get(m)
            if d is None:
                continue
            text, _ = snippet(d.pop("text"), set(), width=200)
            records.append({**d, "snippet": text})
        result.append(
            {
                "group": n,
                "max_score": round(g["max_score"], 4),
                "records": records,
                "pairs": g["pairs"],
            }  # fmt: skip
        )
    return result
