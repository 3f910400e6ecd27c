from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from themes.cli import app

runner = CliRunner()
COMMANDS = [
    "ingest",
    "run",
    "serve",
    "themes",
    "show",
    "records",
    "quarantine",
    "demo",
    "evaluate",
    "runs",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output) > 100


def _export(tmp_path: Path, drop_column: str | None = None) -> Path:
    rows = [
        {
            "ID": f"INC{i}",
            "Incident date": "01/03/2025",
            "Description": f"Patient fell {i}",
            "Action taken": "",
            "Outcome": "",
        }
        for i in range(3)
    ] + [
        {
            "ID": "",
            "Incident date": "01/03/2025",
            "Description": "x",
            "Action taken": "",
            "Outcome": "",
        }
    ]
    frame = pd.DataFrame(rows)
    if drop_column:
        frame = frame.drop(columns=[drop_column])
    path = tmp_path / "inc.csv"
    frame.to_csv(path, index=False)
    return path


def test_ingest_reports_counts_as_json(tmp_path: Path, settings) -> None:  # noqa: ANN001
    result = runner.invoke(app, ["ingest", str(_export(tmp_path)), "--kind", "incident", "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert (report["inserted"], report["quarantined"]) == (3, 1)
    assert report["reasons"] == {"missing id": 1}
    listed = runner.invoke(app, ["quarantine", "--json"])
    (row,) = json.loads(listed.stdout)
    assert row["row_number"] == 5 and "missing id" in row["reason"]


def test_ingest_missing_column_exits_1_with_clear_message(tmp_path: Path, settings) -> None:  # noqa: ANN001
    path = _export(tmp_path, drop_column="Description")
    result = runner.invoke(app, ["ingest", str(path), "--kind", "incident"])
    assert result.exit_code == 1
    assert "'Description'" in result.stderr
    assert "sources.datix_incident.narrative[0].column" in result.stderr


def test_unknown_kind_and_source_are_clear_errors(tmp_path: Path, settings) -> None:  # noqa: ANN001
    path = _export(tmp_path)
    bad_kind = runner.invoke(app, ["ingest", str(path), "--kind", "accident"])
    assert bad_kind.exit_code == 1 and "Unknown kind 'accident'" in bad_kind.stderr
    bad_source = runner.invoke(app, ["ingest", str(path), "--source", "nope"])
    assert bad_source.exit_code == 1 and "No source mapping 'nope'" in bad_source.stderr
    assert "datix_incident" in bad_source.stderr  # lists the known ones


def test_empty_store_lists_no_themes(settings) -> None:  # noqa: ANN001
    result = runner.invoke(app, ["themes", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    human = runner.invoke(app, ["themes"])
    assert "No themes yet" in human.stdout
    missing = runner.invoke(app, ["show", "42"])
    assert missing.exit_code == 1 and "No theme 42" in missing.stderr


def test_bad_setting_is_reported_with_its_key(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[store]\nurll = 'x'\n")
    monkeypatch.setenv("THEMES_CONFIG", str(cfg))
    result = runner.invoke(app, ["themes"])
    assert result.exit_code == 1 and "store.urll" in result.stderr


@pytest.mark.slow
def test_evaluate_compares_with_bertopic_defaults(tmp_path: Path, settings) -> None:  # noqa: ANN001
    from themes.demo import generate_demo

    manifest = generate_demo(tmp_path / "demo", seed=2, n_records=400, messy=False)
    labels = pd.read_csv(manifest.labels_path)
    incidents = pd.read_csv(manifest.files["incident"], encoding="cp1252")
    data = incidents.merge(labels[["record_id", "theme"]], left_on="ID", right_on="record_id")
    path = tmp_path / "labelled.csv"
    data[["Description", "theme"]].to_csv(path, index=False)
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--input",
            str(path),
            "--text-column",
            "Description",
            "--label-column",
            "theme",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    methods = {m["method"]: m for m in out["methods"]}
    assert set(methods) == {"themes (project)", "BERTopic defaults"}
    ours = methods["themes (project)"]
    assert ours["outlier_share"] <= 0.05 and ours["n_themes"] >= 5
    assert ours["nmi"] >= 0.5  # the planted themes are found


@pytest.mark.slow
def test_evaluate_with_a_taxonomy_reports_what_the_seeds_took(tmp_path: Path, settings) -> None:  # noqa: ANN001
    from themes.demo import generate_demo

    manifest = generate_demo(tmp_path / "demo", seed=2, n_records=400, messy=False)
    labels = pd.read_csv(manifest.labels_path)
    incidents = pd.read_csv(manifest.files["incident"], encoding="cp1252")
    data = incidents.merge(labels[["record_id", "theme"]], left_on="ID", right_on="record_id")
    path = tmp_path / "labelled.csv"
    data[["Description", "theme"]].to_csv(path, index=False)
    taxonomy = tmp_path / "taxonomy.toml"
    taxonomy.write_text(
        '[[theme]]\nname = "Inpatient falls"\ndescription = "Patient falls, slips and trips"\n'
        'examples = ["Patient found on the floor beside the bed after an unwitnessed fall",\n'
        '  "Patient slipped in the bathroom and fell, hitting their head"]\n'
        '[[theme]]\nname = "Car parking charges"\n'
        'description = "The price of the hospital car park and parking permits"\n'
    )
    args = ["evaluate", "--input", str(path), "--text-column", "Description"]
    result = runner.invoke(
        app, [*args, "--label-column", "theme", "--taxonomy", str(taxonomy), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    tax = out["taxonomy"]
    assert tax["file"] == str(taxonomy) and tax["seeds"] == 2
    assert tax["unused"] == ["Car parking charges"] and tax["seeds_used"] == 1
    falls = (data["theme"] == "falls").sum()
    assert 0 < tax["records_seeded"] <= 1.5 * falls
    assert {m["method"] for m in out["methods"]} == {"themes (project)", "BERTopic defaults"}


def test_evaluate_checks_the_taxonomy_before_any_work(tmp_path: Path, settings) -> None:  # noqa: ANN001
    path = tmp_path / "labelled.csv"
    path.write_text("text,label\nfell,falls\n")
    args = ["evaluate", "--input", str(path), "--text-column", "text", "--label-column", "label"]
    missing = tmp_path / "nope.toml"
    result = runner.invoke(app, [*args, "--taxonomy", str(missing)])
    assert result.exit_code == 1 and f"--taxonomy: {missing} does not exist" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[[theme]]\ndescription = 'no name'\n")
    result = runner.invoke(app, [*args, "--taxonomy", str(bad)])
    assert result.exit_code == 1 and "has no name" in result.stderr


def test_bad_search_and_record_filters_are_one_line_errors(settings) -> None:  # noqa: ANN001
    cases = [
        (["search", "fell", "--kind", "accident"], "--kind 'accident' is not a record kind"),
        (["similar", "INC1", "--kind", "incident", "--kind", "claims"], "--kind 'claims'"),
        (
            ["search", "fell", "--since", "2025-06-01", "--until", "2025-01-01"],
            "--since 2025-06-01 is after --until 2025-01-01",
        ),
        (["similar", "INC1", "--until", "2025-W01-1"], "--until '2025-W01-1' is not a date"),
        (["search", "fell", "--since", "1/3/2025"], "--since '1/3/2025' is not a date"),
        (["records", "--kind", "accident"], "--kind 'accident' is not a record kind"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    kind_in_capitals = runner.invoke(app, ["records", "--kind", "Incident", "--json"])
    assert kind_in_capitals.exit_code == 0 and json.loads(kind_in_capitals.stdout) == []


def test_records_of_a_theme_not_in_the_active_model_is_a_clear_error(theme_model) -> None:  # noqa: ANN001
    known = runner.invoke(app, ["records", "--theme", "2", "--json"])
    assert known.exit_code == 0 and json.loads(known.stdout) == []
    for missing in ("99", "7"):  # 7 is a theme of an earlier model only
        result = runner.invoke(app, ["records", "--theme", missing])
        assert result.exit_code == 1
        assert f"--theme {missing}: no such theme" in result.stderr
        assert "`themes themes`" in result.stderr


@pytest.mark.parametrize("command", ["add", "update"])
def test_every_actions_option_has_help(command: str) -> None:
    import typer.main

    params = typer.main.get_command(app).commands["actions"].commands[command].params
    assert [p.name for p in params if not (getattr(p, "help", None) or "").strip()] == []
    shown = runner.invoke(app, ["actions", command, "--help"])
    assert shown.exit_code == 0 and "Evidence of completion" in shown.output


def test_recommendation_ids_are_never_cut_at_80_columns(settings, monkeypatch) -> None:  # noqa: ANN001
    from rich.console import Console

    monkeypatch.setattr("themes.cli.console", Console(markup=False, width=80))
    result = runner.invoke(app, ["recommendations", "list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    first_cells = {line.split("│")[1].strip() for line in lines if line.startswith("│")}
    assert "ockenden-2022-iea-10" in first_cells
    listed = json.loads(runner.invoke(app, ["recommendations", "list", "--json"]).stdout)
    assert {r["id"] for r in listed} <= first_cells


def _pfd_export(tmp_path: Path) -> Path:
    rows = [
        {"id": "2020-0001", "url": "u1", "date": "2020-03-04", "receiver": "The Trust",
         "concerns": "1. There was no falls risk assessment.\n2. Bed rails were not checked."},
        {"id": "2020-0002", "url": "u2", "date": "2020-05-12", "receiver": "The Trust",
         "concerns": "Staff were not trained to use the early warning score."},
        {"id": "2020-0003", "url": "u3", "date": "2020-06-01", "receiver": "NHS England",
         "concerns": ""},
    ]  # fmt: skip
    path = tmp_path / "pfd.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_recommendations_import_pfd_reads_the_data_rows(settings, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(
        "themes.steps.clean_texts_for_evaluation", lambda settings, texts: list(texts)
    )
    path = _pfd_export(tmp_path)
    result = runner.invoke(app, ["recommendations", "import", str(path), "--format", "pfd"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.stdout.split())
    assert "pfd.csv: 3 read: 3 new, 0 updated, 0 unchanged, 1 rejected" in shown
    assert "themes recommendations rejects" in shown
    again = runner.invoke(
        app, ["recommendations", "import", str(path), "--format", "pfd", "--json"]
    )
    assert json.loads(again.stdout)["read"] == 3


def test_recommendations_rejects_lists_file_row_and_reason(settings, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "local.csv"
    pd.DataFrame(
        [
            {"id": "r1", "source": "Local review", "text": "Check bed rails."},
            {"id": "r2", "source": "Local review", "text": ""},
            {"id": "r1", "source": "Local review", "text": "Duplicate."},
        ]
    ).to_csv(path, index=False)
    assert runner.invoke(app, ["recommendations", "import", str(path)]).exit_code == 0
    result = runner.invoke(app, ["recommendations", "rejects", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"file": str(path), "row_number": 3, "reason": "'text' is empty"},
        {"file": str(path), "row_number": 4, "reason": "duplicate id 'r1' (first at row 2)"},
    ]
    limited = json.loads(
        runner.invoke(app, ["recommendations", "rejects", "--json", "--limit", "1"]).stdout
    )
    assert len(limited) == 1
    table = runner.invoke(app, ["recommendations", "rejects"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "'text' is empty" in table.stdout
    assert any("local.csv" in line and "│ 3 " in line for line in table.stdout.splitlines())


def _all_commands() -> list[list[str]]:
    import typer.main

    def walk(group, prefix: list[str]) -> list[list[str]]:  # noqa: ANN001
        found = [prefix]
        for name, sub in getattr(group, "commands", {}).items():
            found += walk(sub, [*prefix, name])
        return found

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: " ".join(["themes", *c]))
def test_help_shows_flags_without_a_value_type(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "BOOLEAN" not in result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert ["--help", "Show", "this", "message", "and", "exit."] in rows  # no value type


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: " ".join(["themes", *c]))
def test_help_names_every_value_in_plain_capitals(command: list[str]) -> None:
    import re

    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for python_type in ("<str>", "<int", "<float", "<list[", "<path>", "<Path>", "{"):
        assert python_type not in result.output, (python_type, result.output)
    metavar = r"\[?[A-Z][A-Z0-9_-]*\]?(\.\.\.)?"  # THEME_ID, [THEME_ID], FILE..., YYYY-MM-DD
    usage = result.output.splitlines()[0].split()
    assert usage[: 2 + len(command)] == ["Usage:", "root", *command]
    assert all(re.fullmatch(metavar, piece) for piece in usage[2 + len(command) :]), usage
    section = ""
    for line in result.output.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            section = line
        elif section in ("Arguments:", "Options:") and re.match(r"  \S", line):
            names = re.split(r"\s{2,}", line.strip())[0].split()
            values = [n for n in names if not n.startswith("-") and n != "/"]
            assert all(re.fullmatch(metavar, v) for v in values), line


def test_run_help_shows_refit_as_a_pair_of_flags() -> None:
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "120"})
    rows = [line.split()[:3] for line in result.output.splitlines()]
    assert ["--refit", "/", "--no-refit"] in rows
    assert ["--json", "Print", "JSON"] in rows


def test_runs_json_has_summary_object_and_iso_utc_times(store) -> None:  # noqa: ANN001
    import re

    from themes.store import runs

    store.start_run("r1")
    store.finish_run("r1", "completed", {"status": "completed", "totals": {"raw_records": 2}})
    with store.begin() as conn:
        conn.execute(
            runs.insert().values(
                run_id="r0",
                started_at=datetime(2026, 11, 25, 2, 0, 0, 123456),
                status="failed",
                summary="oops",
            )
        )
    result = runner.invoke(app, ["runs", "--json"])
    assert result.exit_code == 0, result.output
    latest, older = json.loads(result.stdout)
    assert latest["summary"] == {"status": "completed", "totals": {"raw_records": 2}}
    iso_utc = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
    assert re.fullmatch(iso_utc, latest["started_at"])
    assert re.fullmatch(iso_utc, latest["finished_at"])
    assert older == {
        "run_id": "r0",
        "started_at": "2026-11-25T02:00:00+00:00",
        "finished_at": None,
        "status": "failed",
        "summary": {"unparsed": "oops"},
    }
    table = runner.invoke(app, ["runs"], env={"COLUMNS": "120"})
    assert table.exit_code == 0 and "2026-11-25T02:00:00+00:00" in table.stdout
