"""The lexical layer of the prompt filter: high-precision terms and names, matched after normalisation.

Terms (`data/lexicon.tsv`) and names (`data/public_figures.tsv`) are folded exactly as the prompt
is (`normalize.clean`), so homoglyphs, leetspeak, spacing and repeated letters are undone on both
sides. A word also matches when it is one edit away from a term of five letters or more (in the
languages of `FUZZY`) and is not itself an English word (the text encoder's vocabulary decides), and when two neighbouring words
joined make a term ("por n"). A word of a term written with a trailing "-" is a stem: it matches
any word that starts with it ("zabi-" matches Polish "zabił", "zabija", "zabiją"), so inflected
forms need no list; a stem has at least `MIN_STEM` letters. Terms in scripts written without
spaces (Chinese, Japanese, Korean, Thai) match as substrings of the prompt with its spaces
removed. Arabic, Persian and Hebrew words also match with an article, conjunction or preposition
written onto them ("الانتحار", "והתאבדות"). Vietnamese and Thai terms (`ACCENTED`) are matched
with their accents and tone marks kept, which carry the meaning there ("tự tử", suicide, is
"từ từ", slowly, without them).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from tessera.safety.normalize import clean, squeeze

CATEGORIES = ("sexual", "minors", "violence", "self_harm", "weapons", "hate", "real_people")
# Which category a prompt gets when several match: the most severe first.
PRIORITY = ("minors", "sexual", "self_harm", "weapons", "violence", "hate", "real_people")
# Scripts written without spaces between words: Thai, kana, CJK ideographs, Hangul (whose spaces
# separate phrases, with particles written onto the word).
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
# Prefixes written onto Arabic / Persian and Hebrew words (article, "and", "with", "to", "that", "the"),
# longest first: "والانتحار" is read as "انتحار" too. Kaf ("like") is listed as normalisation writes it (ک).
_CLITICS = tuple(
    sorted(
        "وال فال بال کال ولل لل ال و ف ب ل ک וש וה וב ול ומ שה שב של כש מה ה ו ב ל מ ש כ".split(), key=len, reverse=True
    )
)
_CLITIC_SCRIPT = re.compile(r"[\u0590-\u05ff\u0600-\u06ff]")
# Words; Devanagari vowel signs are marks, not letters, for `\w`, so the block is listed.
_WORD = re.compile(r"[\w*\u0900-\u0963\u0966-\u097f]+")
MIN_STEM = 4  # letters a stem needs (after normalisation): shorter prefixes start too many unrelated words
# Languages whose single-word terms also match one edit away (misspellings); in the others a word one edit
# from a term is too often an ordinary word (Polish "nagle", suddenly, is one edit from "nagie", naked;
# Russian "гола", of a goal, from "голая", naked).
FUZZY = frozenset({"", "en", "es", "fr", "de", "pt", "it"})
ACCENTED = frozenset({"vi", "th"})  # languages whose terms are matched with accents and tone marks kept
_NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen".split()
)
_N = r"(\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")"
_AGE = re.compile(
    rf"\b{_N}\s*(?:years?|yrs?|yo)\b(?:\s*old)?"  # "12 years old", "twelve yo"
    rf"|\b(?:girl|boy|child|kid|student|pupil|daughter|son)s?\s*(?:of|aged?|,)\s*{_N}\b"  # "a girl of twelve"
    rf"|\b(?:aged?|under|who(?:'s| is| are| was| were))\s+{_N}\b"  # "aged 13", "under 16", "who is 13"
    r"(?!\s*(?:minutes?|seconds?|hours?|days?|weeks?|months?|people|men|women|adults|percent|%|feet|meters|metres))"
)
# A school grade below the last two ("a 6th grader", "7th-grade student", "grade 4 pupils", "a fifth grader").
_GRADE = re.compile(
    r"\b(?:(?:[1-9]|10)(?:st|nd|rd|th)|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth)\s*grade(?:rs?)?\b"
    r"|\bgrade\s*(?:[1-9]|10)\s+(?:students?|pupils?|girls?|boys?|kids?|class)\b"
)
# An age in digits in other languages, read in the prompt as written (lower case, NFKC): "10 ans", "9 años",
# "12 Jahre", "8 лет", "9 років", "10 yaşında", "8 tuổi", "10岁", "9살", "12歳".
_AGE_WORLD = re.compile(
    r"(?<!\d)(\d{1,2})\s*(?:(?:ans|años|anos|anni|jahre|jahren|jaar|jaren|lat|let|лет|года|год|років|роки|рік|"
    r"yaşında|yaşındaki|tahun|tuổi|ετών|χρονών|שנים|سال|سنة|سنوات|साल|वर्ष)(?!\w)|岁|歲|歳|才|살|세|ปี)"
)
_PERSON_CUES = frozenset(
    """president senator politician minister chancellor governor mayor candidate king queen prince princess pope
    singer rapper actor actress celebrity famous star popstar athlete player billionaire ceo speech speaking says
    saying said interview press conference rally campaign face he she his her him himself herself mr mrs ms wife
    husband realistic photorealistic lifelike footage deepfake news arrested concert album song tour""".split()
)
_REALISM = re.compile(
    r"\b(?:realistic|photorealistic|photo-realistic|hyperrealistic|lifelike|life-like|real footage|news footage|"
    r"deepfake|deep fake|face ?swap|looks real|real life|documentary footage|paparazzi|cctv|bodycam)\b",
    re.IGNORECASE,
)
# A name only mentioned, not shown: "a Taylor Swift song on the radio", "a biography of Nelson Mandela",
# "Einstein's equation on a chalkboard", "a Messi number 10 jersey", "a street named after Martin Luther King".
_THING = (
    r"(?:songs?|albums?|tracks?|music|records?|vinyls?|playlist|books?|novels?|biograph(?:y|ies)|memoirs?|equations?|"
    r"theor(?:y|ies)|formulas?|quotes?|quotations?|jerseys?|shirts?|kits?|camisa|autographs?|signatures?|streets?|"
    r"avenues?|boulevards?|airports?|stadiums?|bridges?|museums?|prize|award|foundation|(?:concert )?tickets?|names?|"
    r"exhibits?|exhibitions?|letters|cassettes?|tapes?|cds?|bracelets?|houses?|homes?|birthplace|graves?|tombs?|ashram|"
    r"presentations?|slideshows?|lessons?|reports?|essays?|"
    r"cancion(?:es)?|chansons?|lied(?:er)?|musica|musique|canzon[ei]|livres?|libros?|libri|buch|bucher|biografias?|"
    r"biographie|biografie|album|piosenk[aiey]|ksiazk[aiey]|sarki(?:si|lari)?|kitab[ia]?|lagu|bai hat|sach|"
    r"песн[яиюе]|песни|книг[аиуе]|альбом|пісн[яіює]|книжк[аиу])"
)
# After a name in an unspaced script: its song, album, book or biography ("아이유 노래", "周杰伦的歌", "村上春樹の本").
_THING_UNSPACED = re.compile(
    r"^(?:의|の|的)?(?:노래|곡|앨범|음악|책|자서전|歌|曲|アルバム|本|伝記|专辑|專輯|音乐|音樂|传记|傳記|书|書)"
)
_GAP = (
    r"(?:\s+(?:number|no|\d+|new|latest|old|vintage|signed|famous|classic|first|hit|greatest|official|replica|do|da|de|"
    r"jr|sr|written|sung|recorded|composed))*"
)
_MENTION_AFTER = re.compile(
    rf"^(?:\s*'s|\s*s)?{_GAP}\s+{_THING}\b"
    # Hindi, as `clean` writes it: "X's song", "X's autobiography"
    + r"|^\s+(?:का|की|के)\s+(?:"
    + "|".join(clean(w) for w in "गाना गाने गीत आत्मकथा किताब जीवनी एल्बम".split())
    + ")"
)
_MENTION_BEFORE = re.compile(
    rf"\b(?:{_THING}{_GAP}\s+(?:of|about|by|from|do|da|de|del|di|von)|named after|in (?:honou?r|memory) of|"
    r"best of|reads|reading|the words|dress(?:es|ed|ing)? up as|dressed as|costumes? of|(?:bai hat|sach|tieu su|album) (?:cua|ve)|"
    r"(?:שיר|שירים|ספר|ביוגרפיה|אלבום) (?:של|על))\s*$"
)
_CAPITALISED_NAME = re.compile(r"\b([A-Z][a-z]+)\s+((?:[A-Z][a-z]*\.?\s+)?[A-Z][a-z'\-]+)")


@dataclass
class Match:
    group: str  # a category, or minor / instruction / make / weapon / nude / art / likeness
    term: str  # the term as written in the data file
    start: int  # first token index in the normalised prompt
    end: int  # one past the last token


@dataclass
class LexicalResult:
    category: str | None  # the refusal category, None when the lexicon allows the prompt
    matches: list[Match] = field(default_factory=list)
    minor: bool = False  # a child is named (a term or an age under 18)

    @property
    def reason(self) -> str:
        hits = [m.term for m in self.matches if m.group == self.category] or [m.term for m in self.matches]
        return ", ".join(dict.fromkeys(hits))


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text)


def _close(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance between a and b is at most 1."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long_[k]), len(short))
    return short[i:] == long_[i + 1 :]


def _bare(word: str) -> list[str]:
    """The word, and for Arabic, Persian or Hebrew also without a prefix written onto it (3 letters left at least)."""
    if not _CLITIC_SCRIPT.match(word):
        return [word]
    return [word] + [word[len(c) :] for c in _CLITICS if word.startswith(c) and len(word) - len(c) >= 3]


def _forms(term_word: str) -> list[str]:
    """A term's word, and without the Arabic article when it is written with one ("الانتحار" also as "انتحار")."""
    if term_word.startswith("ال") and len(term_word.rstrip("-")) >= 5:
        return [term_word, term_word[2:]]
    return [term_word]


