"""Shared fixtures. Tests never reach the network and use data the project generates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Prefect stops its temporary API server at interpreter exit and logs that at INFO
    through a console handler bound to pytest's captured output, closed by then, which
    printed a "Logging error" traceback after the summary. Nothing is left to report."""
    import logging

    logging.getLogger("prefect").setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative config paths (config/...) resolve against the project root."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("THEMES_CONFIG", raising=False)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Settings with every writable path inside tmp_path."""
    from themes.settings import load_settings

    monkeypatch.setenv("THEMES_PATHS__DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("THEMES_PATHS__DROP_FOLDER", str(tmp_path / "var" / "drop"))
    monkeypatch.setenv("THEMES_PATHS__MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("THEMES_PATHS__REPORTS_DIR", str(tmp_path / "var" / "reports"))
    return load_settings()


@pytest.fixture
def store(settings):  # noqa: ANN001, ANN201
    from themes.steps import open_store

    s = open_store(settings)
    yield s
    s.close()


@pytest.fixture
def theme_model(store):  # noqa: ANN001, ANN201
    """The store with an active theme model "m" (themes 1-3) and an inactive "old" (7)."""
    from themes.store import theme_models, themes_table, utcnow

    with store.begin() as conn:
        conn.execute(
            theme_models.insert(),
            [
                {"model_id": m, "path": m, "fitted_at": utcnow(), "n_records": 0,
                 "config_hash": "x", "active": m == "m"}
                for m in ("m", "old")
            ],
        )  # fmt: skip
        conn.execute(
            themes_table.insert(),
            [
                {"model_id": m, "theme_id": t, "label": f"theme {t}", "keywords": "[]",
                 "size": 0, "representative_ids": "[]"}
                for m, t in (("m", 1), ("m", 2), ("m", 3), ("old", 7))
            ],
        )  # fmt: skip
    return store


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private Prefect home so flow tests never touch ~/.prefect."""
    home = tmp_path_factory.mktemp("prefect")
    os.environ["PREFECT_HOME"] = str(home)
    return home


from demo_flow import demo_run  # noqa: E402, F401 - the shared end-to-end flow run
