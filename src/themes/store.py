"""The store: SQLite (WAL) by default through SQLAlchemy Core; a PostgreSQL URL works too.

Every write is idempotent and transactional, so a run killed at any point and run again
leaves no duplicates and loses nothing. Raw (identifiable) text lives only in `raw_records`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from themes.errors import StoreError

log = logging.getLogger(__name__)

metadata = sa.MetaData()

raw_records = sa.Table(
    "raw_records",
    metadata,
    sa.Column("record_id", sa.String, primary_key=True),
    sa.Column("kind", sa.String, nullable=False, index=True),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("file", sa.String, nullable=False),
    sa.Column("row_number", sa.Integer, nullable=False),
    sa.Column("event_date", sa.Date, nullable=False, index=True),
    sa.Column("reported_date", sa.Date),
    sa.Column("site", sa.String),
    sa.Column("location", sa.String),
    sa.Column("specialty", sa.String),
    sa.Column("category", sa.String),
    sa.Column("severity", sa.String),
    sa.Column("status", sa.String),
    sa.Column("narrative", sa.Text, nullable=False),
    sa.Column("raw_hash", sa.String(64), nullable=False),
    sa.Column("first_seen", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("run_id", sa.String),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("file", sa.String, nullable=False),
    sa.Column("row_number", sa.Integer, nullable=False),
    sa.Column("record_id", sa.String),
    sa.Column("reason", sa.String, nullable=False),
    sa.Column("raw_json", sa.Text, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("file", "row_number", "reason", name="uq_quarantine_row"),
)

ingested_files = sa.Table(
    "ingested_files",
    metadata,
    sa.Column("file", sa.String, primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("ingested_at", sa.DateTime, nullable=False),
)

clean_texts = sa.Table(
    "clean_texts",
    metadata,
    sa.Column("record_id", sa.String, primary_key=True),
    sa.Column("raw_hash", sa.String(64), nullable=False),
    sa.Column("clean_text", sa.Text, nullable=False),
    sa.Column("clean_hash", sa.String(64), nullable=False, index=True),
    sa.Column("entity_counts", sa.Text, nullable=False),
    sa.Column("cleaned_at", sa.DateTime, nullable=False),
    # the cleaning rules the text was made with (steps.cleaning_fingerprint): a record
    # cleaned under other rules is cleaned again
    sa.Column("cleaned_with", sa.String(16), nullable=False, server_default=""),
    # when changed cleaning rules last changed this clean text (its raw text unchanged):
    # a theme model fitted before then is refitted, even if the run that re-cleaned it
    # stopped before its theme step
    sa.Column("rules_changed_at", sa.DateTime, nullable=True),
)

# Columns added after a table was first released, as (table, column): a store made
# before them gains them, with their server default (or empty), when it is opened.
_ADDED_COLUMNS = [(clean_texts, "cleaned_with"), (clean_texts, "rules_changed_at")]

embeddings = sa.Table(
    "embeddings",
    metadata,
    sa.Column("model_id", sa.String, primary_key=True),
    sa.Column("text_hash", sa.String(64), primary_key=True),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

theme_models = sa.Table(
    "theme_models",
    metadata,
    sa.Column("model_id", sa.String, primary_key=True),
    sa.Column("path", sa.String, nullable=False),
    sa.Column("fitted_at", sa.DateTime, nullable=False),
    sa.Column("n_records", sa.Integer, nullable=False),
    sa.Column("config_hash", sa.String, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=False),
)

themes_table = sa.Table(
    "themes",
    metadata,
    sa.Column("model_id", sa.String, primary_key=True),
    sa.Column("theme_id", sa.Integer, primary_key=True),
    sa.Column("label", sa.String, nullable=False),
    sa.Column("keywords", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("representative_ids", sa.Text, nullable=False),
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("record_id", sa.String, primary_key=True),
    sa.Column("model_id", sa.String, nullable=False, index=True),
    sa.Column("theme_id", sa.Integer, nullable=False, index=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("method", sa.String, nullable=False),
    sa.Column("clean_hash", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("assigned_at", sa.DateTime, nullable=False),
)

# -- theme registry (permanent theme ids; see registry.py and lifecycle.py) --------------
theme_registry = sa.Table(
    "theme_registry",
    metadata,
    sa.Column("key", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("label", sa.String, nullable=False),
    sa.Column("status", sa.String, nullable=False),
    # active | retired | merged (curation merged it into merged_into) | split (curation)
    sa.Column("pinned", sa.Boolean, nullable=False, default=False),
    sa.Column("not_a_theme", sa.Boolean, nullable=False, default=False),
    sa.Column("merged_into", sa.Integer),
    sa.Column("split_into", sa.Text),  # JSON list of child keys (curation split)
    sa.Column("centroid", sa.LargeBinary),  # float32, L2-normalised
    sa.Column("born_at", sa.DateTime, nullable=False),
    sa.Column("born_run", sa.String),
    sa.Column("retired_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

theme_key_map = sa.Table(
    "theme_key_map",
    metadata,
    sa.Column("model_id", sa.String, primary_key=True),
    sa.Column("model_theme_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("key", sa.Integer, nullable=False),
)

theme_events = sa.Table(
    "theme_events",
    metadata,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.Integer, nullable=False, index=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("actor", sa.String, nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
)

record_moves = sa.Table(
    "record_moves",
    metadata,
    sa.Column("move_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("record_id", sa.String, nullable=False, index=True),
    sa.Column("old_key", sa.Integer),
    sa.Column("new_key", sa.Integer, nullable=False),
    sa.Column("reason", sa.String, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("actor", sa.String, nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String, primary_key=True),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("summary", sa.Text),
)


def utcnow() -> datetime:
    """Naive UTC timestamp (portable across SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _sqlite_pragmas(busy_timeout_s: float):  # noqa: ANN202 - SQLAlchemy event hook
    def on_connect(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.close()

    return on_connect


class Store:
    """Thin, typed access to the database. Open once per process; safe for one writer."""

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                self.engine: Engine = sa.create_engine(
                    url, connect_args={"timeout": busy_timeout_s}
                )
                sa.event.listen(self.engine, "connect", _sqlite_pragmas(busy_timeout_s))
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
            metadata.create_all(self.engine)
            self._add_missing_columns()
        except ImportError as e:
            raise StoreError(
                f"No database driver for {_redact(url)} ({e}). For PostgreSQL install the "
                "`postgres` extra (pip install -e '.[postgres]') or fix store.url."
            ) from e
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(
                f"Cannot open the store at {_redact(url)}: {e.__class__.__name__}: {e}. "
                "Check store.url (THEMES_STORE__URL) and that the folder is writable."
            ) from e

    def _add_missing_columns(self) -> None:
        """Add the columns of `_ADDED_COLUMNS` that an older store lacks."""
        inspector = sa.inspect(self.engine)
        for table, name in _ADDED_COLUMNS:
            if name in {c["name"] for c in inspector.get_columns(table.name)}:
                continue
            column = table.c[name]
            ddl = column.type.compile(dialect=self.engine.dialect)
            if column.nullable:
                constraint = ""
            else:
                default = column.server_default.arg  # type: ignore[union-attr]
                constraint = f" NOT NULL DEFAULT '{default}'"
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {ddl}{constraint}")
                    )
            except sa.exc.SQLAlchemyError:
                # another process opening the store at the same time may have added it
                columns = sa.inspect(self.engine).get_columns(table.name)
                if name not in {c["name"] for c in columns}:
                    raise
            log.info("store: added column %s.%s", table.name, name)

    def close(self) -> None:
        self.engine.dispose()

    # -- generic helpers -------------------------------------------------------------
    def begin(self) -> Any:
        """A transaction context (`with store.begin() as conn:`)."""
        return self.engine.begin()

    def connect(self) -> Any:
        return self.engine.connect()

    def upsert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[dict[str, Any]],
        *,
        keys: Sequence[str],
        update: bool = True,
    ) -> None:
        """Insert rows; on key conflict update the other columns (or do nothing)."""
        if not rows:
            return
        mod = postgresql if conn.dialect.name == "postgresql" else sqlite
        for chunk in _chunks(rows, 500):
            stmt = mod.insert(table).values(list(chunk))
            if update:
                cols = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
                stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=cols)
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
            conn.execute(stmt)

    # -- runs ------------------------------------------------------------------------
    def start_run(self, run_id: str) -> int:
        """Record a new run; runs left 'running' by a killed process become 'interrupted'.

        Call only while holding the run lock. Returns how many stale runs were closed.
        """
        with self.begin() as conn:
            stale = conn.execute(
                runs.update()
                .where(runs.c.status == "running")
                .values(status="interrupted", finished_at=utcnow())
            ).rowcount
            conn.execute(runs.insert().values(run_id=run_id, started_at=utcnow(), status="running"))
        if stale:
            log.warning("%d earlier run(s) were interrupted; their work is resumed now", stale)
        return stale

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        with self.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(finished_at=utcnow(), status=status, summary=json.dumps(summary))
            )

    def last_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest runs, newest first; `summary` is the dict given to `finish_run`.

        Times are naive UTC (as `utcnow` writes them). A summary that is not a JSON
        object comes back as `{"unparsed": <stored text>}`; an unfinished run's is None.
        """
        with self.connect() as conn:
            rows = conn.execute(
                sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)
            ).mappings()
            return [{**r, "summary": _run_summary(r["run_id"], r["summary"])} for r in rows]

    # -- embeddings cache ------------------------------------------------------------
    def get_embeddings(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the given text hashes (missing ones are absent)."""
        out: dict[str, np.ndarray] = {}
        with self.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(hashes)), 900):
                q = sa.select(embeddings.c.text_hash, embeddings.c.vector).where(
                    embeddings.c.model_id == model_id, embeddings.c.text_hash.in_(chunk)
                )
                for h, blob in conn.execute(q):
                    out[h] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_embeddings(self, model_id: str, vectors: dict[str, np.ndarray]) -> None:
        now = utcnow()
        rows = [
            {
                "model_id": model_id,
                "text_hash": h,
                "dim": int(v.shape[0]),
                "vector": np.asarray(v, dtype=np.float32).tobytes(),
                "created_at": now,
            }
            for h, v in vectors.items()
        ]
        with self.begin() as conn:
            self.upsert(conn, embeddings, rows, keys=["model_id", "text_hash"], update=False)

    # -- reads used by CLI and steps ----------------------------------------------------
    def active_model(self) -> dict[str, Any] | None:
        with self.connect() as conn:
            row = (
                conn.execute(sa.select(theme_models).where(theme_models.c.active.is_(True)))
                .mappings()
                .first()
            )
            return dict(row) if row else None

    def counts(self) -> dict[str, int]:
        with self.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (raw_records, quarantine, clean_texts, embeddings, assignments)
            }


def _run_summary(run_id: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError:
        summary = None
    if not isinstance(summary, dict):
        log.warning("run %s: stored summary is not a JSON object; kept as text", run_id)
        return {"unparsed": text}
    return summary


def _chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _redact(url: str) -> str:
    """Hide a password in a database URL before it reaches a message or log."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def as_json(value: Iterable[Any] | dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
