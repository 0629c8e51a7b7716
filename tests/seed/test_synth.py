"""The synthetic release generator: realistic shape, importable, deterministic."""

from __future__ import annotations

from collections import Counter

import pytest

from core.imports.source import Source
from seed.synth import expected_mean, generate
from tests.seed.releases import read_ratings


def test_shape_of_a_synthetic_release(tmp_path):
    made = generate(tmp_path, ratings=3000, users=50, movies=400, seed=7)
    rows = read_ratings(tmp_path)
    assert len(rows) == made.ratings == 3000
    users = [int(r[0]) for r in rows]
    assert users == sorted(users) and len(set(users)) == 50  # grouped by user, everyone rates
    pairs = {(r[0], r[1]) for r in rows}
    assert len(pairs) == len(rows)  # one rating per user and movie
    assert {float(r[2]) * 2 % 1 for r in rows} == {0.0}  # half stars only
    assert all(0.5 <= float(r[2]) <= 5.0 for r in rows)
    popularity = Counter(r[1] for r in rows).most_common()
    assert popularity[0][1] > 5 * popularity[len(popularity) // 2][1]  # skewed, long tail
    assert 2.5 < expected_mean(tmp_path) < 4.5
    assert Source(tmp_path).count_rows("movies.csv") == 400
    generate(tmp_path / "again", ratings=3000, users=50, movies=400, seed=7)
    assert read_ratings(tmp_path / "again") == rows


def test_impossible_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path, ratings=11, users=2, movies=5)
