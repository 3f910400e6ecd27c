"""CLI commands for themes over time: history, curation, trends, emerging themes, report."""

# No `from __future__ import annotations`: Typer reads the option annotations at
# definition time, and they name objects imported inside register().

from typing import Annotated

import typer

ByOpt = Annotated[
    str | None,
    typer.Option("--by", metavar="NAME", help="Who is acting (default: your login name)."),
]


def register(app: typer.Typer) -> None:
    """Add the theme-lifecycle commands to the main `themes` app."""
    from themes.cli import JsonOpt, ThemeIdArg, _emit_json, _guard, _settings, console

    def _store():  # noqa: ANN202
        from themes import steps

        return steps.open_store(_settings())

    def _done(data: dict, as_json: bool, message: str) -> None:
        if as_json:
            _emit_json(data)
        else:
            console.print(message, highlight=False)

    @app.command()
    def history(theme_id: ThemeIdArg, as_json: JsonOpt = False) -> None:
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
            f"{data['size']} records; born {data['born_at']})",
            markup=True,
        )
        if data["merged_into"] is not None:
            console.print(f"Merged into theme {data['merged_into']}.")
        if data["split_into"]:
            console.print("Split into themes " + ", ".join(map(str, data["split_into"])) + ".")
        table = Table("when", "event", "by", "detail")
        for e in data["events"]:
            detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if k != "seeds")
            table.add_row(e["at"], e["kind"], e["actor"], detail)
        console.print(table)
        for m in data["moves_out"]:
            console.print(f"{m['records']} record(s) moved to theme {m['to']}: {m['reason']}")
        for m in data["moves_in"]:
            console.print(f"{m['records']} record(s) moved in: {m['reason']}")

    @app.command()
    def rename(
        theme_id: ThemeIdArg,
        label: Annotated[str, typer.Argument(metavar="LABEL", help="The new label.")],
        by: ByOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Rename a theme; the label is pinned, so refits keep it."""
        from themes.lifecycle import rename as do

        data = _guard(lambda: do(_store(), theme_id, label, actor=by))
        _done(data, as_json, f"Theme {theme_id} is now '{label}' (pinned).")

    @app.command()
    def pin(
        theme_id: ThemeIdArg,
        unpin: Annotated[bool, typer.Option("--unpin", help="Let refits relabel it.")] = False,
        by: ByOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Pin a theme's label so refits keep it (or --unpin)."""
        from themes.lifecycle import pin as do

        data = _guard(lambda: do(_store(), theme_id, unpin=unpin, actor=by))
        _done(data, as_json, f"Theme {theme_id} label {'unpinned' if unpin else 'pinned'}.")

    @app.command()
    def merge(
        source: Annotated[int, typer.Argument(metavar="SOURCE", help="Theme id to merge away.")],
        into: Annotated[int, typer.Argument(metavar="INTO", help="Theme id to keep.")],
        by: ByOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
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
        theme_id: ThemeIdArg,
        seed: Annotated[
            list[str],
            typer.Option(
                metavar="RECORD_IDS",
                help="Comma-separated record ids seeding one new theme; give it 2+ times.",
            ),
        ],
        label: Annotated[
            list[str] | None,
            typer.Option(metavar="LABEL", help="Label for each new theme, in --seed order."),
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
        theme_id: ThemeIdArg,
        undo: Annotated[bool, typer.Option("--undo", help="Show it as a theme again.")] = False,
        by: ByOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Mark a theme as not a real theme: hidden from lists, trends and reports."""
        from themes.lifecycle import mark_not_a_theme as do

        data = _guard(lambda: do(_store(), theme_id, undo=undo, actor=by))
        _done(data, as_json, f"Theme {theme_id} {'shown again' if undo else 'hidden'}.")

    @app.command()
    def emerging(
        period: Annotated[
            str | None,
            typer.Option(
                metavar="YYYY-MM",
                help="Up to this month (YYYY-MM); default: the latest complete month with records.",
            ),
        ] = None,
        weekly: Annotated[bool, typer.Option("--weekly", help="Weekly charts.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Emerging themes, ranked, with their evidence (SPC signals, new themes)."""
        from rich.markup import escape

        from themes.emerging import emerging_themes, parse_period

        settings = _settings()
        freq = "W" if weekly else "M"
        rows = _guard(
            lambda: emerging_themes(
                _store(), settings.trends, freq=freq, period=parse_period(period, freq)
            )
        )
        if as_json:
            _emit_json(rows)
            return
        if not rows:
            console.print("No emerging themes: no special-cause increase and no new theme.")
        for i, e in enumerate(rows, 1):
            console.print(
                f"[bold]{i}. Theme {e['theme_id']}: {escape(e['label'])}[/] (score {e['score']})",
                markup=True,
            )
            console.print("   " + "; ".join(e["reasons"]), highlight=False)
            console.print(
                f"   mean before {e['before']:g} per period, recent {e['recent']:g} "
                f"({e['recent_cases']} cases); kinds: "
                + ", ".join(f"{k} {n}" for k, n in e["kinds"].items()),
                highlight=False,
            )

    @app.command()
    def trends(
        theme_id: Annotated[
            int | None, typer.Argument(metavar="THEME_ID", help="One theme (default: all).")
        ] = None,
        by: Annotated[
            str | None,
            typer.Option(metavar="FIELD", help="Split by kind, site, location or specialty."),
        ] = None,
        weekly: Annotated[bool, typer.Option("--weekly", help="Weeks, not months.")] = False,
        share: Annotated[
            bool, typer.Option("--share", help="Share of all records in the period (0-1).")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Counts per theme and period, or one theme's XmR chart with special causes."""
        from rich.table import Table

        from themes import emerging as em

        settings = _settings()
        freq = "W" if weekly else "M"

        def load():  # noqa: ANN202
            frame = em.theme_frame(_store())
            end = em.trend_end(frame, freq=freq)  # the period not over yet is left out
            if theme_id is not None:
                frame = frame[frame["theme_id"] == theme_id]
                if frame.empty:
                    from themes.errors import NotFoundError

                    raise NotFoundError(f"No records in theme {theme_id}.")
            if by:
                return em.breakdown(frame, by, freq=freq, end=end)
            counts = em.theme_counts(frame, freq=freq, end=end)
            if share and theme_id is None:
                return em.shares(counts, em.all_records_dates(_store()), freq=freq)
            return counts

        table_data = _guard(load)
        if by:
            rows = table_data.assign(period=table_data["period"].astype(str)).to_dict("records")
            if as_json:
                _emit_json(rows)
                return
            table = Table("period", "theme", by, "count")
            for r in rows:
                table.add_row(r["period"], str(r["theme_id"]), str(r[by]), str(r["count"]))
            console.print(table)
            return
        if theme_id is not None:
            chart = em.chart_dict(em.chart(table_data[theme_id], settings.trends))
            if as_json:
                _emit_json({"theme_id": theme_id, "freq": freq, **chart})
                return
            table = Table("period", "count", "mean", "upper limit", "signal")
            for i, p in enumerate(chart["periods"]):
                table.add_row(
                    p,
                    f"{chart['values'][i]:g}",
                    f"{chart['mean'][i]:.1f}",
                    f"{chart['upper_process_limit'][i]:.1f}",
                    chart["special_cause"][i] + (f" ({', '.join(chart['rules'][i])})"
                                                 if chart["rules"][i] else ""),
                )  # fmt: skip
            console.print(table)
            for w in chart["warnings"]:
                console.print(f"Warning: {w}", style="yellow")
            return
        cast = (lambda v: round(float(v), 4)) if share else int  # noqa: E731
        out = {
            "periods": [str(p) for p in table_data.index],
            "themes": {
                int(k): [cast(v) for v in table_data[k]] for k in sorted(table_data.columns)
            },
        }
        if as_json:
            _emit_json({"freq": freq, "share": share, **out})
            return
        table = Table("theme", *out["periods"][-6:])
        for k, values in out["themes"].items():
            shown = [f"{v:.1%}" if share else str(v) for v in values[-6:]]
            table.add_row(str(k), *shown)
        console.print(table)

    @app.command()
    def report(
        period: Annotated[
            str | None,
            typer.Option(
                metavar="YYYY-MM",
                help="Month to report, YYYY-MM (default: the latest complete month with records).",
            ),
        ] = None,
        fmt: Annotated[
            list[str] | None,
            typer.Option("--format", metavar="FORMAT", help="html and/or xlsx (default: both)."),
        ] = None,
        out: Annotated[
            str | None,
            typer.Option(metavar="FOLDER", help="Folder to write to (default: paths.reports_dir)."),
        ] = None,
        weekly: Annotated[bool, typer.Option("--weekly", help="Weekly periods.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Write the governance report (self-contained HTML and an Excel workbook)."""
        from pathlib import Path

        from themes.governance import write_report

        settings = _settings()
        paths = _guard(
            lambda: write_report(
                _store(),
                settings,
                period=period,
                freq="W" if weekly else "M",
                formats=tuple(fmt or ("html", "xlsx")),
                out_dir=Path(out) if out else None,
            )
        )
        if as_json:
            _emit_json({k: str(v) for k, v in paths.items()})
            return
        for kind, path in paths.items():
            console.print(f"{kind}: {path}", highlight=False)
