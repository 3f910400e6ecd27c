"""The nightly learning-themes flow: ingest -> clean/de-identify -> embed -> themes.

Run once, locally, with no Prefect server:   themes run   (or python -m pipelines.nightly)
Serve on a cron schedule:                    themes serve  (flow.serve with flow.cron)
Deploy to a Prefect server / work pool:      prefect deploy --all   (see prefect.yaml)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# A first run creates Prefect's local database; on a busy 2-core machine that can take
# longer than Prefect's 20 s default for the temporary server to come up.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from themes import steps  # noqa: E402
from themes.lock import RunLock  # noqa: E402
from themes.report import run_summary_markdown  # noqa: E402
from themes.settings import Settings, load_settings  # noqa: E402


def _progress(every: int = 10):  # noqa: ANN202 - returns a steps.Progress
    logger = get_run_logger()
    last: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if done in (0, total) or pct - last.get(stage, -every) >= every:
            last[stage] = pct
            logger.info("%s: %d/%d (%d%%)", stage, done, total, pct)

    return progress


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def ingest_task(settings: Settings, run_id: str) -> dict[str, Any]:
    """Find and ingest new exports in the drop folder (I/O: retried)."""
    store = steps.open_store(settings)
    exports, warnings = steps.find_exports(settings.paths.drop_folder, settings.ingest)
    for w in warnings:
        get_run_logger().warning(w)
    reports, errors = steps.ingest_exports(store, exports, run_id=run_id)
    return {
        "files": [r.as_dict() for r in reports],
        "errors": errors,
        "warnings": warnings,
    }


@task(cache_policy=NO_CACHE)
def clean_task(settings: Settings) -> dict[str, Any]:
    """Normalise and de-identify every new or changed narrative."""
    from themes.clean import TextCleaner
    from themes.deidentify import Deidentifier

    store = steps.open_store(settings)
    return steps.clean_pending(
        store,
        TextCleaner(settings.clean),
        Deidentifier(settings.deidentify),
        progress=_progress(),
    )


@task(cache_policy=NO_CACHE)
def embed_and_theme_task(
    settings: Settings, run_id: str, refit: bool, rediscover: bool = False
) -> dict[str, Any]:
    """Embed new texts (cached by hash) and assign them to themes, or refit (also when
    changed cleaning rules changed stored clean texts: `steps.needs_refit`)."""
    from themes.embed import SentenceTransformerEmbedder

    store = steps.open_store(settings)
    progress = _progress()
    embedder = SentenceTransformerEmbedder(settings.embed)
    ids, texts, vectors, n_new = steps.embed_all(store, embedder, progress=progress)
    if not ids:
        return {"embedded": 0, "records": 0, "themes": None}
    update = steps.update_themes(
        store,
        settings,
        ids,
        texts,
        vectors,
        refit=refit,
        rediscover=rediscover,
        run_id=run_id,
        progress=progress,
    )
    return {
        "embedded": n_new,
        "embed_precision": embedder.precision,
        "records": len(ids),
        "themes": update.__dict__,
    }


@task(cache_policy=NO_CACHE)
def factors_task(settings: Settings) -> dict[str, Any]:
    """Tag new/changed records with contributory factors and harm; store theme profiles."""
    from themes.factors import update_factors

    return update_factors(steps.open_store(settings), settings, progress=_progress())


@task(cache_policy=NO_CACHE)
def search_index_task(settings: Settings) -> dict[str, Any]:
    """Update the similar-case search index and near-duplicate pairs (new/changed only)."""
    from themes.search import refresh

    return refresh(settings)


@task(cache_policy=NO_CACHE)
def links_task(settings: Settings) -> dict[str, Any]:
    """Link themes and cases to recommendations when themes, records or the corpus changed."""
    from themes.links import update_links

    return update_links(steps.open_store(settings), settings)


@task(cache_policy=NO_CACHE)
def report_task(settings: Settings) -> dict[str, Any]:
    """Write the governance report (HTML + Excel) for the latest month."""
    from themes.governance import report_for_flow

    return report_for_flow(steps.open_store(settings), settings)


@flow(name="nightly-themes", log_prints=False)
def nightly(
    refit: bool = False, config: str | None = None, rediscover: bool = False
) -> dict[str, Any]:
    """Ingest the drop folder, de-identify, embed, and assign or refit themes."""
    if config:
        os.environ["THEMES_CONFIG"] = config
    settings = load_settings()
    logger = get_run_logger()
    run_id = uuid.uuid4().hex
    with RunLock(settings.paths.data_dir, wait_s=settings.flow.lock_wait_s):
        store = steps.open_store(settings)
        store.start_run(run_id)
        summary: dict[str, Any] = {"run_id": run_id}
        status = "failed"
        try:
            summary["ingest"] = ingest_task(settings, run_id)
            summary["clean"] = clean_task(settings)
            summary["themes"] = embed_and_theme_task(settings, run_id, refit, rediscover)
            summary["factors"] = factors_task(settings)
            summary["search"] = search_index_task(settings)
            summary["links"] = links_task(settings)
            summary["report"] = report_task(settings)
            summary["totals"] = store.counts()
            status = "completed with errors" if summary["ingest"]["errors"] else "completed"
        finally:
            summary["status"] = status
            store.finish_run(run_id, status, summary)
    markdown = run_summary_markdown(summary)
    create_markdown_artifact(
        markdown=markdown, key="nightly-themes-summary", description="Nightly themes run"
    )
    logger.info("run %s %s", run_id, status)
    return summary


def serve(cron: str | None = None) -> None:
    """Serve the flow on a cron schedule (a long-running process; needs a Prefect API)."""
    settings = load_settings()
    nightly.serve(name=settings.flow.deployment_name, cron=cron or settings.flow.cron)


if __name__ == "__main__":
    import sys

    result = nightly(refit="--refit" in sys.argv)
    print(Path(load_settings().paths.data_dir).resolve(), result["status"])
