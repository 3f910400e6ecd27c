"""Text cleaning: repair encoding, flatten export formatting and expand abbreviations.

`TextCleaner.normalise` makes exported narratives plain text (mojibake fixed, bullets
turned into sentences, export boilerplate removed, whitespace collapsed);
`TextCleaner.expand` spells out clinical abbreviations from `config/abbreviations.csv`.
The recommended order in the pipeline is normalise -> de-identify -> expand, so that
de-identification sees titles such as "SN Walsh" as written and expansion never touches
the placeholders it leaves ("[PERSON]").
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import ftfy

from themes.errors import ConfigError
from themes.settings import CleanSettings

logger = logging.getLogger(__name__)

_FTFY_CONFIG = ftfy.TextFixerConfig(normalization="NFKC", explain=False)
_BULLET = re.compile(r"^[ \t]*(?:[•●▪◦○·‣∙*\-–—]|o(?=[ \t]))[ \t]+(?=\S)", re.MULTILINE)
_TERMINAL = re.compile(r"[.!?:;]\s*$")
_WHITESPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([.,;:!?])(?=\s|$)")
_PLACEHOLDER = r"\[[A-Z][A-Z_]*\]"
_ROMAN_CONTEXT = re.compile(r"(?i)\b(?:grade|stage|type|class|category|phase)\s*$")
_ROMAN = re.compile(r"^[IVX]+$")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)$")


def load_abbreviations(path: Path) -> dict[str, str]:
    """Read an `abbreviation,expansion` CSV (lines starting with `#` are comments).

    Args:
        path: The CSV file.

    Returns:
        Abbreviation -> expansion, as written in the file.

    Raises:
        ConfigError: If the file is missing or a row is malformed.
    """
    if not path.is_file():
        raise ConfigError(
            f"Abbreviation list '{path}' not found (config key clean.abbreviations_file). "
            "Point the setting at a CSV with columns abbreviation,expansion."
        )
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows = list(csv.reader(ln for ln in lines if not ln.lstrip().startswith("#")))
    if not rows or [c.strip().lower() for c in rows[0]] != ["abbreviation", "expansion"]:
        raise ConfigError(
            f"{path}: the first non-comment line must be the header 'abbreviation,expansion'."
        )
    table: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ConfigError(
                f"{path}: data row {number} should have two non-empty columns "
                f"(abbreviation,expansion), got {len(row)} column(s)."
            )
        table[row[0].strip()] = row[1].strip()
    return table


class TextCleaner:
    """Normalise exported free text and expand clinical abbreviations.

    Args:
        settings: The `clean` section of the settings.
    """

    def __init__(self, settings: CleanSettings) -> None:
        self.settings = settings
        table = load_abbreviations(settings.abbreviations_file)
        variants: dict[str, str] = {}
        for abbr, expansion in table.items():
            variants[abbr] = expansion
            if abbr.islower():
                variants[abbr[0].upper() + abbr[1:]] = expansion[0].upper() + expansion[1:]
        self._expansions = variants
        alternatives = "|".join(re.escape(a) for a in sorted(variants, key=len, reverse=True))
        self._abbr_re = re.compile(rf"({_PLACEHOLDER})|(?<![\w&])({alternatives})(?![\w&])")
        try:
            self._boilerplate = [re.compile(p, re.MULTILINE) for p in settings.boilerplate_patterns]
        except re.error as e:
            raise ConfigError(
                f"clean.boilerplate_patterns has an invalid regular expression: {e}"
            ) from e
        logger.debug("Loaded %d abbreviations", len(table))

    def normalise(self, text: str) -> str:
        """Return plain text: encoding fixed, bullets as sentences, no boilerplate.

        Spaces are collapsed within lines; line breaks (between narrative fields, or a
        letter's sign-off) are kept as single newlines, since they end a sentence.

        Args:
            text: Raw exported text.

        Returns:
            The normalised text (may be empty).
        """
        if not text:
            return ""
        text = ftfy.fix_text(text, _FTFY_CONFIG)
        for pattern in self._boilerplate:
            text = pattern.sub(" ", text)
        if _BULLET.search(text):
            text = _bullets_to_sentences(text)
        lines = (_WHITESPACE.sub(" ", line).strip() for line in text.splitlines())
        text = "\n".join(line for line in lines if line)
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
        return text.strip()

    def expand(self, text: str) -> str:
        """Expand abbreviations on word boundaries, leaving placeholders such as [MRN] alone.

        Args:
            text: Normalised (and usually de-identified) text.

        Returns:
            The text with known abbreviations spelt out.
        """
        if not text:
            return text
        return self._abbr_re.sub(self._replace, text)

    def clean(self, text: str) -> str:
        """Normalise then expand.

        Args:
            text: Raw exported text.

        Returns:
            Clean text.
        """
        return self.expand(self.normalise(text))

    __call__ = clean

    def _replace(self, match: re.Match[str]) -> str:
        abbr = match.group(2)
        if abbr is None:  # a placeholder
            return match.group(1)
        before = match.string[: match.start()]
        if _ROMAN.match(abbr) and _ROMAN_CONTEXT.search(before[-20:]):
            return abbr
        expansion = self._expansions[abbr]
        if not abbr.islower() and _SENTENCE_START.search(before[-3:]) and expansion.islower():
            expansion = expansion[0].upper() + expansion[1:]
        return expansion


def _bullets_to_sentences(text: str) -> str:
    """Drop bullet marks at line starts and end each bulleted line (and its lead-in) a sentence."""
    lines = text.splitlines()
    out: list[str] = []
    for line in lines:
        bulleted = _BULLET.match(line)
        if bulleted:
            line = line[bulleted.end() :]
            if out and out[-1].strip() and not _TERMINAL.search(out[-1]):
                out[-1] = out[-1].rstrip() + "."
            if line.strip() and not _TERMINAL.search(line):
                line = line.rstrip() + "."
        out.append(line)
    return "\n".join(out)
