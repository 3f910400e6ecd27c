from __future__ import annotations

import numpy as np
import pytest

from themes.embed import SentenceTransformerEmbedder, embed_cached, l2_normalise
from themes.settings import EmbedSettings


def test_l2_normalise_is_float32_unit_rows() -> None:
    x = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert x.dtype == np.float32
    assert np.allclose(x[0], [0.6, 0.8]) and np.allclose(x[1], 0)


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbedSettings())


@pytest.mark.slow
def test_bundled_model_embeds_offline(embedder: SentenceTransformerEmbedder) -> None:
    vecs = embedder.encode(["Patient fell in the bathroom.", "Insulin dose was omitted."])
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_long_text_is_chunked_not_truncated(embedder: SentenceTransformerEmbedder) -> None:
    head = "The patient was reviewed on the ward round and observations were stable. " * 30
    tail = "Later that night the insulin infusion was stopped in error and not restarted. " * 10
    chunks = embedder.chunk(head + tail)
    assert len(chunks) > 1
    assert "insulin" in chunks[-1]
    full, head_only = embedder.encode([head + tail, head])
    # the tail (beyond 256 tokens) changes the pooled vector
    assert float(full @ head_only) < 0.995


@pytest.mark.slow
def test_cache_embeds_only_new_texts(embedder: SentenceTransformerEmbedder, store) -> None:  # noqa: ANN001
    first, n_new = embed_cached(store, embedder, ["a fall", "a burn", "a fall"])
    assert n_new == 2 and first.shape == (3, 384)
    assert np.allclose(first[0], first[2])
    second, n_new = embed_cached(store, embedder, ["a fall", "a burn", "a scald"])
    assert n_new == 1
    assert np.allclose(first[:2], second[:2])


@pytest.mark.slow
def test_progress_reports_every_text(embedder: SentenceTransformerEmbedder) -> None:
    seen: list[int] = []
    embedder.encode(["x"] * 5 + ["long " * 600], progress=seen.append)
    assert sum(seen) == 6


@pytest.mark.slow
def test_onnx_query_encoder_gives_the_models_vectors(
    embedder: SentenceTransformerEmbedder, tmp_path
) -> None:  # noqa: ANN001
    from themes.embed import OnnxQueryEncoder

    texts = [
        "fall",
        "Patient found on the floor beside the bed at night; bed rails were down.",
        "Insulin dose omitted on the ward; blood glucose 24 mmol/L at handover. " * 3,
        "The patient was reviewed on the ward round and observations were stable. " * 40,
    ]
    encoder = OnnxQueryEncoder.build(embedder, tmp_path)
    exported = list(tmp_path.glob("*.onnx"))
    assert len(exported) == 1
    for text in texts:
        assert float(encoder.encode_one(text) @ embedder.encode([text])[0]) > 0.9999
    # the export is reused, and an unreadable cached copy is exported again
    stamp = exported[0].stat().st_mtime_ns
    OnnxQueryEncoder.build(embedder, tmp_path)
    assert exported[0].stat().st_mtime_ns == stamp
    exported[0].write_bytes(b"not a model")
    again = OnnxQueryEncoder.build(embedder, tmp_path)
    assert float(again.encode_one(texts[1]) @ embedder.encode([texts[1]])[0]) > 0.9999
