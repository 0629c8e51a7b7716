"""The synthetic release generator: realistic shape, importable, deterministic."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.mark.parametrize(
    ("ratings", "users", "movies", "reason"),
    [
        (0, 5, 5, "at least 1"),
        (-3, 5, 5, "at least 1"),
        (4, 5, 5, "at least 5 ratings"),  # fewer ratings than users
        (26, 5, 5, "5 * 5 = 25"),
    ],
)
def test_sizes_no_release_can_have_are_one_line_errors(tmp_path, ratings, users, movies, reason):
    args = ["synth", "--ratings", str(ratings), "--users", str(users), "--movies", str(movies)]
    done = subprocess.run(
        [sys.executable, "-m", "seed", *args, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and reason in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # no traceback
