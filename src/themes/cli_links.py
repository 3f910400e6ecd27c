"""CLI commands for recommendations, links and actions.

`themes recommendations import|list|rejects`, `themes links THEME_ID`, `themes link-case
RECORD_ID`, `themes actions add|update|list|history`.
"""

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


ByOpt = Annotated[
    str,
    typer.Option("--by", metavar="NAME", help="Who makes the change (default: login name)."),
]
DueOpt = Annotated[str | None, typer.Option(metavar="YYYY-MM-DD", help="Due date yyyy-mm-dd.")]
StatusOpt = Annotated[
    str | None,
    typer.Option(
        metavar="STATUS", help="open|in progress|done|not applicable (done needs --evidence)."
    ),
]
EvidenceOpt = Annotated[str | None, typer.Option(metavar="TEXT", help="Evidence of completion.")]
ThemeOpt = Annotated[int | None, typer.Option(metavar="ID", help="The theme it was linked from.")]
ActionIdArg = Annotated[
    int, typer.Argument(metavar="ACTION_ID", help="Action id (`themes actions list`).")
]


def _synced_store() -> Any:
    """The store, with the config folder's recommendation sets loaded into it first."""
    from themes import steps
    from themes.cli import _settings
    from themes.recommendations import sync_dir

    settings = _settings()
    store = steps.open_store(settings)
    sync_dir(store, settings.links.recommendations_dir)
    return store


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main `themes` app."""
    from themes.cli import JsonOpt, ThemeIdArg, ThemesTyper

    recs_app = ThemesTyper(help="The recommendation corpus.", no_args_is_help=True)
    actions_app = ThemesTyper(
        help="The trust's actions on linked recommendations.", no_args_is_help=True
    )
    app.add_typer(recs_app, name="recommendations")
    app.add_typer(actions_app, name="actions")

    @recs_app.command("import")
    def import_cmd(
        file: Annotated[
            Path, typer.Argument(metavar="FILE", help="A recommendation set or PFD export.")
        ],
        fmt: Annotated[
            str | None,
            typer.Option(
                "--format", metavar="FORMAT", help="pfd|csv|json|yaml (default: from suffix)."
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Import recommendations (PFD concerns are split into items and de-identified)."""
        from themes import steps
        from themes.cli import _emit_json, _guard, _settings, console
        from themes.recommendations import FORMATS, RecommendationError, import_file

        def run() -> dict[str, Any]:
            if fmt is not None and fmt not in FORMATS:
                raise RecommendationError(f"--format {fmt}: use one of {', '.join(FORMATS)}.")
            settings = _settings()
            store = steps.open_store(settings)

            def deid(texts: list[str]) -> list[str]:
                return steps.clean_texts_for_evaluation(settings, texts)

            return import_file(store, file, fmt, deidentify=deid if fmt == "pfd" else None)  # type: ignore[arg-type]

        report = _guard(run)
        if as_json:
            _emit_json(report)
            return
        console.print(
            f"{report['file']}: {report['read']} read: {report['inserted']} new, "
            f"{report['updated']} updated, {report['unchanged']} unchanged, "
            f"{report['rejected']} rejected"
            + (
                f" ({', '.join(f'{k}: {v}' for k, v in report['reasons'].items())})"
                if report["reasons"]
                else ""
            ),
            highlight=False,
        )
        for w in report["warnings"]:
            console.print(f"warning: {w}", highlight=False)
        if report["rejected"]:
            console.print(
                "Rejected rows (file, row, reason): `themes recommendations rejects`.",
                highlight=False,
            )

    @recs_app.command("list")
    def list_cmd(
        source: Annotated[
            str | None,
            typer.Option("--source", metavar="SOURCE", help="Only this set (file stem) or source."),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List recommendations: id, source, number, title."""
        from rich.table import Table

        from themes.cli import _emit_json, _guard, console
        from themes.recommendations import load_store

        rows = _guard(lambda: [r.as_dict() for r in load_store(_synced_store(), set_name=source)])
        if as_json:
            _emit_json(rows)
            return
        table = Table()
        table.add_column("id", no_wrap=True)  # an id is copied into other commands: never cut
        for name in ("source", "number", "title"):
            table.add_column(name, overflow="fold")
        for r in rows:
            table.add_row(r["id"], r["source"][:60], r["number"], r["title"] or r["text"][:60])
        console.print(table)

    @recs_app.command("rejects")
    def rejects_cmd(
        limit: Annotated[
            int, typer.Option(min=1, metavar="N", help="Show at most this many rows.")
        ] = 100,
        as_json: JsonOpt = False,
    ) -> None:
        """List rows that imports rejected: file, row number, reason."""
        from rich.table import Table

        from themes.cli import _emit_json, _guard, console
        from themes.recommendations import list_rejects

        rows = _guard(lambda: list_rejects(_synced_store(), limit=limit))
        if as_json:
            _emit_json(rows)
            return
        if not rows:
            console.print("No rejected rows.")
            return
        table = Table("file", "row", "reason")
        for r in rows:
            table.add_row(r["file"], str(r["row_number"]), r["reason"])
        console.print(table)

    @app.command("links")
    def links_cmd(theme_id: ThemeIdArg, as_json: JsonOpt = False) -> None:
        """A theme's linked recommendations with evidence and action status."""
        from themes import steps
        from themes.cli import _emit_json, _guard, _settings, console
        from themes.links import theme_links

        rows = _guard(lambda: theme_links(steps.open_store(_settings()), theme_id))
        if as_json:
            _emit_json(rows)
            return
        if not rows:
            console.print(
                "No links yet for this theme: run `themes run` (links are computed nightly)."
            )
            return
        for r in rows:
            rec = r["recommendation"]
            flag = "STRONG" if r["strong"] else "weak"
            console.rule(
                f"{r['rank']}. {rec.get('title') or rec['rec_id']} · {flag} "
                f"(P={r['probability']:.2f}) · action: {r['action_status']}"
            )
            console.print(
                f"{rec.get('source', '')} {rec.get('number', '')} · {rec['rec_id']}",
                highlight=False,
            )
            console.print(rec.get("text", ""), markup=False, highlight=False)
            for ev in r["evidence"][:2]:
                console.print(
                    f"  case {ev['record_id']}: “{ev['case_phrase'][:160]}” ~ "
                    f"“{ev['recommendation_phrase'][:120]}” (shared: "
                    f"{', '.join(ev['shared_terms']) or '-'})",
                    markup=False,
                    highlight=False,
                )

    @app.command("link-case")
    def link_case_cmd(
        record_id: Annotated[
            str, typer.Argument(metavar="RECORD_ID", help="A record id, e.g. INC000123.")
        ],
        as_json: JsonOpt = False,
    ) -> None:
        """A case's top recommendations, with the matching phrases."""
        from themes import steps
        from themes.cli import _emit_json, _guard, _settings, console
        from themes.links import build_linker, case_links

        def run() -> dict[str, Any]:
            settings = _settings()
            store = steps.open_store(settings)
            strong_at = settings.links.strong_link_probability
            data = case_links(store, record_id, strong_at=strong_at)
            if data["links"]:
                linker = build_linker(store, settings)
                data = case_links(store, record_id, linker=linker, strong_at=strong_at)
            return data

        data = _guard(run)
        if as_json:
            _emit_json(data)
            return
        if not data["links"]:
            console.print(f"No links yet for {record_id}: run `themes run`.")
            return
        for r in data["links"]:
            rec = r["recommendation"]
            console.rule(
                f"{r['rank']}. {rec.get('title') or rec['rec_id']} (P={r['probability']:.2f})"
            )
            console.print(f"{rec.get('source', '')} · {rec['rec_id']}", highlight=False)
            ev = r.get("evidence")
            if ev:
                console.print(
                    f"  “{ev['case_phrase'][:200]}” ~ “{ev['recommendation_phrase'][:160]}”",
                    markup=False,
                    highlight=False,
                )

    @actions_app.command("add")
    def add_cmd(
        rec_id: Annotated[str, typer.Argument(metavar="REC_ID", help="Recommendation id.")],
        owner: Annotated[str, typer.Option(metavar="NAME", help="Who owns the action.")],
        action: Annotated[str, typer.Option(metavar="TEXT", help="What will be done.")],
        due: DueOpt = None,
        status: StatusOpt = "open",
        theme: ThemeOpt = None,
        evidence: EvidenceOpt = "",
        by: ByOpt = "",
        as_json: JsonOpt = False,
    ) -> None:
        """Record an action on a recommendation."""
        from themes import steps
        from themes.actions import add_action
        from themes.cli import _emit_json, _guard, _settings, console

        row = _guard(
            lambda: add_action(
                steps.open_store(_settings()),
                rec_id=rec_id,
                owner=owner,
                action=action,
                due_date=due,
                status=status,
                theme_id=theme,
                evidence=evidence,
                by=by or _user(),
            )
        )
        if as_json:
            _emit_json(row)
            return
        console.print(f"Action {row['action_id']} recorded on {row['rec_id']} ({row['status']}).")

    @actions_app.command("update")
    def update_cmd(
        action_id: ActionIdArg,
        owner: Annotated[str | None, typer.Option(metavar="NAME", help="New owner.")] = None,
        action: Annotated[
            str | None, typer.Option(metavar="TEXT", help="New description of the action.")
        ] = None,
        due: Annotated[
            str | None,
            typer.Option(metavar="YYYY-MM-DD", help="New due date yyyy-mm-dd ('' clears it)."),
        ] = None,
        status: StatusOpt = None,
        evidence: EvidenceOpt = None,
        by: ByOpt = "",
        as_json: JsonOpt = False,
    ) -> None:
        """Change an action (every change is kept in its history)."""
        from themes import steps
        from themes.actions import update_action
        from themes.cli import _emit_json, _guard, _settings, console

        changes = {
            k: v
            for k, v in {
                "owner": owner,
                "action": action,
                "due_date": due,
                "status": status,
                "evidence": evidence,
            }.items()
            if v is not None
        }
        row = _guard(
            lambda: update_action(
                steps.open_store(_settings()), action_id, by=by or _user(), **changes
            )
        )
        if as_json:
            _emit_json(row)
            return
        console.print(f"Action {row['action_id']}: {row['status']}, due {row['due_date'] or '-'}.")

    @actions_app.command("list")
    def list_actions_cmd(
        rec_id: Annotated[
            str | None, typer.Option("--rec", metavar="REC_ID", help="One recommendation.")
        ] = None,
        theme: Annotated[int | None, typer.Option(metavar="ID", help="One theme.")] = None,
        status: Annotated[str | None, typer.Option(metavar="STATUS", help="One status.")] = None,
        overdue: Annotated[bool, typer.Option("--overdue", help="Only overdue actions.")] = False,
        flagged: Annotated[
            bool,
            typer.Option("--flagged", help="Overdue actions and strong links with no action."),
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """List actions; `--flagged` shows what needs attention."""
        from rich.table import Table

        from themes import steps
        from themes.actions import flagged_for_theme, list_actions
        from themes.cli import _emit_json, _guard, _settings, console
        from themes.links import flagged_actions

        def run() -> Any:
            store = steps.open_store(_settings())
            if flagged:
                found = flagged_actions(store)
                return found if theme is None else flagged_for_theme(found, theme)
            return list_actions(
                store, rec_id=rec_id, theme_id=theme, status=status, overdue=overdue
            )

        data = _guard(run)
        if as_json:
            _emit_json(data)
            return
        rows = data["overdue"] if flagged else data
        table = Table("id", "recommendation", "theme", "owner", "status", "due", "action")
        for r in rows:
            table.add_row(
                str(r["action_id"]),
                r["rec_id"],
                "-" if r["theme_id"] is None else str(r["theme_id"]),
                r["owner"],
                r["status"] + (" (OVERDUE)" if r["overdue"] else ""),
                r["due_date"] or "-",
                r["action"][:60],
            )
        if flagged:
            console.print(f"[bold]Overdue actions[/] ({len(rows)})", markup=True)
        console.print(table)
        if flagged:
            gaps = data["strong_without_action"]
            console.print(f"[bold]Strong links with no action[/] ({len(gaps)})", markup=True)
            t2 = Table("theme", "recommendation", "title", "P")
            for g in gaps:
                t2.add_row(
                    f"{g['theme_id']}: {g['theme_label']}",
                    g["rec_id"],
                    g["title"],
                    f"{g['probability']:.2f}",
                )
            console.print(t2)

    @actions_app.command("history")
    def history_cmd(action_id: ActionIdArg, as_json: JsonOpt = False) -> None:
        """Every change to an action: when, who, what."""
        from themes import steps
        from themes.actions import action_history
        from themes.cli import _emit_json, _guard, _settings, console

        rows = _guard(lambda: action_history(steps.open_store(_settings()), action_id))
        if as_json:
            _emit_json(rows)
            return
        for r in rows:
            changes = "; ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in r["changes"].items())
            console.print(
                f"{r['changed_at']} {r['changed_by']}: {changes}", markup=False, highlight=False
            )