def _deletes(word: str) -> set[str]:
    return {word} | {word[:i] + word[i + 1 :] for i in range(len(word))}


_NORMALIZE = Path(__file__).with_name("normalize.py")  # how terms are folded: part of a built lexicon's identity

# Letters only Vietnamese writes: its words, stripped of their tones, collide with other languages' terms.
_VIETNAMESE = re.compile("[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", re.IGNORECASE)


# Letters the languages of one-edit matching (`FUZZY`) never write: a word with one (Turkish "şahin", falcon;
# Polish "łza") belongs to another language and is not read as a misspelled term ("sarin").
_FOREIGN_LETTER = re.compile("[şğıąęłńśźżřčěůňťďľĺŕőűășțøåæðþđėīūāēģķļņšž]", re.IGNORECASE)


def foreign_words(prompt: str) -> frozenset[str]:
    """The normalised words of `prompt` written with a letter of a language outside `FUZZY`."""
    return frozenset(t for w in prompt.split() if _FOREIGN_LETTER.search(w) for t in tokenize(clean(w)))


def without_toned(prompt: str, text: str, matches: list[Match]) -> list[Match]:
    """The matches in `text` (a toneless reading of `prompt`) that are not made of Vietnamese words written with
    tones: those are read by the tone-keeping terms alone ("nửa", half, stripped is Portuguese "nua", naked;
    "sáng", morning, is French "sang", blood)."""
    if not _VIETNAMESE.search(prompt):
        return matches
    toned = {t for w in prompt.split() if clean(w) != clean(w, accents=True) for t in tokenize(clean(w))}
    toks = tokenize(text)
    return [m for m in matches if m.start < 0 or not set(toks[m.start : m.end]) <= toned]


