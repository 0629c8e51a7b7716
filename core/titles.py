"""Titles as people write them: MovieLens' "Matrix, The" is "The Matrix", and its trailing
parenthesised titles ("(a.k.a. Se7en)", "(Fabuleux destin d'Amélie Poulain, Le)") are
aliases. The same rules apply to titles typed into the API."""

from __future__ import annotations

import re

# The articles MovieLens moves to the end of a title (all found in ml-latest-small, plus
# their siblings in the same languages). Words that merely end a title (", Texas",
# ", Maybe") are not on the list and stay where they are.
ARTICLES = (
    "The", "A", "An", "Da",  # English ("Da Hip Hop Witch")
    "Les", "Le", "La", "L'", "Un", "Une",  # French
    "Il", "Lo", "Gli", "I",  # Italian ("I" only with a comma before it, as MovieLens writes)
    "El", "Los", "Las",  # Spanish
    "Der", "Die", "Das",  # German
    "Het", "De",  # Dutch
)  # fmt: skip
_TRAILING = re.compile(r"^(?P<rest>.+), (?P<article>" + "|".join(map(re.escape, ARTICLES)) + r")$")
# A title that runs on into its parentheses ("Birdman: Or (The Unexpected Virtue of
# Ignorance)") keeps them: those are part of the title, not another name for the film.
_RUNS_ON = (":", "-", "&", ",", " Or", " or")


def lead_article(title: str) -> str:
    """'Matrix, The' -> 'The Matrix'; "Atalante, L'" -> "L'Atalante"."""
    match = _TRAILING.match(title.strip())
    if match is None:
        return title.strip()
    article, rest = match["article"], match["rest"]
    return f"{article}{rest}" if article.endswith("'") else f"{article} {rest}"


def _last_group(title: str) -> tuple[str, str] | None:
    """('Seven', 'a.k.a. Se7en') from 'Seven (a.k.a. Se7en)': the last balanced group."""
    if not title.endswith(")"):
        return None
    depth = 0
    for index in range(len(title) - 1, -1, -1):
        if title[index] == ")":
            depth += 1
        elif title[index] == "(":
            depth -= 1
            if depth == 0:
                return title[:index].rstrip(), title[index + 1 : -1].strip()
    return None


def display_title(raw: str) -> tuple[str, list[str]]:
    """The title people read, and the film's other names, from a MovieLens-style title
    (the year already removed)."""
    title, aliases = raw.strip(), list[str]()
    while (split := _last_group(title)) is not None:
        main, group = split
        if not main or not group or main.endswith(_RUNS_ON):
            break
        aliases.insert(0, lead_article(group.removeprefix("a.k.a. ").strip()))
        title = main
    shown = lead_article(title)
    return shown, [a for a in dict.fromkeys(aliases) if a and a != shown]
