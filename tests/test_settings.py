from __future__ import annotations

from pathlib import Path

import pytest

from themes.errors import ConfigError
from themes.settings import load_settings


def test_defaults_load_from_project_toml() -> None:
    s = load_settings()
    assert s.embed.model_id == "all-MiniLM-L6-v2"
    assert s.store_url.startswith("sqlite:///")
    assert s.ingest.default_source["incident"] == "datix_incident"


def test_environment_overrides_nested_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEMES_STORE__URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("THEMES_THEMES__MIN_CLUSTER_SIZE", "25")
    s = load_settings()
    assert s.store_url == "sqlite:////tmp/x.db"
    assert s.themes.min_cluster_size == 25


def test_misspelt_key_in_toml_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "themes.toml"
    cfg.write_text("[embed]\nbatch_sise = 12\n")
    monkeypatch.setenv("THEMES_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"embed\.batch_sise"):
        load_settings()


def test_unknown_section_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "themes.toml"
    cfg.write_text("[embedding]\nbatch_size = 12\n")
    monkeypatch.setenv("THEMES_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="embedding"):
        load_settings()


def test_missing_config_file_named_in_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEMES_CONFIG", "/nonexistent/themes.toml")
    with pytest.raises(ConfigError, match="/nonexistent/themes.toml"):
        load_settings()


def test_section_hash_changes_with_setting() -> None:
    a = load_settings().section_hash("themes")
    b = load_settings(themes={"seed": 7}).section_hash("themes")
    assert a != b


def test_a_negative_long_query_threshold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEMES_SEARCH__LONG_QUERY_TERMS", "-1")
    with pytest.raises(ConfigError, match="long_query_terms"):
        load_settings()
    monkeypatch.setenv("THEMES_SEARCH__LONG_QUERY_TERMS", "0")
    assert load_settings().search.long_query_terms == 0
