"""The recommendation corpus: national recommendations, PFD concerns and a trust's own sets.

A recommendation has an id, a source document, a year, its number in that document, a
title, its text, the addressee, a URL and tags. Sets are read from CSV, JSON or YAML
files (`config/recommendations/` holds the starter set) or imported from a coroners'
Prevention of Future Deaths (PFD) export, whose matters of concern are split into one
recommendation per concern item.

Problems with a whole file (unreadable, a required column missing) raise
`RecommendationError` naming the file and column; problems with one row (no text, a
duplicate id, an empty concerns cell) reject that row with a reason, which the import
reports and keeps in the `recommendation_rejects` table. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
import yaml

from themes.errors import ThemesError
from themes.store import Store, metadata, utcnow

log = logging.getLogger(__name__)

Format = Literal["pfd", "csv", "json", "yaml"]
FORMATS: tuple[str, ...] = ("pfd", "csv", "json", "yaml")
FIELDS: tuple[str, ...] = (
    "id",
    "source",
    "year",
    "number",
    "title",
    "text",
    "addressee",
    "url",
    "tags",
)
REQUIRED: tuple[str, ...] = ("id", "source", "text")
KEYS: tuple[str, ...] = (*FIELDS, "document", "date")
"""Every key an entry (or `defaults`) may have: the fields plus `document` and `date`."""
PFD_COLUMNS: tuple[str, ...] = ("url", "date", "receiver", "concerns")
"""Columns a PFD export must have (the public datasets also carry coroner, area,
investigation and circumstances, which are not needed to build concern items)."""

Deidentify = Callable[[Sequence[str]], list[str]]
"""Turns texts into de-identified texts (e.g. `steps.clean_texts_for_evaluation`)."""


class RecommendationError(ThemesError):
    """A recommendation file cannot be read as a whole."""


# -- the schema ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Recommendation:
    """One recommendation (or one PFD concern item)."""

    id: str
    source: str
    """Source document, e.g. "Ockenden review 2022" or "PFD report 2019-0287"."""
    text: str
    year: int | None = None
    number: str = ""
    """Its number in the source document ("IEA 2", "7", or "" when not numbered)."""
    title: str = ""
    addressee: str = ""
    url: str = ""
    tags: tuple[str, ...] = ()
    set_name: str = ""
    """The file or import it came from (the stem of the file)."""
    document: str = ""
    """Groups items of one source document (a PFD report id); defaults to `source`."""
    date: date | None = None

    @property
    def group(self) -> str:
        """The source document this item belongs to."""
        return self.document or self.source

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "source": self.source,
            "year": self.year,
            "number": self.number,
            "title": self.title,
            "text": self.text,
            "addressee": self.addressee,
            "url": self.url,
            "tags": list(self.tags),
            "set_name": self.set_name,
            "document": self.group,
            "date": self.date.isoformat() if self.date else None,
        }


@dataclass(frozen=True)
class Rejected:
    """A row that was not loaded, and why."""

    file: str
    row: int
    """Row number as a spreadsheet shows it (header = 1), or entry number (1-based)."""
    reason: str
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadResult:
    """What a loader read: the recommendations and the rows it rejected."""

    recommendations: list[Recommendation] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    read: int = 0
    """Data rows (or entries) read, loaded or rejected; a PFD row can give several items."""
    rows: dict[str, int] = field(default_factory=dict)
    """The row (or entry number) each recommendation came from, by id."""


# -- loaders ---------------------------------------------------------------------------------
def detect_format(path: Path) -> Format:
    """The format implied by a file's suffix (PFD exports must be named with --format)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise RecommendationError(
        f"{path}: cannot tell the format from the suffix '{suffix}'; "
        f"give --format ({'|'.join(FORMATS)})."
    )


