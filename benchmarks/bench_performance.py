"""Performance of the nightly path on demo data (this machine, 2 cores).

Full run on N demo records (ingest + clean/de-identify + embed + fit), then a nightly
increment of 500 new records (assign only, embedding only the new ones). Peak memory of
the process tree is sampled throughout.

    python benchmarks/bench_performance.py [--records 20000] [--increment 500]
    python benchmarks/bench_performance.py --clean-only [--records 20000]

`--clean-only` measures the cleaning target alone (ingest, then cleaning and
de-identification of every record) and, in the same run, the cleaning path as it was
before one de-identification stream served the whole run (a worker pool per batch of
512 records, normalisation in the main process); it writes `performance_clean`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import PeakMemory, cpu, md_table, write_result  # noqa: E402
from themes import steps  # noqa: E402
from themes.clean import TextCleaner  # noqa: E402
from themes.deidentify import Deidentifier  # noqa: E402
from themes.demo import generate_demo  # noqa: E402
from themes.embed import SentenceTransformerEmbedder  # noqa: E402
from themes.settings import load_settings  # noqa: E402


def one_pass(settings, run_id: str, *, refit: bool) -> dict:  # noqa: ANN001
    """Ingest, clean, embed and update themes as the nightly flow does; each stage's
    seconds and the peak PSS of the process tree while it ran."""
    t: dict = {"stage_peak_pss_gb": {}}
    store = steps.open_store(settings)
    state: dict = {}

    def ingest() -> None:
        exports, _ = steps.find_exports(settings.paths.drop_folder, settings.ingest)
        state["reports"], t["errors"] = steps.ingest_exports(store, exports, run_id=run_id)

    def clean() -> None:
        cleaner, deid = TextCleaner(settings.clean), Deidentifier(settings.deidentify)
        t["cleaned"] = steps.clean_pending(store, cleaner, deid)["cleaned"]

    def embed() -> None:
        embedder = SentenceTransformerEmbedder(settings.embed)
        state["ids"], state["texts"], state["vectors"], t["embedded"] = steps.embed_all(
            store, embedder
        )
        t["embed_precision"] = embedder.precision

    def themes() -> None:
        update = steps.update_themes(store, settings, state["ids"], state["texts"],
                                     state["vectors"], refit=refit, run_id=run_id)  # fmt: skip
        t["n_themes"], t["assigned"], t["refit"] = update.n_themes, update.assigned, update.refit

    for name, stage in (("ingest", ingest), ("clean", clean), ("embed", embed), ("themes", themes)):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            stage()
            t[f"{name}_s"] = time.perf_counter() - t0
        t["stage_peak_pss_gb"][name] = mem.peak_pss_gb
    t["records"] = len(state["ids"])
    t["new_records"] = sum(r.inserted for r in state["reports"])
    return t


def clean_per_batch(store, cleaner: TextCleaner, deid: Deidentifier) -> int:  # noqa: ANN001
    """The cleaning step as it was before 89ade83 (the baseline): per batch of 512, texts
    normalised here, then `deidentify` with its own worker pool, then written."""
    from themes.records import text_hash
    from themes.store import clean_texts, utcnow

    todo = steps.pending_clean(store)
    for start in range(0, len(todo), steps.CLEAN_BATCH):
        batch = todo[start : start + steps.CLEAN_BATCH]
        results = deid.deidentify([cleaner.normalise(n) for _, n, _ in batch])
        rows = []
        for (rid, _, raw_hash), res in zip(batch, results, strict=True):
            text = cleaner.expand(res.text)
            counts: dict[str, int] = {}
            for *_, etype in res.entities:
                counts[etype] = counts.get(etype, 0) + 1
            rows.append({"record_id": rid, "raw_hash": raw_hash, "clean_text": text,
                         "clean_hash": text_hash(text), "cleaned_at": utcnow(),
                         "entity_counts": json.dumps(counts, sort_keys=True)})  # fmt: skip
        with store.begin() as conn:
            store.upsert(conn, clean_texts, rows, keys=["record_id"])
    return len(todo)


def clean_only(settings, records: int) -> None:  # noqa: ANN001
    """Ingest, then time the product's cleaning step and the per-batch baseline."""
    import sqlalchemy as sa

    from themes.store import clean_texts

    store = steps.open_store(settings)
    exports, _ = steps.find_exports(settings.paths.drop_folder, settings.ingest)
    steps.ingest_exports(store, exports, run_id="perf-clean")
    # libraries imported before either path is timed, so neither pays for the imports;
    # each path still starts its own de-identification engine
    Deidentifier(settings.deidentify).deidentify(["Warm-up: Mrs Smith was seen."])
    runs = {}
    for name in ("baseline", "product"):
        with store.begin() as conn:
            conn.execute(sa.delete(clean_texts))
        cleaner, deid = TextCleaner(settings.clean), Deidentifier(settings.deidentify)
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            if name == "product":
                n = steps.clean_pending(store, cleaner, deid)["cleaned"]
            else:
                n = clean_per_batch(store, cleaner, deid)
            secs = time.perf_counter() - t0
        with store.connect() as conn:
            texts = sorted(conn.execute(sa.select(clean_texts.c.record_id,
                                                  clean_texts.c.clean_text)).all())  # fmt: skip
        runs[name] = {"records": n, "clean_s": round(secs, 1), "records_per_s": round(n / secs, 1),
                      "peak_pss_gb": mem.peak_pss_gb, "digest": hash(tuple(texts))}  # fmt: skip
    same = runs["baseline"]["digest"] == runs["product"]["digest"]
    rows = [
        ["product: one de-identification stream for the run (89ade83)", runs["product"]],
        ["baseline: a worker pool per 512-record batch (before)", runs["baseline"]],
    ]
    md = "\n".join([
        "# Cleaning and de-identification rate (demo data, this machine)",
        "",
        f"{runs['product']['records']} demo records ingested once, then cleaned and "
        "de-identified by each path in turn (libraries imported beforehand; each path's "
        "engine start included; clean texts written to the store as the flow writes them).",
        "",
        md_table(["path", "clean s", "records/s", "peak GB (PSS)"],
                 [[k, r["clean_s"], f"**{r['records_per_s']}**", r["peak_pss_gb"]]
                  for k, r in rows]),
        "",
        f"Target ≥ 100 records/s. Both paths wrote identical clean texts: {same}.",
        "",
        f"Command: `python benchmarks/bench_performance.py --clean-only --records {records}`",
    ])  # fmt: skip
    for r in runs.values():
        r.pop("digest")
    write_result("performance_clean", {"runs": runs, "identical_texts": same}, md)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--increment", type=int, default=500)
    ap.add_argument("--clean-only", action="store_true", help="the cleaning rate alone")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="themes-perf-"))
    os.environ["THEMES_PATHS__DATA_DIR"] = str(root / "var")
    os.environ["THEMES_PATHS__DROP_FOLDER"] = str(root / "drop")
    os.environ["THEMES_PATHS__MODELS_DIR"] = str(root / "models")
    settings = load_settings()
    manifest = generate_demo(root / "exports", seed=0, n_records=args.records)
    for kind, path in manifest.files.items():
        (settings.paths.drop_folder / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, settings.paths.drop_folder / kind / path.name)
    if args.clean_only:
        clean_only(settings, args.records)
        shutil.rmtree(root, ignore_errors=True)
        return
    with PeakMemory() as mem_full:
        t0 = time.perf_counter()
        full = one_pass(settings, "perf-full", refit=True)
        full["total_s"] = time.perf_counter() - t0
    extra = generate_demo(
        root / "extra", seed=1, n_records=args.increment, id_start=900_000, messy=False
    )
    for kind, path in extra.files.items():
        shutil.copy2(path, settings.paths.drop_folder / kind / f"night2-{path.name}")
    with PeakMemory() as mem_inc:
        t0 = time.perf_counter()
        inc = one_pass(settings, "perf-increment", refit=False)
        inc["total_s"] = time.perf_counter() - t0
    clean_rate = full["cleaned"] / full["clean_s"]
    # PSS is sampled once a second by each sampler (the run's and its stages'), so the
    # highest sample of either is the peak
    pss_full = max(mem_full.peak_pss_gb, *full["stage_peak_pss_gb"].values())
    pss_inc = max(mem_inc.peak_pss_gb, *inc["stage_peak_pss_gb"].values())
    rows = [
        [
            f"full run, {full['records']} records",
            f"{full['ingest_s']:.0f}",
            f"{full['clean_s']:.0f}",
            f"{full['embed_s']:.0f}",
            f"{full['themes_s']:.0f}",
            f"**{full['total_s']:.0f}**",
            "≤ 600",
            pss_full,
            mem_full.peak_gb,
        ],
        [
            f"nightly +{inc['new_records']} records",
            f"{inc['ingest_s']:.1f}",
            f"{inc['clean_s']:.1f}",
            f"{inc['embed_s']:.1f}",
            f"{inc['themes_s']:.1f}",
            f"**{inc['total_s']:.1f}**",
            "≤ 60",
            pss_inc,
            mem_inc.peak_gb,
        ],
    ]
    host = cpu()
    md = "\n".join(
        [
            "# Performance (demo data, this machine)",
            "",
            md_table(
                [
                    "run",
                    "ingest s",
                    "clean s",
                    "embed s",
                    "themes s",
                    "total s",
                    "target s",
                    "peak GB (PSS)",
                    "peak GB (RSS sum)",
                ],
                rows,
            ),
            "",
            f"- Cleaning + de-identification: **{clean_rate:.1f} records/s** (target ≥ 100: "
            f"{'met' if clean_rate >= 100 else 'missed'})",
            f"- Increment embedded {inc['embedded']} texts for {inc['new_records']} new records"
            f" (only new ones); themes refit: {inc['refit']}",
            f"- Themes found in the full run: {full['n_themes']}",
            "- Peak PSS by stage, full run: "
            + ", ".join(f"{k} {v} GB" for k, v in full["stage_peak_pss_gb"].items())
            + "; increment: "
            + ", ".join(f"{k} {v} GB" for k, v in inc["stage_peak_pss_gb"].items()),
            f"- Embedding arithmetic: {full['embed_precision']} (`embed.precision` "
            f"{settings.embed.precision}); theme fit: exact UMAP neighbours up to "
            f"{settings.themes.exact_neighbours_max:,} records, keywords from "
            f"{settings.themes.keyword_docs_per_theme} records per theme",
            f"- CPU: {host.get('cpu_model') or 'unknown'} "
            f"({', '.join(host.get('cpu_flags') or []) or 'flags unknown'}), "
            f"{os.cpu_count()} cores: the full run's time depends on it (native bfloat16 "
            "only with avx512_bf16 or amx_tile)",
            "- Peak memory of the process tree: "
            f"**{max(pss_full, pss_inc)} GB PSS** (target ≤ 4); the "
            f"summed RSS, which counts pages shared by forked workers once per process, "
            f"peaked at {max(mem_full.peak_gb, mem_inc.peak_gb)} GB",
            "",
            "Command: `python benchmarks/bench_performance.py --records "
            f"{args.records} --increment {args.increment}`",
        ]
    )
    write_result(
        "performance",
        {
            "full": full,
            "increment": inc,
            "clean_records_per_s": clean_rate,
            "peak_gb": {"full": mem_full.peak_gb, "increment": mem_inc.peak_gb},
            "peak_pss_gb": {"full": pss_full, "increment": pss_inc},
        },
        md,
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
