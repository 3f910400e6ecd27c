"""CLI commands for themes over time: history, curation, trends, emerging themes, report."""

# No `from __future__ import annotations`: Typer reads the option annotations at
# definition time, and they name objects imported inside register().


from typing import Annotated

import typer

ByOpt = Annotated[
    str | None, typer.Option("--by", help="Who is acting (default: your login name).")
]


def register(app: typer.Typer) -> None:
    """Add the theme-lifecycle commands to the main `themes` app."""
    from themes.cli import JsonOpt, _emit_json, _guard, _settings, console

    def _store():  # noqa: ANN202
        from themes import steps

        return steps.open_store(_settings())

    def _done(data: dict, as_json: bool, message: str) -> None:
        if as_json:
            _emit_json(data)
        else:
            console.print(message, highlight=False)

    @app.command()
    def history(theme_id: int, as_json: JsonOpt = False) -> None:
        """A theme's life: births, refits, splits, merges, curation, with who and when."""
        from rich.markup import escape
        from rich.table import Table

        from themes.lifecycle import history as get_history

        data = _guard(lambda: get_history(_store(), theme_id))
        if as_json:
            _emit_json(data)
            return
        flags = [data["status"]] + ["pinned"] * data["pinned"]
        flags += ["not a theme"] * data["not_a_theme"]
        console.print(
            f"[bold]Theme {theme_id}: {escape(data['label'])}[/] ({', '.join(flags)}; "
            f"{data['size']} records; born {data['born_at']})"
        )
        if data["merged_into"] is not None:
            console.print(f"Merged into theme {data['merged_into']}.")
        if data["split_into"]:
            console.print("Split into themes " + ", ".join(map(str, data["split_into"])) + ".")
        table = Table("when", "event", "by", "detail")
        for e in data["events"]:
            detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if k != "seeds")
            table.add_row(e["at"], e["kind"], escape(e["actor"]), escape(detail))
        console.print(table)
        for m in data["moves_out"]:
            console.print(f"{m['records']} record(s) moved to theme {m['to']}: {m['reason']}")
        for m in data["moves_in"]:
            console.print(f"{m['records']} record(s) moved in: {m['reason']}")

    @app.command()
    def rename(theme_id: int, label: str, by: ByOpt = None, as_json: JsonOpt = False) -> None:
        """Rename a theme; the label is pinned, so refits keep it."""
        from themes.lifecycle import rename as do

        data = _guard(lambda: do(_store(), theme_id, label, actor=by))
        _done(data, as_json, f"Theme {theme_id} is now '{label}' (pinned).")

    @app.command()
    def pin(
        theme_id: int,
        unpin: Annotated[bool, typer.Option("--unpin", help="Let refits relabel it.")] = False,
        by: ByOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Pin a theme's label so refits keep it (or --unpin)."""
        from themes.lifecycle import pin as do

        data = _guard(lambda: do(_store(), theme_id, unpin=unpin, actor=by))
        _done(data, as_json, f"Theme {theme_id} label {'unpinned' if unpin else 'pinned'}.")

    @app.command()
    def merge(source: int, into: int, by: ByOpt = None, as_json: JsonOpt = False) -> None:
        """Merge theme SOURCE into theme INTO; refits keep them merged."""
        from themes.lifecycle import merge as do

        data = _guard(lambda: do(_store(), source, into, actor=by))
        _done(
            data,
            as_json,
            f"Theme {source} merged into {into}; {data['records_moved']} record(s) moved.",
        )

    @app.command()
    def split(
        theme_id: int,
        seed: Annotated[
            list[str],
            typer.Option(
                help="Comma-separated record ids seeding one new theme; give it 2+ times."
            ),
        ],
        label: Annotated[
            list[str] | None, typer.Option(help="Label for each new theme, in --seed order.")
        ] = None,
        by: ByOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Split a theme by seed cases: each record goes to the nearest seed group."""
        from themes.lifecycle import split as do

        settings = _settings()
        groups = [[r.strip() for r in s.split(",") if r.strip()] for s in seed]
        data = _guard(
            lambda: do(
                _store(),
                theme_id,
                groups,
                labels=label or None,
                embed_model_id=settings.embed.model_id,
                actor=by,
            )
        )
        parts = ", ".join(f"{c['theme_id']} '{c['label']}' ({c['size']})" for c in data["children"])
        _done(data, as_json, f"Theme {theme_id} split into {parts}.")

    @app.command("not-a-theme")
    def not_a_theme(
        theme_id: int,
        undo: Annotated[bool, typer.Option("--undo", help="Show it as a theme again.")] = False,
        by: ByOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Mark a theme as not a real theme: hidden from lists, trends and reports."""
        from themes.lifecycle import mark_not_a_theme as do

        data = _guard(lambda: do(_store(), theme_id, undo=undo, actor=by))
        _done(data, as_json, f"Theme {theme_id} {'shown again' if undo else 'hidden'}.")
