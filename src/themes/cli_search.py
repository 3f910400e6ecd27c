"""CLI commands for similar-case search (`themes search`, `similar`, `duplicates`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main `themes` app."""
