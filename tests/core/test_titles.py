# ruff: noqa: E501  (a table of real titles reads best one case per line)
"""MovieLens titles become the titles people write, with the film's other names."""

from __future__ import annotations

import pytest

from core.titles import display_title

# From ml-latest-small's movies.csv (years removed), each with what people read.
CASES = [
    ("Matrix, The", "The Matrix", []),
    ("Godfather: Part II, The", "The Godfather: Part II", []),
    ("Amelie (Fabuleux destin d'Amélie Poulain, Le)", "Amelie", ["Le Fabuleux destin d'Amélie Poulain"]),
    ("Seven (a.k.a. Se7en)", "Seven", ["Se7en"]),
    ("Léon: The Professional (a.k.a. The Professional) (Léon)", "Léon: The Professional", ["The Professional", "Léon"]),
    ("Shawshank Redemption, The", "The Shawshank Redemption", []),
    ("Good, the Bad and the Ugly, The", "The Good, the Bad and the Ugly", []),
    ("Dernier Combat, Le (Last Battle, The)", "Le Dernier Combat", ["The Last Battle"]),
    ("Pan's Labyrinth (Laberinto del fauno, El)", "Pan's Labyrinth", ["El Laberinto del fauno"]),
    ("Cabinet of Dr. Caligari, The (Cabinet des Dr. Caligari., Das)", "The Cabinet of Dr. Caligari", ["Das Cabinet des Dr. Caligari."]),
    ("Vitelloni, I (a.k.a. The Young and the Passionate)", "I Vitelloni", ["The Young and the Passionate"]),
    ("Hip Hop Witch, Da", "Da Hip Hop Witch", []),
    ("Atalante, L'", "L'Atalante", []),
    # Not articles, and parentheses that belong to the title, stay as they are.
    ("Paris, Texas", "Paris, Texas", []),
    ("Birdman: Or (The Unexpected Virtue of Ignorance)", "Birdman: Or (The Unexpected Virtue of Ignorance)", []),
    ("(500) Days of Summer", "(500) Days of Summer", []),
    ("Toy Story", "Toy Story", []),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "title", "aliases"), CASES)
def test_display_titles(raw, title, aliases):
    assert display_title(raw) == (title, aliases)