def load_file(path: Path, fmt: Format | None = None) -> LoadResult:
    """Load one recommendation file in the given (or detected) format.

    PFD exports come without de-identification here; `import_file` de-identifies them.
    """
    path = Path(path)
    if not path.is_file():
        raise RecommendationError(f"{path}: no such file.")
    fmt = fmt or detect_format(path)
    if fmt == "pfd":
        return load_pfd(path)
    if fmt == "csv":
        entries = _read_csv(path, required=REQUIRED, hint="a recommendation set")
        return _from_entries(path, entries, defaults={}, first_row=2)
    if fmt in ("json", "yaml"):
        data = _read_structured(path, fmt)
        if isinstance(data, list):
            return _from_entries(path, data, defaults={}, first_row=1)
        if isinstance(data, dict) and isinstance(data.get("recommendations"), list):
            defaults = data.get("defaults") or {}
            if not isinstance(defaults, dict):
                raise RecommendationError(f"{path}: 'defaults' must be a mapping of field: value.")
            return _from_entries(path, data["recommendations"], defaults=defaults, first_row=1)
        raise RecommendationError(
            f"{path}: expected a list of recommendations, or a mapping with a "
            "'recommendations' list (and optional 'defaults')."
        )
    raise RecommendationError(f"{path}: unknown format '{fmt}'; use one of {', '.join(FORMATS)}.")


def load_dir(directory: Path) -> LoadResult:
    """Every CSV, JSON and YAML set in a folder (ids must be unique across the folder)."""
    directory = Path(directory)
    out = LoadResult()
    if not directory.is_dir():
        out.warnings.append(f"{directory}: no recommendations folder (links.recommendations_dir)")
        return out
    seen: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in (".csv", ".json", ".yaml", ".yml"):
            continue
        res = load_file(path)
        out.rejected += res.rejected
        out.warnings += res.warnings
        out.read += res.read
        for rec in res.recommendations:
            row = res.rows.get(rec.id, 0)
            if rec.id in seen:
                out.rejected.append(
                    Rejected(str(path), row, f"duplicate id '{rec.id}' (also in {seen[rec.id]})")
                )
                continue
            seen[rec.id] = f"{path} row {row}"
            out.rows[rec.id] = row
            out.recommendations.append(rec)
    return out


def _read_structured(path: Path, fmt: str) -> Any:
    text = path.read_text(encoding="utf-8-sig")
    try:
        return json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise RecommendationError(f"{path}: not valid {fmt.upper()}: {e}") from e


def _read_csv(path: Path, *, required: Sequence[str], hint: str) -> list[dict[str, str]]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - cp1252 decodes nearly everything
        raise RecommendationError(f"{path}: not UTF-8 or Windows-1252 text.")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in required if c not in columns]
    if missing:
        raise RecommendationError(
            f"{path}: required column(s) {', '.join(repr(c) for c in missing)} missing for "
            f"{hint}. Columns found: {', '.join(columns) or '(none)'}. Nothing was loaded."
        )
    rows = []
    for row in reader:
        rows.append({(k or "").strip(): (v or "") for k, v in row.items() if k is not None})
    return rows


def _from_entries(
    path: Path, entries: Iterable[Any], *, defaults: dict[str, Any], first_row: int
) -> LoadResult:
    out = LoadResult()
    unknown_defaults = sorted(set(defaults) - set(KEYS))
    if unknown_defaults:
        raise RecommendationError(
            f"{path}: unknown field(s) in defaults: {', '.join(unknown_defaults)}; "
            f"fields are {', '.join(KEYS)}."
        )
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        row = first_row + i
        out.read += 1
        if not isinstance(entry, dict):
            out.rejected.append(
                Rejected(str(path), row, "entry is not a mapping", {"value": entry})
            )
            continue
        merged = {**defaults, **{k: v for k, v in entry.items() if v not in (None, "")}}
        try:
            rec = _validate(merged, set_name=path.stem)
        except ValueError as e:
            out.rejected.append(Rejected(str(path), row, str(e), _jsonable(entry)))
            continue
        if rec.id in seen:
            out.rejected.append(
                Rejected(
                    str(path),
                    row,
                    f"duplicate id '{rec.id}' (first at row {seen[rec.id]})",
                    _jsonable(entry),
                )
            )
            continue
        seen[rec.id] = row
        out.rows[rec.id] = row
        out.recommendations.append(rec)
    return out


