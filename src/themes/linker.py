"""Hybrid lexical + dense linking of de-identified text to recommendations.

Scores for each (query, recommendation) pair, all over de-identified text:

- lexical: BM25 (`bm25s`) over content words (placeholders such as [PERSON] and stop words
  dropped, a light suffix stemmer);
- tf-idf: cosine of TF-IDF vectors of words and word pairs (scikit-learn; sublinear term
  frequency, English stop words and placeholders dropped), which damps a long query's
  repeated words where BM25 counts every repeat, and rewards shared phrases;
- dense: cosine similarity of sentence embeddings of passages (a few sentences each);
  a pair's score is the best passage-to-passage similarity (max-sim), so long texts are
  not diluted by pooling;
- each score is standardised per query over the whole corpus (z-score), and the fused
  item score is `w_lexical * z_lexical + w_dense * z_dense + w_tfidf * z_tfidf`;
- document context: an item's final score adds `w_document` times the best fused score of
  the items of its source document (a PFD report's other concerns, a review's other
  actions), so an item is helped by siblings that match the query too.

The weights are tuned on data (`tune`, used by `benchmarks/bench_links.py`), and the
"strong link" cut-off is a calibrated probability, not a fixed constant: `calibrate` fits
a logistic model of "this candidate is a right answer" on the final score and the log of
the corpus size, over labelled queries scored against sub-corpora of many sizes
(`calibration_samples`). The size matters because scores are z-scores over the corpus: a
right match among 30 items cannot reach the z-score it reaches among 3,000, and a chance
match among 3,000 reaches higher than among 30.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import product
from typing import Any, Protocol

import numpy as np

from themes.errors import NotFittedError, ThemesError
from themes.recommendations import Recommendation

log = logging.getLogger(__name__)


class Encoder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors of shape (n, dim)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


SCORING_VERSION = 2
"""Bumped when a change to the tokens or the scoring changes the links, so that the nightly
flow recomputes stored links after an upgrade (it is part of their fingerprint)."""

# English function words, titles, and "patient", which nearly every case and item holds
_STOP_TEXT = """
a about above after again against all also am an and any are as at be because been
before being below between both but by can could did do does doing down during each few
for from further had has have having he her here hers herself him himself his how i if
in into is it its itself just me more most my myself no nor not now of off on once only
or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your
yours yourself yourselves mr mrs ms miss dr may must upon within without patient patients
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())
_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")
_WORD = re.compile(r"[a-z][a-z0-9]+|\d+[a-z]+")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*(?=\(?[0-9a-z•\-–][.)]?\s)")


