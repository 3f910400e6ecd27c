"""CLI commands for recommendations, links and actions.

`themes recommendations`, `links`, `link-case`, `actions`.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main `themes` app."""