def _validate(entry: dict[str, Any], *, set_name: str) -> Recommendation:
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; fields are {', '.join(KEYS)}")
    for name in REQUIRED:
        if not str(entry.get(name, "")).strip():
            raise ValueError(f"'{name}' is empty")
    year_raw = entry.get("year")
    year: int | None = None
    if year_raw not in (None, ""):
        try:
            year = int(str(year_raw).strip())
        except ValueError:
            raise ValueError(f"'year' is not a whole number: {year_raw!r}") from None
        if not 1800 <= year <= 2200:
            raise ValueError(f"'year' {year} is out of range")
    when = _entry_date(entry.get("date"))
    if when is not None and year is None:
        year = when.year
    elif when is not None and year != when.year:
        raise ValueError(f"'year' {year} does not match 'date' {when.isoformat()}")
    tags = entry.get("tags") or ()
    if isinstance(tags, str):
        tags = [t for t in re.split(r"[|;]", tags)]
    if not isinstance(tags, list | tuple):
        raise ValueError("'tags' must be a list or a '|'-separated string")
    return Recommendation(
        id=str(entry["id"]).strip(),
        source=str(entry["source"]).strip(),
        text=_squash(str(entry["text"])),
        year=year,
        number=str(entry.get("number", "")).strip(),
        title=str(entry.get("title", "")).strip(),
        addressee=str(entry.get("addressee", "")).strip(),
        url=str(entry.get("url", "")).strip(),
        tags=tuple(t.strip() for t in map(str, tags) if str(t).strip()),
        set_name=set_name,
        document=str(entry.get("document", "")).strip(),
        date=when,
    )


