"""Seeded themes from a taxonomy file (a trust's own categories): name, description, examples.

TOML:
    [[theme]]
    name = "Falls"
    description = "Patient falls, slips and trips"
    examples = ["Found on the floor beside the bed", "Unwitnessed fall in the bathroom"]

CSV: columns `name`, `description`, `examples` (examples separated by `|`).
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from themes.errors import ConfigError


@dataclass(frozen=True)
class SeedTheme:
    """A theme the trust already recognises; records close to it are assigned to it."""

    name: str
    description: str = ""
    examples: tuple[str, ...] = field(default_factory=tuple)

    def texts(self) -> list[str]:
        """Texts whose mean embedding represents the seed."""
        out = [f"{self.name}. {self.description}".strip()]
        return out + list(self.examples)


def load_taxonomy(path: Path) -> list[SeedTheme]:
    """Load seeded themes from TOML or CSV, with errors naming the file and entry."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"themes.taxonomy_file: {path} does not exist.")
    seeds: list[SeedTheme] = []
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
        entries = data.get("theme", [])
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not str(entry.get("name", "")).strip():
                raise ConfigError(f"{path}: [[theme]] number {i + 1} has no name.")
            unknown = set(entry) - {"name", "description", "examples"}
            if unknown:
                raise ConfigError(f"{path}: theme '{entry['name']}' has unknown keys {unknown}.")
            seeds.append(
                SeedTheme(
                    name=str(entry["name"]).strip(),
                    description=str(entry.get("description", "")).strip(),
                    examples=tuple(str(x) for x in entry.get("examples", [])),
                )
            )
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "name" not in reader.fieldnames:
                raise ConfigError(f"{path}: needs a 'name' column (and description, examples).")
            for row_number, row in enumerate(reader, start=2):
                name = (row.get("name") or "").strip()
                if not name:
                    raise ConfigError(f"{path}: row {row_number} has no name.")
                examples = [x.strip() for x in (row.get("examples") or "").split("|")]
                seeds.append(
                    SeedTheme(
                        name=name,
                        description=(row.get("description") or "").strip(),
                        examples=tuple(x for x in examples if x),
                    )
                )
    else:
        raise ConfigError(f"themes.taxonomy_file: {path} must be .toml or .csv.")
    names = [s.name.lower() for s in seeds]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"{path}: theme names must be unique; repeated: {sorted(dupes)}.")
    if not seeds:
        raise ConfigError(f"{path}: no themes found.")
    return seeds
