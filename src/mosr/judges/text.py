"""Text normalisation and splitting shared by the rule-based judges."""

from __future__ import annotations

import re
import unicodedata

# Typographic quotes and spaces that chat models emit in place of their ASCII forms.
_CHARACTER_MAP = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u02bc": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00a0": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\u200b": "",
        "\ufeff": "",
    }
)

_SPACES = re.compile(r"[ \t\r\f\v]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[a-z]{2}[.!?])(?=[*_#`]*[A-Z][a-z'\s])")
_ENDS_WITH_ABBREVIATION = re.compile(
    r"(?:\b(?:mr|mrs|ms|dr|prof|st|jr|sr|vs|etc|fig|approx|dept|inc|ltd|co|e\.g|i\.e)"
    r"|(?:^|[\s.])[A-Za-z]|^\W*\d{1,3})\.$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")
_MARKDOWN = re.compile(r"[*_`#>]+")

# Common English function words, ignored when comparing the words of a request and a response.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each even ever every few for
    from further get gets getting give go going had has have having he her here hers herself him
    himself his how however i if in into is it its itself just let like make many may me might more
    most much must my myself no nor not now of off on once one only or other our ours ourselves out
    over own per please same she should so some such than that the their theirs them themselves then
    there these they this those through to too under until up upon us use used using very via want
    was way ways we well were what when where whether which while who whom whose why will with
    within without would you your yours yourself yourselves
    """.split()
)


def split_sentences(text: str) -> list[str]:
    """Split text into lower-cased sentences at end punctuation and line breaks, without markdown markers.

    A period glued to the next capital letter ("information.I cannot") also ends a sentence, since
    some models drop the space between sentences. A period after a common abbreviation ("Mr.",
    "e.g."), a single letter ("U.S.") or a list number ("1.") does not.
    """
    text = unicodedata.normalize("NFKC", text).translate(_CHARACTER_MAP)
    sentences: list[str] = []
    for line in text.split("\n"):
        pending = ""
        for piece in _SENTENCE_END.split(line):
            pending = f"{pending} {piece}" if pending else piece
            if _ENDS_WITH_ABBREVIATION.search(pending):
                continue
            _append_cleaned(sentences, pending)
            pending = ""
        _append_cleaned(sentences, pending)
    return sentences


def _append_cleaned(sentences: list[str], piece: str) -> None:
    cleaned = _SPACES.sub(" ", _MARKDOWN.sub("", piece)).strip().lower()
    if cleaned:
        sentences.append(cleaned)


def words(text: str) -> list[str]:
    """Return the words of a text, lower-cased."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    """Return the words of three or more letters that are not function words, reduced to a crude stem."""
    return {stem(word) for word in words(text) if len(word) >= 3 and word not in STOPWORDS}


def stem(word: str) -> str:
    """Strip a few English suffixes so that "hacking", "hacked" and "hacks" compare equal."""
    word = word.strip("'-")
    if word.endswith("'s"):
        word = word[:-2]
    for suffix in ("ingly", "ation", "ing", "ed", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word