def _entry_date(value: Any) -> date | None:
    """An entry's `date` (a YAML date, or text as `_parse_date` reads it); None if absent."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    when = _parse_date(str(value))
    if when is None:
        raise ValueError(f"'date' is not a date (use yyyy-mm-dd): {value!r}")
    return when


def _squash(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()


def _jsonable(entry: Any) -> dict[str, Any]:
    try:
        json.dumps(entry)
        return dict(entry) if isinstance(entry, dict) else {"value": entry}
    except TypeError:
        return {"value": str(entry)}


# -- PFD reports -----------------------------------------------------------------------------
_PREAMBLE = re.compile(
    r"(?is)^.*?\bmatters?\s+of\s+concern\b[^\n]{0,40}?\b(?:is|are)\s+as\s+follows\s*"
    r"[.:;,]?\s*[-–—]*\s*(?:\(brief summary of matters of concern\)\s*)?"
)
_BOILER = re.compile(
    r"(?is)during the course of the (?:inquest|investigation).*?statutory duty to report to "
    r"you\.?|in my opinion there is a risk that future deaths (?:will|could) occur unless "
    r"action is taken\.?|in the circumstances it is my statutory duty to report to you\.?"
)
_MARKERS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?m)^[ \t]*\(?(\d{1,2})[.)](?=\s)"),
    re.compile(r"(?m)^[ \t]*\(?([a-h])[.)](?=\s)"),
    re.compile(r"(?m)^[ \t]*\(?(i|ii|iii|iv|v|vi|vii|viii|ix|x)[.)](?=\s)"),
    re.compile(r"(?m)^[ \t]*([•●▪\-–*])(?=\s)"),
)
_INLINE_MARKERS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(r'(?:^|(?<=[.;:!?"”])[ \t]+|\n[ \t]*)' + marker + r"(?=\s)")
    for marker in (r"\((\d{1,2})\)", r"(\d{1,2})\.", r"(\d{1,2})\)")
)
"""Numbered markers within a line: (1) / 1. / 1), at the start or after a sentence ends, so
that "aged 2) the" or "section 3. of" inside a sentence is not a marker."""
_LEAD_MARKER = re.compile(r"^\(?(?:\d{1,2}|[a-h]|i|ii|iii|iv|v)[.)]\s+")
MIN_ITEM_CHARS = 20
"""A concern item shorter than this is joined to the one before it."""


def split_concerns(text: str) -> list[str]:
    """Split a PFD report's matters of concern into individual concern items.

    The coroner's standard preamble is dropped. Items are found by the first enumeration
    style that occurs at least twice at the start of a line (1. / (1), then a) / (a), then
    roman numerals, then bullets); sub-items of another style stay inside their item.
    Failing those, items numbered within a line ("(1) ... (2) ...", "1. ... 2. ...",
    "1) ... 2) ...") are split when each marker starts the text or follows the end of a
    sentence and the numbers run 1, 2, 3 ...
    Text before the first marker is kept as its own item when it says more than a heading.
    Without markers the concerns are one item. Fragments under `MIN_ITEM_CHARS`
    characters are joined to the item before them.
    """
    body = _PREAMBLE.sub("", text.strip(), count=1)
    body = _BOILER.sub(" ", body).strip()
    if not body:
        return []
    for pattern in _MARKERS:
        matches = list(pattern.finditer(body))
        if len(matches) >= 2 and _sequential(matches):
            return _tidy(_cut(body, matches))
    for pattern in _INLINE_MARKERS:
        matches = list(pattern.finditer(body))
        if len(matches) >= 2 and _sequential(matches, first_at_most=1):
            return _tidy(_cut(body, matches))
    return _tidy([body])


def _cut(body: str, matches: list[re.Match[str]]) -> list[str]:
    """The text before the first marker, then the text after each marker up to the next."""
    pieces = [body[: matches[0].start()]]
    for m, nxt in zip(matches, [*matches[1:], None], strict=True):
        pieces.append(body[m.end() : nxt.start() if nxt else len(body)])
    return pieces


def _sequential(matches: list[re.Match[str]], *, first_at_most: int = 2) -> bool:
    """Numbered markers must count up (1, 2, 3 ...), so stray "3." lines do not split."""
    first = matches[0].group(1)
    if not first.isdigit():
        return True
    numbers = [int(m.group(1)) for m in matches if m.group(1).isdigit()]
    return numbers[0] <= first_at_most and all(
        b == a + 1 for a, b in zip(numbers, numbers[1:], strict=False)
    )


def _tidy(pieces: list[str]) -> list[str]:
    items: list[str] = []
    for piece in pieces:
        piece = re.sub(r"[ \t]+", " ", piece).strip(" \n-–—:")
        piece = _LEAD_MARKER.sub("", piece)
        if not piece:
            continue
        if len(piece) < MIN_ITEM_CHARS and items:
            items[-1] = f"{items[-1]}\n{piece}"
        else:
            items.append(piece)
    if len(items) > 1 and len(items[0]) < MIN_ITEM_CHARS:
        items[1] = f"{items[0]}\n{items[1]}"
        items = items[1:]
    return items


def _parse_date(value: str) -> date | None:
    value = value.strip()
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d %B %Y", "%d %b %Y"):
        try:
            return datetime.strptime(value[:10] if fmt == "%Y-%m-%d" else value, fmt).date()
        except ValueError:
            continue
    return None


def _report_id(row: dict[str, str]) -> str:
    """The report's reference (the `id` column, e.g. 2013-0172), else a hash of its URL.

    Never the URL's last part: on judiciary.uk that is the deceased's name, and the id is
    shown and stored everywhere a link is (`pfd-<id>-<item>`, "PFD report <id>")."""
    rid = row.get("id", "").strip()
    if rid:
        return rid
    url = row.get("url", "").strip().rstrip("/")
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:10] if url else ""


def load_pfd(path: Path) -> LoadResult:
    """Concern items from a PFD export (columns as the public PFD datasets use them).

    Each report's `concerns` are split with `split_concerns`; each item keeps the report id
    (the `id` column, else a hash of the URL; see `_report_id`), date and recipients
    (`receiver`).
    Text is returned as published: `import_file` de-identifies it before storing.
    """
    path = Path(path)
    rows = _read_csv(path, required=PFD_COLUMNS, hint="a PFD export")
    out = LoadResult(read=len(rows))
    seen: dict[str, int] = {}
    bad_dates = 0
    for i, row in enumerate(rows):
        line = i + 2
        rid = _report_id(row)
        if not rid:
            out.rejected.append(Rejected(str(path), line, "no report id (empty id and url)", row))
            continue
        if rid in seen:
            out.rejected.append(
                Rejected(
                    str(path), line, f"duplicate report id '{rid}' (first at row {seen[rid]})", row
                )
            )
            continue
        seen[rid] = line
        items = split_concerns(row.get("concerns", ""))
        if not items:
            out.rejected.append(Rejected(str(path), line, "empty concerns", row))
            continue
        when = _parse_date(row.get("date", ""))
        if when is None and row.get("date", "").strip():
            bad_dates += 1
        categories = [c.strip() for c in row.get("judiciary_category", "").split("|") if c.strip()]
        for k, item in enumerate(items, start=1):
            out.rows[f"pfd-{rid}-{k}"] = line
            out.recommendations.append(
                Recommendation(
                    id=f"pfd-{rid}-{k}",
                    source=f"PFD report {rid}",
                    text=item,
                    year=when.year if when else None,
                    number=str(k),
                    title=_title(item),
                    addressee=row.get("receiver", "").strip(),
                    url=row.get("url", "").strip(),
                    tags=("pfd", *categories),
                    set_name=path.stem,
                    document=rid,
                    date=when,
                )
            )
    if bad_dates:
        out.warnings.append(
            f"{path}: {bad_dates} report(s) with an unreadable date (kept, no year)"
        )
    return out


def _title(text: str, limit: int = 80) -> str:
    first = re.split(r"(?<=[.!?])\s", text.replace("\n", " "), maxsplit=1)[0]
    return first if len(first) <= limit else first[: limit - 1].rsplit(" ", 1)[0] + "…"


# -- the store -------------------------------------------------------------------------------
recommendations_table = sa.Table(
    "recommendations",
    metadata,
    sa.Column("rec_id", sa.String, primary_key=True),
    sa.Column("set_name", sa.String, nullable=False, index=True),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("document", sa.String, nullable=False),
    sa.Column("year", sa.Integer),
    sa.Column("number", sa.String, nullable=False),
    sa.Column("title", sa.String, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("addressee", sa.String, nullable=False),
    sa.Column("url", sa.String, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("date", sa.Date),
    sa.Column("text_hash", sa.String(64), nullable=False),
    sa.Column("file", sa.String, nullable=False),
    sa.Column("imported_at", sa.DateTime, nullable=False),
)

recommendation_rejects = sa.Table(
    "recommendation_rejects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("file", sa.String, nullable=False),
    sa.Column("row_number", sa.Integer, nullable=False),
    sa.Column("reason", sa.String, nullable=False),
    sa.Column("raw_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("file", "row_number", "reason", name="uq_recommendation_reject"),
)

TABLES = [recommendations_table, recommendation_rejects]


def ensure_tables(store: Store) -> None:
    """Create this module's tables if they do not exist yet."""
    metadata.create_all(store.engine, tables=TABLES)


