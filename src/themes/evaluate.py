"""Compare discovered themes with a trust's existing coding (NMI, ARI, outliers).

The project's method and BERTopic with its defaults are fitted on the same embeddings, so
the comparison isolates the theme-discovery step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from themes.errors import IngestError
from themes.ingest import cell_text, read_export


@dataclass
class MethodScore:
    """Agreement of one method's themes with the human labels."""

    method: str
    nmi: float
    ari: float
    outlier_share: float
    n_themes: int
    seconds: float


def load_labelled(
    path: Path,
    *,
    text_column: str,
    label_column: str | None = None,
    one_hot_start: str | None = None,
) -> tuple[list[str], list[str], dict[str, int]]:
    """Texts and single labels from a file; returns (texts, labels, counts of skipped rows).

    Either `label_column` (one label per row) or `one_hot_start` (label columns from that
    column to the last; rows with exactly one label are kept) must be given.
    """
    frame = read_export(Path(path))
    cols = [str(c) for c in frame.columns]
    if text_column not in cols:
        raise IngestError(f"{path}: text column '{text_column}' not found (columns: {cols[:20]}).")
    texts = frame[text_column].map(cell_text)
    skipped = {"no_text": 0, "no_label": 0, "several_labels": 0}
    if label_column is not None:
        if label_column not in cols:
            raise IngestError(f"{path}: label column '{label_column}' not found.")
        labels = frame[label_column].map(cell_text)
        keep = (texts != "") & (labels != "")
        skipped["no_text"] = int((texts == "").sum())
        skipped["no_label"] = int(((texts != "") & (labels == "")).sum())
    elif one_hot_start is not None:
        if one_hot_start not in cols:
            raise IngestError(f"{path}: one-hot start column '{one_hot_start}' not found.")
        label_cols = cols[cols.index(one_hot_start) :]
        onehot = frame[label_cols].map(lambda v: cell_text(v) in ("1", "1.0", "True", "true"))
        n_labels = onehot.sum(axis=1)
        labels = onehot.idxmax(axis=1)
        keep = (texts != "") & (n_labels == 1)
        skipped["no_text"] = int((texts == "").sum())
        skipped["no_label"] = int(((texts != "") & (n_labels == 0)).sum())
        skipped["several_labels"] = int(((texts != "") & (n_labels > 1)).sum())
    else:
        raise IngestError("Give a label column or the first one-hot label column.")
    return texts[keep].tolist(), pd.Series(labels)[keep].astype(str).tolist(), skipped


def score(method: str, labels: Sequence[str], topics: np.ndarray, seconds: float) -> MethodScore:
    """NMI and ARI of topics against labels; outliers (-1) count as one cluster."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    topics = np.asarray(topics)
    return MethodScore(
        method=method,
        nmi=round(float(normalized_mutual_info_score(labels, topics)), 4),
        ari=round(float(adjusted_rand_score(labels, topics)), 4),
        outlier_share=round(float((topics < 0).mean()), 4),
        n_themes=int(len(np.unique(topics[topics >= 0]))),
        seconds=round(seconds, 1),
    )


def bertopic_defaults(docs: Sequence[str], embeddings: np.ndarray, *, seed: int) -> np.ndarray:
    """BERTopic with its default UMAP/HDBSCAN/vectoriser on precomputed embeddings.

    Only UMAP's random_state is set (to the same seed as ours) so runs are repeatable.
    """
    from bertopic import BERTopic
    from umap import UMAP

    umap_default = UMAP(
        n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed
    )
    topics, _ = BERTopic(umap_model=umap_default).fit_transform(list(docs), embeddings)
    return np.asarray(topics)


def compare(
    docs: Sequence[str],
    labels: Sequence[str],
    embeddings: np.ndarray,
    model: Any,
    *,
    seed: int = 42,
) -> list[MethodScore]:
    """Fit the project's model and BERTopic defaults on the same embeddings; score both."""
    t0 = time.perf_counter()
    model.fit(docs, embeddings)
    ours = score("themes (project)", labels, model.labels_, time.perf_counter() - t0)
    t0 = time.perf_counter()
    base_topics = bertopic_defaults(docs, embeddings, seed=seed)
    base = score("BERTopic defaults", labels, base_topics, time.perf_counter() - t0)
    return [ours, base]


def as_rows(scores: Sequence[MethodScore]) -> list[dict[str, Any]]:
    return [asdict(s) for s in scores]
