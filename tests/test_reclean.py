"""Stored records are cleaned again when the cleaning rules change (word lists, settings,
package versions), so new allow-list or never-name words reach what is already stored."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from rows import raw_row
from themes import steps
from themes.store import Store, clean_texts, raw_records, utcnow

ROOT = Path(__file__).resolve().parents[1]
REPORT = "Description: Comments from the Deceased's family were read at the inquest."
FALL = "Description: Found on the floor beside the bed; no injury."


def _clean_text(store: Store, rid: str) -> str:
    with store.connect() as conn:
        q = sa.select(clean_texts.c.clean_text).where(clean_texts.c.record_id == rid)
        return conn.execute(q).scalar_one()


def _rules_changed_at(store: Store) -> dict[str, object]:
    with store.connect() as conn:
        q = sa.select(clean_texts.c.record_id, clean_texts.c.rules_changed_at)
        return dict(conn.execute(q).all())


def test_fingerprint_follows_word_lists_and_settings_but_not_batching(
    settings,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    clean, deid = settings.clean, settings.deidentify
    base = steps.cleaning_fingerprint(clean, deid)
    allow = tmp_path / "allow.txt"
    allow.write_text(Path(deid.allow_list_file).read_text(encoding="utf-8"), encoding="utf-8")
    same_words = deid.model_copy(update={"allow_list_file": allow})
    assert steps.cleaning_fingerprint(clean, same_words) == base  # contents, not path
    allow.write_text(allow.read_text(encoding="utf-8") + "Larkspur Unit\n", encoding="utf-8")
    assert steps.cleaning_fingerprint(clean, same_words) != base
    batching = deid.model_copy(update={"n_process": 1, "batch_size": 8})
    assert steps.cleaning_fingerprint(clean, batching) == base
    threshold = deid.model_copy(update={"score_threshold": 0.7})
    assert steps.cleaning_fingerprint(clean, threshold) != base
    patterns = clean.model_copy(update={"boilerplate_patterns": []})
    assert steps.cleaning_fingerprint(patterns, deid) != base


def test_code_digest_follows_what_code_does_not_its_comments_or_layout() -> None:
    base = steps.code_digest('def f(x):\n    """Add one."""\n    return x + 1  # one more\n')
    # comments, docstrings and layout do not count
    assert steps.code_digest("def f(x):\n    # note\n    return (x +\n            1)\n") == base
    assert steps.code_digest('def f(x):\n    """Another docstring."""\n    return x + 1\n') == base
    # what the code does does
    assert steps.code_digest("def f(x):\n    return x + 2\n") != base
    assert steps.code_digest("def f(y):\n    return y + 1\n") != base
    assert steps.code_digest('def f(x):\n    return x + 1 if x else "one"\n') != base


def test_fingerprint_follows_the_cleaning_code(settings, monkeypatch) -> None:  # noqa: ANN001
    import themes.clean
    import themes.deidentify

    clean, deid = settings.clean, settings.deidentify
    base = steps.cleaning_fingerprint(clean, deid)
    code = steps._cleaning_code()
    assert code == [
        steps.code_digest(Path(module.__file__).read_text(encoding="utf-8"))
        for module in (themes.clean, themes.deidentify)
    ]
    monkeypatch.setattr(steps, "_cleaning_code", lambda: [code[0], "an edited de-identifier"])
    assert steps.cleaning_fingerprint(clean, deid) != base


@pytest.mark.slow
def test_changed_never_name_words_clean_stored_records_again(
    settings,
    store: Store,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from themes.clean import TextCleaner
    from themes.deidentify import Deidentifier

    with store.begin() as conn:
        conn.execute(
            raw_records.insert(),
            [raw_row("A", REPORT, raw_hash="raw-A"), raw_row("B", FALL, raw_hash="raw-B")],
        )
    bare = tmp_path / "never.txt"
    bare.write_text("# no words\n", encoding="utf-8")
    cleaner = TextCleaner(settings.clean)
    old = Deidentifier(settings.deidentify.model_copy(update={"never_name_file": bare}))
    first = steps.clean_pending(store, cleaner, old)
    assert (first["cleaned"], first["recleaned"]) == (2, 0)
    assert "Deceased" not in _clean_text(store, "A")  # taken for a name
    assert steps.clean_pending(store, cleaner, old)["cleaned"] == 0
    fall = _clean_text(store, "B")

    shipped = Deidentifier(settings.deidentify)  # the shipped list has "deceased"
    again = steps.clean_pending(store, cleaner, shipped)
    assert (again["cleaned"], again["recleaned"], again["recleaned_changed"]) == (2, 2, 1)
    assert "the Deceased's family" in _clean_text(store, "A")
    assert _clean_text(store, "B") == fall
    assert steps.clean_pending(store, cleaner, shipped)["cleaned"] == 0
    marks = _rules_changed_at(store)
    assert marks["A"] is not None and marks["B"] is None  # only A's text changed

    # cleaned again under yet other rules that leave both texts as they are: A keeps its
    # mark, so a refit still follows if the run that changed it stopped before refitting
    with store.begin() as conn:
        conn.execute(clean_texts.update().values(cleaned_with="other"))
    third = steps.clean_pending(store, cleaner, shipped)
    assert (third["recleaned"], third["recleaned_changed"]) == (2, 0)
    assert _rules_changed_at(store) == marks


def test_store_from_before_the_fingerprint_gains_it_and_is_cleaned_again(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    with store.begin() as conn:
        conn.execute(raw_records.insert(), [raw_row("A", FALL, raw_hash="raw-A")])
        conn.execute(
            clean_texts.insert().values(
                record_id="A",
                raw_hash="raw-A",
                clean_text="x",
                clean_hash="h",
                entity_counts="{}",
                cleaned_at=utcnow(),
            )
        )
    store.close()
    with sqlite3.connect(tmp_path / "old.db") as db:  # as a store made before the columns
        db.execute("ALTER TABLE clean_texts DROP COLUMN cleaned_with")
        db.execute("ALTER TABLE clean_texts DROP COLUMN rules_changed_at")
    reopened = Store(url)
    try:
        assert steps.pending_clean(reopened) == []  # raw text unchanged
        assert [r[0] for r in steps.pending_clean(reopened, "0123456789abcdef")] == ["A"]
        assert _rules_changed_at(reopened) == {"A": None}
        Store(url).close()  # opening again adds nothing twice
    finally:
        reopened.close()


def _clean_row(rid: str, rules_changed_at: object) -> dict[str, object]:
    return {
        "record_id": rid,
        "raw_hash": f"raw-{rid}",
        "clean_text": FALL,
        "clean_hash": f"h-{rid}",
        "entity_counts": "{}",
        "cleaned_at": utcnow(),
        "cleaned_with": "f",
        "rules_changed_at": rules_changed_at,
    }


def test_a_refit_follows_while_texts_changed_by_new_rules_postdate_the_model(
    theme_model,
    settings,  # noqa: ANN001
) -> None:
    from themes.store import theme_models

    (settings.paths.models_dir / "m").mkdir(parents=True)  # the active model's folder
    fitted = theme_model.active_model()["fitted_at"]
    with theme_model.begin() as conn:
        conn.execute(
            clean_texts.insert(),
            [_clean_row("A", fitted - timedelta(days=1)), _clean_row("B", None)],
        )
    assert steps.needs_refit(theme_model, settings, requested=False) == (
        False,
        "assign new records to existing themes",
    )
    # a run cleaned C and D again under new rules, and stopped before its theme step
    with theme_model.begin() as conn:
        later = fitted + timedelta(seconds=1)
        conn.execute(clean_texts.insert(), [_clean_row("C", later), _clean_row("D", later)])
    refit, reason = steps.needs_refit(theme_model, settings, requested=False)
    assert refit and "clean text of 2 stored records since the model was fitted" in reason
    # once a model is fitted after them, records are assigned again
    with theme_model.begin() as conn:
        conn.execute(theme_models.update().values(fitted_at=later + timedelta(seconds=1)))
    assert not steps.needs_refit(theme_model, settings, requested=False)[0]


def test_a_model_saved_under_another_working_directory_is_found_in_models_dir(
    theme_model,
    settings,  # noqa: ANN001
) -> None:
    active = theme_model.active_model()
    assert active["path"] == "m"  # relative, and not under the working directory
    assert steps.model_dir(active, settings) is None
    refit, reason = steps.needs_refit(theme_model, settings, requested=False)
    assert refit and "model directory m is missing" in reason
    assert str(settings.paths.models_dir) in reason
    (settings.paths.models_dir / "m").mkdir(parents=True)
    assert steps.model_dir(active, settings) == settings.paths.models_dir / "m"
    assert not steps.needs_refit(theme_model, settings, requested=False)[0]


def test_run_summary_says_stored_narratives_were_cleaned_again() -> None:
    from themes.report import run_summary_markdown

    summary = {
        "run_id": "r",
        "status": "completed",
        "clean": {"cleaned": 4, "recleaned": 4, "recleaned_changed": 1, "identifiers_replaced": {}},
    }
    text = run_summary_markdown(summary)
    assert "4 stored narratives were cleaned again; 1 of them changed" in text
    assert "cleaned again" not in run_summary_markdown({**summary, "clean": {"cleaned": 4}})
