"""Run every benchmark with the command its results page names, then write docs/benchmarks.md.

    python benchmarks/run_all.py                # all of them, one after another (hours)
    python benchmarks/run_all.py --list         # what would run, with rough durations
    python benchmarks/run_all.py --only search_quality deid
    python benchmarks/run_all.py --skip search_speed performance

Benchmarks run one at a time: on a 2-core machine two at once would distort each other's
speed figures. Each writes its own files in benchmarks/results/; a failing one is
reported and the rest still run; the exit status is non-zero if any failed. The durations
are rough, from runs on the project's 2-core machine with caches cold.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (results name, arguments after the script, rough minutes on 2 cores)
BENCHMARKS: list[tuple[str, list[str], int]] = [
    ("themes_quality", ["bench_themes.py", "--seeds", "42", "43", "44"], 40),
    ("stability", ["bench_stability.py", "--seeds", "42", "43"], 20),
    ("emerging", ["bench_emerging.py"], 15),
    ("deid", ["bench_deid.py", "--seed", "42", "--n-texts", "1000"], 10),
    ("deid_demo", ["bench_leaks.py", "--seeds", "7", "8", "--records", "3000"], 15),
    ("performance", ["bench_performance.py", "--records", "20000", "--increment", "500"], 30),
    ("performance_clean", ["bench_performance.py", "--clean-only", "--records", "20000"], 5),
    ("reclean", ["bench_reclean.py", "--records", "3000", "--seed", "0"], 15),
    (
        "embed_throughput",
        ["bench_embed_throughput.py", "--records", "20000", "--sample", "200"],
        10,
    ),
    ("factors", ["bench_factors.py", "--skip-pfd"], 10),
    ("factors_pfd", ["bench_factors.py", "--pfd-only"], 15),
    ("links_demo", ["bench_links.py", "--demo-only"], 15),
    ("links_pfd", ["bench_links.py"], 20),
    ("links_privacy", ["bench_links.py", "--privacy"], 20),
    ("search_quality", ["bench_search.py"], 30),
    # the profiles read the 1,000,000-record index that bench_search_speed builds
    ("search_speed", ["bench_search_speed.py", "--records", "1000000"], 90),
    ("search_query_profile", ["profile_search_query.py"], 10),
    ("search_query_profile_long", ["profile_search_query.py", "--long"], 10),
]


def main(argv: list[str] | None = None) -> int:
    names = [name for name, _, _ in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="show what would run and stop")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help="run these")
    parser.add_argument("--skip", nargs="+", choices=names, metavar="NAME", help="leave out")
    args = parser.parse_args(argv)
    chosen = [
        b
        for b in BENCHMARKS
        if (not args.only or b[0] in args.only) and (not args.skip or b[0] not in args.skip)
    ]
    total = sum(minutes for _, _, minutes in chosen)
    print(f"{len(chosen)} benchmark(s), roughly {total} minutes on 2 cores:")
    for name, cmd, minutes in chosen:
        print(f"  {name:<22} ~{minutes:>3} min  python benchmarks/{' '.join(cmd)}")
    if args.list:
        return 0
    failed: list[str] = []
    for i, (name, cmd, _) in enumerate(chosen, start=1):
        print(f"\n[{i}/{len(chosen)}] {name}: python benchmarks/{' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(ROOT / "benchmarks" / cmd[0]), *cmd[1:]])
        took = time.perf_counter() - t0
        print(f"[{i}/{len(chosen)}] {name}: exit {rc} after {took / 60:.1f} min", flush=True)
        if rc != 0:
            failed.append(name)
    subprocess.call([sys.executable, str(ROOT / "benchmarks" / "summarise.py")])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