def corpus_hash(recs: Sequence[Recommendation]) -> str:
    """A short hash of a corpus's ids and texts (changes when any item changes)."""
    h = hashlib.sha256()
    for rec in sorted(recs, key=lambda r: r.id):
        h.update(f"{rec.id}\x1f{rec.group}\x1f{rec.text}\x1e".encode())
    return h.hexdigest()[:16]


def save(store: Store, result: LoadResult, *, file: str) -> dict[str, Any]:
    """Upsert recommendations by id and record the rejected rows; returns counts."""
    ensure_tables(store)
    now = utcnow()
    with store.connect() as conn:
        existing = {
            r[0]: r[1]
            for r in conn.execute(
                sa.select(recommendations_table.c.rec_id, recommendations_table.c.text_hash)
            )
        }
    rows = []
    inserted = updated = unchanged = 0
    for rec in result.recommendations:
        th = hashlib.sha256(json.dumps(rec.as_dict(), sort_keys=True).encode()).hexdigest()
        if existing.get(rec.id) == th:
            unchanged += 1
            continue
        if rec.id in existing:
            updated += 1
        else:
            inserted += 1
        rows.append(
            {
                "rec_id": rec.id,
                "set_name": rec.set_name,
                "source": rec.source,
                "document": rec.group,
                "year": rec.year,
                "number": rec.number,
                "title": rec.title,
                "text": rec.text,
                "addressee": rec.addressee,
                "url": rec.url,
                "tags": json.dumps(list(rec.tags)),
                "date": rec.date,
                "text_hash": th,
                "file": file,
                "imported_at": now,
            }
        )
    rejects = [
        {
            "file": r.file,
            "row_number": r.row,
            "reason": r.reason,
            "raw_json": json.dumps(r.raw, ensure_ascii=False, default=str),
            "created_at": now,
        }
        for r in result.rejected
    ]
    with store.begin() as conn:
        store.upsert(conn, recommendations_table, rows, keys=["rec_id"])
        store.upsert(
            conn,
            recommendation_rejects,
            rejects,
            keys=["file", "row_number", "reason"],
            update=False,
        )
    reasons: dict[str, int] = {}
    for r in result.rejected:
        key = re.sub(r" '.*", "", r.reason)
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "file": file,
        "read": result.read,
        "inserted": inserted,
        "updated": updated,
        "unchanged": unchanged,
        "rejected": len(result.rejected),
        "reasons": reasons,
        "warnings": list(result.warnings),
    }


