"""What a nightly run does and costs when the cleaning rules change.

    python benchmarks/bench_reclean.py --records 3000 --seed 0

Runs the product's CLI, as a scheduled run would, on a store of its own (a temporary
folder):
1. `themes demo`: the demo exports, cleaned, embedded and fitted from scratch;
2. `themes run` with the never-name list lacking the words given by `--remove`
   ("deceased" by default), as if a trust had not yet listed them;
3. `themes run` with the shipped list again, as when a trust adds those words;
4. `themes run` with nothing changed;
5. `themes run` with the shorter list again, killed (SIGKILL) as soon as it has cleaned
   every stored record, before its theme step;
6. `themes run` with that list: nothing is left to clean, yet the refit the killed run
   owed follows (the changed texts are newer than the theme model).

Each `themes run` after a change of rules cleans every stored record again; only texts
that came out different are embedded again (or come back from the embedding cache), and
a refit follows when any changed. The table gives each run's wall time and its summary's
counts. Results go to benchmarks/results/reclean.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, md_table, write_result  # noqa: E402


def _themes(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run `themes ARGS` from the project root; (seconds, stdout). Fails loudly."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "themes.cli", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"themes {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return seconds, proc.stdout


def _row(name: str, change: str, seconds: float, summary: dict[str, Any]) -> dict[str, Any]:
    clean, themes = summary["clean"], summary["themes"]
    update = themes.get("themes") or {}
    return {
        "run": name,
        "rules changed": change,
        "seconds": round(seconds, 1),
        "cleaned": clean["cleaned"],
        "recleaned": clean.get("recleaned", 0),
        "recleaned_changed": clean.get("recleaned_changed", 0),
        "embedded": themes.get("embedded", 0),
        "refit": update.get("refit"),
        "reason": update.get("reason"),
        "themes": update.get("n_themes"),
    }


def _kill_after_cleaning(env: dict[str, str], db: Path) -> dict[str, Any]:
    """Start `themes run`, and SIGKILL it (its whole process group) once every stored
    record has been cleaned again, before its theme step has written anything."""
    with sqlite3.connect(db) as conn:
        total = conn.execute("SELECT count(*) FROM clean_texts").fetchone()[0]
        model = conn.execute("SELECT model_id FROM theme_models WHERE active").fetchone()[0]
        since = conn.execute("SELECT max(cleaned_at) FROM clean_texts").fetchone()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "themes.cli", "run", "--json"],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    cleaned = 0
    try:
        while cleaned < total:
            if proc.poll() is not None:
                raise SystemExit("the run to be killed finished first: no kill was tested")
            time.sleep(0.1)
            with sqlite3.connect(db) as conn:
                cleaned = conn.execute(
                    "SELECT count(*) FROM clean_texts WHERE cleaned_at > ?", (since,)
                ).fetchone()[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    seconds = time.perf_counter() - t0
    from themes.steps import rules_changed_since
    from themes.store import Store

    store = Store(f"sqlite:///{db}")
    try:
        active = store.active_model()
        changed = rules_changed_since(store, active["fitted_at"])
    finally:
        store.close()
    if active["model_id"] != model:
        raise SystemExit("the killed run had already refitted: no interrupted refit was tested")
    return {
        "seconds": seconds,
        "clean": {"cleaned": cleaned, "recleaned": cleaned, "recleaned_changed": changed},
        "themes": {"themes": {"reason": "killed (SIGKILL) after cleaning, before its theme step"}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000, help="demo records")
    parser.add_argument("--seed", type=int, default=0, help="demo generator seed")
    parser.add_argument(
        "--remove", nargs="+", default=["deceased"], help="never-name words left out in run 2"
    )
    args = parser.parse_args()

    from themes.settings import load_settings

    shipped = ROOT / load_settings().deidentify.never_name_file
    root = Path(tempfile.mkdtemp(prefix="bench_reclean_"))
    env = {
        "HF_HUB_OFFLINE": "1",
        "THEMES_PATHS__DATA_DIR": str(root / "var"),
        "THEMES_PATHS__DROP_FOLDER": str(root / "var" / "drop"),
        "THEMES_PATHS__MODELS_DIR": str(root / "models"),
        "THEMES_PATHS__REPORTS_DIR": str(root / "var" / "reports"),
    }
    fewer = root / "never_fewer.txt"
    removed = {w.lower() for w in args.remove}
    lines = shipped.read_text(encoding="utf-8").splitlines()
    fewer.write_text(
        "\n".join(ln for ln in lines if ln.strip().lower() not in removed) + "\n",
        encoding="utf-8",
    )

    print(f"1/6 themes demo --records {args.records} --seed {args.seed} (in {root})", flush=True)
    demo_s, _ = _themes(env, "demo", "--records", str(args.records), "--seed", str(args.seed))
    rows = []
    runs = [
        ("2", f"never-name list without {', '.join(sorted(removed))}", {
            "THEMES_DEIDENTIFY__NEVER_NAME_FILE": str(fewer)
        }),
        ("3", "shipped never-name list again (the words added back)", {}),
        ("4", "none", {}),
    ]  # fmt: skip
    for name, change, extra in runs:
        print(f"{name}/6 themes run ({change})", flush=True)
        seconds, out = _themes({**env, **extra}, "run", "--json")
        rows.append(_row(name, change, seconds, json.loads(out)))
    fewer_env = {**env, **runs[0][2]}
    change = runs[0][1]
    print(f"5/6 themes run ({change}), killed after cleaning", flush=True)
    killed = _kill_after_cleaning(fewer_env, root / "var" / "themes.db")
    rows.append(_row("5", f"{change} (killed)", killed.pop("seconds"), killed))
    print(f"6/6 themes run ({change}, after the kill)", flush=True)
    seconds, out = _themes(fewer_env, "run", "--json")
    rows.append(_row("6", f"{change} (after the kill)", seconds, json.loads(out)))

    header = list(rows[0])
    table = md_table(header, [[r[h] for h in header] for r in rows])
    markdown = "\n".join(
        [
            "# Re-cleaning when the cleaning rules change",
            "",
            f"A store of {args.records} demo records (seed {args.seed}) made by `themes demo` "
            f"in {demo_s:.0f} s, then five `themes run`s, each a new process as a "
            "scheduled run is (Prefect's temporary server included in the seconds). Run 5 "
            "is killed (SIGKILL) once it has cleaned every stored record, before its theme "
            "step; its counts are read from the store, `recleaned_changed` being the clean "
            "texts newer than the theme model. Run 6 owes the refit it did not do.",
            "",
            table,
            "",
            "- `recleaned`: stored records cleaned again because the rules' fingerprint "
            "changed; `recleaned_changed`: those whose clean text changed.",
            "- `embedded`: texts embedded in the run; a text seen before comes from the "
            "embedding cache.",
            "",
            "Command: `python benchmarks/bench_reclean.py "
            f"--records {args.records} --seed {args.seed}"
            + (f" --remove {' '.join(args.remove)}`" if removed != {"deceased"} else "`"),
        ]
    )
    write_result(
        "reclean",
        {"records": args.records, "seed": args.seed, "demo_seconds": demo_s, "runs": rows},
        markdown,
    )


if __name__ == "__main__":
    main()
