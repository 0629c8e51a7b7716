"""Title search: what is stored for a title, how a query is read, how a match is ranked."""

from __future__ import annotations

import pytest
from beanie import SortDirection

from core.search import SearchText, search_fields, search_name, title_fields
from core.store.paging import _merged, keyset_parts

ASC, DESC = SortDirection.ASCENDING, SortDirection.DESCENDING


def test_names_fold_case_accents_and_punctuation():
    assert search_name("Amélie") == "amelie"
    assert search_name("Schindler's List") == "schindler-s list"
    assert search_name("WALL·E") == "wall-e"
    assert search_name("Æon Flux") == "aeon flux"
    assert search_name("Star Wars: Episode V - The Empire") == "star wars episode v the empire"


def test_terms_hold_words_joined_words_prefixes_numerals_and_the_exact_key():
    terms = set(
        search_fields("The Godfather: Part II", ["Mario Puzo's The Godfather"])["search_terms"]
    )
    assert {"godfather", "go", "godfathe", "part", "ii", "2", "=godfatherpartii"} <= terms
    assert {"puzos", "puzo", "s", "=mariopuzosgodfather"} <= terms
    assert "g" not in terms  # a one-letter prefix would match most of the catalogue


def test_title_fields_follow_from_a_movielens_title():
    fields = title_fields("Seven (a.k.a. Se7en)")
    assert (fields["title"], fields["aliases"]) == ("Seven", ["Se7en"])
    assert fields["search_names"] == ["seven", "se7en"]
    assert {"=seven", "=se7en", "se7"} <= set(fields["search_terms"])


def test_a_query_drops_articles_unless_it_has_nothing_else():
    assert SearchText.parse("The Matrix").words == ("matrix",)
    assert SearchText.parse("the matrix").key == "matrix"
    assert SearchText.parse("A.I.").words == ("a", "i")
    assert SearchText.parse("?!") is None
    assert SearchText.parse("star wars empire").longest_word == "empire"


@pytest.mark.parametrize(
    ("query", "names", "tier"),
    [
        ("the matrix", ["matrix"], 0),  # "Matrix, The" shown as "The Matrix"
        ("schindlers list", ["schindler-s list"], 0),
        ("amelie", ["amelie", "le fabuleux destin d-amelie poulain"], 0),
        ("godfather part", ["the godfather part ii"], 1),  # the words as a phrase
        ("empire strikes star wars", ["star wars episode v the empire strikes back"], 2),
        ("godfather 2", ["the godfather part ii"], 2),  # a numeral as its roman twin
        ("incep", ["inception"], 3),  # the last word only as a prefix
        ("star wa", ["star wars"], 3),
        ("sta wars", ["star wars"], None),  # only the last word may be cut short
        ("matrix reloaded", ["the matrix"], None),
    ],
)
def test_tiers(query, names, tier):
    assert SearchText.parse(query).tier(names) == tier


def test_keyset_ranges_follow_the_servers_order_of_missing_values():
    last = "65f1c0ffee0123456789abcd"
    # Descending: the rest of the tie, the smaller numbers, then the rows with none.
    assert keyset_parts([("rating.mean", DESC), ("_id", ASC)], (4.0, last), nullable=True) == [
        ({"rating.mean": 4.0, "_id": {"$gt": last}}, [("_id", ASC)]),
        ({"rating.mean": {"$lt": 4.0}}, [("rating.mean", DESC), ("_id", ASC)]),
        ({"rating.mean": None}, [("_id", ASC)]),
    ]
    # Ascending from a row with none: the rest of those, then every number.
    assert keyset_parts([("year", ASC), ("_id", ASC)], (None, last), nullable=True) == [
        ({"year": None, "_id": {"$gt": last}}, [("_id", ASC)]),
        ({"year": {"$gte": float("-inf")}}, [("year", ASC), ("_id", ASC)]),
    ]


def test_a_range_joins_the_clients_filter_on_the_same_field():
    assert _merged({"year": {"$gte": 1990}}, {"year": {"$lt": 1995}}) == {
        "year": {"$lt": 1995, "$gte": 1990}
    }
    # A row's own value is inside the range: the equality alone (an index read on
    # SecantusDB, which scans the collection for $eq beside a range); no value is in none.
    assert _merged({"year": {"$gte": 1990}}, {"year": 1999}) == {"year": 1999}
    assert _merged({"year": {"$gte": 1990}}, {"year": None}) is None
