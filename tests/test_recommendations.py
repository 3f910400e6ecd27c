"""Recommendation loaders (CSV, JSON, YAML), the PFD importer and the starter set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from themes.recommendations import (
    RecommendationError,
    import_file,
    list_rejects,
    load_dir,
    load_file,
    load_pfd,
    load_store,
    save,
    split_concerns,
    sync_dir,
)

PREAMBLE = (
    "During the course of the inquest the evidence revealed matters giving rise to concern. "
    "In my opinion there is a risk that future deaths will occur unless action is taken. In "
    "the circumstances it is my statutory duty to report to you.\n"
    "The MATTERS OF CONCERN are as follows. –\n"
)


def _csv(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})
    return path


def test_split_concerns_numbered_items_keep_their_sub_items() -> None:
    text = PREAMBLE + (
        "1. There was no system to make sure that abnormal blood results were reviewed\n"
        "by a doctor on the same day.\n"
        "2. Staff were not trained to use the early warning score:\n"
        "a) observations were not repeated;\n"
        "b) escalation did not happen.\n"
        "3. The ward did not have enough registered nurses at night."
    )
    items = split_concerns(text)
    assert len(items) == 3
    assert items[0].startswith("There was no system")
    assert "a) observations were not repeated" in items[1]
    assert "statutory duty" not in " ".join(items)


def test_split_concerns_bracketed_letters_and_bullets() -> None:
    letters = (
        "(a) The pharmacy closed at weekends without cover.\n(b) Insulin charts were paper based."
    )
    assert len(split_concerns(letters)) == 2
    bullets = (
        "• The lift was out of order for weeks.\n• No risk assessment had been done for stairs."
    )
    assert [i.split()[0] for i in split_concerns(bullets)] == ["The", "No"]


def test_split_concerns_without_markers_is_one_item_and_boilerplate_alone_is_none() -> None:
    one = "Lack of any signage to warn motorists that deer cross the road at this point."
    assert split_concerns(one) == [one]
    assert split_concerns(PREAMBLE) == []
    # stray numbers that do not count up (a dose, a year) do not split
    stray = "The dose was\n5. mg which is high\n12. patients were on the ward at the time."
    assert len(split_concerns(stray)) == 1


def test_split_concerns_numbered_items_on_one_line() -> None:
    bracketed = (
        "(1) There was no falls risk assessment. (2) Bed rails were not checked. "
        "(3) Staff were not trained."
    )
    assert split_concerns(PREAMBLE + bracketed) == [
        "There was no falls risk assessment.",
        "Bed rails were not checked.",
        "Staff were not trained.",
    ]
    # a number inside a sentence ("section 3.", "aged 2)") is not a marker
    dotted = (
        "1. There was no falls risk assessment, contrary to section 3. of the policy. "
        "2. Bed rails were not checked. 3. Staff were not trained."
    )
    items = split_concerns(dotted)
    assert len(items) == 3 and "section 3. of the policy" in items[0]
    closing = "1) The child, aged 2) the dose, was not weighed. 2) Staff were not trained."
    assert split_concerns(closing) == [
        "The child, aged 2) the dose, was not weighed.",
        "Staff were not trained.",
    ]
    # numbers that do not start at 1 and count up do not split
    prose = "The ward had 12 beds. 3. was the bay where she fell. 5. staff were on shift."
    assert split_concerns(prose) == [prose]


def _pfd_rows() -> list[dict[str, str]]:
    return [
        {
            "id": "2020-0001",
            "url": "https://example.org/pfd/2020-0001/",
            "date": "2020-03-04",
            "coroner": "A Coroner",
            "area": "Somewhere",
            "receiver": "The Trust; The CQC",
            "investigation": "",
            "circumstances": "The patient fell on the ward.",
            "concerns": PREAMBLE + "1. Falls risk assessments were not done on admission.\n"
            "2. Bed rails were used without an assessment of the risk they pose.",
            "judiciary_category": "Hospital Death (Clinical Procedures and medical management)",
        },
        {
            "id": "2020-0002",
            "url": "https://example.org/pfd/2020-0002/",
            "date": "12/05/2020",
            "receiver": "The Council",
            "concerns": PREAMBLE,  # nothing after the preamble: empty concerns
        },
        {
            "id": "2020-0001",  # duplicate report id
            "url": "https://example.org/pfd/2020-0001/",
            "date": "2020-03-04",
            "receiver": "The Trust",
            "concerns": "A different text.",
        },
        {
            "id": "",
            "url": "https://www.judiciary.uk/prevention-of-future-death-reports/jane-doe/",
            "date": "not a date",
            "receiver": "NHS England",
            "concerns": "There is no national guidance on observing patients after a fall.",
        },
    ]


def test_pfd_import_splits_concerns_and_keeps_report_date_and_recipients(tmp_path: Path) -> None:
    cols = ["id", "url", "date", "coroner", "area", "receiver", "investigation"]
    cols += ["circumstances", "concerns", "judiciary_category"]
    path = _csv(tmp_path / "pfd.csv", _pfd_rows(), cols)
    res = load_pfd(path)
    ids = [r.id for r in res.recommendations]
    assert ids[:2] == ["pfd-2020-0001-1", "pfd-2020-0001-2"]
    # a report without an id gets one from a hash of its URL, never the URL's last part,
    # which on judiciary.uk is the deceased's name
    no_id = res.recommendations[2]
    assert no_id.id.startswith("pfd-url-") and "jane" not in no_id.id + no_id.source
    assert no_id.document == load_pfd(path).recommendations[2].document  # stable
    first = res.recommendations[0]
    assert first.document == "2020-0001" and first.year == 2020
    assert first.addressee == "The Trust; The CQC"
    assert first.date is not None and first.date.isoformat() == "2020-03-04"
    assert "pfd" in first.tags
    reasons = {(r.row, r.reason.split(" '")[0]) for r in res.rejected}
    assert reasons == {(3, "empty concerns"), (4, "duplicate report id")}
    # the report without an id: its bad date is kept and reported
    assert res.recommendations[2].year is None
    assert any("unreadable date" in w for w in res.warnings)
    # nothing lost: every row is either an item source or a rejection with a reason
    assert len({r.document for r in res.recommendations}) + len(res.rejected) == 4


def test_pfd_import_reads_as_many_rows_as_the_file_has(tmp_path: Path, store) -> None:  # noqa: ANN001
    path = _csv(tmp_path / "pfd.csv", _pfd_rows(), ["id", "url", "date", "receiver", "concerns"])
    with path.open("a", encoding="utf-8") as f:
        f.write("\n")  # a blank trailing line is not a row
    # 4 data rows: one report with two items, one with one, two rejected
    report = import_file(store, path, "pfd", deidentify=lambda texts: list(texts))
    assert report["read"] == 4
    assert (report["inserted"], report["rejected"]) == (3, 2)


def test_pfd_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path / "pfd.csv", [{"id": "1", "url": "u", "date": "2020-01-01"}])
    with pytest.raises(RecommendationError) as e:
        load_pfd(path)
    assert (
        "pfd.csv" in str(e.value) and "'receiver'" in str(e.value) and "'concerns'" in str(e.value)
    )


def test_pfd_import_needs_a_deidentifier(tmp_path: Path, store) -> None:  # noqa: ANN001
    path = _csv(tmp_path / "pfd.csv", _pfd_rows()[:1])
    with pytest.raises(RecommendationError, match="de-identif"):
        import_file(store, path, "pfd")
    assert load_store(store) == []


@pytest.mark.slow
def test_pfd_import_stores_only_deidentified_text(tmp_path: Path, store, settings) -> None:  # noqa: ANN001
    from themes.steps import clean_texts_for_evaluation

    rows = _pfd_rows()[:1]
    rows[0]["concerns"] = (
        "1. Mr John Whitfield was not seen by a doctor for six hours after his fall.\n"
        "2. Staff did not call Mrs Sarah Whitfield when her husband deteriorated."
    )
    path = _csv(tmp_path / "pfd.csv", rows)
    report = import_file(
        store, path, "pfd", deidentify=lambda t: clean_texts_for_evaluation(settings, t)
    )
    assert report["inserted"] == 2
    texts = " ".join(r.text for r in load_store(store))
    assert "Whitfield" not in texts and "[PERSON]" in texts
    assert "fall" in texts


def test_csv_loader_rejects_bad_rows_with_reasons(tmp_path: Path) -> None:
    rows = [
        {"id": "r1", "source": "Local review 2024", "text": "Check bed rails.", "year": "2024"},
        {"id": "r2", "source": "Local review 2024", "text": "", "year": "2024"},
        {"id": "r1", "source": "Local review 2024", "text": "Duplicate.", "year": "2024"},
        {"id": "r3", "source": "Local review 2024", "text": "Bad year.", "year": "twenty"},
        {"id": "r4", "source": "Local review 2024", "text": "Tags.", "tags": "falls|beds"},
    ]
    cols = ["id", "source", "text", "year", "tags"]
    res = load_file(_csv(tmp_path / "local.csv", rows, cols))
    assert [r.id for r in res.recommendations] == ["r1", "r4"]
    assert res.recommendations[1].tags == ("falls", "beds")
    got = {(r.row, r.reason) for r in res.rejected}
    assert (3, "'text' is empty") in got
    assert (4, "duplicate id 'r1' (first at row 2)") in got
    assert any(row == 5 and "year" in reason for row, reason in got)


def test_csv_missing_required_column_is_a_clear_error(tmp_path: Path) -> None:
    path = _csv(tmp_path / "bad.csv", [{"id": "x", "text": "t"}])
    with pytest.raises(RecommendationError, match=r"bad\.csv.*'source'"):
        load_file(path)


def test_yaml_and_json_sets_with_defaults(tmp_path: Path) -> None:
    y = tmp_path / "set.yaml"
    y.write_text(
        "defaults:\n  source: Review A\n  year: 2022\n  url: https://example.org/a\n"
        "recommendations:\n  - id: a1\n    number: '1'\n    text: Do this.\n"
        "  - id: a2\n    text: Do that.\n    colour: blue\n"
    )
    res = load_file(y)
    assert [r.id for r in res.recommendations] == ["a1"]
    assert res.recommendations[0].url == "https://example.org/a"
    assert res.recommendations[0].year == 2022
    assert "colour" in res.rejected[0].reason and res.rejected[0].row == 2
    j = tmp_path / "set.json"
    j.write_text(json.dumps([{"id": "b1", "source": "Review B", "text": "Do it."}]))
    assert load_file(j).recommendations[0].source == "Review B"
    bad = tmp_path / "broken.yaml"
    bad.write_text("recommendations: [unclosed")
    with pytest.raises(RecommendationError, match="broken.yaml.*not valid YAML"):
        load_file(bad)


def test_yaml_and_json_entry_date_is_kept_and_gives_the_year(tmp_path: Path, store) -> None:  # noqa: ANN001
    y = tmp_path / "dated.yaml"
    y.write_text(
        "defaults:\n  source: Review A\n"
        "recommendations:\n"
        "  - id: d1\n    text: Dated, no year.\n    date: 2023-05-01\n"
        "  - id: d2\n    text: Dated and a matching year.\n    date: 2021-02-03\n"
        "    year: 2021\n"
        "  - id: d3\n    text: Year and date disagree.\n    date: 2021-02-03\n    year: 2020\n"
        "  - id: d4\n    text: Not a date.\n    date: soon\n"
    )
    res = load_file(y)
    d1, d2 = res.recommendations
    assert d1.date is not None and d1.date.isoformat() == "2023-05-01" and d1.year == 2023
    assert d2.date is not None and d2.date.isoformat() == "2021-02-03" and d2.year == 2021
    got = {(r.row, r.reason.split(":")[0]) for r in res.rejected}
    assert got == {
        (3, "'year' 2020 does not match 'date' 2021-02-03"),
        (4, "'date' is not a date (use yyyy-mm-dd)"),
    }
    save(store, res, file=str(y))
    assert [r.date for r in load_store(store)] == [d1.date, d2.date]
    j = tmp_path / "dated.json"
    j.write_text(json.dumps([{"id": "j1", "source": "B", "text": "Do.", "date": "2019-07-08"}]))
    (rec,) = load_file(j).recommendations
    assert rec.as_dict()["date"] == "2019-07-08" and rec.year == 2019


def test_unknown_suffix_asks_for_format(tmp_path: Path) -> None:
    p = tmp_path / "recs.txt"
    p.write_text("x")
    with pytest.raises(RecommendationError, match="--format"):
        load_file(p)


def test_starter_set_loads_cleanly_and_is_marked_to_check() -> None:
    res = load_dir(Path("config/recommendations"))
    assert res.rejected == []
    assert len(res.recommendations) >= 25
    sources = {r.source.split()[0] for r in res.recommendations}
    assert {"Ockenden", "Reading", "Report", "The"} <= sources
    for r in res.recommendations:
        assert r.url.startswith("https://www.gov.uk/"), r.id
        assert "summary-to-check" in r.tags, r.id
    ockenden = [r for r in res.recommendations if r.id.startswith("ockenden-2022-iea")]
    assert len(ockenden) == 15


def test_save_is_idempotent_and_keeps_rejects(tmp_path: Path, store) -> None:  # noqa: ANN001
    rows = [
        {"id": "r1", "source": "S", "text": "One."},
        {"id": "r1", "source": "S", "text": "Dup."},
    ]
    path = _csv(tmp_path / "s.csv", rows)
    first = save(store, load_file(path), file=str(path))
    again = save(store, load_file(path), file=str(path))
    assert (first["inserted"], first["rejected"]) == (1, 1)
    assert (again["inserted"], again["unchanged"]) == (0, 1)
    assert [r["reason"] for r in list_rejects(store)] == ["duplicate id 'r1' (first at row 2)"]
    changed = [{"id": "r1", "source": "S", "text": "One, changed."}]
    assert save(store, load_file(_csv(path, changed)), file=str(path))["updated"] == 1


def test_duplicate_ids_across_files_in_the_folder_are_rejected(tmp_path: Path, store) -> None:  # noqa: ANN001
    _csv(tmp_path / "a.csv", [{"id": "x1", "source": "A", "text": "From A."}])
    _csv(tmp_path / "b.csv", [{"id": "x1", "source": "B", "text": "From B."}])
    _csv(tmp_path / "c.csv", [{"id": "c1", "source": "C", "text": "From C."}] * 2)
    report = sync_dir(store, tmp_path)
    assert report["read"] == 4
    assert report["inserted"] == 2 and report["rejected"] == 2
    assert {r.id: r.source for r in load_store(store)} == {"c1": "C", "x1": "A"}
    # every rejected row is listed with its file and row number
    assert list_rejects(store) == [
        {
            "file": str(tmp_path / "b.csv"),
            "row_number": 2,
            "reason": f"duplicate id 'x1' (also in {tmp_path / 'a.csv'} row 2)",
        },
        {
            "file": str(tmp_path / "c.csv"),
            "row_number": 3,
            "reason": "duplicate id 'c1' (first at row 2)",
        },
    ]
