"""The one shared end-to-end run of the nightly flow on demo data (session fixture).

`demo_run` (in conftest.py) runs the real Prefect flow once per test session with
refit=True over a generated demo drop folder; every capability's end-to-end tests read
its store. Treat it as read-only: tests/test_flow.py's increment test is the only one
that adds records to it (so later tests may see 120 more records).
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest

from themes.demo import generate_demo
from themes.settings import load_settings

N_RECORDS = 900


def _env(root: Path) -> dict[str, str]:
    return {
        "THEMES_PATHS__DATA_DIR": str(root / "var"),
        "THEMES_PATHS__DROP_FOLDER": str(root / "var" / "drop"),
        "THEMES_PATHS__MODELS_DIR": str(root / "models"),
        "THEMES_PATHS__REPORTS_DIR": str(root / "var" / "reports"),
    }


def _paths(root: Path) -> dict[str, str]:
    return {k.removeprefix("THEMES_PATHS__").lower(): v for k, v in _env(root).items()}


def _drop(manifest, drop: Path) -> None:  # noqa: ANN001
    for kind, path in manifest.files.items():
        (drop / kind).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, drop / kind / path.name)


def _labels(manifest) -> list[dict[str, str]]:  # noqa: ANN001
    with manifest.labels_path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, prefect_home: Path):  # noqa: ANN201
    """One refit run of the real Prefect flow over a demo drop folder, logs captured."""
    from pipelines.nightly import nightly

    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _env(root).items():
            mp.setenv(k, v)
        settings = load_settings()
        manifest = generate_demo(root / "exports", seed=11, n_records=N_RECORDS)
        _drop(manifest, settings.paths.drop_folder)
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        handler = Keep(level=logging.DEBUG)
        logging.getLogger().addHandler(handler)
        logging.getLogger("prefect").addHandler(handler)
        try:
            summary = nightly(refit=True)
        finally:
            logging.getLogger().removeHandler(handler)
            logging.getLogger("prefect").removeHandler(handler)
        logs = "\n".join(r.getMessage() for r in records)
        yield {
            "root": root,
            "settings": settings,
            "manifest": manifest,
            "summary": summary,
            "logs": logs,
            "env": dict(_env(root)),
            "mp": mp,
        }
