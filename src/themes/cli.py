"""The `themes` command line. Only this module (and the flows) print."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperArgument, TyperCommand

from themes.errors import ConfigError, RunLockedError, ThemesError
from themes.records import KINDS


class PlainHelpCommand(TyperCommand):
    """A command whose help names its arguments the Unix way, as options are named.

    Typer prints an argument as `{theme_id}` in the usage line and `theme_id <int>` in
    the list below it; this prints its metavar alone (`THEME_ID`, `[THEME_ID]`, `FILE...`).
    """

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _argument_metavar(param)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                arguments.append((_argument_metavar(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _argument_metavar(param: TyperArgument) -> str:
    name = param.metavar or (param.name or "").upper()
    return name + ("..." if param.nargs != 1 else "")


class ThemesTyper(typer.Typer):
    """A Typer app whose commands default to `PlainHelpCommand`."""

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or PlainHelpCommand, **kwargs)


app = ThemesTyper(
    help="Learning themes from NHS incidents, complaints and claims.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain Click-style help: Typer's Rich panels print a type such as `<bool>` beside
    # every flag (even --help), as if the flag took a value
    rich_markup_mode=None,
)
# user text (labels, actions, owners, snippets) can hold square brackets, so Rich markup
# is off by default; styled lines ask for it (markup=True) and escape what they show
console = Console(markup=False)
err = Console(stderr=True, markup=False)

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (stable shape, see docs/cli.md).")
]
ThemeIdArg = Annotated[
    int, typer.Argument(metavar="THEME_ID", help="Theme id (see `themes themes`).")
]
LimitOpt = Annotated[int, typer.Option(min=1, metavar="N", help="Show at most this many.")]


def _settings():  # noqa: ANN202
    from themes.settings import load_settings

    return load_settings()


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _fail(e: Exception, code: int = 1) -> None:
    err.print(f"[bold red]Error:[/] {escape(str(e))}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except RunLockedError as e:
        _fail(e, code=3)
    except ThemesError as e:
        _fail(e)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show library log lines.")
    ] = False,
) -> None:
    """Turn free-text incidents, complaints and claims into learning themes."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="Export files (CSV, XLSX, JSONL, Parquet)."),
    ],
    kind: Annotated[
        str | None, typer.Option(metavar="KIND", help=f"Record kind: {'|'.join(KINDS)}.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(metavar="SOURCE", help="Source mapping name (a file in config/sources/)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-read a file even if already ingested.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Ingest exports into the store; bad rows go to quarantine with a reason."""
    from themes import steps
    from themes.ingest import ingest_file

    def run() -> None:
        settings = _settings()
        mapping = steps.resolve_source(settings.ingest, kind=kind, source=source)
        store = steps.open_store(settings)
        reports = []
        with _progress() as bar:
            task = bar.add_task("ingest", total=len(files))
            for path in files:
                reports.append(ingest_file(store, path, mapping, force=force))
                bar.advance(task)
        if as_json:
            _emit_json([r.as_dict() for r in reports])
            return
        for r in reports:
            if r.skipped_unchanged_file:
                console.print(f"{r.file}: already ingested, nothing changed")
                continue
            console.print(
                f"{r.file}: {r.n_rows} rows: {r.inserted} new, {r.updated} updated, "
                f"{r.unchanged} unchanged, {r.quarantined} quarantined"
                + (
                    f" ({', '.join(f'{k}: {v}' for k, v in r.reasons.items())})"
                    if r.reasons
                    else ""
                )
            )
        console.print("Run `themes run` to de-identify, embed and update themes.")

    _guard(run)


@app.command("run")
def run_flow(
    refit: Annotated[bool, typer.Option(help="Refit themes instead of assigning.")] = False,
    rediscover: Annotated[
        bool,
        typer.Option(
            help="With --refit: discover themes from scratch instead of keeping the current "
            "themes as centres (ids are still matched to the registry)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the nightly flow now (Prefect, locally): ingest, de-identify, embed, themes."""
    if rediscover and not refit:
        _fail(ValueError("--rediscover needs --refit."))

    def run() -> dict[str, Any]:
        from pipelines.nightly import nightly

        return nightly(refit=refit, rediscover=rediscover)

    summary = _guard(run)
    if as_json:
        _emit_json(summary)
    else:
        from themes.report import run_summary_markdown

        console.print(run_summary_markdown(summary), markup=False, highlight=False)
    if summary.get("status") != "completed":
        raise typer.Exit(1)


@app.command()
def serve(
    cron: Annotated[
        str | None, typer.Option(metavar="SCHEDULE", help="Cron schedule (default flow.cron).")
    ] = None,
) -> None:
    """Serve the nightly flow on a cron schedule (long-running)."""
    from pipelines.nightly import serve as serve_flow

    _guard(lambda: serve_flow(cron))


@app.command("themes")
def themes_cmd(
    show_all: Annotated[
        bool, typer.Option("--all", help="Include themes curated as 'not a theme'.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the current themes: permanent id, label, size, keywords."""
    from themes import steps
    from themes.queries import list_themes

    rows = _guard(lambda: list_themes(steps.open_store(_settings()), include_hidden=show_all))
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        console.print("No themes yet: run `themes run` (or `themes demo`).")
        return
    table = Table("id", "label", "size", "keywords")
    for r in rows:
        label = r["label"] + (" [pinned]" if r["pinned"] else "")
        label += " [not a theme]" if r["not_a_theme"] else ""
        words = ", ".join(r["keywords"][:6])
        table.add_row(str(r["theme_id"]), label, str(r["size"]), words)
    console.print(table)


@app.command()
def show(theme_id: ThemeIdArg, as_json: JsonOpt = False) -> None:
    """Show one theme with representative de-identified cases."""
    from themes import steps
    from themes.queries import show_theme

    data = _guard(lambda: show_theme(steps.open_store(_settings()), theme_id))
    if as_json:
        _emit_json(data)
        return
    console.print(
        f"[bold]Theme {data['theme_id']}: {escape(data['label'])}[/] ({data['size']} records)",
        markup=True,
    )
    console.print("Keywords: " + ", ".join(data["keywords"]), highlight=False)
    console.print("Kinds: " + ", ".join(f"{k} {n}" for k, n in data["kinds"].items()))
    for rep in data["representatives"]:
        console.rule(f"{rep['record_id']} · {rep['kind']} · {rep['event_date']}")
        console.print(rep["text"], markup=False, highlight=False)


@app.command()
def records(
    kind: Annotated[
        str | None, typer.Option(metavar="KIND", help="incident|complaint|claim")
    ] = None,
    theme: Annotated[int | None, typer.Option(metavar="ID", help="Theme id.")] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="How many records.")] = 20,
    offset: Annotated[int, typer.Option(min=0, metavar="N", help="Skip this many (paging).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List de-identified records with their theme, newest first."""
    from themes import steps
    from themes.queries import list_records

    rows = _guard(
        lambda: list_records(
            steps.open_store(_settings()), kind=kind, theme_id=theme, limit=limit, offset=offset
        )
    )
    if as_json:
        _emit_json(rows)
        return
    table = Table("id", "kind", "date", "theme", "text")
    for r in rows:
        text = r["text"].replace("\n", " ")
        table.add_row(
            r["record_id"],
            r["kind"],
            r["event_date"],
            f"{r['theme_id']}: {r['theme_label']}" if r["theme_id"] is not None else "-",
            text[:120] + ("…" if len(text) > 120 else ""),
        )
    console.print(table)


@app.command()
def quarantine(limit: LimitOpt = 50, as_json: JsonOpt = False) -> None:
    """List quarantined rows: file, row number, reason."""
    from themes import steps
    from themes.queries import list_quarantine

    rows = _guard(lambda: list_quarantine(steps.open_store(_settings()), limit=limit))
    if as_json:
        _emit_json(rows)
        return
    table = Table("file", "row", "id", "reason")
    for r in rows:
        table.add_row(r["file"], str(r["row_number"]), r["record_id"] or "", r["reason"])
    console.print(table)


@app.command()
def demo(
    records_n: Annotated[
        int, typer.Option("--records", min=100, metavar="N", help="Records to generate.")
    ] = 3000,
    seed: Annotated[int, typer.Option(metavar="N", help="Generator seed.")] = 0,
) -> None:
    """Generate the synthetic demo exports and run the nightly flow on them."""
    from themes.demo import generate_demo

    def run() -> dict[str, Any]:
        settings = _settings()
        out = settings.paths.data_dir / "demo"
        console.print(f"Generating {records_n} synthetic records (seed {seed}) in {out} …")
        manifest = generate_demo(out, seed=seed, n_records=records_n)
        for kind, path in manifest.files.items():
            target = settings.paths.drop_folder / kind
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        from pipelines.nightly import nightly

        return nightly(refit=True)

    summary = _guard(run)
    from themes.report import run_summary_markdown

    console.print(run_summary_markdown(summary), markup=False, highlight=False)
    settings = _settings()
    console.print(
        f"\nResults: store {settings.store_url}, models in {settings.paths.models_dir}/.\n"
        "Explore: `themes themes`, `themes show ID`, `themes records --theme ID`, "
        "`themes quarantine`."
    )


@app.command()
def evaluate(
    input_file: Annotated[
        Path, typer.Option("--input", metavar="FILE", help="Labelled file (CSV, XLSX, ...).")
    ],
    text_column: Annotated[str, typer.Option(metavar="COLUMN", help="Column with the free text.")],
    label_column: Annotated[
        str | None, typer.Option(metavar="COLUMN", help="Column with one label per row.")
    ] = None,
    one_hot_start: Annotated[
        str | None,
        typer.Option(
            metavar="COLUMN",
            help="First of the one-hot label columns (rows with one label kept).",
        ),
    ] = None,
    deidentify: Annotated[
        bool, typer.Option(help="Clean and de-identify the text first, as the product does.")
    ] = True,
    limit: Annotated[
        int | None, typer.Option(metavar="N", help="Use only the first N usable rows.")
    ] = None,
    taxonomy: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Seed the project's themes from this taxonomy (TOML or CSV) instead of "
            "themes.taxonomy_file; reports how many records the seeds took.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit themes on a labelled file; compare with BERTopic defaults (NMI, ARI, outliers)."""
    from themes import steps
    from themes.embed import SentenceTransformerEmbedder
    from themes.evaluate import as_rows, compare, load_labelled

    def run() -> dict[str, Any]:
        settings = _settings()
        if taxonomy is not None:
            from themes.taxonomy import load_taxonomy

            if not taxonomy.is_file():
                raise ConfigError(f"--taxonomy: {taxonomy} does not exist.")
            load_taxonomy(taxonomy)  # a bad file fails here, before minutes of embedding
            settings = settings.model_copy(
                update={"themes": settings.themes.model_copy(update={"taxonomy_file": taxonomy})}
            )
        texts, labels, skipped = load_labelled(
            input_file,
            text_column=text_column,
            label_column=label_column,
            one_hot_start=one_hot_start,
        )
        if limit:
            texts, labels = texts[:limit], labels[:limit]
        if deidentify:
            with _progress() as bar:
                task = bar.add_task("de-identify", total=len(texts))
                texts = steps.clean_texts_for_evaluation(
                    settings, texts, progress=lambda _s, done, _t: bar.update(task, completed=done)
                )
        embedder = SentenceTransformerEmbedder(settings.embed)
        with _progress() as bar:
            task = bar.add_task("embed", total=len(texts))
            vectors = embedder.encode(texts, progress=lambda n: bar.advance(task, n))
        model = steps.build_theme_model(settings, embedder)
        scores = compare(texts, labels, vectors, model, seed=settings.themes.seed)
        out = {
            "input": str(input_file),
            "rows": len(texts),
            "labels": len(set(labels)),
            "skipped": skipped,
            "deidentified": deidentify,
            "methods": as_rows(scores),
        }
        if model.seed_names:
            out["taxonomy"] = steps.taxonomy_summary(model, settings, n_records=len(texts))
        return out

    result = _guard(run)
    if as_json:
        _emit_json(result)
        return
    console.print(
        f"{result['rows']} rows, {result['labels']} labels (skipped: {result['skipped']})"
    )
    table = Table("method", "NMI", "ARI", "outliers", "themes", "seconds")
    for m in result["methods"]:
        table.add_row(
            m["method"],
            f"{m['nmi']:.3f}",
            f"{m['ari']:.3f}",
            f"{m['outlier_share']:.1%}",
            str(m["n_themes"]),
            f"{m['seconds']:.0f}",
        )
    console.print(table)
    tax = result.get("taxonomy")
    if tax:
        console.print(
            f"Seeded from {tax['file']}: {tax['seeds_used']} of {tax['seeds']} taxonomy themes "
            f"took {tax['records_seeded']} records ({tax['share_seeded']:.1%})."
        )
        if tax["unused"]:
            console.print(
                "No record reached themes.seed_min_similarity for: " + ", ".join(tax["unused"])
            )


@app.command()
def runs(limit: LimitOpt = 10, as_json: JsonOpt = False) -> None:
    """Recent runs with their status."""
    from themes import steps

    stored = _guard(lambda: steps.open_store(_settings()).last_runs(limit))
    rows = [
        {**r, "started_at": _utc_iso(r["started_at"]), "finished_at": _utc_iso(r["finished_at"])}
        for r in stored
    ]
    if as_json:
        _emit_json(rows)
        return
    table = Table("run", "started", "finished", "status")
    for r in rows:
        table.add_row(r["run_id"][:8], r["started_at"], r["finished_at"] or "-", r["status"])
    console.print(table)


def _utc_iso(at: datetime | None) -> str | None:
    """ISO 8601 with the offset, for a naive UTC time from the store."""
    return at.replace(tzinfo=UTC).isoformat(timespec="seconds") if at else None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal and os.environ.get("THEMES_PROGRESS") != "1",
    )


# Commands of the search, recommendation-linking and contributory-factor capabilities
# live in their own modules; each adds its commands to `app`.
from themes import cli_factors, cli_lifecycle, cli_links, cli_search  # noqa: E402

for _module in (cli_lifecycle, cli_search, cli_links, cli_factors):
    _module.register(app)


if __name__ == "__main__":
    app()
