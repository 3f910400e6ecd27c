"""CLI commands for contributory factors and harm (`themes factors`, `record`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main `themes` app."""
