"""CLI commands for contributory factors and harm (`themes factors`, `themes record`)."""

from typing import Annotated, Any

import typer
from rich.markup import escape


def register(app: typer.Typer) -> None:
    """Add this capability's commands to the main `themes` app."""
    from themes.cli import JsonOpt, ThemeIdArg

    @app.command("factors")
    def factors_cmd(
        theme_id: ThemeIdArg,
        period: Annotated[
            str | None,
            typer.Option(
                metavar="PERIOD",
                help="Trend period: month, quarter or year (default factors.period).",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """A theme's contributory factors (share, lift) and harm, overall and over time."""
        from themes.cli import _emit_json, _guard, console

        data = _guard(lambda: theme_factors(theme_id, period))
        if as_json:
            _emit_json(data)
            return
        _print_theme(console, data)

    @app.command("record")
    def record_cmd(
        record_id: Annotated[
            str, typer.Argument(metavar="RECORD_ID", help="Record id, e.g. INC000042.")
        ],
        as_json: JsonOpt = False,
    ) -> None:
        """One de-identified case with its factors (confidence, evidence), harm and outcomes."""
        from themes import factors, steps
        from themes.cli import _emit_json, _guard, _settings, console

        data = _guard(lambda: factors.record_factors(steps.open_store(_settings()), record_id))
        if as_json:
            _emit_json(data)
            return
        _print_record(console, data)


def theme_factors(theme_id: int, period: str | None = None) -> dict[str, Any]:
    """What `themes factors THEME_ID --json` prints (see docs/cli.md)."""
    from themes import factors, steps
    from themes.cli import _settings
    from themes.queries import show_theme

    settings = _settings()
    store = steps.open_store(settings)
    p = period or settings.factors.period
    theme = show_theme(store, theme_id)
    return {
        "theme_id": theme["theme_id"],
        "label": theme["label"],
        "size": theme["size"],
        "factors": factors.factor_profile(store, theme_id),
        "harm": factors.harm_distribution(store, theme_id),
        "period": p,
        "factor_trend": factors.factor_trend(store, theme_id, period=p),
        "harm_trend": factors.harm_trend(store, theme_id, period=p),
    }


def _print_theme(console: Any, data: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(
        f"[bold]Theme {data['theme_id']}: {escape(data['label'])}[/] ({data['size']} records)",
        markup=True,
    )
    table = Table("factor", "domain", "cases", "share", "all cases", "lift")
    for r in data["factors"]:
        if not r["cases"]:
            continue
        lift = f"{r['lift']:.2f}" if r["lift"] is not None else "-"
        table.add_row(
            r["name"], r["domain"], str(r["cases"]), f"{r['share']:.0%}",
            f"{r['all_share']:.0%}", lift,
        )  # fmt: skip
    console.print(table)
    harm = Table("harm", "cases", "share", "estimated from text")
    for r in data["harm"]:
        harm.add_row(r["label"], str(r["cases"]), f"{r['share']:.0%}", str(r["estimated"]))
    console.print(harm)
    top = [r["factor_id"] for r in data["factors"] if r["cases"]][:5]
    if top:
        trend = Table("period", "cases", *top)
        periods: dict[str, dict[str, Any]] = {}
        for r in data["factor_trend"]:
            periods.setdefault(r["period"], {"n": r["theme_cases"]})[r["factor_id"]] = r["share"]
        for p, row in periods.items():
            trend.add_row(p, str(row["n"]), *[f"{row.get(f, 0):.0%}" for f in top])
        console.print(f"Share of cases with each of the top factors, per {data['period']}:")
        console.print(trend)


def _print_record(console: Any, data: dict[str, Any]) -> None:
    console.print(
        f"[bold]{escape(data['record_id'])}[/] · {data['kind']} · {data['event_date']} · theme "
        f"{data['theme_id']}: {escape(data['theme_label'] or '-')}",
        markup=True,
        highlight=False,
    )
    if not data["tagged"]:
        console.print("Not tagged yet: run `themes run`.")
    h = data["harm"]
    source = "estimated from text" if h["estimated"] else h["source"]
    console.print(f"Harm: {h['label']} ({source})", highlight=False)
    if h["estimated"] and h["evidence"]:
        console.print(f"  evidence: {h['evidence']}", markup=False, highlight=False)
    if data["outcomes"]:
        console.print("Outcomes: " + ", ".join(o["name"] for o in data["outcomes"]))
    if not data["factors"]:
        console.print("No contributory factors found.")
    for f in data["factors"]:
        hedged = ", hedged" if f["hedged"] else ""
        console.print(
            f"[bold]{escape(f['name'])}[/] ({f['confidence']:.2f}, {f['method']}{hedged})",
            markup=True,
            highlight=False,
        )
        console.print(f"  {f['evidence']}", markup=False, highlight=False)
