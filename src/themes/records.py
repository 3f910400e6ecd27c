"""The record model and source column mappings."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from themes.errors import ConfigError, ThemesError

Kind = Literal["incident", "complaint", "claim"]
KINDS: tuple[str, ...] = ("incident", "complaint", "claim")
IDENTIFIER_TYPES: tuple[str, ...] = (
    "PERSON",
    "NHS_NUMBER",
    "MRN",
    "DATE_OF_BIRTH",
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "UK_POSTCODE",
    "STREET_ADDRESS",
)
"""Identifier types removed by de-identification; each becomes the placeholder [TYPE]."""
STRUCTURED_FIELDS: tuple[str, ...] = (
    "site",
    "location",
    "specialty",
    "category",
    "severity",
    "status",
)


def check_kind(value: str, *, option: str = "--kind") -> str:
    """The record kind `value` names (any case), or a ThemesError naming `option`."""
    kind = str(value).strip().lower()
    if kind not in KINDS:
        raise ThemesError(
            f"{option} '{value}' is not a record kind; use one of {', '.join(KINDS)}."
        )
    return kind


class ColumnMap(BaseModel):
    """Export column names for each field of the record model."""

    model_config = ConfigDict(extra="forbid")

    id: str
    event_date: str
    reported_date: str | None = None
    site: str | None = None
    location: str | None = None
    specialty: str | None = None
    category: str | None = None
    severity: str | None = None
    status: str | None = None


class NarrativeField(BaseModel):
    """One free-text column, joined into the narrative under its label."""

    model_config = ConfigDict(extra="forbid")

    column: str
    label: str
    required: bool = True
    """Required columns must exist in the export (their cells may still be blank)."""


class SourceMapping(BaseModel):
    """How one kind of export maps onto the record model."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Kind
    description: str = ""
    columns: ColumnMap
    narrative: list[NarrativeField]
    date_order: Literal["dayfirst", "monthfirst"] = "dayfirst"

    def config_key(self, field_name: str) -> str:
        """The dotted config key that maps `field_name`, for error messages."""
        return f"sources.{self.name}.{field_name}"


def load_mapping(sources_dir: Path, name: str) -> SourceMapping:
    """Load `<sources_dir>/<name>.toml` and validate it."""
    path = sources_dir / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in sources_dir.glob("*.toml"))
        raise ConfigError(
            f"No source mapping '{name}' (looked for {path}). Known sources: "
            f"{', '.join(known) or 'none'}. Add a TOML file there to define one."
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    try:
        mapping = SourceMapping.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"{path}: invalid source mapping: {problems}") from e
    if mapping.name != name:
        raise ConfigError(f"{path}: 'name' is '{mapping.name}' but the file is named '{name}'.")
    if not mapping.narrative:
        raise ConfigError(f"{path}: at least one [[narrative]] column is needed.")
    return mapping


def text_hash(text: str) -> str:
    """Stable hash of a text, used for change detection and the embedding cache."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Record:
    """One validated incident, complaint or claim, with its raw (identifiable) narrative."""

    record_id: str
    kind: str
    source: str
    event_date: date
    narrative: str
    reported_date: date | None = None
    row_number: int = 0
    """1-based row in the export as a spreadsheet shows it (header is row 1)."""
    fields: dict[str, str | None] = field(default_factory=dict)
    """Structured fields keyed by STRUCTURED_FIELDS names."""

    @property
    def raw_hash(self) -> str:
        return text_hash(self.narrative)


@dataclass(frozen=True)
class QuarantinedRow:
    """A row that could not become a record, kept with the reason."""

    file: str
    row_number: int
    """1-based data row number as a spreadsheet shows it (header is row 1)."""
    reason: str
    record_id: str | None
    raw: dict[str, str]
