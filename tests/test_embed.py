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


def test_batches_hold_every_piece_once_longest_first_within_both_limits() -> None:
    e = SentenceTransformerEmbedder(EmbedSettings(batch_size=4, batch_tokens=600))
    lengths = [10, 254, 30, 120, 254, 5, 5, 5, 5, 5, 60, 900]
    batches = e.batches(lengths)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    sizes = [lengths[k] + 2 for k in flat]  # [CLS] and [SEP]
    assert sizes == sorted(sizes, reverse=True)
    assert [len(b) for b in batches][:3] == [1, 2, 4]  # 902 alone, 2 x 256, 4 x 122 or less
    for b in batches:
        padded = len(b) * max(lengths[k] + 2 for k in b)
        assert len(b) <= 4 and (padded <= 600 or len(b) == 1)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_batching_does_not_change_the_vectors(
    embedder: SentenceTransformerEmbedder, precision: str
) -> None:
    texts = [
        "Patient fell in the bathroom at night.",
        "Insulin dose omitted; blood glucose 22 mmol/L on the next check. " * 12,
        "Daughter was not told about the move to another ward.",
        "Grade 3 pressure ulcer on the sacrum found on admission. " * 40,
        "Missed.",
    ]
    reference = SentenceTransformerEmbedder(EmbedSettings(precision=precision))
    small = SentenceTransformerEmbedder(
        EmbedSettings(batch_size=2, batch_tokens=300, precision=precision)
    )
    reference._model = small._model = embedder.model
    assert len(small.batches([n for t in texts for _, n in small._chunks(t)])) > 3
    _assert_same_vectors(small.encode(texts), reference.encode(texts), precision)


