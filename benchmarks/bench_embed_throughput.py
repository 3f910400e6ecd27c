"""How fast can this machine embed the demo narratives, and what is the floor?

The full-run target (20,000 records, clean + embed + fit in 10 minutes) is bounded by
arithmetic: all-MiniLM-L6-v2 spends about 2 x (its transformer-layer parameters) floating
point operations per word-piece, and every word-piece of every narrative must pass through
it (long narratives are chunked, never cut). This script measures, in one run:

1. the machine's dense fp32 matrix-multiply rate (torch, the shapes of the model's layers);
2. the word-pieces in the demo's de-identified narratives (the product's own chunking);
3. the product's embedding rate on a sample of them, fp32 and dynamic int8;
4. the implied time for the whole corpus, and the floor: word-pieces x FLOPs per
   word-piece / the measured matmul rate (no model can run faster than its matmuls).

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
from themes.embed import SentenceTransformerEmbedder  # noqa: E402
from themes.settings import load_settings  # noqa: E402


def matmul_gflops(seconds: float = 3.0) -> float:
    """fp32 GEMM rate with the model's feed-forward shape (tokens x 384 @ 384 x 1536)."""
    import torch

    a, w = torch.randn(2048, 384), torch.randn(1536, 384)
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
    embedder = SentenceTransformerEmbedder(settings.embed)
    model = embedder.model
    tok = model.tokenizer
    pieces_all = [p for t in texts for p in embedder.chunk(t)]
    wordpieces = sum(len(ids) for ids in tok(pieces_all)["input_ids"])
    flops_tok = layer_flops_per_token(model)
    gflops = matmul_gflops()
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(args.sample, len(texts)),
                                           replace=False)]  # fmt: skip
    sample_pieces = sum(len(embedder.chunk(t)) for t in sample)
    sample_wp = sum(len(ids) for t in sample for ids in tok(embedder.chunk(t))["input_ids"])
    embedder.encode(sample[:16])  # warm
    t0 = time.perf_counter()
    fp32 = embedder.encode(sample)
    fp32_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    embedder._model = quant
    t0 = time.perf_counter()
    int8 = embedder.encode(sample)
    int8_s = time.perf_counter() - t0
    cos = (fp32 * int8).sum(axis=1)
    fp32_rate = sample_wp / fp32_s
    floor_s = wordpieces * flops_tok / (gflops * 1e9)
    res = {
        "records": len(texts),
        "pieces": len(pieces_all),
        "wordpieces": wordpieces,
        "wordpieces_per_record": wordpieces / len(texts),
        "flops_per_wordpiece": flops_tok,
        "matmul_gflops": gflops,
        "torch_threads": torch.get_num_threads(),
        "sample_texts": len(sample),
        "sample_pieces": sample_pieces,
        "fp32_texts_per_s": len(sample) / fp32_s,
        "fp32_wordpieces_per_s": fp32_rate,
        "fp32_model_gflops": fp32_rate * flops_tok / 1e9,
        "int8_texts_per_s": len(sample) / int8_s,
        "int8_cosine_to_fp32": {"mean": float(cos.mean()), "min": float(cos.min())},
        "projected_embed_s": wordpieces / fp32_rate,
        "floor_embed_s": floor_s,
        "prepare_s": prep_s,
    }
    rows = [
        ["fp32 (product)", f"{res['fp32_texts_per_s']:.1f}", f"{fp32_rate:.0f}",
         f"{res['projected_embed_s']:.0f}", "1.000"],
        ["dynamic int8", f"{res['int8_texts_per_s']:.1f}",
         f"{sample_wp / int8_s:.0f}", f"{wordpieces / (sample_wp / int8_s):.0f}",
         f"{cos.mean():.3f} (min {cos.min():.3f})"],
    ]  # fmt: skip
    md = "\n".join(
        [
            "# Embedding throughput and its floor (this machine)",
            "",
            f"{len(texts)} de-identified demo narratives: {len(pieces_all)} model windows, "
            f"{wordpieces:,} word-pieces ({res['wordpieces_per_record']:.0f} per record). "
            f"all-MiniLM-L6-v2 costs {flops_tok / 1e6:.1f} MFLOP per word-piece in its "
            f"transformer layers; this machine's fp32 matrix multiply runs at "
            f"**{gflops:.0f} GFLOP/s** on {res['torch_threads']} threads.",
            "",
            md_table(
                [
                    "model",
                    "texts/s",
                    "word-pieces/s",
                    f"projected s for {len(texts)}",
                    "cosine to fp32",
                ],
                rows,
            ),  # fmt: skip
            "",
            f"The product's fp32 embedding runs at {res['fp32_model_gflops']:.0f} GFLOP/s, "
            f"{res['fp32_model_gflops'] / gflops:.0%} of the matmul rate. "
            f"**Floor for embedding this corpus on this machine: {floor_s:.0f} s** "
            "(word-pieces x FLOPs per word-piece / matmul rate), before cleaning and the "
            "theme fit.",
            "",
            f"Command: `python benchmarks/bench_embed_throughput.py --records {args.records} "
            f"--sample {args.sample}`",
        ]
    )
    write_result("embed_throughput", res, md)
    print(md)


if __name__ == "__main__":
    main()
