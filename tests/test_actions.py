"""Action tracking on linked recommendations: validation, history, overdue and gaps."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest

from themes.actions import (
    ActionError,
    action_history,
    actions_as_of,
    add_action,
    link_action_history,
    list_actions,
    update_action,
)
from themes.errors import NotFoundError
from themes.links import ensure_tables, flagged_actions, link_id, theme_links, theme_links_table
from themes.recommendations import load_dir, save
from themes.store import themes_table, utcnow

TODAY = date(2026, 1, 15)


@pytest.fixture
def corpus(store):  # noqa: ANN001, ANN201
    save(store, load_dir(Path("config/recommendations")), file="config/recommendations")
    with store.begin() as conn:  # themes 1-5 of one model, for actions that name a theme
        conn.execute(
            themes_table.insert(),
            [
                {
                    "model_id": "m",
                    "theme_id": t,
                    "label": f"theme {t}",
                    "keywords": "[]",
                    "size": 10,
                    "representative_ids": "[]",
                }
                for t in range(1, 6)
            ],
        )
    return store


def test_an_action_on_an_unknown_theme_or_with_a_two_digit_year_is_refused(corpus) -> None:  # noqa: ANN001
    with pytest.raises(NotFoundError, match="No theme 999"):
        add_action(corpus, rec_id="francis-2013-001", owner="o", action="a", theme_id=999, by="u")
    with pytest.raises(ActionError, match="write the year in full"):
        add_action(
            corpus, rec_id="francis-2013-001", owner="o", action="a", due_date="1/1/25", by="u"
        )
    a = add_action(corpus, rec_id="francis-2013-001", owner="o", action="a", theme_id=2, by="u")
    with pytest.raises(NotFoundError, match="No theme 42"):
        update_action(corpus, a["action_id"], by="u", theme_id=42)
    assert update_action(corpus, a["action_id"], by="u", theme_id=3)["theme_id"] == 3
    assert list_actions(corpus) == [update_action(corpus, a["action_id"], by="u")]


def test_add_and_update_keep_full_history(corpus) -> None:  # noqa: ANN001
    a = add_action(
        corpus,
        rec_id="ockenden-2022-iea-02",
        owner="Director of Midwifery",
        action="Daily staffing huddle with escalation to the site manager",
        due_date="2026-03-31",
        theme_id=4,
        by="alice",
    )
    assert a["status"] == "open" and a["due_date"] == "2026-03-31" and a["created_by"] == "alice"
    update_action(corpus, a["action_id"], by="bob", status="in progress")
    done = update_action(
        corpus, a["action_id"], by="carol", status="done", evidence="Audit of huddles, March"
    )
    assert done["status"] == "done" and done["updated_by"] == "carol"
    history = action_history(corpus, a["action_id"])
    assert [h["changed_by"] for h in history] == ["alice", "bob", "carol"]
    assert history[0]["changes"]["owner"] == [None, "Director of Midwifery"]
    assert history[1]["changes"] == {"status": ["open", "in progress"]}
    assert history[2]["changes"]["status"] == ["in progress", "done"]
    # a change that changes nothing writes no history
    update_action(corpus, a["action_id"], by="dave", status="done")
    assert len(action_history(corpus, a["action_id"])) == 3


def test_bad_input_is_refused_with_clear_errors(corpus) -> None:  # noqa: ANN001
    with pytest.raises(NotFoundError, match="No recommendation 'nope'"):
        add_action(corpus, rec_id="nope", owner="x", action="y", by="a")
    with pytest.raises(ActionError, match="status 'closed'"):
        add_action(
            corpus, rec_id="francis-2013-001", owner="x", action="y", status="closed", by="a"
        )
    with pytest.raises(ActionError, match="'31/31/2026' is not a date"):
        add_action(
            corpus, rec_id="francis-2013-001", owner="x", action="y", due_date="31/31/2026", by="a"
        )
    a = add_action(corpus, rec_id="francis-2013-001", owner="x", action="y", by="a")
    with pytest.raises(ActionError, match="evidence"):
        update_action(corpus, a["action_id"], by="a", status="done")
    with pytest.raises(ActionError, match="cannot change rec_id"):
        update_action(corpus, a["action_id"], by="a", rec_id="other")
    with pytest.raises(NotFoundError):
        update_action(corpus, 999, by="a", status="open")
    assert list_actions(corpus)[0]["status"] == "open"  # nothing half-written


def test_overdue_actions_are_listed(corpus) -> None:  # noqa: ANN001
    late = add_action(
        corpus, rec_id="francis-2013-001", owner="o", action="a", due_date="2026-01-01", by="u"
    )
    add_action(
        corpus, rec_id="francis-2013-001", owner="o", action="b", due_date="2026-02-01", by="u"
    )
    done = add_action(
        corpus,
        rec_id="francis-2013-001",
        owner="o",
        action="c",
        due_date="01/01/2026",
        status="done",
        evidence="minutes",
        by="u",
    )
    overdue = list_actions(corpus, overdue=True, today=TODAY)
    assert [a["action_id"] for a in overdue] == [late["action_id"]]
    assert overdue[0]["overdue"] is True
    assert done["due_date"] == "2026-01-01"


def _link(store, theme_id: int, rec_id: str, *, strong: bool, rank: int = 1) -> str:  # noqa: ANN001
    ensure_tables(store)
    lid = link_id(theme_id, rec_id)
    now = utcnow()
    with store.begin() as conn:
        conn.execute(
            theme_links_table.insert().values(
                link_id=lid,
                theme_id=theme_id,
                rec_id=rec_id,
                model_id="m",
                rank=rank,
                score=3.0,
                probability=0.9 if strong else 0.2,
                strong=strong,
                n_cases=10,
                evidence="[]",
                current=True,
                first_linked_at=now,
                updated_at=now,
            )
        )
    return lid


def test_strong_links_without_action_are_flagged_until_an_action_exists(corpus) -> None:  # noqa: ANN001
    _link(corpus, 1, "ockenden-2022-iea-10", strong=True)
    _link(corpus, 1, "francis-2013-001", strong=False, rank=2)
    _link(corpus, 2, "ockenden-2022-iea-10", strong=True)
    gaps = flagged_actions(corpus, today=TODAY)["strong_without_action"]
    assert {(g["theme_id"], g["rec_id"]) for g in gaps} == {
        (1, "ockenden-2022-iea-10"),
        (2, "ockenden-2022-iea-10"),
    }
    add_action(
        corpus, rec_id="ockenden-2022-iea-10", owner="o", action="CTG training", theme_id=1, by="u"
    )
    gaps = flagged_actions(corpus, today=TODAY)["strong_without_action"]
    assert [(g["theme_id"], g["rec_id"]) for g in gaps] == [(2, "ockenden-2022-iea-10")]
    links = theme_links(corpus, 1)
    assert [x["action_status"] for x in links] == ["open", "no action"]
    assert links[0]["recommendation"]["title"] == "Labour and birth"


def test_flagged_for_one_theme_shows_only_that_themes_flags(corpus) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from themes.cli import app

    _link(corpus, 1, "ockenden-2022-iea-10", strong=True)
    _link(corpus, 2, "francis-2013-001", strong=True)
    mine = add_action(
        corpus, rec_id="ockenden-2022-iea-02", owner="o", action="a", due_date="2020-01-01",
        theme_id=1, by="u",
    )  # fmt: skip
    add_action(
        corpus, rec_id="ockenden-2022-iea-02", owner="o", action="b", due_date="2020-01-01",
        theme_id=2, by="u",
    )  # fmt: skip
    runner = CliRunner()
    every = json.loads(runner.invoke(app, ["actions", "list", "--flagged", "--json"]).stdout)
    assert len(every["overdue"]) == 2 and len(every["strong_without_action"]) == 2
    one = runner.invoke(app, ["actions", "list", "--flagged", "--theme", "1", "--json"])
    assert one.exit_code == 0, one.output
    data = json.loads(one.stdout)
    assert [a["action_id"] for a in data["overdue"]] == [mine["action_id"]]
    assert [(g["theme_id"], g["rec_id"]) for g in data["strong_without_action"]] == [
        (1, "ockenden-2022-iea-10")
    ]
    shown = runner.invoke(app, ["actions", "list", "--flagged", "--theme", "2"]).stdout
    assert "francis-2013-001" in shown and "ockenden-2022-iea-10" not in shown


def test_actions_as_of_a_day_show_what_they_were_at_its_end(corpus, monkeypatch) -> None:  # noqa: ANN001
    def on(day: int) -> None:  # what is recorded from now on is recorded on 2026-01-<day>
        monkeypatch.setattr("themes.actions.utcnow", lambda: datetime(2026, 1, day, 12))

    def as_of(day: int) -> dict[int, dict]:
        return {a["action_id"]: a for a in actions_as_of(corpus, date(2026, 1, day))}

    on(1)
    a = add_action(
        corpus, rec_id="francis-2013-001", owner="o", action="a", due_date="2026-01-10", by="alice"
    )["action_id"]
    on(20)
    update_action(corpus, a, by="bob", status="done", evidence="audit")
    later = add_action(corpus, rec_id="francis-2013-001", owner="o", action="b", by="carol")
    day5, day15 = as_of(5)[a], as_of(15)[a]
    assert (day5["status"], day5["overdue"], day5["evidence"]) == ("open", False, "")
    assert (day15["status"], day15["overdue"], day15["updated_by"]) == ("open", True, "alice")
    assert list(as_of(15)) == [a], "the action recorded on day 20 did not exist on day 15"
    assert [x["action_id"] for x in actions_as_of(corpus, date(2026, 1, 15), overdue=True)] == [a]
    assert actions_as_of(corpus, date(2026, 1, 15), status="done") == []
    day20 = as_of(20)  # changes on the day itself count
    assert (day20[a]["status"], day20[a]["evidence"], day20[a]["overdue"]) == (
        "done",
        "audit",
        False,
    )
    assert set(day20) == {a, later["action_id"]}
    today = date(2026, 1, 25)
    assert actions_as_of(corpus, today) == list_actions(corpus, today=today)
    # an older action whose creation was not recorded: later changes are still undone
    with corpus.begin() as conn:
        conn.execute(
            link_action_history.delete().where(link_action_history.c.changed_by == "alice")
        )
    assert as_of(15)[a] == day15
