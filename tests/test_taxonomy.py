from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from themes.errors import ConfigError
from themes.model import ThemeModel
from themes.taxonomy import load_taxonomy


def test_toml_and_csv_taxonomies_load_the_same(tmp_path: Path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text(
        '[[theme]]\nname = "Falls"\ndescription = "Slips, trips and falls"\n'
        'examples = ["Found on the floor", "Rolled out of bed"]\n'
    )
    csv = tmp_path / "t.csv"
    csv.write_text(
        'name,description,examples\nFalls,"Slips, trips and falls",'
        "Found on the floor|Rolled out of bed\n"
    )
    assert load_taxonomy(toml) == load_taxonomy(csv)
    assert load_taxonomy(toml)[0].texts()[0] == "Falls. Slips, trips and falls"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[[theme]]\ndescription = "x"\n', "number 1 has no name"),
        ('[[theme]]\nname = "A"\ncolour = "red"\n', "unknown keys"),
        ('[[theme]]\nname = "A"\n[[theme]]\nname = "a"\n', "repeated"),
        ("", "no themes found"),
    ],
)
def test_bad_taxonomy_names_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_taxonomy(path)


def test_csv_without_name_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("title,description\nFalls,x\n")
    with pytest.raises(ConfigError, match="'name' column"):
        load_taxonomy(path)


@pytest.mark.slow
def test_seeded_theme_takes_its_records_and_name(tmp_path: Path) -> None:
    from test_model import planted

    docs, vecs, truth = planted(0)
    centre = vecs[truth == 2].mean(axis=0)
    model = ThemeModel(
        seed=0,
        seed_names=["Pressure ulcers"],
        seed_vectors=centre[None, :],
        seed_min_similarity=0.5,
    ).fit(docs, vecs)
    seeded = [t for t in model.themes_ if t.seeded]
    assert [t.label for t in seeded] == ["Pressure ulcers"]
    members = model.labels_ == seeded[0].theme_id
    assert (truth[members] == 2).mean() > 0.95 and members[truth == 2].mean() > 0.9
    loaded = ThemeModel.load(
        model.save(tmp_path / "m", config_hash="x", embed_model_id="all-MiniLM-L6-v2")
    )
    assert loaded.seed_names == ["Pressure ulcers"]
    assert np.allclose(loaded.seed_vectors, model.seed_vectors)


@pytest.mark.slow
def test_coverage_names_the_seeds_no_record_reached(
    caplog: pytest.LogCaptureFixture,
    settings,  # noqa: ANN001
) -> None:
    from test_model import planted
    from themes.steps import taxonomy_summary

    docs, vecs, truth = planted(0)
    centre = vecs[truth == 2].mean(axis=0)
    far = -vecs.mean(axis=0)  # opposite every record: nothing reaches it
    model = ThemeModel(
        seed=0,
        seed_names=["Pressure ulcers", "Parking"],
        seed_vectors=np.stack([centre, far]),
        seed_min_similarity=0.5,
    ).fit(docs, vecs)
    coverage = model.seed_coverage()
    assert list(coverage) == ["Pressure ulcers", "Parking"]
    assert coverage["Parking"] == 0
    assert coverage["Pressure ulcers"] == sum(t.size for t in model.themes_ if t.seeded) > 0
    with caplog.at_level(logging.WARNING, logger="themes.steps"):
        summary = taxonomy_summary(model, settings, n_records=len(docs))
    assert summary["seeds"] == 2 and summary["seeds_used"] == 1
    assert summary["unused"] == ["Parking"]
    assert summary["records_seeded"] == coverage["Pressure ulcers"]
    assert summary["share_seeded"] == round(coverage["Pressure ulcers"] / len(docs), 4)
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert "1 of 2 taxonomy themes" in warning and "'Parking'" in warning
    assert "seed_min_similarity" in warning


def test_the_run_summary_says_what_the_taxonomy_took() -> None:
    from themes.report import run_summary_markdown

    taxonomy = {
        "file": "config/taxonomy.toml",
        "seeds": 3,
        "seeds_used": 2,
        "records_seeded": 40,
        "share_seeded": 0.2,
        "unused": ["Parking"],
    }
    themes = {
        "refit": True,
        "reason": "refit requested",
        "model_id": "m1",
        "n_themes": 5,
        "assigned": 200,
        "extra": {"taxonomy": taxonomy},
    }
    summary = {"run_id": "r1", "status": "completed", "themes": {"themes": themes}}
    text = run_summary_markdown(summary)
    assert "## Seeded themes (taxonomy)" in text
    assert "2 of 3 taxonomy themes took records: 40 records (20.0%)" in text
    assert "`themes.seed_min_similarity` for: Parking" in text
    themes["extra"] = {}
    assert "Seeded themes" not in run_summary_markdown(summary)
