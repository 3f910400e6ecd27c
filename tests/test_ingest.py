from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from themes.errors import IngestError, MissingColumnError
from themes.ingest import ingest_file, parse_date, read_export
from themes.records import load_mapping
from themes.steps import pending_clean
from themes.store import quarantine, raw_records

SOURCES = Path("config/sources")


def incident_rows() -> list[dict[str, str]]:
    base = {
        "Reported date": "02/03/2025",
        "Site": "Synthetic General",
        "Location (exact)": "Cedar Ward",
        "Specialty": "Elderly care",
        "Incident category": "Slips, trips, falls",
        "Severity of harm": "Low harm",
        "Approval status": "Finally approved",
        "Action taken": "Obs checked.",
        "Outcome": "",
    }
    return [
        {
            **base,
            "ID": "INC1",
            "Incident date": "01/03/2025",
            "Description": "Pt found on floor – café £5",
        },
        {**base, "ID": "INC2", "Incident date": "2025-03-04", "Description": "Wrong dose given."},
        {**base, "ID": "", "Incident date": "01/03/2025", "Description": "No id here"},
        {**base, "ID": "INC3", "Incident date": "31/02/2025", "Description": "Bad date"},
        {
            **base,
            "ID": "INC4",
            "Incident date": "05/03/2025",
            "Description": " ",
            "Action taken": "",
        },
        {**base, "ID": "INC2", "Incident date": "06/03/2025", "Description": "Duplicate id"},
        {**base, "ID": "INC5", "Incident date": "45719", "Description": "Excel serial date"},
    ]


def write_csv(path: Path, rows: list[dict[str, str]], encoding: str) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, encoding=encoding)
    return path


def count(store, table) -> int:  # noqa: ANN001
    with store.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
def test_csv_encodings_read_the_same(tmp_path: Path, encoding: str) -> None:
    path = write_csv(tmp_path / "inc.csv", incident_rows(), encoding)
    frame = read_export(path)
    assert frame.columns[0] == "Reported date"  # no BOM left on the first header
    assert "café £5" in frame.loc[0, "Description"]
    assert "–" in frame.loc[0, "Description"]


def test_every_supported_format_gives_the_same_records(tmp_path: Path, store) -> None:  # noqa: ANN001
    rows = incident_rows()[:2]
    frame = pd.DataFrame(rows)
    paths = [
        write_csv(tmp_path / "a.csv", rows, "cp1252"),
        tmp_path / "b.xlsx",
        tmp_path / "c.jsonl",
        tmp_path / "d.parquet",
    ]
    frame.to_excel(paths[1], index=False)
    frame.to_json(paths[2], orient="records", lines=True, force_ascii=False)
    frame.to_parquet(paths[3])
    mapping = load_mapping(SOURCES, "datix_incident")
    narratives = set()
    for p in paths:
        report = ingest_file(store, p, mapping, force=True)
        assert report.quarantined == 0, p
        with store.connect() as conn:
            narratives.add(
                conn.execute(
                    sa.select(raw_records.c.narrative).where(raw_records.c.record_id == "INC1")
                ).scalar_one()
            )
    assert len(narratives) == 1
    (text,) = narratives
    assert text.startswith("Description: Pt found on floor")
    assert "Action taken: Obs checked." in text
    assert "Outcome:" not in text  # blank fields are not joined


def test_xlsx_native_dates_and_serials(tmp_path: Path, store) -> None:  # noqa: ANN001
    rows = incident_rows()[:2]
    rows[0]["Incident date"] = datetime(2025, 3, 1)  # type: ignore[assignment]
    rows[1]["Incident date"] = 45720  # type: ignore[assignment]
    path = tmp_path / "x.xlsx"
    pd.DataFrame(rows).to_excel(path, index=False)
    ingest_file(store, path, load_mapping(SOURCES, "datix_incident"))
    with store.connect() as conn:
        dates = dict(
            conn.execute(sa.select(raw_records.c.record_id, raw_records.c.event_date)).all()
        )
    assert dates == {"INC1": date(2025, 3, 1), "INC2": date(2025, 3, 4)}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("01/03/2025", date(2025, 3, 1)),
        ("1/3/25", date(2025, 3, 1)),
        ("2025-03-01", date(2025, 3, 1)),
        ("2025-03-01 14:05:00", date(2025, 3, 1)),
        ("45717", date(2025, 3, 1)),
        (45717, date(2025, 3, 1)),
        ("", None),
    ],
)
def test_parse_date_formats(value: object, expected: date | None) -> None:
    assert parse_date(value) == expected


@pytest.mark.parametrize("value", ["31/02/2025", "unknown", "13/13/2024", "2025-02-30"])
def test_parse_date_rejects_nonsense(value: str) -> None:
    with pytest.raises(ValueError):
        parse_date(value)


