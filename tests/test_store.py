from __future__ import annotations

import sqlalchemy as sa

from rows import raw_row
from themes.store import Store, quarantine, raw_records, utcnow


def test_sqlite_store_uses_wal(store: Store) -> None:
    with store.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"


def test_reader_works_while_a_writer_holds_a_transaction(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(raw_records.insert().values(**raw_row("A")))
    reader = Store(store.url)
    with store.begin() as writer:
        writer.execute(raw_records.insert().values(**raw_row("B")))  # not yet committed
        assert reader.counts()["raw_records"] == 1  # readers see the last commit, unblocked
    assert reader.counts()["raw_records"] == 2


def test_upsert_is_idempotent(store: Store) -> None:
    rows = [raw_row("A"), raw_row("B")]
    for _ in range(3):
        with store.begin() as conn:
            store.upsert(conn, raw_records, rows, keys=["record_id"])
    assert store.counts()["raw_records"] == 2
    q = {
        "file": "x.csv",
        "row_number": 3,
        "record_id": None,
        "reason": "missing id",
        "raw_json": "{}",
        "created_at": utcnow(),
    }
    for _ in range(2):
        with store.begin() as conn:
            store.upsert(conn, quarantine, [q], keys=["file", "row_number", "reason"], update=False)
    assert store.counts()["quarantine"] == 1


def test_interrupted_runs_are_closed_by_the_next(store: Store) -> None:
    store.start_run("first")  # then the process is killed: never finished
    assert store.start_run("second") == 1
    statuses = {r["run_id"]: r["status"] for r in store.last_runs()}
    assert statuses == {"first": "interrupted", "second": "running"}


def test_bad_store_url_is_a_clear_error(tmp_path) -> None:  # noqa: ANN001
    import pytest

    from themes.errors import StoreError

    with pytest.raises(StoreError, match="store.url"):
        Store("postgresql://user:secret@127.0.0.1:1/nothing")
    try:
        Store("postgresql://user:secret@127.0.0.1:1/nothing")
    except StoreError as e:
        assert "secret" not in str(e)


def test_transactions_roll_back_on_error(store: Store) -> None:
    import pytest

    with pytest.raises(sa.exc.IntegrityError), store.begin() as conn:
        conn.execute(raw_records.insert().values(**raw_row("A")))
        conn.execute(raw_records.insert().values(**raw_row("A")))
    assert store.counts()["raw_records"] == 0


def test_last_runs_give_back_the_summary_as_a_dict(store: Store) -> None:
    from themes.store import runs

    store.start_run("good")
    store.finish_run("good", "completed", {"status": "completed", "totals": {"raw_records": 3}})
    store.start_run("open")
    with store.begin() as conn:  # a summary written by hand or by an older version
        conn.execute(
            runs.insert().values(
                run_id="bad", started_at=utcnow(), status="completed", summary="not json {"
            )
        )
    summaries = {r["run_id"]: r["summary"] for r in store.last_runs()}
    assert summaries["good"] == {"status": "completed", "totals": {"raw_records": 3}}
    assert summaries["bad"] == {"unparsed": "not json {"}
    assert summaries["open"] is None
