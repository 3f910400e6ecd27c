"""Stored records are cleaned again when the cleaning rules change (word lists, settings,
package versions), so new allow-list or never-name words reach what is already stored."""

from __future__ import annotations

import sqlite3
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
    with sqlite3.connect(tmp_path / "old.db") as db:  # as a store made before the column
        db.execute("ALTER TABLE clean_texts DROP COLUMN cleaned_with")
    reopened = Store(url)
    try:
        assert steps.pending_clean(reopened) == []  # raw text unchanged
        assert [r[0] for r in steps.pending_clean(reopened, "0123456789abcdef")] == ["A"]
        Store(url).close()  # opening again adds nothing twice
    finally:
        reopened.close()


def test_a_refit_follows_when_changed_rules_changed_stored_texts(theme_model, settings) -> None:  # noqa: ANN001
    refit, reason = steps.needs_refit(theme_model, settings, requested=False, recleaned_changed=3)
    assert refit and "3 stored records" in reason
    _, other = steps.needs_refit(theme_model, settings, requested=False, recleaned_changed=0)
    assert "cleaning rules" not in other


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
