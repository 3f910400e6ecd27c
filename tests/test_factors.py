"""Contributory factors and harm: framework files, negation, harm mapping, nightly step, CLI."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from themes.errors import ConfigError, ThemesError
from themes.harm import judge_harm, load_harm_scheme, structured_level

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORK = ROOT / "config" / "factors" / "yorkshire.toml"
HARM = ROOT / "config" / "factors" / "harm.toml"
NEGATION_SET = ROOT / "tests" / "data" / "negation_sentences.csv"


# -- configuration files ----------------------------------------------------------------------
def test_default_framework_has_the_yorkshire_domains() -> None:
    from themes.factors import load_framework

    fw = load_framework(FRAMEWORK)
    ids = [f.id for f in fw.factors]
    assert len(ids) == len(set(ids)) >= 15
    assert {f.domain for f in fw.factors} == {
        "Situational factors",
        "Local working conditions",
        "Organisational factors",
        "External factors",
    }
    assert {"staffing", "workload", "communication", "equipment", "training", "policy"} <= set(ids)
    assert all(f.examples and f.phrases and f.description for f in fw.factors)


def test_framework_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    from themes.factors import load_framework

    bad = tmp_path / "fw.toml"
    bad.write_text('[[factor]]\nid = "staffing"\nname = "Staffing"\ndomain = "Local"\n')
    with pytest.raises(ConfigError, match=r"fw\.toml.*number 1.*'description'"):
        load_framework(bad)
    with pytest.raises(ConfigError, match="factors.framework_file"):
        load_framework(tmp_path / "missing.toml")


def test_harm_mapping_errors_name_the_value(tmp_path: Path) -> None:
    bad = tmp_path / "harm.toml"
    bad.write_text(
        'levels = ["none", "fatal"]\n[labels]\nnone = "No harm"\nfatal = "Fatal"\n'
        '[structured]\n"Catastrophic" = "deadly"\n'
    )
    with pytest.raises(ConfigError, match=r"harm\.toml.*'Catastrophic'.*'deadly'"):
        load_harm_scheme(bad)


def test_datix_severity_values_map_to_lfpse_levels() -> None:
    scheme = load_harm_scheme(HARM)
    assert scheme.levels == ("none", "low", "moderate", "severe", "fatal")
    cases = {
        "No harm": "none",
        "Near miss": "none",
        " low  HARM ": "low",
        "Moderate harm": "moderate",
        "Major": "severe",
        "Death": "fatal",
        "Catastrophic": "fatal",
    }
    for value, level in cases.items():
        assert structured_level(scheme, value) == level, value
    assert structured_level(scheme, "") is None
    assert structured_level(scheme, "Something else") is None


def test_structured_harm_wins_and_text_estimate_is_flagged() -> None:
    scheme = load_harm_scheme(HARM)
    cues = [("moderate", "X-ray showed a fracture.", False)]
    from_field = judge_harm(scheme, "Low harm", cues)
    assert (from_field.level, from_field.source) == ("low", "structured")
    estimated = judge_harm(scheme, None, cues)
    assert (estimated.level, estimated.source) == ("moderate", "estimated")
    assert estimated.evidence == "X-ray showed a fracture."
    # an explicit statement outranks a level only implied by an outcome
    stated = judge_harm(scheme, "", [*cues, ("low", "Minor harm only.", True)])
    assert stated.level == "low"
    assert judge_harm(scheme, None, []).source == "unknown"


# -- the tagger (real spaCy tokenizer + all-MiniLM-L6-v2) -------------------------------------
@pytest.fixture(scope="module")
def tagger():  # noqa: ANN201
    from themes.factors import build_tagger
    from themes.settings import load_settings

    return build_tagger(load_settings())


def test_tag_before_fit_is_a_clear_error() -> None:
    from themes.factors import FactorTagger, load_framework

    unfitted = FactorTagger(load_framework(FRAMEWORK), load_harm_scheme(HARM), embedder=None)
    with pytest.raises(ThemesError, match="before fit"):
        unfitted.tag(["The ward was short staffed."])


@pytest.mark.slow
def test_negated_factors_are_not_tagged(tagger) -> None:  # noqa: ANN001
    with NEGATION_SET.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    negated = [r for r in rows if r["negated"] == "1"]
    affirmed = [r for r in rows if r["negated"] == "0"]
    assert len(negated) >= 40 and len(affirmed) >= 10
    results = tagger.tag([r["sentence"] for r in rows])
    wrong = []
    for r, res in zip(rows, results, strict=True):
        found = {t.factor_id for t in res.factors}
        if (r["factor"] in found) != (r["negated"] == "0"):
            wrong.append((r["sentence"], r["factor"], sorted(found)))
    assert not wrong, f"{len(wrong)} sentences tagged wrongly: {wrong}"


@pytest.mark.slow
def test_tags_carry_confidence_and_the_evidence_sentence(tagger) -> None:  # noqa: ANN001
    text = (
        "Pt found on the floor by the bed.\n"
        "The ward was two nurses short that night. No equipment faults were found.\n"
        "Staff fatigue may have contributed to the error."
    )
    (res,) = tagger.tag([text])
    by_id = {t.factor_id: t for t in res.factors}
    assert by_id["staffing"].evidence == "The ward was two nurses short that night."
    assert by_id["staffing"].method == "rule+dense"
    assert "equipment" not in by_id
    hedged = by_id["individual"]
    assert hedged.hedged and hedged.confidence < by_id["staffing"].confidence
    assert all(0 < t.confidence <= 1 for t in res.factors)


@pytest.mark.slow
def test_harm_and_outcomes_from_text_respect_negation(tagger) -> None:  # noqa: ANN001
    texts = [
        "CT head showed no fracture. No harm was caused.",
        "X-ray confirmed a fractured wrist.",
        "Sadly the patient died two days later.",
        "Obs stable.",
    ]
    res = tagger.tag(texts, [None, None, None, "Severe harm"])
    assert [r.harm.level for r in res] == ["none", "moderate", "fatal", "severe"]
    assert [r.harm.source for r in res] == ["estimated"] * 3 + ["structured"]
    assert "fracture" not in res[0].outcomes and "fracture" in res[1].outcomes
    assert "death" in res[2].outcomes


# -- the nightly flow on demo data (shared demo_run) ------------------------------------------
def _labels(demo_run) -> dict[str, dict[str, str]]:  # noqa: ANN001
    with demo_run["manifest"].labels_path.open(encoding="utf-8") as f:
        return {r["record_id"]: r for r in csv.DictReader(f) if not r["defect"]}


@pytest.mark.slow
def test_nightly_flow_tags_planted_factors_and_harm(demo_run) -> None:  # noqa: ANN001
    from themes.factors import case_impacts, factor_tags
    from themes.steps import open_store

    summary = demo_run["summary"]["factors"]
    assert summary["tagged"] > 0 and summary["themes_profiled"] >= 5
    store = open_store(demo_run["settings"])
    truth = _labels(demo_run)
    with store.connect() as conn:
        found: dict[str, set[str]] = {}
        for rid, fid in conn.execute(sa.select(factor_tags.c.record_id, factor_tags.c.factor_id)):
            found.setdefault(rid, set()).add(fid)
        harm = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                sa.select(
                    case_impacts.c.record_id, case_impacts.c.harm_level, case_impacts.c.harm_source
                )
            )
        }
    ids = [rid for rid in truth if rid in harm]
    assert len(ids) >= 0.95 * len(truth)
    tp = fp = fn = 0
    negated_tagged = 0
    for rid in ids:
        planted = set(filter(None, truth[rid]["factors"].split(";")))
        got = found.get(rid, set())
        tp, fp, fn = tp + len(planted & got), fp + len(got - planted), fn + len(planted - got)
        negated_tagged += len(set(filter(None, truth[rid]["negated_factors"].split(";"))) & got)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.8, f"factor micro-F1 {f1:.3f} (tp {tp}, fp {fp}, fn {fn})"
    negated_total = sum(1 for rid in ids if truth[rid]["negated_factors"])
    assert negated_tagged <= 0.05 * negated_total
    absent = [rid for rid in ids if truth[rid]["harm_recorded"] == "0"]
    assert len(absent) > 100
    right = sum(harm[rid][0] == truth[rid]["harm_level"] for rid in absent)
    assert right / len(absent) >= 0.9
    assert all(harm[rid][1] == "estimated" for rid in absent if harm[rid][0])
    present = [rid for rid in ids if truth[rid]["harm_recorded"] == "1"]
    assert all(harm[rid] == (truth[rid]["harm_level"], "structured") for rid in present)


@pytest.mark.slow
def test_theme_profiles_are_stored_and_shown_by_the_cli(demo_run) -> None:  # noqa: ANN001
    from themes.cli import app
    from themes.factors import (
        config_hash,
        factor_profile,
        pending_records,
        stored_factor_profile,
        update_factors,
    )
    from themes.steps import open_store
    from themes.store import assignments

    settings = demo_run["settings"]
    store = open_store(settings)
    # the discovered theme holding most of the planted "staffing" cases
    truth = _labels(demo_run)
    with store.connect() as conn:
        found = dict(conn.execute(sa.select(assignments.c.record_id, assignments.c.theme_id)).all())
    votes = Counter(
        found[r] for r, lab in truth.items() if lab["theme"] == "staffing" and r in found
    )
    staffing = {"theme_id": votes.most_common(1)[0][0]}
    # every record is tagged, so a second pass has nothing to do
    assert pending_records(store, config_hash(settings.factors)) == []
    assert update_factors(store, settings)["tagged"] == 0
    runner = CliRunner()
    result = runner.invoke(
        app, ["factors", str(staffing["theme_id"]), "--json"], env=demo_run["env"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["theme_id"] == staffing["theme_id"] and data["factors"] and data["harm"]
    live = {r["factor_id"]: r for r in factor_profile(store, staffing["theme_id"])}
    stored = {r["factor_id"]: r for r in stored_factor_profile(store, staffing["theme_id"])}
    assert {k: (v["cases"], v["share"]) for k, v in live.items()} == {
        k: (v["cases"], v["share"]) for k, v in stored.items()
    }
    top = data["factors"][0]
    assert top["factor_id"] == "staffing" and top["lift"] > 1.5
    assert sum(r["cases"] for r in data["harm"]) == data["factors"][0]["theme_cases"]
    periods = {r["period"] for r in data["factor_trend"]}
    assert len(periods) >= 4
    # one record, with the evidence sentence taken from its own de-identified text
    with store.connect() as conn:
        from themes.factors import factor_tags

        rid = conn.execute(sa.select(factor_tags.c.record_id).limit(1)).scalar_one()
    result = runner.invoke(app, ["record", rid, "--json"], env=demo_run["env"])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.output)
    assert rec["factors"] and all(f["evidence"] in rec["text"] for f in rec["factors"])
    assert rec["harm"]["level"] is not None
    missing = runner.invoke(app, ["record", "NOPE000", "--json"], env=demo_run["env"])
    assert missing.exit_code == 1 and "NOPE000" in missing.output
