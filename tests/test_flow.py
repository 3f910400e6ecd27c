"""The nightly flow end to end on generated demo data, with real Prefect runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo_flow import _drop, _env, _labels, _paths  # noqa: F401 - demo_run is in conftest
from leaks import whole_word_leaks
from themes.demo import generate_demo
from themes.lock import RunLock
from themes.queries import list_records, list_themes, show_theme
from themes.settings import load_settings
from themes.steps import open_store
from themes.store import assignments, clean_texts, embeddings, raw_records, runs

pytestmark = pytest.mark.slow


def _count(store, table) -> int:  # noqa: ANN001
    with store.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_flow_completes_and_quarantines_every_planted_defect(demo_run) -> None:  # noqa: ANN001
    summary = demo_run["summary"]
    assert summary["status"] == "completed"
    labels = _labels(demo_run["manifest"])
    defects = [r for r in labels if r["defect"]]
    assert defects, "the demo data plants bad rows"
    files = summary["ingest"]["files"]
    assert sum(f["quarantined"] for f in files) == len(defects)
    store = open_store(demo_run["settings"])
    assert _count(store, raw_records) == sum(f["inserted"] for f in files)
    assert _count(store, raw_records) + len(defects) == sum(f["n_rows"] for f in files)


def test_every_record_is_cleaned_embedded_and_themed(demo_run) -> None:  # noqa: ANN001
    store = open_store(demo_run["settings"])
    n = _count(store, raw_records)
    assert _count(store, clean_texts) == n
    assert _count(store, assignments) == n
    with store.connect() as conn:
        outliers = conn.execute(
            sa.select(sa.func.count()).select_from(assignments).where(assignments.c.theme_id < 0)
        ).scalar_one()
    assert outliers / n <= 0.05
    themes = list_themes(store)
    assert len(themes) >= 5
    assert all(t["label"] and t["keywords"] for t in themes)


def test_planted_themes_are_recovered(demo_run) -> None:  # noqa: ANN001
    from sklearn.metrics import normalized_mutual_info_score

    store = open_store(demo_run["settings"])
    truth = {r["record_id"]: r["theme"] for r in _labels(demo_run["manifest"]) if not r["defect"]}
    with store.connect() as conn:
        found = dict(conn.execute(sa.select(assignments.c.record_id, assignments.c.theme_id)).all())
    ids = [i for i in found if i in truth]
    assert normalized_mutual_info_score([truth[i] for i in ids], [found[i] for i in ids]) >= 0.6
    # most planted themes have a discovered theme where they are the majority
    by_theme: dict[str, Counter] = {}
    for i in ids:
        by_theme.setdefault(truth[i], Counter())[found[i]] += 1
    owners = Counter()
    for i in ids:
        owners[found[i]] += 1
    recovered = 0
    for _planted, counts in by_theme.items():
        tid, n = counts.most_common(1)[0]
        if n / sum(counts.values()) >= 0.5:
            recovered += 1
    assert recovered >= 0.75 * len(by_theme)


def test_no_planted_identifier_reaches_any_output(demo_run) -> None:  # noqa: ANN001
    store = open_store(demo_run["settings"])
    planted = set()
    for row in _labels(demo_run["manifest"]):
        for ident in json.loads(row["identifiers"] or "[]"):
            planted.add(ident["value"])
    assert len(planted) > 100
    with store.connect() as conn:
        clean = "\n".join(conn.execute(sa.select(clean_texts.c.clean_text)).scalars())
    themes = list_themes(store)
    shown = [show_theme(store, t["theme_id"]) for t in themes]
    listed = list_records(store, limit=10_000)
    model_dir = Path(store.active_model()["path"])
    outputs = {
        "clean text": clean,
        "theme labels": json.dumps(themes),
        "representative cases": json.dumps(shown),
        "records listing": json.dumps(listed),
        "saved model": "\n".join(p.read_text() for p in model_dir.glob("*.json")),
        "logs": demo_run["logs"],
        "run summary": json.dumps(demo_run["summary"]),
    }
    for where, text in outputs.items():
        leaked = whole_word_leaks(planted, text)
        assert not leaked, f"{len(leaked)} planted identifiers in {where}, e.g. {leaked[:3]}"


def test_prefect_artifact_summarises_the_run(demo_run) -> None:  # noqa: ANN001
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["nightly-themes-summary"])
                )
            )

    artifacts = asyncio.run(read())
    assert artifacts, "the flow publishes a markdown artifact"
    text = artifacts[-1].data
    assert "Records in" in text and "quarantined" in text and "Themes" in text
    # the arithmetic the texts were embedded in, which decides a first run's time
    precision = demo_run["summary"]["themes"]["embed_precision"]
    assert precision in {"float32", "bfloat16"}
    expected = f"Newly embedded texts: {demo_run['summary']['themes']['embedded']} (in {precision})"
    assert any(expected in a.data for a in artifacts), expected


def test_nightly_increment_embeds_only_new_records(demo_run) -> None:  # noqa: ANN001
    from pipelines.nightly import nightly

    settings = demo_run["settings"]
    extra = generate_demo(
        demo_run["root"] / "extra", seed=12, n_records=120, id_start=500_000, messy=False
    )
    drop = settings.paths.drop_folder
    for kind, path in extra.files.items():
        shutil.copy2(path, drop / kind / f"day2-{path.name}")
    store = open_store(settings)
    before = _count(store, raw_records)
    summary = nightly(refit=False)
    new = sum(f["inserted"] for f in summary["ingest"]["files"])
    assert new > 0
    assert _count(store, raw_records) == before + new
    themes = summary["themes"]["themes"]
    assert themes["refit"] is False
    assert themes["assigned"] == new
    assert summary["themes"]["embedded"] <= new
    assert _count(store, assignments) == before + new
    # a run with nothing new changes nothing
    again = nightly(refit=False)
    assert all(f["skipped_unchanged_file"] for f in again["ingest"]["files"])
    assert again["themes"]["embedded"] == 0 and again["themes"]["themes"]["assigned"] == 0


def _themes_cmd(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    """Start `themes ARGS` in a subprocess; output goes to a file (a pipe could fill up)."""
    return subprocess.Popen(
        [sys.executable, "-m", "themes.cli", *args],
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_second_concurrent_run_exits_with_a_clear_message(
    tmp_path: Path, prefect_home: Path
) -> None:
    env = _env(tmp_path)
    settings_dir = Path(env["THEMES_PATHS__DATA_DIR"])
    with RunLock(settings_dir):
        proc = _themes_cmd(env, tmp_path / "run.log", "run")
        proc.wait(timeout=300)
    output = (tmp_path / "run.log").read_text()
    assert proc.returncode == 3, output
    assert "Another run is in progress" in output


def test_kill_during_run_then_rerun_leaves_store_consistent(
    tmp_path: Path, prefect_home: Path
) -> None:
    env = _env(tmp_path)
    # a full run from scratch follows the kill: 600 records keep it to a few minutes
    manifest = generate_demo(tmp_path / "exports", seed=5, n_records=600)
    _drop(manifest, Path(env["THEMES_PATHS__DROP_FOLDER"]))
    db = Path(env["THEMES_PATHS__DATA_DIR"]) / "themes.db"
    proc = _themes_cmd(env, tmp_path / "first.log", "run")
    deadline = time.monotonic() + 300
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            engine = sa.create_engine(f"sqlite:///{db}")
            try:
                with engine.connect() as conn:
                    n = conn.execute(
                        sa.select(sa.func.count()).select_from(clean_texts)
                    ).scalar_one()
            except sa.exc.OperationalError:
                n = 0
            engine.dispose()
            if n > 0:
                # kill -9 the whole run: the CLI, its spaCy workers and Prefect's server
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = n
                break
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert killed_at is not None, "the run was killed while cleaning"
    rerun = _themes_cmd(env, tmp_path / "rerun.log", "run")
    rerun.wait(timeout=600)
    assert rerun.returncode == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    store = open_store(load_settings(paths=_paths(tmp_path)))
    n = _count(store, raw_records)
    expected = sum(1 for r in _labels(manifest) if not r["defect"])
    assert n == expected
    assert _count(store, clean_texts) == n
    assert _count(store, assignments) == n
    with store.connect() as conn:
        hashes = set(conn.execute(sa.select(clean_texts.c.clean_hash)).scalars())
        statuses = Counter(conn.execute(sa.select(runs.c.status)).scalars())
        embedded = set(conn.execute(sa.select(embeddings.c.text_hash)).scalars())
    # every cleaned text is embedded once (the table also caches the linker's passage
    # embeddings, so it may hold more rows than records)
    assert hashes <= embedded
    assert statuses == Counter({"interrupted": 1, "completed": 1})
