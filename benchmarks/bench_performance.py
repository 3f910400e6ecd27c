"""Performance of the nightly path on demo data (this machine, 2 cores).

Full run on N demo records (ingest + clean/de-identify + embed + fit), then a nightly
increment of 500 new records (assign only, embedding only the new ones). Peak memory of
the process tree is sampled throughout.

    python benchmarks/bench_performance.py [--records 20000] [--increment 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import PeakMemory, md_table, write_result  # noqa: E402
from themes import steps  # noqa: E402
from themes.clean import TextCleaner  # noqa: E402
from themes.deidentify import Deidentifier  # noqa: E402
from themes.demo import generate_demo  # noqa: E402
from themes.embed import SentenceTransformerEmbedder  # noqa: E402
from themes.settings import load_settings  # noqa: E402


def one_pass(settings, run_id: str, *, refit: bool) -> dict:  # noqa: ANN001
    t = {}
    store = steps.open_store(settings)
    t0 = time.perf_counter()
    exports, _ = steps.find_exports(settings.paths.drop_folder, settings.ingest)
    reports, errors = steps.ingest_exports(store, exports, run_id=run_id)
    t["ingest_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cleaned = steps.clean_pending(
        store, TextCleaner(settings.clean), Deidentifier(settings.deidentify)
    )
    t["clean_s"] = time.perf_counter() - t0
    t["cleaned"] = cleaned["cleaned"]
    t0 = time.perf_counter()
    ids, texts, vectors, n_new = steps.embed_all(store, SentenceTransformerEmbedder(settings.embed))
    t["embed_s"] = time.perf_counter() - t0
    t["embedded"] = n_new
    t0 = time.perf_counter()
    update = steps.update_themes(store, settings, ids, texts, vectors, refit=refit, run_id=run_id)
    t["themes_s"] = time.perf_counter() - t0
    t["n_themes"] = update.n_themes
    t["assigned"] = update.assigned
    t["refit"] = update.refit
    t["records"] = len(ids)
    t["new_records"] = sum(r.inserted for r in reports)
    t["errors"] = errors
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--increment", type=int, default=500)
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
    rows = [
        [
            f"full run, {full['records']} records",
            f"{full['ingest_s']:.0f}",
            f"{full['clean_s']:.0f}",
            f"{full['embed_s']:.0f}",
            f"{full['themes_s']:.0f}",
            f"**{full['total_s']:.0f}**",
            "≤ 600",
            mem_full.peak_pss_gb,
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
            mem_inc.peak_pss_gb,
            mem_inc.peak_gb,
        ],
    ]
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
            f"- Cleaning + de-identification: **{clean_rate:.0f} records/s** (target ≥ 100)",
            f"- Increment embedded {inc['embedded']} texts for {inc['new_records']} new records"
            f" (only new ones); themes refit: {inc['refit']}",
            f"- Themes found in the full run: {full['n_themes']}",
            "- Peak memory of the process tree: "
            f"**{max(mem_full.peak_pss_gb, mem_inc.peak_pss_gb)} GB PSS** (target ≤ 4); the "
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
            "peak_pss_gb": {"full": mem_full.peak_pss_gb, "increment": mem_inc.peak_pss_gb},
        },
        md,
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
