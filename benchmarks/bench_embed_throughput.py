"""How fast can this machine embed the demo narratives, and what is the floor?

The full-run target (20,000 records, clean + embed + fit in 10 minutes) is bounded by
arithmetic: all-MiniLM-L6-v2 spends about 2 x (its transformer-layer parameters) floating
point operations per word-piece, and every word-piece of every narrative must pass through
it (long narratives are chunked, never cut). This script measures, in one run:

1. the machine's dense matrix-multiply rate (torch, the shapes of the model's layers),
   probed before, during and after the timed runs, the fastest probe setting the floor;
2. the word-pieces in the demo's de-identified narratives (the product's own chunking);
3. the embedding rate on a sample of them in float32 (the product's batches of at most
   `embed.batch_tokens` word-pieces in `embed.n_process` one-thread workers, the batches
   of `embed.batch_size` pieces of any length it used before, and one process on every
   core, in alternate rounds), in bfloat16 (the product's batch arithmetic where the CPU
   has it natively, `embed.precision`; the same three, alternating where bfloat16 is
   native) and in dynamic int8,
   and through ONNX Runtime (the product's own ONNX export, in float32 and quantised to
   dynamic int8), with each one's cosine to the float32 vectors;
4. the implied time for the whole corpus, and the floor: word-pieces x FLOPs per
   word-piece / the measured matmul rate (no model can run faster than its matmuls),
   for float32 and for bfloat16 matrix multiplies.

    python benchmarks/bench_embed_throughput.py [--records 20000] [--sample 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from _common import md_table, write_result  # noqa: E402
from themes.demo import generate_demo  # noqa: E402
from themes.embed import (  # noqa: E402
    SentenceTransformerEmbedder,
    _export_onnx,
    l2_normalise,
    native_bf16,
)
from themes.settings import load_settings  # noqa: E402


def matmul_gflops(seconds: float = 3.0, dtype: str = "float32") -> float:
    """GEMM rate with the model's feed-forward shape (tokens x 384 @ 384 x 1536)."""
    import torch

    kind = getattr(torch, dtype)
    a, w = torch.randn(2048, 384).to(kind), torch.randn(1536, 384).to(kind)
    for _ in range(3):
        a @ w.T
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ w.T
        n += 1
    return n * 2 * 2048 * 384 * 1536 / (time.perf_counter() - t0) / 1e9


def layer_flops_per_token(model) -> float:  # noqa: ANN001
    """2 x the parameters of the transformer layers (embedding look-ups cost no FLOPs)."""
    enc = model[0].auto_model.encoder
    return 2.0 * sum(p.numel() for p in enc.parameters() if p.dim() == 2)


