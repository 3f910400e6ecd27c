"""Hybrid lexical + dense linking of de-identified text to recommendations.

Scores for each (query, recommendation) pair, all over de-identified text:

- lexical: BM25 (`bm25s`) over content words (placeholders such as [PERSON] and stop words
  dropped, a light suffix stemmer);
- dense: cosine similarity of sentence embeddings of passages (a few sentences each);
  a pair's score is the best passage-to-passage similarity (max-sim), so long texts are
  not diluted by pooling;
- each score is standardised per query over the whole corpus (z-score), and the fused
  item score is `w_lexical * z_lexical + w_dense * z_dense`;
- document context: an item's final score adds `w_document` times the best fused score of
  the items of its source document (a PFD report's other concerns, a review's other
  actions), so an item is helped by siblings that match the query too.

The weights are tuned on data (`tune`, used by `benchmarks/bench_links.py`), and the
"strong link" cut-off is a calibrated probability (`calibrate`: Platt scaling of the
final score against known right answers), not a fixed constant.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Protocol

import numpy as np

from themes.errors import NotFittedError, ThemesError
from themes.recommendations import Recommendation

log = logging.getLogger(__name__)


class Encoder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors of shape (n, dim)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


_STOP_TEXT = """
a about above after again against all also am an and any are as at be because been
before being below between both but by can could did do does doing down during each few
for from further had has have having he her here hers herself him himself his how i if
in into is it its itself just me more most my myself no nor not now of off on once only
or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your
yours yourself yourselves mr mrs ms miss dr may must upon within without
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
    """Fusion weights and the Platt calibration of the final score."""

    lexical: float = 1.0
    dense: float = 1.0
    document: float = 0.5
    calibration_slope: float = 1.0
    calibration_intercept: float = -6.0

    def probability(self, score: np.ndarray | float, *, n_items: int) -> np.ndarray:
        """Calibrated probability that a link with this final score is right, in a corpus
        of `n_items` recommendations (see `surprise`)."""
        x = self.calibration_slope * surprise(score, n_items=n_items)
        return 1.0 / (1.0 + np.exp(-np.clip(x + self.calibration_intercept, -60, 60)))


def surprise(score: np.ndarray | float, *, n_items: int) -> np.ndarray:
    """How unlikely a standardised score this high is by chance in a corpus of `n_items`:
    -ln(n_items * P(Z >= score)) under a standard normal. Calibrating on this rather than
    on the raw score lets one calibration serve corpora of different sizes (the highest
    z-score among many items is higher by chance than among few)."""
    from scipy.special import log_ndtr

    z = np.asarray(score, dtype=np.float64)
    return -(np.log(max(n_items, 1)) + log_ndtr(-z))


@dataclass
class Components:
    """Per-query standardised component scores over the fitted corpus (n_queries, n_items)."""

    lexical: np.ndarray
    dense: np.ndarray


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
        """Index the recommendations (BM25 over content words; passage embeddings)."""
        import bm25s

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
        self.rec_passages_, self.rec_owner_ = self._split(corpus)
        self.rec_vectors_ = np.asarray(self.encoder.encode(self.rec_passages_), dtype=np.float32)
        groups: dict[str, int] = {}
        self.group_ = np.array([groups.setdefault(r.group, len(groups)) for r in recs])
        self.n_groups_ = len(groups)
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

    def dense_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Standardised passage max-sim cosines of each text against every item."""
        self._check()
        q_passages, q_owner = self._split(texts)
        q_vectors = np.asarray(self.encoder.encode(q_passages), dtype=np.float32)
        n, m = len(texts), len(self.ids_)
        return zscore(max_sim(q_vectors, q_owner, n, self.rec_vectors_, self.rec_owner_, m))

    def components(self, texts: Sequence[str]) -> Components:
        """Standardised lexical and dense scores of each text against every item."""
        return Components(lexical=self.lexical_scores(texts), dense=self.dense_scores(texts))

    def fuse(self, comp: Components, weights: Weights | None = None) -> np.ndarray:
        """Final scores (n_queries, n_items) from component scores and fusion weights."""
        w = weights or self.weights
        item = w.lexical * comp.lexical + w.dense * comp.dense
        if w.document and self.n_groups_ < len(self.ids_):
            best = np.full((item.shape[0], self.n_groups_), -np.inf)
            np.maximum.at(best.T, self.group_, item.T)
            item = item + w.document * best[:, self.group_]
        return item

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
    grid = grid or DEFAULT_GRID
    trials: list[dict[str, float]] = []
    best: tuple[float, Weights] | None = None
    for lexical, dense, document in product(grid["lexical"], grid["dense"], grid["document"]):
        if lexical == 0 and dense == 0:
            continue
        w = Weights(
            lexical=lexical,
            dense=dense,
            document=document,
            calibration_slope=linker.weights.calibration_slope,
            calibration_intercept=linker.weights.calibration_intercept,
        )
        mrr = retrieval_metrics(linker.fuse(comp, w), relevant)["mrr"]
        trials.append({"lexical": lexical, "dense": dense, "document": document, "mrr": mrr})
        if best is None or mrr > best[0]:
            best = (mrr, w)
    assert best is not None  # the grid always has a point with a non-zero weight
    return best[1], trials


def calibrate(
    scores: np.ndarray, relevant: Sequence[set[int]], *, top_k: int = 10
) -> tuple[float, float]:
    """Platt scaling: (slope, intercept) so that sigmoid(slope * surprise(score) +
    intercept) estimates the chance that a candidate in a query's top k is a right answer."""
    xs: list[float] = []
    ys: list[int] = []
    for i, rel in enumerate(relevant):
        if not rel:
            continue
        for j in np.argsort(-scores[i])[:top_k]:
            xs.append(float(scores[i, j]))
            ys.append(int(j in rel))
    if len(set(ys)) < 2:
        raise ThemesError("Calibration needs both right and wrong candidates.")
    from sklearn.linear_model import LogisticRegression

    x = surprise(np.asarray(xs), n_items=scores.shape[1])
    model = LogisticRegression(C=1.0).fit(x[:, None], np.asarray(ys))
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    return float(slope), float(intercept)


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
