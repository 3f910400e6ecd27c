"""Harm (impact) of a case: the LFPSE level from the structured field, or estimated from text.

The mapping from Datix-style severity values to the LFPSE levels (no harm, low, moderate,
severe, fatal), the cue phrases that show each level in a narrative and the outcome
mentions (death, fracture, readmission, ...) live in a TOML file (`factors.harm_file`).
The text cues are matched, with negation handled, by `themes.factors.CueReader`; this
module turns those matches into one harm level per case.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from themes.errors import ConfigError

LEVEL_PREFIX = "HARM:"
STATED_PREFIX = "HARMSTATED:"
OUTCOME_PREFIX = "OUTCOME:"


@dataclass(frozen=True)
class HarmScheme:
    """Harm levels in rising order, their labels, the structured mapping and text cues."""

    levels: tuple[str, ...]
    labels: dict[str, str]
    structured: dict[str, str]
    """Normalised structured value -> level."""
    level_phrases: dict[str, tuple[str, ...]]
    """Outcomes that imply a level ("fracture" -> moderate)."""
    level_statements: dict[str, tuple[str, ...]]
    """Explicit statements of a level ("no harm was caused", "permanent harm", "died")."""
    outcome_names: dict[str, str]
    outcome_phrases: dict[str, tuple[str, ...]]
    digest: str

    def rank(self, level: str) -> int:
        return self.levels.index(level)

    def label(self, level: str | None) -> str:
        return self.labels.get(level, "Unknown") if level else "Unknown"

    def level_named(self, value: str) -> str | None:
        """The level `value` names, in any case and spacing: a level id ("moderate"), a
        label ("Moderate harm") or a structured value the scheme maps ("minor"); else None."""
        said = _normalise(value)
        if said in self.levels:
            return said
        by_label = {_normalise(label): level for level, label in self.labels.items()}
        return by_label.get(said) or self.structured.get(said)

    def cue_phrases(self) -> dict[str, tuple[str, ...]]:
        """Every cue, keyed by the label the cue reader reports it under."""
        out = {f"{LEVEL_PREFIX}{k}": v for k, v in self.level_phrases.items()}
        out.update({f"{STATED_PREFIX}{k}": v for k, v in self.level_statements.items()})
        out.update({f"{OUTCOME_PREFIX}{k}": v for k, v in self.outcome_phrases.items()})
        return out


def _normalise(value: str) -> str:
    return re.sub(r"\s+", " ", value.strip().lower())


def load_harm_scheme(path: Path) -> HarmScheme:
    """Read and check a harm mapping file; errors name the file and the key."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"Harm mapping file {path} not found (setting factors.harm_file).") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    levels = data.get("levels")
    if (
        not isinstance(levels, list)
        or len(levels) < 2
        or not all(isinstance(v, str) for v in levels)
    ):
        raise ConfigError(f"{path}: 'levels' must list at least two level ids, lowest first.")
    labels = data.get("labels", {})
    missing = [lv for lv in levels if lv not in labels]
    if missing:
        raise ConfigError(f"{path}: [labels] lacks {missing}.")
    structured: dict[str, str] = {}
    for value, level in data.get("structured", {}).items():
        if level not in levels:
            raise ConfigError(
                f"{path}: [structured] '{value}' maps to '{level}', which is not in 'levels'."
            )
        structured[_normalise(value)] = level
    level_phrases: dict[str, tuple[str, ...]] = {}
    level_statements: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(data.get("level", [])):
        lid = entry.get("id")
        if lid not in levels:
            raise ConfigError(f"{path}: [[level]] number {i + 1} has id '{lid}', not in 'levels'.")
        level_phrases[lid] = tuple(_phrases(entry, path, f"[[level]] '{lid}'"))
        level_statements[lid] = tuple(_phrases(entry, path, f"[[level]] '{lid}'", key="statements"))
    outcome_names: dict[str, str] = {}
    outcome_phrases: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(data.get("outcome", [])):
        oid = entry.get("id")
        if not oid or not entry.get("name"):
            raise ConfigError(f"{path}: [[outcome]] number {i + 1} needs 'id' and 'name'.")
        outcome_names[oid] = entry["name"]
        outcome_phrases[oid] = tuple(_phrases(entry, path, f"[[outcome]] '{oid}'"))
    return HarmScheme(
        levels=tuple(levels),
        labels=dict(labels),
        structured=structured,
        level_phrases=level_phrases,
        level_statements=level_statements,
        outcome_names=outcome_names,
        outcome_phrases=outcome_phrases,
        digest=hashlib.sha256(raw).hexdigest()[:16],
    )


def _phrases(entry: dict[str, Any], path: Path, where: str, *, key: str = "phrases") -> list[str]:
    phrases = entry.get(key, [])
    if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
        raise ConfigError(f"{path}: {where} '{key}' must be a list of non-empty strings.")
    return [p.strip() for p in phrases]


@dataclass(frozen=True)
class Harm:
    """The harm of one case."""

    level: str | None
    """A level id from the scheme, or None when neither field nor text shows one."""
    source: str
    """"structured" (from the severity field), "estimated" (from the text) or "unknown"."""
    confidence: float
    evidence: str
    structured_value: str | None


def structured_level(scheme: HarmScheme, value: str | None) -> str | None:
    """The level a structured severity value maps to (None when blank or unmapped)."""
    if value is None or not value.strip():
        return None
    return scheme.structured.get(_normalise(value))


def judge_harm(
    scheme: HarmScheme,
    structured_value: str | None,
    cues: Sequence[tuple[str, str, bool]],
) -> Harm:
    """One case's harm: the mapped structured value if there is one, else a text estimate.

    Args:
        scheme: The harm mapping.
        structured_value: The record's severity field as exported (may be None).
        cues: (level id, sentence, stated) for each non-negated harm cue in the text;
            `stated` is True for an explicit statement of the level ("no harm was caused"),
            which outranks levels merely implied by an outcome ("fracture").
    """
    mapped = structured_level(scheme, structured_value)
    if mapped is not None:
        return Harm(mapped, "structured", 1.0, "", structured_value)
    if not cues:
        return Harm(None, "unknown", 0.0, "", structured_value)
    stated = [c for c in cues if c[2]]
    pool = stated or list(cues)
    if not stated:
        # implied "no injury" counts only when nothing in the text shows harm
        pool = [c for c in pool if scheme.rank(c[0]) > 0] or pool
    level, evidence, _ = max(pool, key=lambda c: scheme.rank(c[0]))
    support = sum(1 for c in pool if c[0] == level) / len(pool)
    confidence = round(0.5 + 0.5 * support, 3)
    return Harm(level, "estimated", confidence, evidence, structured_value)
