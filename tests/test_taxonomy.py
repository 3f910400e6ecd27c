from __future__ import annotations

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