def stem(word: str) -> str:
    """A light English suffix stemmer (plurals, -ing, -ed, -ly, -ation), enough for BM25."""
    for suffix, keep in (
        ("ational", "ate"),
        ("ation", "ate"),
        ("iness", "y"),
        ("ities", "ity"),
        ("ies", "y"),
        ("ness", ""),
        ("ments", "ment"),
        ("ings", ""),
        ("ing", ""),
        ("edly", ""),
        ("ed", ""),
        ("ly", ""),
        ("es", "e"),
        ("s", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            return word[: -len(suffix)] + keep
    return word


def tokens(text: str) -> list[str]:
    """Content-word tokens for BM25: lower case, placeholders and stop words dropped, stemmed."""
    text = _PLACEHOLDER.sub(" ", text).lower()
    return [stem(w) for w in _WORD.findall(text) if w not in STOP_WORDS]


def tfidf_text(text: str) -> str:
    """Text as the TF-IDF vectoriser sees it: placeholders dropped, lower case."""
    return _PLACEHOLDER.sub(" ", text).lower()


def tfidf_vectorizer(max_words: int = 2) -> Any:
    """The linker's TF-IDF (scikit-learn): sublinear term frequency, English stop words,
    placeholders dropped, runs of 1 to `max_words` words (default: words and word pairs)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        preprocessor=tfidf_text,
        ngram_range=(1, max_words),
        sublinear_tf=True,
        stop_words="english",
    )


def sentences(text: str) -> list[str]:
    """Split text into sentences (hard line wraps joined, list items kept apart)."""
    parts = [re.sub(r"\s+", " ", p).strip() for p in _SENTENCE.split(text)]
    return [p for p in parts if len(p) > 2]


def passages(text: str, *, max_words: int = 60) -> list[str]:
    """Consecutive sentences grouped into passages of at most about `max_words` words."""
    out: list[str] = []
    current: list[str] = []
    n = 0
    for sent in sentences(text):
        words = len(sent.split())
        if current and n + words > max_words:
            out.append(" ".join(current))
            current, n = [], 0
        current.append(sent)
        n += words
    if current:
        out.append(" ".join(current))
    return out or [text.strip() or "(empty)"]


def zscore(scores: np.ndarray) -> np.ndarray:
    """Standardise each row (one query's scores over the corpus); constant rows become 0."""
    scores = np.asarray(scores, dtype=np.float64)
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return np.where(std > 1e-12, (scores - mean) / np.maximum(std, 1e-12), 0.0)


@dataclass(frozen=True)
class Weights:
    """Fusion weights and the calibration of the final score (see `probability`)."""

    lexical: float = 1.0
    dense: float = 1.0
    document: float = 0.5
    tfidf: float = 1.0
    calibration_slope: float = 0.3294
    calibration_size: float = -1.1088
    calibration_intercept: float = 0.1903

    def probability(self, score: np.ndarray | float, *, n_items: np.ndarray | int) -> np.ndarray:
        """Calibrated probability that a link with this final score is right, in a corpus
        of `n_items` recommendations: sigmoid(slope * score + size * ln(n_items) +
        intercept)."""
        x = (
            self.calibration_slope * np.asarray(score, dtype=np.float64)
            + self.calibration_size * log_size(n_items)
            + self.calibration_intercept
        )
        return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def log_size(n_items: np.ndarray | int) -> np.ndarray:
    """ln(corpus size), the calibration's size feature (corpora under 2 items count as 2)."""
    return np.log(np.maximum(np.asarray(n_items, dtype=np.float64), 2.0))


@dataclass
class Components:
    """Per-query standardised component scores over the fitted corpus (n_queries, n_items).
    `tfidf` may be None, which counts as no TF-IDF evidence."""

    lexical: np.ndarray
    dense: np.ndarray
    tfidf: np.ndarray | None = None

    def rows(self, index: Any) -> Components:
        """The component scores of some queries (a slice, mask or index array)."""
        return Components(
            lexical=self.lexical[index],
            dense=self.dense[index],
            tfidf=None if self.tfidf is None else self.tfidf[index],
        )

    def restandardised(self, query: int, cols: np.ndarray) -> Components:
        """One query's scores over a sub-corpus (columns `cols`), standardised again."""
        return Components(
            lexical=zscore(self.lexical[query : query + 1, cols]),
            dense=zscore(self.dense[query : query + 1, cols]),
            tfidf=None if self.tfidf is None else zscore(self.tfidf[query : query + 1, cols]),
        )


class Linker:
    """Rank recommendations for de-identified texts (scikit-learn style: fit, then score).

    Args:
        encoder: Embeds passages (an `Embedder`, or a cached wrapper around one).
        weights: Fusion weights and calibration (`Weights`).
        k1, b: BM25 parameters.
        passage_words: Words per passage for dense max-sim.
    """

    def __init__(
        self,
        *,
        encoder: Encoder,
        weights: Weights | None = None,
        k1: float = 1.2,
        b: float = 0.75,
        passage_words: int = 60,
    ) -> None:
        self.encoder = encoder
        self.weights = weights or Weights()
        self.k1 = k1
        self.b = b
        self.passage_words = passage_words

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, recs: Sequence[Recommendation]) -> Linker:
        """Index the recommendations (BM25 over content words, TF-IDF of words and word
        pairs, passage embeddings)."""
        from themes.bm25 import bm25s as _bm25s

        bm25s = _bm25s()

        if not recs:
            raise ThemesError(
                "No recommendations to link to: import a set (`themes recommendations "
                "import FILE`) or add files to links.recommendations_dir."
            )
        self.recs_ = list(recs)
        self.ids_ = [r.id for r in recs]
        corpus = [_rec_text(r) for r in recs]
        toks = [tokens(t) or ["_empty_"] for t in corpus]
        self.bm25_ = bm25s.BM25(k1=self.k1, b=self.b)
        self.bm25_.index(toks, show_progress=False)
        self.vocab_ = {w for t in toks for w in t}
        self.tfidf_ = tfidf_vectorizer()
        try:
            self.tfidf_matrix_ = self.tfidf_.fit_transform(corpus)
        except ValueError:  # no item has a word the vectoriser keeps
            self.tfidf_matrix_ = None
        self.rec_passages_, self.rec_owner_ = self._split(corpus)
        self.rec_vectors_ = np.asarray(self.encoder.encode(self.rec_passages_), dtype=np.float32)
        groups: dict[str, int] = {}
        self.group_ = np.array([groups.setdefault(r.group, len(groups)) for r in recs])
        return self

    def _split(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        pieces: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            for p in passages(text, max_words=self.passage_words):
                pieces.append(p)
                owner.append(i)
        return pieces, np.asarray(owner)

    def _check(self) -> None:
        if not hasattr(self, "bm25_"):
            raise NotFittedError("Linker.fit(recommendations) must be called before scoring.")

    # -- scoring -----------------------------------------------------------------------------
    def lexical_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Standardised BM25 scores of each text against every item (n_texts, n_items)."""
        self._check()
        lex = np.zeros((len(texts), len(self.ids_)), dtype=np.float64)
        for i, text in enumerate(texts):
            q = [t for t in tokens(text) if t in self.vocab_]
            if q:
                lex[i] = self.bm25_.get_scores(q)
        return zscore(lex)

    def tfidf_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Standardised TF-IDF cosines of each text against every item."""
        self._check()
        if self.tfidf_matrix_ is None:
            return np.zeros((len(texts), len(self.ids_)), dtype=np.float64)
        sims = self.tfidf_.transform(list(texts)) @ self.tfidf_matrix_.T
        return zscore(sims.toarray())

    def dense_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Standardised passage max-sim cosines of each text against every item."""
        self._check()
        q_passages, q_owner = self._split(texts)
        q_vectors = np.asarray(self.encoder.encode(q_passages), dtype=np.float32)
        n, m = len(texts), len(self.ids_)
        return zscore(max_sim(q_vectors, q_owner, n, self.rec_vectors_, self.rec_owner_, m))

    def components(self, texts: Sequence[str]) -> Components:
        """Standardised BM25, dense and TF-IDF scores of each text against every item."""
        return Components(
            lexical=self.lexical_scores(texts),
            dense=self.dense_scores(texts),
            tfidf=self.tfidf_scores(texts),
        )

    def fuse(self, comp: Components, weights: Weights | None = None) -> np.ndarray:
        """Final scores (n_queries, n_items) from component scores and fusion weights."""
        return fuse_scores(comp, self.group_, weights or self.weights)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Final scores of each text against every recommendation (n_texts, n_items)."""
        return self.fuse(self.components(texts))

    def top(self, texts: Sequence[str], *, k: int = 5) -> list[list[dict[str, Any]]]:
        """The k best recommendations for each text: id, score, probability, strong."""
        scores = self.score(texts)
        return [self._ranked(row, k) for row in scores]

    def _ranked(self, row: np.ndarray, k: int) -> list[dict[str, Any]]:
        order = np.argsort(-row)[:k]
        probs = self.weights.probability(row[order], n_items=len(self.ids_))
        return [
            {
                "rec_id": self.ids_[j],
                "score": round(float(row[j]), 4),
                "probability": round(float(p), 4),
            }
            for j, p in zip(order, probs, strict=True)
        ]


def fuse_scores(comp: Components, group: np.ndarray, weights: Weights) -> np.ndarray:
    """Final scores from standardised component scores: the weighted sum of the components,
    plus `weights.document` times the best such sum among the items of the same source
    document (`group[j]` numbers item j's document)."""
    item = weights.lexical * comp.lexical + weights.dense * comp.dense
    if weights.tfidf and comp.tfidf is not None:
        item = item + weights.tfidf * comp.tfidf
    group = np.asarray(group)
    if weights.document and group.size:
        _, group = np.unique(group, return_inverse=True)
        n_groups = int(group.max()) + 1
        if n_groups < group.size:
            best = np.full((item.shape[0], n_groups), -np.inf)
            np.maximum.at(best.T, group, item.T)
            item = item + weights.document * best[:, group]
    return item


def _rec_text(rec: Recommendation) -> str:
    return f"{rec.title}. {rec.text}" if rec.title and rec.title not in rec.text else rec.text


def max_sim(
    q_vectors: np.ndarray,
    q_owner: np.ndarray,
    n_queries: int,
    r_vectors: np.ndarray,
    r_owner: np.ndarray,
    n_items: int,
    *,
    block: int = 2048,
) -> np.ndarray:
    """Best passage-to-passage cosine for every (query, item) pair."""
    out = np.full((n_queries, n_items), -1.0, dtype=np.float32)
    for start in range(0, len(q_vectors), block):
        sims = q_vectors[start : start + block] @ r_vectors.T  # (b, n_rec_passages)
        per_item = np.full((sims.shape[0], n_items), -1.0, dtype=np.float32)
        np.maximum.at(per_item.T, r_owner, sims.T)
        np.maximum.at(out, q_owner[start : start + block], per_item)
    return out


# -- evaluation, tuning and calibration ---------------------------------------------------------
def first_hit_ranks(scores: np.ndarray, relevant: Sequence[set[int]]) -> np.ndarray:
    """1-based rank of the first relevant item for each query (0 when none is relevant)."""
    ranks = np.zeros(len(relevant), dtype=np.int64)
    for i, rel in enumerate(relevant):
        if not rel:
            continue
        idx = list(rel)
        best = scores[i, idx].max()
        ranks[i] = int((scores[i] > best).sum()) + 1
    return ranks


def retrieval_metrics(scores: np.ndarray, relevant: Sequence[set[int]]) -> dict[str, float]:
    """MRR and recall@1/5/10 (a hit is any relevant item) over queries with answers."""
    ranks = first_hit_ranks(scores, relevant)
    ranks = ranks[ranks > 0]
    if len(ranks) == 0:
        return {"mrr": 0.0, "recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "queries": 0}
    return {
        "mrr": round(float(np.mean(1.0 / ranks)), 4),
        "recall@1": round(float(np.mean(ranks <= 1)), 4),
        "recall@5": round(float(np.mean(ranks <= 5)), 4),
        "recall@10": round(float(np.mean(ranks <= 10)), 4),
        "queries": int(len(ranks)),
    }


DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "lexical": (1.0,),
    "dense": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "document": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    "tfidf": (0.0, 0.5, 0.75, 1.0, 1.5),
}


def tune(
    linker: Linker,
    comp: Components,
    relevant: Sequence[set[int]],
    *,
    grid: dict[str, tuple[float, ...]] | None = None,
) -> tuple[Weights, list[dict[str, float]]]:
    """Grid-search the fusion weights for MRR on a labelled (training) set.

    Returns the best weights (calibration unchanged) and every grid point's MRR.
    """
    grid = {**DEFAULT_GRID, **(grid or {})}
    tfidfs = grid["tfidf"] if comp.tfidf is not None else (0.0,)
    trials: list[dict[str, float]] = []
    best: tuple[float, Weights] | None = None
    for lexical, dense, document, tfidf in product(
        grid["lexical"], grid["dense"], grid["document"], tfidfs
    ):
        if lexical == 0 and dense == 0 and tfidf == 0:
            continue
        w = replace(linker.weights, lexical=lexical, dense=dense, document=document, tfidf=tfidf)
        mrr = retrieval_metrics(linker.fuse(comp, w), relevant)["mrr"]
        trials.append(
            {"lexical": lexical, "dense": dense, "document": document, "tfidf": tfidf, "mrr": mrr}
        )
        if best is None or mrr > best[0]:
            best = (mrr, w)
    assert best is not None  # the grid always has a point with a non-zero weight
    return best[1], trials


CALIBRATION_SIZES: tuple[int, ...] = (3, 8, 20, 45, 150, 500)
"""Sub-corpus sizes, in source documents, that `calibration_samples` scores queries against
(the whole corpus is always added): a trust's own set may have a handful of documents, a
national corpus thousands."""


@dataclass
class CalibrationSamples:
    """Candidates of labelled queries scored against sub-corpora (`calibration_samples`).

    One row per candidate (a query's top k in one sub-corpus): its final score, the
    sub-corpus's item count, its rank (0 = top), whether it is right, and whether the
    sub-corpus held a right answer at all.
    """

    score: np.ndarray
    n_items: np.ndarray
    rank: np.ndarray
    right: np.ndarray
    answerable: np.ndarray
    documents: np.ndarray

    def features(self) -> np.ndarray:
        """The calibration's inputs: final score and ln(corpus size)."""
        return np.column_stack([self.score, log_size(self.n_items)])


def calibration_samples(
    comp: Components,
    relevant: Sequence[set[int]],
    group: np.ndarray,
    weights: Weights,
    *,
    sizes: Sequence[int] = CALIBRATION_SIZES,
    answerable_share: float = 0.5,
    repeats: int = 2,
    top_k: int = 5,
    seed: int = 0,
) -> CalibrationSamples:
    """Score each labelled query against random sub-corpora of `sizes` source documents
    and keep its top-k candidates.

    A sub-corpus is, with probability `answerable_share`, the documents of the query's
    right answers plus others drawn at random, and otherwise only others (so that no link
    is right, as for a theme that no recommendation covers). The component scores are
    standardised again over the sub-corpus's items (exact for the dense score; for BM25
    it leaves the corpus statistics of the whole corpus, a small approximation). Each
    query is also scored once against the whole corpus, or (with the same chance of no
    answer) against all of it but its right answers' documents.
    """
    rng = np.random.default_rng(seed)
    group = np.asarray(group)
    docs, group = np.unique(group, return_inverse=True)
    items_of = [np.flatnonzero(group == d) for d in range(len(docs))]
    rows: list[tuple[float, int, int, int, int, int]] = []

    def keep(
        score_row: np.ndarray, cols: np.ndarray, rel: set[int], n_docs: int, ans: bool
    ) -> None:
        top = np.argsort(-score_row)[:top_k]
        for rank, j in enumerate(top):
            right = int(cols[j]) in rel
            rows.append((float(score_row[j]), cols.size, rank, int(right), int(ans), n_docs))

    for i, rel in enumerate(relevant):
        if not rel:
            continue
        own = np.unique(group[list(rel)])
        others = np.setdiff1d(np.arange(len(docs)), own)
        for size in [*(x for x in sizes if x < len(docs)), len(docs)]:
            whole = size == len(docs)
            for _ in range(1 if whole else repeats):
                ans = bool(rng.random() < answerable_share)
                n_other = others.size if whole else (size - len(own) if ans else size)
                if not 1 <= n_other <= others.size:
                    continue
                pick = rng.choice(others, size=n_other, replace=False)
                chosen = np.concatenate([own, pick]) if ans else pick
                cols = np.sort(np.concatenate([items_of[d] for d in chosen]))
                if cols.size < 3:
                    continue
                sub = comp.restandardised(i, cols)
                keep(fuse_scores(sub, group[cols], weights)[0], cols, rel, size, ans)
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return CalibrationSamples(
        score=a[:, 0],
        n_items=a[:, 1].astype(np.int64),
        rank=a[:, 2].astype(np.int64),
        right=a[:, 3].astype(bool),
        answerable=a[:, 4].astype(bool),
        documents=a[:, 5].astype(np.int64),
    )


def calibrate(samples: CalibrationSamples) -> tuple[float, float, float]:
    """Logistic calibration: (slope, size, intercept) so that sigmoid(slope * score + size *
    ln(n_items) + intercept) estimates the chance that a candidate is a right answer."""
    if samples.right.all() or not samples.right.any():
        raise ThemesError("Calibration needs both right and wrong candidates.")
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=1000).fit(samples.features(), samples.right)
    slope, size = (float(c) for c in model.coef_[0])
    return slope, size, float(model.intercept_[0])


def reliability_by_size(
    samples: CalibrationSamples, weights: Weights, *, threshold: float
) -> list[dict[str, float]]:
    """For the top link of each sampled (held-out) query, by sub-corpus size in documents:
    mean calibrated probability against the share right, the share called strong, the
    precision of strong links, and how often a query with no right answer in the
    sub-corpus still got a strong link."""
    top = samples.rank == 0
    out = []
    for docs in np.unique(samples.documents[top]):
        m = top & (samples.documents == docs)
        p = weights.probability(samples.score[m], n_items=samples.n_items[m])
        right, ans = samples.right[m], samples.answerable[m]
        strong = p >= threshold
        out.append(
            {
                "documents": int(docs),
                "median_items": int(np.median(samples.n_items[m])),
                "queries": int(m.sum()),
                "mean_probability": round(float(p.mean()), 4),
                "share_right": round(float(right.mean()), 4),
                "share_strong": round(float(strong.mean()), 4),
                "precision_strong": round(float(right[strong].mean()), 4) if strong.any() else 0.0,
                "strong_without_answer": (
                    round(float(strong[~ans].mean()), 4) if (~ans).any() else 0.0
                ),
            }
        )
    return out


def reliability(
    scores: np.ndarray, relevant: Sequence[set[int]], weights: Weights, *, threshold: float
) -> dict[str, float]:
    """For each query's top link: share called strong, and how often strong/weak ones are right."""
    strong_right = strong = weak_right = weak = 0
    for i, rel in enumerate(relevant):
        if not rel:
            continue
        j = int(np.argmax(scores[i]))
        right = j in rel
        if float(weights.probability(scores[i, j], n_items=scores.shape[1])) >= threshold:
            strong += 1
            strong_right += right
        else:
            weak += 1
            weak_right += right
    n = strong + weak
    return {
        "threshold": threshold,
        "share_strong": round(strong / n, 4) if n else 0.0,
        "precision_strong": round(strong_right / strong, 4) if strong else 0.0,
        "precision_weak": round(weak_right / weak, 4) if weak else 0.0,
    }