def _assert_same_vectors(a: np.ndarray, b: np.ndarray, precision: str) -> None:
    """Equal in float32. In bfloat16 each batch's sums are rounded in their own order, so
    a vector moves with its batch, but no further than bfloat16 moves it from float32's
    (cosine 0.9999)."""
    if precision == "float32":
        assert np.allclose(a, b, atol=1e-5)
    else:
        assert float((a * b).sum(axis=1).min()) > 0.9995


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_worker_processes_give_the_vectors_of_one_process(
    embedder: SentenceTransformerEmbedder, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import themes.embed as embed_module

    texts = [
        f"{i} patients waited {n} hours for a bed; escalation to the site manager."
        + " Observations were late." * n
        for i, n in enumerate([1, 3, 9, 27, 2, 5, 14, 40, 1, 7, 20, 4] * 2)
    ]
    asked: list[int] = []
    real = embed_module.fork_imap

    def spy(fn, items, *, n_process):  # noqa: ANN001, ANN202
        asked.append(n_process)
        return real(fn, items, n_process=n_process)

    monkeypatch.setattr(embed_module, "fork_imap", spy)
    small = {"batch_size": 2, "batch_tokens": 400, "precision": precision}
    forked = SentenceTransformerEmbedder(EmbedSettings(**small, n_process=2))
    alone = SentenceTransformerEmbedder(EmbedSettings(**small, n_process=1))
    forked._model = alone._model = embedder.model
    seen: list[int] = []
    a = forked.encode(texts, progress=seen.append)
    b = alone.encode(texts)
    assert asked == [2, 1] and sum(seen) == len(texts)
    _assert_same_vectors(a, b, precision)


def test_workers_only_for_enough_batches_on_the_cpu() -> None:
    from themes.embed import MIN_BATCHES_PER_WORKER

    two = SentenceTransformerEmbedder(EmbedSettings(n_process=2))
    assert two.workers(1) == 1
    assert two.workers(2 * MIN_BATCHES_PER_WORKER - 1) == 1
    assert two.workers(2 * MIN_BATCHES_PER_WORKER) == 2
    assert two.workers(1000) == 2
    assert SentenceTransformerEmbedder(EmbedSettings(n_process=1)).workers(1000) == 1
    assert SentenceTransformerEmbedder(EmbedSettings(n_process=2, device="cuda")).workers(1000) == 1


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


@pytest.mark.slow
def test_cached_query_encoder_loads_without_torch(
    embedder: SentenceTransformerEmbedder, tmp_path
) -> None:  # noqa: ANN001
    """A searcher with the export already made and checked never imports torch, and its
    vectors are torch's; a record that disagrees is checked against torch again."""
    import json
    import os
    import subprocess
    import sys

    from themes.embed import OnnxQueryEncoder

    OnnxQueryEncoder.build(embedder, tmp_path)
    (record,) = tmp_path.glob("*.check.json")
    text = "Wrong patient's bloods labelled at the bedside; sample rejected by the lab."
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from themes.embed import OnnxQueryEncoder, SentenceTransformerEmbedder\n"
        "from themes.settings import EmbedSettings\n"
        "embedder = SentenceTransformerEmbedder(EmbedSettings())\n"
        f"enc = OnnxQueryEncoder.build(embedder, Path({str(tmp_path)!r}))\n"
        f"vec = enc.encode_one({text!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'vec': vec.tolist()}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False
    assert float(np.asarray(got["vec"]) @ embedder.encode([text])[0]) > 0.9999

    saved = json.loads(record.read_text())
    saved["probe"] = list(-np.asarray(saved["probe"]))
    record.write_text(json.dumps(saved))
    again = OnnxQueryEncoder.build(embedder, tmp_path)  # checked against torch, re-recorded
    assert float(again.encode_one(text) @ embedder.encode([text])[0]) > 0.9999
    assert json.loads(record.read_text())["probe"][0] == pytest.approx(-saved["probe"][0])


@pytest.mark.slow
def test_query_tokeniser_matches_the_models(embedder: SentenceTransformerEmbedder) -> None:
    from themes.embed import _fast_tokenizer

    tokenize = _fast_tokenizer(embedder)
    assert tokenize is not None
    texts = [
        "fall",
        "",
        "Pt's NOK informed @ 02:15 — [PERSON] (son) said “he’s confused”; café naïve Ã© tea.",
        "IV abx delayed >4h; sepsis 6 not started. NEWS2 = 7!!  Ward 7B / ED -> ITU",
        "Medication: Enoxaparin 40mg s/c OD; 🙂 CAPS LOCK TEXT; tab\tand\nnewline",
        "word " * 300,
    ]
    for text in texts:
        ids, mask = tokenize(text)
        ref = embedder.model.tokenizer(text, truncation=False, return_tensors="np")
        assert ids.tolist() == ref["input_ids"].tolist(), text
        assert mask.tolist() == ref["attention_mask"].tolist(), text


@pytest.mark.slow
def test_a_tokenizer_json_that_disagrees_keeps_queries_on_the_models_tokeniser(
    embedder: SentenceTransformerEmbedder, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    import themes.embed as embed_module
    from themes.embed import OnnxQueryEncoder

    real = embed_module._fast_tokenizer(embedder)
    assert real is not None

    def shifted(text: str) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = real(text)
        return ids + 1, mask

    monkeypatch.setattr(embed_module, "_fast_tokenizer", lambda _e: shifted)
    encoder = OnnxQueryEncoder.build(embedder, tmp_path)
    assert not list(tmp_path.glob("*.check.json"))  # no torch-free start-up recorded
    text = "Syringe driver alarm ignored overnight; the infusion stopped for four hours."
    assert float(encoder.encode_one(text) @ embedder.encode([text])[0]) > 0.9999


@pytest.mark.slow
def test_bfloat16_batches_give_the_float32_vectors_and_queries_stay_float32() -> None:
    texts = [
        "Patient found on the floor beside the bed at 03:00; no injury, falls bundle reviewed.",
        "Insulin dose omitted on the evening round; blood glucose 19.2 mmol/L, doctor informed.",
        "Family not told of the transfer to another ward; complaint about communication. " * 12,
    ]
    fp32 = SentenceTransformerEmbedder(EmbedSettings(precision="float32"))
    bf16 = SentenceTransformerEmbedder(EmbedSettings(precision="bfloat16"))
    assert fp32.precision == "float32" and bf16.precision == "bfloat16"
    a, b = fp32.encode(texts), bf16.encode(texts)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    cosines = (a * b).sum(axis=1)
    assert (cosines > 0.999).all(), cosines
    assert not np.array_equal(a, b)  # the batch really ran in bfloat16
    # single queries (and the ONNX copy checked against them) keep the float32 model
    assert np.allclose(bf16.encode_one(texts[0]), fp32.encode_one(texts[0]), atol=1e-6)
    assert next(bf16.model.parameters()).dtype.is_floating_point
    assert str(next(bf16.model.parameters()).dtype) == "torch.float32"


def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from themes import embed

    monkeypatch.setattr(embed, "native_bf16", lambda: True)
    assert SentenceTransformerEmbedder(EmbedSettings()).precision == "bfloat16"
    assert SentenceTransformerEmbedder(EmbedSettings(device="cuda")).precision == "float32"
    monkeypatch.setattr(embed, "native_bf16", lambda: False)
    assert SentenceTransformerEmbedder(EmbedSettings()).precision == "float32"
    assert SentenceTransformerEmbedder(EmbedSettings(precision="bfloat16")).precision == (
        "bfloat16"
    )