class OnnxBatchModel:
    """Stands in for the sentence-transformers model that `SentenceTransformerEmbedder.encode`
    batches through, running an ONNX Runtime session of `path` instead; the product's own
    `encode` still chunks, orders and pools, so only the transformer's arithmetic differs."""

    def __init__(self, tokenizer, path: Path) -> None:  # noqa: ANN001 - a HF tokenizer
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = tokenizer

    def encode(self, pieces: list[str], *, batch_size: int, **_: object) -> np.ndarray:
        """Mean-pooled, L2-normalised vectors of texts that each fit the model's window."""
        out = []
        for start in range(0, len(pieces), batch_size):
            batch = self.tokenizer(
                pieces[start : start + batch_size], padding=True, return_tensors="np"
            )
            mask = batch["attention_mask"].astype(np.int64)
            feed = {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": mask}
            hidden = self.session.run(None, feed)[0]
            m = mask[..., None].astype(np.float32)
            out.append(l2_normalise((hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)))
        return np.concatenate(out)


def demo_texts(n: int) -> list[str]:
    """The demo's narratives, cleaned and de-identified by the product's own steps."""
    from themes import steps
    from themes.clean import TextCleaner
    from themes.deidentify import Deidentifier

    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        s = settings.model_copy(
            update={
                "paths": settings.paths.model_copy(update={"data_dir": root / "var"}),
                "store": settings.store.model_copy(update={"url": ""}),
            }
        )
        manifest = generate_demo(root / "exports", seed=0, n_records=n)
        store = steps.open_store(s)
        for kind, path in manifest.files.items():
            mapping = steps.resolve_source(s.ingest, kind=kind, source=None)
            steps.ingest_file(store, path, mapping, run_id="throughput")
        steps.clean_pending(store, TextCleaner(s.clean), Deidentifier(s.deidentify))
        _, texts, _ = steps.load_clean(store)
        return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--sample", type=int, default=300)
    args = ap.parse_args()
    import torch

    settings = load_settings()
    t0 = time.perf_counter()
    texts = demo_texts(args.records)
    prep_s = time.perf_counter() - t0

    def at(precision: str, **update: object) -> SentenceTransformerEmbedder:
        return SentenceTransformerEmbedder(
            settings.embed.model_copy(update={"precision": precision, **update})
        )

    fp32_embedder = at("float32")
    model = fp32_embedder.model
    tok = model.tokenizer
    pieces_all = [p for t in texts for p in fp32_embedder.chunk(t)]
    wordpieces = sum(len(ids) for ids in tok(pieces_all)["input_ids"])
    flops_tok = layer_flops_per_token(model)
    # the rate moves with the host's load (79 to 154 GFLOP/s within minutes on a shared
    # host), so it is probed before, during and after the timed runs and the floor uses
    # the fastest probe
    probes: dict[str, list[float]] = {"float32": [], "bfloat16": []}

    def probe() -> None:
        for d, rates in probes.items():
            rates.append(matmul_gflops(seconds=1.5, dtype=d))

    probe()
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(args.sample, len(texts)),
                                           replace=False)]  # fmt: skip
    sample_wp = sum(len(ids) for t in sample for ids in tok(fp32_embedder.chunk(t))["input_ids"])

    def timed(embedder: SentenceTransformerEmbedder) -> tuple[np.ndarray, float]:
        embedder.encode(sample[:16])  # warm
        t0 = time.perf_counter()
        vecs = embedder.encode(sample)
        return vecs, time.perf_counter() - t0

    # the product's batching (at most embed.batch_tokens word-pieces a batch) against
    # the count-only batches it replaced (embed.batch_size pieces of any length), in
    # alternate rounds, each row's fastest, since this rate moves with the host's load
    count_only = settings.embed.batch_size * (model.max_seq_length + 2)
    by_count = at("float32", batch_tokens=count_only)
    by_count._model = model
    # and the product's worker processes (embed.n_process, one thread each) against one
    # process on every core (embed.n_process = 1)
    fp32_one = at("float32", n_process=1)
    fp32_one._model = model
    rounds = [(timed(fp32_embedder), timed(by_count), timed(fp32_one)) for _ in range(3)]
    probe()
    fp32, fp32_s = min((r[0] for r in rounds), key=lambda r: r[1])
    count_run = min((r[1] for r in rounds), key=lambda r: r[1])
    one_run = min((r[2] for r in rounds), key=lambda r: r[1])
    # the same comparison in bfloat16 where the CPU multiplies it natively (elsewhere
    # torch emulates it, too slowly to time more than once)
    bf16_embedder = at("bfloat16")
    bf16_count = at("bfloat16", batch_tokens=count_only)
    bf16_count._model = model
    bf16_one = at("bfloat16", n_process=1)
    bf16_one._model = model
    bf16_rounds = [
        (timed(bf16_embedder), timed(bf16_count), timed(bf16_one))
        for _ in range(3 if native_bf16() else 1)
    ]
    bf16, bf16_s = min((r[0] for r in bf16_rounds), key=lambda r: r[1])
    bf16_count_run = min((r[1] for r in bf16_rounds), key=lambda r: r[1])
    bf16_one_run = min((r[2] for r in bf16_rounds), key=lambda r: r[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    # int8 and ONNX Runtime are timed in one process on every core, as in earlier readings
    int8_embedder = at("float32", n_process=1)
    int8_embedder._model = quant
    int8, int8_s = timed(int8_embedder)
    runs = {"float32": (fp32, fp32_s),
            f"float32, {by_count.settings.batch_size} pieces a batch of any length (before "
            "embed.batch_tokens)": count_run,
            "float32, one process on every core (embed.n_process = 1)": one_run,
            "bfloat16": (bf16, bf16_s),
            f"bfloat16, {by_count.settings.batch_size} pieces a batch of any length":
                bf16_count_run,
            "bfloat16, one process on every core (embed.n_process = 1)": bf16_one_run,
            "dynamic int8": (int8, int8_s)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        exported, quantised = Path(tmp) / "model.onnx", Path(tmp) / "model-int8.onnx"
        _export_onnx(fp32_embedder, exported)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the exporter's graph lacks some inferred types: declare float the default
            quantize_dynamic(exported, quantised, per_channel=True, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": 1})  # fmt: skip
        for name, path in (("ONNX Runtime float32", exported), ("ONNX Runtime int8", quantised)):
            onnx_embedder = at("float32", n_process=1)
            onnx_embedder._model = model  # chunking, tokeniser and dimension: the product's
            onnx_embedder._batch_model = OnnxBatchModel(tok, path)
            runs[name] = timed(onnx_embedder)
    probe()
    gflops = {d: max(rates) for d, rates in probes.items()}
    product = SentenceTransformerEmbedder(settings.embed).precision
    res = {
        "records": len(texts),
        "pieces": len(pieces_all),
        "wordpieces": wordpieces,
        "wordpieces_per_record": wordpieces / len(texts),
        "flops_per_wordpiece": flops_tok,
        "matmul_gflops": gflops,
        "matmul_gflops_probes": probes,
        "torch_threads": torch.get_num_threads(),
        "native_bf16": native_bf16(),
        "product_precision": product,
        "sample_texts": len(sample),
        "sample_wordpieces": sample_wp,
        "runs": {
            name: {
                "seconds": secs,
                "texts_per_s": len(sample) / secs,
                "wordpieces_per_s": sample_wp / secs,
                "model_gflops": sample_wp / secs * flops_tok / 1e9,
                "projected_embed_s": wordpieces / (sample_wp / secs),
                "cosine_to_fp32": {
                    "mean": float((vecs * fp32).sum(axis=1).mean()),
                    "min": float((vecs * fp32).sum(axis=1).min()),
                },
            }
            for name, (vecs, secs) in runs.items()
        },
        "floor_embed_s": {d: wordpieces * flops_tok / (g * 1e9) for d, g in gflops.items()},
        "prepare_s": prep_s,
    }
    rows = [
        [name + (" (product)" if name == product else ""), f"{r['texts_per_s']:.1f}",
         f"{r['wordpieces_per_s']:.0f}", f"{r['projected_embed_s']:.0f}",
         f"{fp32_s / r['seconds']:.2f}x",
         f"{r['cosine_to_fp32']['mean']:.5f} (min {r['cosine_to_fp32']['min']:.5f})"]
        for name, r in res["runs"].items()
    ]  # fmt: skip
    floor = res["floor_embed_s"]
    md = "\n".join(
        [
            "# Embedding throughput and its floor (this machine)",
            "",
            f"{len(texts)} de-identified demo narratives: {len(pieces_all)} model windows, "
            f"{wordpieces:,} word-pieces ({res['wordpieces_per_record']:.0f} per record). "
            f"all-MiniLM-L6-v2 costs {flops_tok / 1e6:.1f} MFLOP per word-piece in its "
            f"transformer layers; this machine's matrix multiply runs at "
            f"**{gflops['float32']:.0f} GFLOP/s in float32 and {gflops['bfloat16']:.0f} in "
            f"bfloat16** on {res['torch_threads']} threads, the fastest of "
            f"{len(probes['float32'])} probes during the run (float32: "
            f"{', '.join(f'{g:.0f}' for g in probes['float32'])}; native bfloat16: "
            f"{res['native_bf16']}; `embed.precision` {settings.embed.precision} gives "
            f"{product}). Sample: {len(sample)} narratives, {sample_wp:,} word-pieces.",
            "",
            md_table(
                [
                    "arithmetic",
                    "texts/s",
                    "word-pieces/s",
                    f"projected s for {len(texts)}",
                    "speed vs float32",
                    "cosine to float32 (mean, min)",
                ],
                rows,
            ),  # fmt: skip
            "",
            "**Floor for embedding this corpus on this machine** (word-pieces x FLOPs per "
            f"word-piece / matmul rate): {floor['float32']:.0f} s in float32, "
            f"{floor['bfloat16']:.0f} s in bfloat16, before cleaning and the theme fit.",
            "",
            f"Command: `python benchmarks/bench_embed_throughput.py --records {args.records} "
            f"--sample {args.sample}`",
        ]
    )
    write_result("embed_throughput", res, md)
    print(md)


if __name__ == "__main__":
    main()
