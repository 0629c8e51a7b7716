"""Synthetic MovieLens-format releases with a realistic shape, for scale runs.

Popularity follows a Zipf-like law (a few blockbusters, a long tail), users differ in how
much they rate (log-normal) and how generous they are (a per-user bias), movies differ in
quality, and every score is a half star. Rows are written as they are made: memory stays
small whatever the size.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip


@dataclass(frozen=True)
class SynthSummary:
    movies: int
    users: int
    ratings: int


def _half_star(value: float) -> float:
    return min(5.0, max(0.5, round(value * 2) / 2))


def _ratings_per_user(rng: random.Random, users: int, ratings: int, movies: int) -> list[int]:
    weights = [rng.lognormvariate(0, 1.0) for _ in range(users)]
    scale = ratings / sum(weights)
    counts = [min(movies, max(1, int(w * scale))) for w in weights]
    # Spread the rounding difference so the total is exact (and no user exceeds the catalogue).
    diff, i = ratings - sum(counts), 0
    while diff:
        step = 1 if diff > 0 else -1
        j = i % users
        if (step > 0 and counts[j] < movies) or (step < 0 and counts[j] > 1):
            counts[j] += step
            diff -= step
        i += 1
    return counts


def generate(out: Path, *, ratings: int, users: int, movies: int, seed: int = 42) -> SynthSummary:
    """Write movies.csv, links.csv and ratings.csv (grouped by user) into `out`."""
    if min(ratings, users, movies) < 1:
        raise ValueError("ratings, users and movies must each be at least 1")
    if ratings < users:
        raise ValueError(f"every user rates at least once: at least {users} ratings")
    if ratings > users * movies:
        raise ValueError(
            f"{ratings} ratings need more user-movie pairs than {users} * {movies} = "
            f"{users * movies}"
        )
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    quality = [rng.gauss(0.0, 0.6) for _ in range(movies)]
    with (
        (out / "movies.csv").open("w", newline="", encoding="utf-8") as mf,
        (out / "links.csv").open("w", newline="", encoding="utf-8") as lf,
    ):
        mw, lw = csv.writer(mf), csv.writer(lf)
        mw.writerow(["movieId", "title", "genres"])
        lw.writerow(["movieId", "imdbId", "tmdbId"])
        for movie_id in range(1, movies + 1):
            year = rng.randint(1920, 2024)
            genres = "|".join(sorted(rng.sample(GENRES, rng.randint(1, 3))))
            mw.writerow([movie_id, f"Synthetic Movie {movie_id}, The ({year})", genres])
            lw.writerow([movie_id, f"{9_000_000 + movie_id:07d}", 900_000 + movie_id])
    cumulative = list(itertools.accumulate(1.0 / (rank**1.07) for rank in range(1, movies + 1)))
    total = cumulative[-1]
    with (out / "ratings.csv").open("w", newline="", encoding="utf-8") as rf:
        rw = csv.writer(rf)
        rw.writerow(["userId", "movieId", "rating", "timestamp"])
        for user_id, count in enumerate(_ratings_per_user(rng, users, ratings, movies), start=1):
            bias = rng.gauss(0.0, 0.5)
            chosen: set[int] = set()
            while len(chosen) < count:
                if count > movies // 10:  # heavy raters: uniform, or the tail takes ages to draw
                    chosen.update(rng.sample(range(movies), count - len(chosen)))
                    break
                chosen.add(bisect.bisect_left(cumulative, rng.random() * total))
            start = rng.randint(946_684_800, 1_700_000_000)
            for k, movie in enumerate(sorted(chosen)):
                score = _half_star(3.5 + bias + quality[movie] + rng.gauss(0.0, 0.8))
                rw.writerow([user_id, movie + 1, f"{score:.1f}", start + k * 37])
    return SynthSummary(movies=movies, users=users, ratings=ratings)


def expected_mean(path: Path) -> float:
    """Mean of every score in a ratings.csv (used by tests and the benchmark as ground truth)."""
    total, n = 0.0, 0
    with (path / "ratings.csv").open(encoding="utf-8") as f:
        for row in itertools.islice(csv.reader(f), 1, None):
            total += float(row[2])
            n += 1
    return total / n if n else math.nan
