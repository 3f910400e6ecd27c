"""The leak check shared by the tests that look for planted identifiers in outputs."""

from __future__ import annotations

import re
from collections.abc import Iterable


def whole_word_leaks(values: Iterable[str], text: str) -> list[str]:
    """The values found in `text` as whole words, sorted.

    A planted surname "Tran" must not count inside "Transfer". The plain substring test
    comes first, so the regex runs only for the few values that occur at all.
    """
    return sorted(
        v for v in values if v in text and re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text)
    )
