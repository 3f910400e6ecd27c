"""The synthetic demo data: formats a real export has, and the truth planted in it."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from themes.demo import (
    CONDITIONS,
    EMERGING_THEME,
    IDENTIFIER_TYPES,
    NARRATIVE_COLUMNS,
    SURNAMES,
    THEMES,
    deid_testset,
    generate_demo,
    is_valid_nhs_number,
    nhs_number,
)
from themes.records import load_mapping

SOURCES = Path(__file__).resolve().parents[1] / "config" / "sources"
MAPPING_FOR_KIND = {"incident": "datix_incident", "complaint": "complaints", "claim": "claims"}


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".xlsx":
        return pd.read_excel(path, dtype=object, sheet_name=0).fillna("")
    encoding = "cp1252" if path.name == "incidents.csv" else "utf-8-sig"
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)


def _labels(manifest) -> pd.DataFrame:
    return pd.read_csv(manifest.labels_path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("messy"), seed=3, n_records=600, months=12)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return generate_demo(
        tmp_path_factory.mktemp("clean"), seed=3, n_records=600, months=12, messy=False
    )


def test_same_seed_gives_identical_files(tmp_path, messy):
    again = generate_demo(tmp_path, seed=3, n_records=600, months=12)
    for kind, path in messy.files.items():
        if path.suffix == ".csv":
            assert path.read_bytes() == again.files[kind].read_bytes()
        else:
            assert _read(path).equals(_read(again.files[kind]))
    assert messy.labels_path.read_bytes() == again.labels_path.read_bytes()


def test_different_seed_gives_different_data(tmp_path, messy):
    other = generate_demo(tmp_path, seed=4, n_records=600, months=12)
    assert other.labels_path.read_bytes() != messy.labels_path.read_bytes()


def test_every_mapped_column_is_in_its_export(messy):
    for kind, path in messy.files.items():
        mapping = load_mapping(SOURCES, MAPPING_FOR_KIND[kind])
        columns = set(_read(path).columns)
        mapped = [v for v in mapping.columns.model_dump().values() if v]
        mapped += [n.column for n in mapping.narrative]
        missing = [c for c in mapped if c not in columns]
        assert not missing, f"{path.name} lacks {missing}"


def test_incident_export_is_windows_1252_with_uk_dates(messy):
    raw = messy.files["incident"].read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("cp1252")
    assert "’" in text and "–" in text
    dates = _read(messy.files["incident"])["Reported date"]
    assert dates.str.fullmatch(r"\d{2}/\d{2}/\d{4}").all()


def test_claims_export_has_bom_iso_and_serial_dates(messy):
    assert messy.files["claim"].read_bytes().startswith(b"\xef\xbb\xbf")
    claims = _read(messy.files["claim"])
    assert claims["Date notified"].str.fullmatch(r"4\d{4}").all()
    assert claims["Incident date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").mean() > 0.95


def test_complaints_have_real_excel_dates(messy):
    dates = _read(messy.files["complaint"])["Date received"]
    assert dates.map(lambda v: hasattr(v, "year")).mean() > 0.8


def test_split_and_ids_by_kind(clean):
    labels = _labels(clean)
    share = labels["kind"].value_counts(normalize=True)
    assert 0.6 < share["incident"] < 0.8 and 0.12 < share["complaint"] < 0.3
    assert 0.05 < share["claim"] < 0.17
    prefix = {"incident": "INC", "complaint": "COM", "claim": "CLM"}
    for kind, rid in zip(labels["kind"], labels["record_id"], strict=True):
        assert re.fullmatch(prefix[kind] + r"\d+", rid)
    assert len(labels) == clean.n_records == labels["record_id"].nunique()


def test_second_batch_ids_never_collide(tmp_path, clean):
    batch = generate_demo(tmp_path, seed=9, n_records=300, months=12, id_start=100000)
    first = set(_labels(clean)["record_id"])
    second = set(_labels(batch)["record_id"]) - {""}
    assert second and not first & second


def test_at_least_13_themes_with_varied_wording():
    assert len(THEMES) >= 13 and EMERGING_THEME in THEMES
    for spec in THEMES.values():
        assert len(spec.sentences) >= 8, spec.slug


def test_planted_nhs_numbers_pass_modulus_11(messy):
    values = [
        i["value"]
        for ids in _labels(messy)["identifiers"]
        for i in json.loads(ids)
        if i["type"] == "NHS_NUMBER"
    ]
    assert len(values) > 20
    assert all(is_valid_nhs_number(v) for v in values)


def test_nhs_check_digit_is_checked():
    rng = random.Random(1)
    for _ in range(200):
        number = nhs_number(rng)
        assert is_valid_nhs_number(number)
        digits = number.replace(" ", "")
        wrong = digits[:9] + str((int(digits[9]) + 1) % 10)
        assert not is_valid_nhs_number(wrong)
    assert is_valid_nhs_number("943 476 5919") and is_valid_nhs_number("943-476-5919")
    assert not is_valid_nhs_number("943 476 591")


def test_emerging_theme_surges_in_last_three_months_and_others_do_not(clean):
    labels = _labels(clean)
    labels["month"] = labels["event_date"].str[:7]
    counts = pd.crosstab(labels["month"], labels["theme"]).sort_index()
    assert len(counts) == 12
    early, late = counts.iloc[:-3], counts.iloc[-3:]
    emerging_early = early[EMERGING_THEME].mean()
    assert emerging_early <= 1.0
    assert late[EMERGING_THEME].mean() > 4 * max(emerging_early, 1.0)
    for slug in THEMES:
        if slug != EMERGING_THEME:
            assert late[slug].mean() < 2.5 * early[slug].mean(), slug


def test_planted_identifiers_appear_verbatim_in_the_narrative(messy):
    labels = _labels(messy)
    planted = 0
    for kind, path in messy.files.items():
        frame = _read(path)
        rows = labels[labels["kind"] == kind].reset_index(drop=True)
        assert len(rows) == len(frame)
        for (_, label), (_, row) in zip(rows.iterrows(), frame.iterrows(), strict=True):
            narrative = "\n".join(str(row[c]) for c in NARRATIVE_COLUMNS[kind])
            for ident in json.loads(label["identifiers"]):
                assert ident["type"] in IDENTIFIER_TYPES
                assert ident["value"] in narrative, (label["record_id"], ident)
                planted += 1
    has_ids = (labels["identifiers"] != "[]").mean()
    assert planted > 600 and 0.45 < has_ids < 0.75


def test_near_duplicates_point_at_a_record_of_the_same_theme(clean):
    labels = _labels(clean)
    by_id = labels.set_index("record_id")
    dups = labels[labels["is_duplicate_of"] != ""]
    assert len(dups) >= 4
    for _, dup in dups.iterrows():
        original = by_id.loc[dup["is_duplicate_of"]]
        assert original["theme"] == dup["theme"]
        gap = pd.Timestamp(dup["event_date"]) - pd.Timestamp(original["event_date"])
        assert abs(gap.days) <= 1


def test_messy_exports_carry_each_planted_defect(messy):
    labels = _labels(messy)
    defects = Counter(labels["defect"])
    for reason in ("blank narrative", "duplicate id", "missing id", "unparseable event date"):
        assert defects[reason] > 0, reason
    noise = Counter(n for cell in labels["noise"] for n in cell.split(";") if n)
    for kind in ("abbreviations", "bullets", "whitespace", "boilerplate", "mojibake"):
        assert noise[kind] > 0, kind
    for kind, path in messy.files.items():
        frame = _read(path)
        rows = labels[labels["kind"] == kind].reset_index(drop=True)
        blank = rows["defect"] == "blank narrative"
        text = frame[list(NARRATIVE_COLUMNS[kind])].astype(str).agg("".join, axis=1)
        assert (text[blank].str.strip() == "").all()
        assert (text[~blank].str.strip() != "").all()
    utf8_text = messy.files["claim"].read_text(encoding="utf-8-sig")
    utf8_text += _read(messy.files["complaint"]).to_string()
    assert "â€™" in utf8_text or "â€“" in utf8_text


def test_clean_exports_have_no_defects(clean):
    labels = _labels(clean)
    assert (labels["defect"] == "").all() and (labels["noise"] == "").all()
    for kind, path in clean.files.items():
        frame = _read(path)
        text = frame[list(NARRATIVE_COLUMNS[kind])].astype(str).agg(" ".join, axis=1)
        assert (text.str.strip() != "").all()
        assert not text.str.contains("â€").any()
        assert not text.str.contains("generated by Datix").any()


def test_long_narratives_exist_for_chunking(clean):
    incidents = _read(clean.files["incident"])
    words = incidents["Description"].str.split().str.len()
    assert 0.04 < (words > 300).mean() < 0.2


def test_readme_says_synthetic(messy):
    readme = (messy.out_dir / "README.txt").read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme and "themes demo" in readme
    assert _read(messy.files["incident"])["Site"].str.startswith("Synthetic").all()


def test_deid_spans_are_exact_and_cover_every_type():
    texts = deid_testset(seed=0, n_texts=300)
    assert len(texts) == 300
    counts: Counter[str] = Counter()
    for item in texts:
        assert 1 <= len({t for *_, t in item.spans}) <= 4
        for start, end, kind in item.spans:
            value = item.text[start:end]
            assert value and value == value.strip()
            counts[kind] += 1
        assert item.clinical_spans
        for start, end in item.clinical_spans:
            assert item.text[start:end].strip()
            assert not any(s < end and start < e for s, e, _ in item.spans)
    assert sum(counts.values()) >= 500
    assert all(counts[t] >= 40 for t in IDENTIFIER_TYPES), counts


def test_deid_texts_include_eponymous_conditions():
    texts = deid_testset(seed=1, n_texts=100)
    eponyms = [c for c in CONDITIONS if "'" in c]
    hits = sum(any(e in t.text for e in eponyms) for t in texts)
    assert hits > 30


def test_no_surname_is_also_a_clinical_eponym():
    clinical = " ".join(CONDITIONS).lower()
    clashing = [s for s in SURNAMES if re.search(rf"\b{re.escape(s.lower())}\b", clinical)]
    assert not clashing