def import_file(
    store: Store,
    path: Path,
    fmt: Format | None = None,
    *,
    deidentify: Deidentify | None = None,
) -> dict[str, Any]:
    """Load a file and save it to the store; PFD text must be de-identified first.

    Args:
        store: The store.
        path: The file.
        fmt: Its format (detected from the suffix when None; PFD must be named).
        deidentify: De-identifies texts before they are stored. Required for PFD
            exports, whose text names the deceased.
    """
    fmt = fmt or detect_format(path)
    result = load_file(path, fmt)
    if fmt == "pfd" and deidentify is None:
        raise RecommendationError(
            f"{path}: PFD reports name people; give a de-identifier so only "
            "de-identified text is stored."
        )
    if deidentify is not None and result.recommendations:
        texts = deidentify([r.text for r in result.recommendations])
        result.recommendations = [
            _replace(r, text=t, title=_title(t) if fmt == "pfd" else r.title)
            for r, t in zip(result.recommendations, texts, strict=True)
        ]
        if fmt == "pfd":  # raw cells of rejected PFD rows name people: not kept
            for r in result.rejected:
                r.raw.clear()
    report = save(store, result, file=str(path))
    report["format"] = fmt
    return report


def _replace(rec: Recommendation, **changes: Any) -> Recommendation:
    from dataclasses import replace

    return replace(rec, **changes)


def sync_dir(store: Store, directory: Path) -> dict[str, Any]:
    """Load the configured folder of sets into the store (idempotent)."""
    result = load_dir(directory)
    return save(store, result, file=str(directory))


def load_store(store: Store, *, set_name: str | None = None) -> list[Recommendation]:
    """Every stored recommendation (or one set's), ordered by id."""
    ensure_tables(store)
    t = recommendations_table
    q = sa.select(t).order_by(t.c.rec_id)
    if set_name:
        q = q.where(sa.or_(t.c.set_name == set_name, t.c.source == set_name))
    with store.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [
        Recommendation(
            id=r["rec_id"],
            source=r["source"],
            text=r["text"],
            year=r["year"],
            number=r["number"],
            title=r["title"],
            addressee=r["addressee"],
            url=r["url"],
            tags=tuple(json.loads(r["tags"])),
            set_name=r["set_name"],
            document=r["document"],
            date=r["date"],
        )
        for r in rows
    ]


def list_rejects(store: Store, *, limit: int = 100) -> list[dict[str, Any]]:
    """Rejected rows of recommendation imports (file, row, reason)."""
    ensure_tables(store)
    t = recommendation_rejects
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.file, t.c.row_number, t.c.reason).order_by(t.c.id).limit(limit)
        ).all()
    return [{"file": r[0], "row_number": r[1], "reason": r[2]} for r in rows]
