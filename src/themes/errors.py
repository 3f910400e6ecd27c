"""One exception family for the whole library.

Every message says what went wrong, where (file, row, column or config key) and how to fix it.
"""

from __future__ import annotations


class ThemesError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(ThemesError):
    """A setting is missing, misspelt or has a bad value."""


class IngestError(ThemesError):
    """An export cannot be read as a whole (unreadable file, missing required column)."""


class MissingColumnError(IngestError):
    """A column the source mapping requires is not in the export."""

    def __init__(self, *, column: str, path: str, config_key: str, available: list[str]):
        self.column = column
        self.path = path
        self.config_key = config_key
        shown = ", ".join(available[:30])
        super().__init__(
            f"{path}: required column '{column}' is missing (mapped by config key "
            f"'{config_key}'). Columns found: {shown}. Fix the export or the mapping; "
            f"nothing was written."
        )


class StoreError(ThemesError):
    """The database cannot be opened or is not in the expected state."""


class RunLockedError(ThemesError):
    """Another run holds the lock on this data directory."""


class NotFittedError(ThemesError):
    """A stateful step was used before `fit`."""


class ModelError(ThemesError):
    """A saved theme model is missing, incomplete or incompatible."""


class NotFoundError(ThemesError):
    """A theme, record or run id does not exist."""
