"""Cache of cleaned, de-identified texts and their embeddings for benchmarks (var/bench_cache)."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from _common import ROOT, cleaning_code_hash

CACHE_DIR = ROOT / "var" / "bench_cache"


def clean_and_embed(settings, name: str, texts: list[str]) -> tuple[list[str], np.ndarray]:  # noqa: ANN001
    """De-identify and embed `texts` with the product's own pipeline, cached by content."""
    from themes import steps
    from themes.embed import SentenceTransformerEmbedder

    key = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:12]
    key += "-" + settings.section_hash("clean", "deidentify", "embed") + "-" + cleaning_code_hash()
    path = CACHE_DIR / f"{name}-{key}"
    if (path / "vectors.npy").is_file():
        clean = json.loads((path / "texts.json").read_text())
        return clean, np.load(path / "vectors.npy")
    clean = steps.clean_texts_for_evaluation(settings, texts)
    vectors = SentenceTransformerEmbedder(settings.embed).encode(clean)
    path.mkdir(parents=True, exist_ok=True)
    (path / "texts.json").write_text(json.dumps(clean))
    np.save(path / "vectors.npy", vectors)
    return clean, vectors
