"""CLI commands for similar-case search (`themes search`, `similar`, `duplicates`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

KindOpt = Annotated[
    list[str] | None,
    typer.Option("--kind", metavar="KIND", help="incident|complaint|claim (repeatable)."),
]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", metavar="YYYY-MM-DD", help="Event date from (YYYY-MM-DD)."),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", metavar="YYYY-MM-DD", help="Event date to (YYYY-MM-DD).")
]
ThemeOpt = Annotated[
    list[int] | None, typer.Option("--theme", metavar="ID", help="Theme id (repeatable).")
]
SiteOpt = Annotated[
    list[str] | None, typer.Option("--site", metavar="SITE", help="Site (repeatable).")
]
LocationOpt = Annotated[
    list[str] | None,
    typer.Option("--location", metavar="LOCATION", help="Location / ward (repeatable)."),
]
SpecialtyOpt = Annotated[
    list[str] | None,
    typer.Option("--specialty", metavar="SPECIALTY", help="Specialty (repeatable)."),
]
SeverityOpt = Annotated[
    list[str] | None,
    typer.Option("--severity", metavar="SEVERITY", help="Severity / harm (repeatable)."),
]
HarmOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--harm",
        metavar="LEVEL",
        help="Harm level: none|low|moderate|severe|fatal (LFPSE), or a label or severity "
        "value the harm mapping names ('Moderate harm', 'catastrophic'). Judged from the "
        "severity field, or from the text where it is blank (repeatable).",
    ),
]
StatusOpt = Annotated[
    list[str] | None, typer.Option("--status", metavar="STATUS", help="Status (repeatable).")
]
KOpt = Annotated[int, typer.Option("-k", min=1, metavar="N", help="Results per page.")]
OffsetOpt = Annotated[
    int, typer.Option("--offset", min=0, metavar="N", help="Skip this many (paging).")
]
MethodOpt = Annotated[str, typer.Option("--method", metavar="METHOD", help="hybrid|bm25|dense.")]


def _print_results(data: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from themes.cli import console

    if not data["results"]:
        console.print("No matching records.")
        return
    table = Table("#", "id", "kind", "date", "harm", "theme", "score", "snippet", show_lines=True)
    for r in data["results"]:
        text, marked, last = r["snippet"], [], 0
        for start, end in r["highlights"]:
            marked.append(escape(text[last:start]))
            marked.append(f"[bold yellow]{escape(text[start:end])}[/]")
            last = end
        marked.append(escape(text[last:]))
        theme = f"{r['theme_id']}: {r['theme_label']}" if r["theme_id"] is not None else "-"
        table.add_row(
            str(r["rank"]),
            r["record_id"],
            r["kind"],
            r["event_date"],
            r.get("harm") or "-",
            theme,
            f"{r['score']:.4f}",
            Text.from_markup("".join(marked)),
        )
    console.print(table)
    if data["next_offset"] is not None:
        console.print(f"More: --offset {data['next_offset']}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main `themes` app."""

    @app.command("search")
    def search_cmd(
        text: Annotated[
            str, typer.Argument(metavar="TEXT", help="Describe the event to look for.")
        ],
        kind: KindOpt = None,
        since: SinceOpt = None,
        until: UntilOpt = None,
        theme: ThemeOpt = None,
        site: SiteOpt = None,
        location: LocationOpt = None,
        specialty: SpecialtyOpt = None,
        severity: SeverityOpt = None,
        harm: HarmOpt = None,
        status: StatusOpt = None,
        k: KOpt = 10,
        offset: OffsetOpt = 0,
        method: MethodOpt = "hybrid",
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON (stable shape, see docs/cli.md).")
        ] = False,
    ) -> None:
        """Find past records that describe the same kind of event (hybrid search)."""
        from themes.cli import _emit_json, _guard, _settings
        from themes.search import Searcher, make_filters

        def run() -> dict[str, Any]:
            filters = make_filters(
                kind=kind, since=since, until=until, theme=theme, site=site,
                location=location, specialty=specialty, severity=severity, status=status,
                harm=harm,
            )  # fmt: skip
            with Searcher(_settings()) as searcher:
                return searcher.search(text, filters=filters, k=k, offset=offset, method=method)

        data = _guard(run)
        _emit_json(data) if as_json else _print_results(data)

    @app.command("similar")
    def similar_cmd(
        record_id: Annotated[
            str, typer.Argument(metavar="RECORD_ID", help="A record id, e.g. INC000123.")
        ],
        kind: KindOpt = None,
        since: SinceOpt = None,
        until: UntilOpt = None,
        theme: ThemeOpt = None,
        site: SiteOpt = None,
        location: LocationOpt = None,
        specialty: SpecialtyOpt = None,
        severity: SeverityOpt = None,
        harm: HarmOpt = None,
        status: StatusOpt = None,
        k: KOpt = 10,
        offset: OffsetOpt = 0,
        method: MethodOpt = "hybrid",
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON (stable shape, see docs/cli.md).")
        ] = False,
    ) -> None:
        """Records like a given record ("more like this"), the record itself left out."""
        from themes.cli import _emit_json, _guard, _settings
        from themes.search import Searcher, make_filters

        def run() -> dict[str, Any]:
            filters = make_filters(
                kind=kind, since=since, until=until, theme=theme, site=site,
                location=location, specialty=specialty, severity=severity, status=status,
                harm=harm,
            )  # fmt: skip
            with Searcher(_settings()) as searcher:
                return searcher.similar(
                    record_id, filters=filters, k=k, offset=offset, method=method
                )

        data = _guard(run)
        _emit_json(data) if as_json else _print_results(data)

    @app.command("duplicates")
    def duplicates_cmd(
        limit: Annotated[int, typer.Option(min=1, metavar="N", help="How many groups.")] = 50,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON (stable shape, see docs/cli.md).")
        ] = False,
    ) -> None:
        """Groups of records that report the same event (near-duplicates)."""
        from rich.markup import escape

        from themes import steps
        from themes.cli import _emit_json, _guard, _settings, console
        from themes.duplicates import duplicate_groups

        groups = _guard(lambda: duplicate_groups(steps.open_store(_settings()), limit=limit))
        if as_json:
            _emit_json(groups)
            return
        if not groups:
            console.print("No near-duplicates found (run `themes run` to look for them).")
            return
        for g in groups:
            console.rule(f"group {g['group']} · similarity up to {g['max_score']:.3f}")
            for r in g["records"]:
                console.print(
                    f"[bold]{escape(r['record_id'])}[/] {r['kind']} {r['event_date']} "
                    f"{escape(r['site'] or '')} · harm {r.get('harm') or '-'} · "
                    f"{escape(r['snippet'])}",
                    markup=True,
                    highlight=False,
                )
