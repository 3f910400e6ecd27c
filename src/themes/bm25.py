"""bm25s, imported once with its logger tamed.

bm25s sets its own logger to DEBUG when imported, so every index build printed "Building
index from tokens" to the CLI and the nightly log. Importing it through `bm25s()` puts that
logger back to INFO (a `-v` run still shows its warnings and info lines).
"""

from __future__ import annotations

import logging
from types import ModuleType


def bm25s() -> ModuleType:
    """The bm25s module, with its logger at INFO rather than DEBUG."""
    import bm25s as module

    logging.getLogger("bm25s").setLevel(logging.INFO)
    return module
