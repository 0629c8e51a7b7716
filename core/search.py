"""Title search as people type: case-, accent-, punctuation- and article-insensitive, words
in any order, the last word a prefix, ranked by relevance.

Each movie stores `search_names` (its title and aliases folded, words apart, the parts of a
word people also type joined kept together with '-': "schindler-s list") and
`search_terms`, every word, joined word and word prefix of those names plus "=" and each
name's article-less key. A multikey index over `search_terms` serves both the exact lookup
("=matrix") and the word lookup (the query's longest word) as equalities (core.store.movies
reads them); the other words are checked on the candidates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.titles import ARTICLES, display_title
from models import title_key

MIN_PREFIX = 2  # one letter would put most of the catalogue under every query
# A query whose longest word is a possible prefix shorter than this finds exact names only
# (Up, Pi): a two-letter prefix such as "th" holds thousands of films, and reading its
# candidates cost 60 times a whole word's. One letter is never a prefix term, only a whole
# word (the E of E.T.).
SELECTIVE_WORD = 3
EXACT = "="  # marks a name's key among the terms: no word starts with it
# Words dropped from a query (unless it has no others) and from the keys compared for an
# exact title: "the matrix" is "Matrix, The" is "The Matrix".
ARTICLE_WORDS = frozenset(a.rstrip("'").casefold() for a in ARTICLES)
_PARTS = re.compile(r"[^\W_]+")
# Letters that Unicode does not decompose into a base letter and a mark.
_LIGATURES = str.maketrans(
    {"æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "þ": "th", "ł": "l"}
)
_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x")
# Sequels are written both ways: "Part II" is found by "part 2" and "Toy Story 2" by "ii".
NUMERALS = {
    **{roman: str(n) for n, roman in enumerate(_ROMAN, 1)},
    **{str(n): roman for n, roman in enumerate(_ROMAN, 1)},
}


def fold(text: str) -> str:
    """Case- and accent-free text: 'Amélie' -> 'amelie', 'Æon' -> 'aeon'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_LIGATURES))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def chunks(text: str) -> list[list[str]]:
    """The words of `text`, each as the parts punctuation splits it into:
    "Schindler's List" -> [["schindler", "s"], ["list"]]."""
    return [parts for chunk in fold(text).split() if (parts := _PARTS.findall(chunk))]


def search_name(name: str) -> str:
    """How a name is stored for ranking: words apart, parts of a word joined by '-'."""
    return " ".join("-".join(parts) for parts in chunks(name))


def _key(words: list[str]) -> str:
    """A name's or query's words without articles, run together (for exact matches)."""
    kept = [w for w in words if w not in ARTICLE_WORDS] or words
    return "".join(kept)


def _name_words(stored: str) -> tuple[list[str], set[str]]:
    """The words of a stored name, and every word a query may use for them (joined too)."""
    words: list[str] = []
    vocabulary: set[str] = set()
    for chunk in stored.split():
        parts = chunk.split("-")
        words.extend(parts)
        vocabulary.update(parts)
        if len(parts) > 1:
            vocabulary.add("".join(parts))
    vocabulary.update(NUMERALS[w] for w in list(vocabulary) if w in NUMERALS)
    return words, vocabulary


def search_fields(title: str, aliases: Iterable[str] = ()) -> dict[str, list[str]]:
    """The stored search fields of a movie with this title and these aliases."""
    names = list(dict.fromkeys(n for n in map(search_name, [title, *aliases]) if n))
    terms: set[str] = set()
    for name in names:
        words, vocabulary = _name_words(name)
        terms.add(EXACT + _key(words))
        for word in vocabulary:
            terms.add(word)
            terms.update(word[:n] for n in range(MIN_PREFIX, len(word)))
    return {"search_names": names, "search_terms": sorted(terms)}


def title_fields(raw: str) -> dict[str, Any]:
    """Every stored field that follows from a title as given (MovieLens' or a person's):
    the displayed title, its sort key, aliases and search fields."""
    shown, aliases = display_title(raw)
    return {"title": shown, "title_key": title_key(shown), "aliases": aliases,
            **search_fields(shown, aliases)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SearchText:
    """A parsed `q`: its words (articles dropped when others remain), the last one maybe
    still being typed, and its exact-title key."""

    words: tuple[str, ...]
    key: str

    @classmethod
    def parse(cls, q: str) -> SearchText | None:
        """None when `q` holds no letters or digits at all."""
        words = [part for parts in chunks(q) for part in parts]
        if not words:
            return None
        content = [w for w in words if w not in ARTICLE_WORDS] or words
        return cls(words=tuple(dict.fromkeys(content)), key=_key(words))

    @property
    def selective(self) -> bool:
        """Whether its longest word narrows the index read enough to be worth one."""
        return not MIN_PREFIX <= len(max(self.words, key=len)) < SELECTIVE_WORD

    @property
    def longest_word(self) -> str:
        """The word the index is read by (likely the query's rarest); `tier` checks the
        others."""
        return max(self.words, key=len)

    @property
    def exact_term(self) -> str:
        """The term a name that is exactly the query (article-free) is stored under."""
        return EXACT + self.key

    def tier(self, stored_names: Iterable[str]) -> int | None:
        """0 an exact name, 1 all words as a phrase, 2 all words, 3 the last word only as a
        prefix; None when a name lacks a word (the index matched prefixes of it)."""
        best: int | None = None
        *whole, last = self.words
        joined = "".join(self.words)
        for stored in stored_names:
            words, vocabulary = _name_words(stored)
            if not all(w in vocabulary for w in whole):
                continue
            if last in vocabulary:
                name_key = _key(words)
                tier = 0 if name_key == self.key else 1 if joined in "".join(words) else 2
            elif any(w.startswith(last) for w in vocabulary):
                tier = 3
            else:
                continue
            best = tier if best is None else min(best, tier)
        return best