def test_bad_rows_are_quarantined_with_file_row_and_reason(tmp_path: Path, store) -> None:  # noqa: ANN001
    path = write_csv(tmp_path / "inc.csv", incident_rows(), "cp1252")
    report = ingest_file(store, path, load_mapping(SOURCES, "datix_incident"))
    assert (report.n_rows, report.inserted, report.quarantined) == (7, 3, 4)
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(
                quarantine.c.row_number,
                quarantine.c.record_id,
                quarantine.c.reason,
                quarantine.c.file,
            ).order_by(quarantine.c.row_number)
        ).all()
    by_row = {r[0]: r for r in rows}
    assert set(by_row) == {4, 5, 6, 7}
    assert "missing id" in by_row[4][2] and "'ID'" in by_row[4][2]
    assert "unparseable event date" in by_row[5][2] and "Incident date" in by_row[5][2]
    assert "empty narrative" in by_row[6][2]
    assert "duplicate id 'INC2'" in by_row[7][2] and "row 3" in by_row[7][2]
    assert all(r[3] == str(path) for r in rows)
    assert report.reasons == {
        "missing id": 1,
        "unparseable event date": 1,
        "empty narrative": 1,
        "duplicate id": 1,
    }
    # nothing is lost: the raw cells of each bad row are kept
    with store.connect() as conn:
        raw = json.loads(
            conn.execute(
                sa.select(quarantine.c.raw_json).where(quarantine.c.row_number == 7)
            ).scalar_one()
        )
    assert raw["Description"] == "Duplicate id"


def test_missing_required_column_names_column_file_and_key_and_writes_nothing(
    tmp_path: Path,
    store,  # noqa: ANN001
) -> None:
    rows = [{k: v for k, v in r.items() if k != "Incident date"} for r in incident_rows()]
    path = write_csv(tmp_path / "inc.csv", rows, "utf-8")
    with pytest.raises(MissingColumnError) as info:
        ingest_file(store, path, load_mapping(SOURCES, "datix_incident"))
    message = str(info.value)
    assert "'Incident date'" in message
    assert str(path) in message
    assert "sources.datix_incident.columns.event_date" in message
    assert count(store, raw_records) == 0 and count(store, quarantine) == 0


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(IngestError, match="unsupported file type '.txt'"):
        read_export(path)


def test_a_missing_file_or_a_folder_is_a_clear_error(tmp_path: Path, store) -> None:  # noqa: ANN001
    mapping = load_mapping(SOURCES, "datix_incident")
    with pytest.raises(IngestError, match="nofile.csv: no such file"):
        ingest_file(store, tmp_path / "nofile.csv", mapping)
    with pytest.raises(IngestError, match="is a folder, not an export file"):
        ingest_file(store, tmp_path, mapping)
    assert count(store, raw_records) == 0 and count(store, quarantine) == 0


def test_reingest_same_file_changes_nothing(tmp_path: Path, store) -> None:  # noqa: ANN001
    path = write_csv(tmp_path / "inc.csv", incident_rows(), "cp1252")
    mapping = load_mapping(SOURCES, "datix_incident")
    ingest_file(store, path, mapping)
    before = (count(store, raw_records), count(store, quarantine))
    again = ingest_file(store, path, mapping)
    assert again.skipped_unchanged_file
    forced = ingest_file(store, path, mapping, force=True)
    assert (forced.inserted, forced.updated, forced.unchanged) == (0, 0, 3)
    assert (count(store, raw_records), count(store, quarantine)) == before


def test_changed_record_is_updated_and_reprocessed(tmp_path: Path, store) -> None:  # noqa: ANN001
    mapping = load_mapping(SOURCES, "datix_incident")
    rows = incident_rows()[:2]
    ingest_file(store, write_csv(tmp_path / "day1.csv", rows, "utf-8"), mapping)
    # pretend day 1 was fully cleaned: nothing pending after marking clean rows
    from themes.store import clean_texts, utcnow

    with store.begin() as conn:
        for rid, _, raw_hash in pending_clean(store):
            conn.execute(
                clean_texts.insert().values(
                    record_id=rid,
                    raw_hash=raw_hash,
                    clean_text="x",
                    clean_hash="h",
                    entity_counts="{}",
                    cleaned_at=utcnow(),
                )
            )
    assert pending_clean(store) == []
    rows[1] = {**rows[1], "Description": "Wrong dose given; corrected next day."}
    report = ingest_file(store, write_csv(tmp_path / "day2.csv", rows, "utf-8"), mapping)
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 1)
    assert [r[0] for r in pending_clean(store)] == ["INC2"]


def test_same_id_from_another_kind_is_quarantined(tmp_path: Path, store) -> None:  # noqa: ANN001
    ingest_file(
        store,
        write_csv(tmp_path / "i.csv", incident_rows()[:1], "utf-8"),
        load_mapping(SOURCES, "datix_incident"),
    )
    complaint = {
        "Complaint reference": "INC1",
        "Date of event": "01/03/2025",
        "Date received": "03/03/2025",
        "Complaint summary": "My father fell.",
        "Desired outcome": "",
        "Response summary": "",
    }
    report = ingest_file(
        store,
        write_csv(tmp_path / "c.csv", [complaint], "utf-8"),
        load_mapping(SOURCES, "complaints"),
    )
    assert report.inserted == 0 and report.quarantined == 1
