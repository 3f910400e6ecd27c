"""Read exports (CSV, XLSX, JSON Lines, Parquet) and map them onto validated records.

Bad rows are never dropped: they come back as `QuarantinedRow`s with a reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from themes.errors import IngestError, MissingColumnError
from themes.records import (
    STRUCTURED_FIELDS,
    QuarantinedRow,
    Record,
    SourceMapping,
    text_hash,
)
from themes.store import Store, ingested_files, quarantine, raw_records, utcnow

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".xlsx", ".xlsm", ".jsonl", ".ndjson", ".parquet")
EXCEL_EPOCH = date(1899, 12, 30)
_EXCEL_SERIAL = re.compile(r"^\d{4,6}(\.\d+)?$")
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$")
_NUMERIC_DATE = re.compile(
    r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2}|\d{4})(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?$"
)


# -- reading -----------------------------------------------------------------------------
def read_export(path: Path) -> pd.DataFrame:
    """Read an export into a frame of strings/objects; nothing is coerced silently.

    CSV is decoded as UTF-8 (with or without BOM), falling back to Windows-1252 as Excel
    writes it.
    """
    suffix = path.suffix.lower()
    if not path.is_file():
        raise IngestError(f"{path}: file not found.")
    try:
        if suffix == ".csv":
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                text = raw.decode("cp1252", errors="strict")
                log.info("%s: not UTF-8, read as Windows-1252", path.name)
            from io import StringIO

            return pd.read_csv(StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
        if suffix in (".xlsx", ".xlsm"):
            return pd.read_excel(path, dtype=object, engine="openpyxl")
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except UnicodeDecodeError as e:
        raise IngestError(f"{path}: cannot decode as UTF-8 or Windows-1252 ({e}).") from e
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise IngestError(f"{path}: cannot read as {suffix[1:]} export: {e}") from e
    raise IngestError(
        f"{path}: unsupported file type '{suffix}'. Supported: {', '.join(SUPPORTED_SUFFIXES)}."
    )


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- values ------------------------------------------------------------------------------
def cell_text(value: Any) -> str:
    """A cell as stripped text; blanks, NaN and None become ''."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    if value is pd.NaT:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_date(value: Any, *, dayfirst: bool = True) -> date | None:
    """Parse UK `dd/mm/yyyy`, ISO `yyyy-mm-dd`, Excel serials and native dates.

    Returns None for blank input; raises ValueError for anything unparseable.
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value:
            return None
        return _excel_serial(float(value))
    text = cell_text(value)
    if not text:
        return None
    if _EXCEL_SERIAL.match(text):
        return _excel_serial(float(text))
    m = _ISO.match(text)
    if m:
        return date(int(m[1]), int(m[2]), int(m[3]))
    m = _NUMERIC_DATE.match(text)
    if m:
        a, b, y = int(m[1]), int(m[2]), int(m[3])
        if y < 100:
            y += 2000 if y < 70 else 1900
        day, month = (a, b) if dayfirst else (b, a)
        return date(y, month, day)
    raise ValueError(f"unrecognised date '{text}'")


def _excel_serial(serial: float) -> date:
    if not 1 <= serial < 2958466:
        raise ValueError(f"Excel serial {serial} out of range")
    return EXCEL_EPOCH + timedelta(days=int(serial))


# -- mapping -----------------------------------------------------------------------------
@dataclass
class MappedExport:
    """The result of mapping one export: valid records and quarantined rows."""

    file: str
    n_rows: int
    records: list[Record] = field(default_factory=list)
    quarantined: list[QuarantinedRow] = field(default_factory=list)


def check_columns(frame: pd.DataFrame, mapping: SourceMapping, file: str) -> None:
    """Raise MissingColumnError for the first required column the export lacks."""
    available = [str(c) for c in frame.columns]
    present = set(available)
    required = [
        ("columns.id", mapping.columns.id),
        ("columns.event_date", mapping.columns.event_date),
    ]
    for i, nf in enumerate(mapping.narrative):
        if nf.required:
            required.append((f"narrative[{i}].column", nf.column))
    for key, col in required:
        if col not in present:
            raise MissingColumnError(
                column=col, path=file, config_key=mapping.config_key(key), available=available
            )


def map_records(frame: pd.DataFrame, mapping: SourceMapping, *, file: str) -> MappedExport:
    """Validate every row; return records and quarantined rows (never drop a row)."""
    check_columns(frame, mapping, file)
    cols = mapping.columns
    dayfirst = mapping.date_order == "dayfirst"
    result = MappedExport(file=file, n_rows=len(frame))
    first_row_of: dict[str, int] = {}
    narrative_cols = [nf for nf in mapping.narrative if nf.column in frame.columns]
    structured = {
        name: getattr(cols, name)
        for name in STRUCTURED_FIELDS
        if getattr(cols, name) and getattr(cols, name) in frame.columns
    }
    records_in_order = frame.to_dict(orient="records")
    for i, row in enumerate(records_in_order):
        row_number = i + 2  # header is row 1, as a spreadsheet shows it
        rid = cell_text(row.get(cols.id))

        def bad(reason: str, rid: str = rid, row: dict = row, rn: int = row_number) -> None:
            result.quarantined.append(
                QuarantinedRow(
                    file=file,
                    row_number=rn,
                    reason=reason,
                    record_id=rid or None,
                    raw={str(k): cell_text(v) for k, v in row.items()},
                )
            )

        if not rid:
            bad(f"missing id (column '{cols.id}')")
            continue
        if rid in first_row_of:
            bad(f"duplicate id '{rid}' in this file (first at row {first_row_of[rid]})")
            continue
        first_row_of[rid] = row_number
        try:
            event_date = parse_date(row.get(cols.event_date), dayfirst=dayfirst)
        except ValueError as e:
            bad(f"unparseable event date in column '{cols.event_date}': {e}")
            continue
        if event_date is None:
            bad(f"missing event date (column '{cols.event_date}')")
            continue
        reported = None
        if cols.reported_date and cols.reported_date in frame.columns:
            try:
                reported = parse_date(row.get(cols.reported_date), dayfirst=dayfirst)
            except ValueError as e:
                bad(f"unparseable reported date in column '{cols.reported_date}': {e}")
                continue
        parts = []
        for nf in narrative_cols:
            value = cell_text(row.get(nf.column))
            if value:
                parts.append(f"{nf.label}: {value}")
        if not parts:
            names = ", ".join(f"'{nf.column}'" for nf in mapping.narrative)
            bad(f"empty narrative (columns {names} are all blank)")
            continue
        result.records.append(
            Record(
                record_id=rid,
                kind=mapping.kind,
                source=mapping.name,
                event_date=event_date,
                reported_date=reported,
                narrative="\n".join(parts),
                row_number=row_number,
                fields={
                    name: (cell_text(row.get(col)) or None) for name, col in structured.items()
                },
            )
        )
    return result


# -- writing -----------------------------------------------------------------------------
@dataclass
class IngestReport:
    """What one file contributed: counts a user and a run summary can read."""

    file: str
    source: str
    n_rows: int
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped_unchanged_file: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _reason_kind(reason: str) -> str:
    return reason.split(" '")[0].split(" (")[0].split(" in ")[0].split(":")[0]


def ingest_file(
    store: Store,
    path: Path,
    mapping: SourceMapping,
    *,
    run_id: str | None = None,
    force: bool = False,
) -> IngestReport:
    """Read, validate and upsert one export in a single transaction.

    Re-ingesting an identical file changes nothing. A record whose narrative or fields
    changed is updated (and so re-processed downstream). Columns are checked before
    anything is written.
    """
    path = Path(path)
    file = str(path)
    if path.is_dir():
        raise IngestError(
            f"{path} is a folder, not an export file: name the files (e.g. {path}/*.csv), "
            "or put the folder's files in the drop folder for `themes run`."
        )
    if not path.is_file():
        raise IngestError(f"{path}: no such file.")
    digest = file_sha256(path)
    with store.connect() as conn:
        seen = conn.execute(
            sa.select(ingested_files.c.file).where(
                ingested_files.c.file == file, ingested_files.c.sha256 == digest
            )
        ).first()
    frame = read_export(path)
    if seen and not force:
        return IngestReport(
            file=file, source=mapping.name, n_rows=len(frame), skipped_unchanged_file=True
        )
    mapped = map_records(frame, mapping, file=file)
    report = IngestReport(file=file, source=mapping.name, n_rows=mapped.n_rows)
    now = utcnow()
    ids = [r.record_id for r in mapped.records]
    with store.begin() as conn:
        existing: dict[str, tuple[str, str, tuple]] = {}
        for chunk_start in range(0, len(ids), 900):
            chunk = ids[chunk_start : chunk_start + 900]
            q = sa.select(
                raw_records.c.record_id,
                raw_records.c.kind,
                raw_records.c.raw_hash,
                *[raw_records.c[f] for f in (*STRUCTURED_FIELDS, "event_date", "reported_date")],
            ).where(raw_records.c.record_id.in_(chunk))
            for row in conn.execute(q):
                existing[row[0]] = (row[1], row[2], tuple(row[3:]))
        rows = []
        for rec in mapped.records:
            values = {
                "record_id": rec.record_id,
                "kind": rec.kind,
                "source": rec.source,
                "file": file,
                "row_number": rec.row_number,
                "event_date": rec.event_date,
                "reported_date": rec.reported_date,
                **{f: rec.fields.get(f) for f in STRUCTURED_FIELDS},
                "narrative": rec.narrative,
                "raw_hash": rec.raw_hash,
                "first_seen": now,
                "updated_at": now,
                "run_id": run_id,
            }
            old = existing.get(rec.record_id)
            if old is not None and old[0] != rec.kind:
                mapped.quarantined.append(
                    QuarantinedRow(
                        file=file,
                        row_number=rec.row_number,
                        reason=f"id '{rec.record_id}' already used by a {old[0]} record",
                        record_id=rec.record_id,
                        raw={"narrative_hash": rec.raw_hash},
                    )
                )
                continue
            new_fields = (
                *[rec.fields.get(f) for f in STRUCTURED_FIELDS],
                rec.event_date,
                rec.reported_date,
            )
            if old is not None and old[1] == rec.raw_hash and old[2] == new_fields:
                report.unchanged += 1
                continue
            if old is None:
                report.inserted += 1
            else:
                report.updated += 1
                values.pop("first_seen")
            rows.append(values)
        inserts = [r for r in rows if "first_seen" in r]
        updates = [r for r in rows if "first_seen" not in r]
        store.upsert(conn, raw_records, inserts, keys=["record_id"])
        for values in updates:
            conn.execute(
                raw_records.update()
                .where(raw_records.c.record_id == values["record_id"])
                .values(**{k: v for k, v in values.items() if k != "record_id"})
            )
        qrows = [
            {
                "file": q.file,
                "row_number": q.row_number,
                "record_id": q.record_id,
                "reason": q.reason,
                "raw_json": json.dumps(q.raw, ensure_ascii=False),
                "run_id": run_id,
                "created_at": now,
            }
            for q in mapped.quarantined
        ]
        store.upsert(conn, quarantine, qrows, keys=["file", "row_number", "reason"], update=False)
        store.upsert(
            conn,
            ingested_files,
            [
                {
                    "file": file,
                    "sha256": digest,
                    "source": mapping.name,
                    "n_rows": mapped.n_rows,
                    "run_id": run_id,
                    "ingested_at": now,
                }
            ],
            keys=["file", "sha256"],
        )
    report.quarantined = len(mapped.quarantined)
    report.reasons = dict(Counter(_reason_kind(q.reason) for q in mapped.quarantined))
    log.info(
        "%s: %d rows, %d new, %d updated, %d unchanged, %d quarantined",
        path.name,
        report.n_rows,
        report.inserted,
        report.updated,
        report.unchanged,
        report.quarantined,
    )
    return report


__all__ = [
    "IngestReport",
    "MappedExport",
    "file_sha256",
    "ingest_file",
    "map_records",
    "parse_date",
    "read_export",
    "text_hash",
]