class Lexicon:
    """Terms by group; `find(prompt)` returns the matches, `classify(prompt)` the category.

    rows are (group, term) or (group, term, language); terms of an `ACCENTED` language go to a second
    Lexicon (`self.accented`) that reads the prompt with its accents kept.
    """

    def __init__(self, rows: list[tuple[str, ...]], vocabulary: frozenset[str] = frozenset(), accents: bool = False):
        self.vocabulary = vocabulary
        self.accents = accents
        self.phrases: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}  # first squeezed token -> entries
        self.stems: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}  # squeezed first stem -> entries
        self.unspaced: list[tuple[str, str, str]] = []  # (term without spaces, group, term)
        self.fuzzy: dict[str, list[tuple[str, str, str]]] = {}  # delete-neighbour -> (squeezed term, group, term)
        self.words: set[str] = set()
        self.names: dict[str, list[tuple[str, str, str]]] = {}  # either word of a two-word name -> (first, last, name)
        accented = [r for r in rows if len(r) > 2 and r[2] in ACCENTED]
        for group, term, *lang in (r for r in rows if accents or not (len(r) > 2 and r[2] in ACCENTED)):
            self._add(group, term, lang[0] if lang else "")
        self.accented = Lexicon(accented, vocabulary, accents=True) if accented and not accents else None

    _STATE = ("phrases", "stems", "unspaced", "fuzzy", "words", "names")  # what __init__ builds from rows
    KEEP_BUILT = 8  # built lexicons kept in a cache folder; older ones are removed when a new one is written

    @classmethod
    def remembered(
        cls, rows: list[tuple[str, ...]], vocabulary: frozenset[str] = frozenset(), folder: Path | None = None
    ) -> Lexicon:
        """`Lexicon(rows, vocabulary)`, read from `folder` when a process has built the same one before.

        Building indexes ~30,000 terms (0.2-0.3 s of every cold `tessera generate`); the built indexes
        are kept in `folder` as a marshal file named by a hash of the rows, the vocabulary, this code
        and the Python version, so any change builds anew. A missing, unreadable or damaged file only
        means building again; a file that cannot be written is skipped. None: always build.
        """
        if folder is None:
            return cls(rows, vocabulary)
        digest = hashlib.sha256()
        for part in (sys.version, unicodedata.unidata_version, Path(__file__).read_bytes(), _NORMALIZE.read_bytes()):
            digest.update(part if isinstance(part, bytes) else part.encode())
            digest.update(b"\x00")
        digest.update("\n".join("\t".join(r) for r in rows).encode() + b"\x00")
        digest.update("\n".join(sorted(vocabulary)).encode())
        path = Path(folder) / f"lexicon-{digest.hexdigest()[:16]}.marshal"
        with contextlib.suppress(OSError, ValueError, EOFError, TypeError, KeyError):
            return cls._from_state(marshal.loads(path.read_bytes()), vocabulary)
        lexicon = cls(rows, vocabulary)
        with contextlib.suppress(OSError, ValueError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(marshal.dumps(lexicon._state()))
            os.replace(tmp, path)  # whole or not at all, for a reader in another process
            built = sorted(path.parent.glob("lexicon-*.marshal"), key=lambda p: p.stat().st_mtime)
            for old in built[: -cls.KEEP_BUILT]:  # oldest first
                old.unlink(missing_ok=True)
        return lexicon

    def _state(self) -> dict:
        state = {k: getattr(self, k) for k in self._STATE} | {"accents": self.accents}
        state["accented"] = self.accented._state() if self.accented else None
        return state

    @classmethod
    def _from_state(cls, state: dict, vocabulary: frozenset[str]) -> Lexicon:
        """The inverse of `_state`; a state of the wrong shape raises TypeError or KeyError."""
        if not isinstance(state, dict) or set(state) != {*cls._STATE, "accents", "accented"}:
            raise TypeError("not a built lexicon")
        lexicon = cls.__new__(cls)
        lexicon.vocabulary = vocabulary
        for k in (*cls._STATE, "accents"):
            setattr(lexicon, k, state[k])
        lexicon.accented = cls._from_state(state["accented"], vocabulary) if state["accented"] else None
        return lexicon

    def _add(self, group: str, term: str, lang: str = "") -> None:
        norm = clean(term, accents=self.accents)
        if _UNSPACED.search(norm):
            self.unspaced.append((norm.replace(" ", "").replace("-", ""), group, term))
            return
        if "-" in term and any(w.endswith("-") for w in term.split()):
            self._add_stem(group, term)
            return
        toks = tuple(tokenize(norm))
        variants = {toks, (("".join(toks)),)} if len(toks) > 1 else {toks}
        for v in variants:
            for key in _forms(v[0]):
                self.phrases.setdefault(squeeze(key), []).append((v, group, term))
            self.words.update(v)
        if group == "real_people" and len(toks) == 2:
            for k in toks:
                self.names.setdefault(k, []).append((toks[0], toks[1], term))
        if (
            len(toks) == 1
            and len(toks[0]) >= 5
            and group not in ("allow", "real_people", "real_people?")
            and lang in FUZZY
        ):
            sq = squeeze(toks[0])
            for d in _deletes(sq):
                self.fuzzy.setdefault(d, []).append((sq, group, term))

    def _add_stem(self, group: str, term: str) -> None:
        """A term with stems: each word written with a trailing '-' matches any word that starts with it.

        A stem that starts the term needs `MIN_STEM` letters; one after a fixed or stemmed word, 3 ("замен- лиц-")."""
        entry: list[str] = []
        for word in term.split():
            toks = tokenize(clean(word.rstrip("-"), accents=self.accents))
            if word.endswith("-"):
                need = 3 if entry or len(toks) > 1 else MIN_STEM
                if not toks or len(squeeze(toks[-1])) < need:
                    raise ValueError(
                        f"lexicon stem {word!r} in {term!r} is shorter than {need} letters; "
                        "write a longer stem or the whole word"
                    )
                toks[-1] += "-"
            entry += toks
        key = entry[0]
        index = self.stems if key.endswith("-") else self.phrases
        for k in _forms(key):
            index.setdefault(squeeze(k.rstrip("-")), []).append((tuple(entry), group, term))

    def _same(self, word: str, term: str) -> bool:
        return any(self._same_word(w, t) for w in _bare(word) for t in _forms(term))

    def _same_word(self, word: str, term: str) -> bool:
        if word == term:
            return True
        if word in self.vocabulary:
            # a known word is itself, not a term stretched or squeezed ("shot" is not "shoot", "Jäger" not "Jagger")
            return term.endswith("-") and word.startswith(term[:-1])
        if term.endswith("-"):
            return squeeze(word).startswith(squeeze(term[:-1]))
        if "*" in word and len(word) == len(term):
            return all(a == b or a == "*" for a, b in zip(word, term))
        sq = squeeze(term)
        return len(sq) >= 4 and squeeze(word) == sq

    def _phrase_at(self, toks: list[str], i: int) -> list[tuple[int, str, str]]:
        found = []
        word = toks[i]
        entries = []
        for sq in map(squeeze, _bare(word)):
            entries += self.phrases.get(sq, []) + [
                e for n in range(MIN_STEM, len(sq) + 1) for e in self.stems.get(sq[:n], ())
            ]
        if "*" in word:
            entries = [
                e for k, v in self.phrases.items() if len(k) <= len(word) for e in v if len(e[0][0]) == len(word)
            ]
        for entry, group, term in entries:
            n = len(entry)
            if i + n <= len(toks) and all(self._same(toks[i + k], entry[k]) for k in range(n)):
                found.append((n, group, term))
        return found

    def _known(self, word: str) -> bool:
        """A word of some language, not a misspelling: listed, or an English inflection of a listed word that is
        not itself a term ("kites" is not "kikes"; "nakeds" is still read as "naked")."""
        if word in self.vocabulary or word in self.words:
            return True
        for suffix in ("s", "es", "ed", "d", "ing", "er", "ers"):
            stem = word[: -len(suffix)]
            if word.endswith(suffix) and len(stem) >= 3 and stem in self.vocabulary and stem not in self.words:
                return True
        return False

    def _fuzzy_at(self, word: str, foreign: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        if len(word) < 4 or not word.isalpha() or word in foreign or self._known(word):
            return []
        sq = squeeze(word)
        out = {}
        for d in _deletes(sq):
            for term_sq, group, term in self.fuzzy.get(d, ()):
                if _close(sq, term_sq):
                    out[(group, term)] = None
        return list(out)

    def _name_at(self, a: str, b: str) -> list[str]:
        """Two-word names with one word exact and the other one edit away ("Tayler Swift")."""
        out = []
        for first, last, name in self.names.get(a, []) + self.names.get(b, []):
            if (a == first and len(b) >= 4 and _close(b, last)) or (b == last and len(a) >= 4 and _close(a, first)):
                out.append(name)
        return out

    def find(self, text: str, foreign: frozenset[str] = frozenset()) -> list[Match]:
        """All matches in one normalised text, allow-listed phrases removed, nested matches dropped.

        `foreign`: words never matched one edit away (`foreign_words`)."""
        toks = tokenize(text)
        found: list[Match] = []
        for i in range(len(toks)):
            found += [Match(g, t, i, i + n) for n, g, t in self._phrase_at(toks, i)]
            found += [Match(g, t, i, i + 1) for g, t in self._fuzzy_at(toks[i], foreign)]
            if i + 1 < len(toks):
                found += [Match("real_people", t, i, i + 2) for t in self._name_at(toks[i], toks[i + 1])]
            if i + 1 < len(toks) and min(len(toks[i]), len(toks[i + 1])) <= 3:
                joined = [toks[i] + toks[i + 1]]  # only an exact term: "a sad" is not "assad"
                hits = self._phrase_at(joined, 0) if joined[0] in self.words else []
                if not any(g == "allow" for _, g, _ in hits):  # "negeer de" joined is the allowed "negeerde"
                    found += [Match(g, t, i, i + 2) for n, g, t in hits if n == 1]
        found += self._substrings(text)
        allowed = [m for m in found if m.group == "allow"]
        found = [
            m for m in found if m.group != "allow" and not any(a.start <= m.start and m.end <= a.end for a in allowed)
        ]
        return [
            m
            for m in found
            if not any(
                o is not m and o.start <= m.start and m.end <= o.end and o.end - o.start > m.end - m.start
                for o in found
            )
        ]

    def without_allowed(self, text: str) -> str:
        """The normalised text with its allow-listed phrases ("naked mole rat", "bath bomb", "폭탄주") cut out."""
        spans = list(_WORD.finditer(text))
        toks = [m.group() for m in spans]
        drop: set[int] = set()
        for i in range(len(toks)):
            for n, group, _ in self._phrase_at(toks, i):
                if group == "allow":
                    drop.update(range(i, i + n))
        for i in sorted(drop, reverse=True):
            text = text[: spans[i].start()] + text[spans[i].end() :]
        for term, group, _ in self.unspaced:
            if group == "allow":
                text = text.replace(term, " ")
        return re.sub(r"\s+", " ", text).strip()

    def _substrings(self, text: str) -> list[Match]:
        """Unspaced-script terms found in the text without its spaces, allow-listed ones blanked first.

        Their span (-1, -1) nests in no word match."""
        hay = text.replace(" ", "")
        for term, group, _ in self.unspaced:
            if group == "allow":
                hay = hay.replace(term, "|")
        return [Match(g, t, -1, -1) for term, g, t in self.unspaced if g != "allow" and term in hay]

    def classify(self, prompt: str) -> LexicalResult:
        """The category the terms alone decide, from every normalised reading of the prompt."""
        views = {clean(prompt, "i"), clean(prompt, "l"), clean(prompt, article=False)}
        if _NICKNAME.search(prompt):  # Dwayne 'The Rock' Johnson: the listed name without the quoted nickname
            views.add(clean(_NICKNAME.sub(" ", prompt)))
        foreign = foreign_words(prompt)
        matches = [m for v in views for m in without_toned(prompt, v, self.find(v, foreign))]
        if self.accented:
            matches += self.accented.find(clean(prompt, accents=True))
        groups = {m.group for m in matches}
        minor = "minor" in groups or _names_a_child_by_number(views, unicodedata.normalize("NFKC", prompt).lower())
        if "nude" in groups and (not groups & {"art", "likeness"} or minor):
            groups.add("sexual")  # nudity outside a named work of art (a statue, a painting) is refused
            for m in matches:
                m.group = "sexual" if m.group == "nude" else m.group
        if minor and groups & {"sexual", "violence", "suggestive"}:
            groups.add("minors")  # "suggestive": a thong, twerking, a sexy pose; refused only when a child is named
        if _ECHO.search(prompt):  # (((name))): the antisemitic "echo" around a word
            groups.add("hate")
            matches.append(Match("hate", "(((echo)))", 0, 0))
        if {"weapon", "instruction", "make"} <= groups:
            groups.add("weapons")
            matches.append(Match("weapons", "instructions for a weapon", 0, 0))
        # a statue of, a song by, a book about a public figure: the classifier decides
        if ("likeness" in groups or _only_mentioned(prompt, matches)) and not _REALISM.search(prompt):
            groups.discard("real_people")
        elif "real_people" not in groups and (name := person_named(prompt, matches)):
            groups.add("real_people")
            matches.append(Match("real_people", name, 0, 0))
        category = next((c for c in PRIORITY if c in groups), None)
        return LexicalResult(category, matches, minor)


# Text in quotes: a headline or caption shown on screen ("a news ticker reading 'Merz meets Macron'").
# three or more brackets on both sides of a word or two: "(((they)))", "((( them )))"
_ECHO = re.compile(r"[(（]{3,}\s*[^()（）]{1,30}?\s*[)）]{3,}")
# a short quoted nickname between two words of a name
_NICKNAME = re.compile(r"(?<=\w)\s+(?:\"[^\"]{1,24}\"|“[^”]{1,24}”|‘[^’]{1,24}’|'[^']{1,24}')\s+(?=\w)")
_QUOTED = re.compile(r'"[^"]+"|“[^”]+”|„[^“”]+[“”]|«[^»]+»|「[^」]+」|『[^』]+』|‘[^’]+’|(?<!\w)\'[^\']+\'(?!\w)')


def _only_mentioned(prompt: str, matches: list[Match]) -> bool:
    """Every listed name in the prompt names a thing of the person's (a song, a book, a jersey) or stands in
    quoted text (a headline on screen), not the person."""
    names = {m.term for m in matches if m.group in ("real_people", "real_people?")}
    if not names:
        return False
    outside = clean(_QUOTED.sub(" | ", prompt))
    text = clean(prompt)
    for name in names:
        n = clean(name)
        if _UNSPACED.search(n):  # names in unspaced scripts: a thing of theirs written right after the name
            hay, key = outside.replace(" ", ""), n.replace(" ", "")
            if any(not _THING_UNSPACED.match(hay[m.end() :]) for m in re.finditer(re.escape(key), hay)):
                return False
            continue
        pattern = rf"(?<!\w){re.escape(n)}(?!\w)"
        if not re.search(pattern, outside):
            if re.search(pattern, text):
                continue  # only inside quotes
            return False  # matched in another form ("путина", "لمحمد صلاح", "A n g e l a"): read as shown
        found = list(re.finditer(pattern, text))
        if not found or not all(
            _MENTION_AFTER.match(text[m.end() :]) or _MENTION_BEFORE.search(text[: m.start()]) for m in found
        ):
            return False
    return True


def _names_a_child_by_number(views: set[str], raw: str) -> bool:
    """An age under 18 or a school grade below the last two, in a normalised reading (`views`) or in the prompt as
    written (`raw`: NFKC, lower case). Cleaning reads "14yo" as leetspeak and writes "8 лет" in Latin look-alikes,
    so an age glued to its unit and the other languages' words for years are read as written."""
    texts = (*views, raw)
    if any(_GRADE.search(t) for t in texts):
        return True
    for m in (m for t in texts for m in _AGE.finditer(t)):
        n = next(g for g in m.groups() if g)
        if (int(n) if n.isdigit() else _NUMBER_WORDS.index(n) + 1) < 18:
            return True
    return any(int(m.group(1)) < 18 for m in _AGE_WORLD.finditer(raw))


def _data(name: str) -> list[str]:
    text = resources.files("tessera.safety").joinpath("data", name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


@cache
def load_rows() -> tuple[tuple[str, str, str], ...]:
    """(group, term, language) rows of the lexicon, names included as real_people terms (ambiguous ones as `name?`)."""
    rows = [tuple((line.split("\t") + [""])[:3]) for line in _data("lexicon.tsv")]
    for line in _data("public_figures.tsv"):
        name, _, aliases = line.partition("\t")
        for n in [name] + [a.strip() for a in aliases.split(",") if a.strip()]:
            rows.append(("real_people?" if n.startswith("~") else "real_people", n.lstrip("~"), ""))
    return tuple(rows)


@cache
def benign_words() -> frozenset[str]:
    """Every word of the benign prompts in `data/prompts.tsv` (24 languages), as normalised.

    Real words of some language: the lexicon does not read them as one-edit misspellings of a term
    (Italian "forno" is not "porno", Polish "poranna" is not "proana")."""
    rows = (line.split("\t") for line in _data("prompts.tsv"))
    return frozenset(w for r in rows if len(r) > 1 and r[1] == "benign" for w in tokenize(clean(r[0])))


@cache
def allow_list() -> Lexicon:
    """The allow-listed phrases alone (see `Lexicon.without_allowed`)."""
    return Lexicon([r for r in load_rows() if r[0] == "allow"])


@cache
def first_names() -> frozenset[str]:
    return frozenset(w for line in _data("first_names.txt") for w in line.split())


def person_named(prompt: str, matches: list[Match]) -> str | None:
    """A real person the prompt names: a listed name, an ambiguous one with a person cue, or a
    realistic depiction of '<Given name> <Surname>'. Returns the name, or None."""
    names = [m.term for m in matches if m.group == "real_people"]
    if names:
        return names[0]
    words = set(tokenize(clean(prompt)))
    ambiguous = [m.term for m in matches if m.group == "real_people?"]
    if ambiguous and words & _PERSON_CUES:
        return ambiguous[0]
    if _REALISM.search(prompt):
        for m in _CAPITALISED_NAME.finditer(prompt):
            if m.group(1).lower() in first_names():
                return f"{m.group(1)} {m.group(2)}"
    return None
