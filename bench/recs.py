"""Offline evaluation of the recommendations (not a test): `make eval-recs` or
`python -m bench.recs [PATH]`.

Reads a MovieLens-shaped ratings.csv (ml-latest-small from ../shared by default; imports
nothing), holds out the last 20 % of each user with 10 or more ratings by time (relevant:
the held-out ratings of 4.0 or more), trains on the rest with the code the worker runs
(core.recommend.fit), folds each user in from their training likes as the API does, and
prints recall@10, NDCG@10 and catalogue coverage for the model, for the most popular
movies and for the weighted-score ranking, with training time and peak memory.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from pathlib import Path

import numpy as np

from core import recommend

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "movielens" / "ml-latest-small"
K = 10
HELD_OUT = 0.2
MIN_RATINGS = 10
PRIOR_VOTES = 10.0  # the API's default RATING_PRIOR_VOTES
TARGET = 1.5  # the model's NDCG@10 against most popular's


def read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """User codes, movie codes, scores and timestamps of every rating (read by Arrow: the
    process's memory before training stays close to the arrays themselves)."""
    from pyarrow import csv

    table = csv.read_csv(path / "ratings.csv")
    column = {name: table.column(name).to_numpy() for name in table.column_names}
    _, users = np.unique(column["userId"], return_inverse=True)
    _, movies = np.unique(column["movieId"], return_inverse=True)
    return users, movies, column["rating"].astype(np.float32), column["timestamp"]


def split(users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """True for the training ratings: all but the last 20 % (by time) of each user with
    MIN_RATINGS or more."""
    train = np.ones(len(users), dtype=bool)
    order = np.lexsort((times, users))
    bounds = np.r_[0, np.flatnonzero(np.diff(users[order])) + 1, len(users)]
    for start, end in itertools.pairwise(bounds):
        if end - start >= MIN_RATINGS:
            train[order[end - int(np.ceil((end - start) * HELD_OUT)) : end]] = False
    return train


def _rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


class Scores:
    """recall@K, NDCG@K and coverage of one ranking over the held-out users."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.recall = self.ndcg = 0.0
        self.users = 0
        self.shown: set[int] = set()
        self.discount = 1 / np.log2(np.arange(2, K + 2))

    def add(self, top: list[int], relevant: set[int]) -> None:
        hits = np.array([item in relevant for item in top], dtype=float)
        ideal = self.discount[: min(len(relevant), K)].sum()
        self.recall += hits.sum() / min(len(relevant), K)
        self.ndcg += float((hits * self.discount[: len(hits)]).sum() / ideal)
        self.users += 1
        self.shown.update(top)

    def row(self) -> tuple[float, float, float]:
        n = max(self.users, 1)
        return self.recall / n, self.ndcg / n, len(self.shown) / self.n_items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recs", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    args = parser.parse_args(argv)
    if not (args.path / "ratings.csv").exists():
        parser.error(f"no ratings.csv in {args.path}")
    users, items, scores, times = read(args.path)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    train = split(users, times)
    liked = train & (scores >= recommend.LIKED)

    rss_before = _rss_mb()
    started = time.perf_counter()
    factors = recommend.fit(users[liked], items[liked], n_users=n_users, n_items=n_items)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    counts = np.bincount(items[train], minlength=n_items).astype(float)
    sums = np.bincount(items[train], weights=scores[train], minlength=n_items)
    means = np.divide(sums, counts, out=np.zeros(n_items), where=counts > 0)
    overall = scores[train].mean()
    weighted = (
        counts / (counts + PRIOR_VOTES) * means + PRIOR_VOTES / (counts + PRIOR_VOTES) * overall
    )
    weighted[counts == 0] = -np.inf
    rankings = {"model (ALS, folded in)": Scores(n_items), "most popular": Scores(n_items),
                "weighted score": Scores(n_items)}  # fmt: skip
    held = ~train
    for user in np.unique(users[held]):
        relevant = set(items[held & (users == user) & (scores >= recommend.LIKED)].tolist())
        if not relevant:
            continue
        mine = train & (users == user)
        seen = items[mine]
        own_likes = items[mine & (scores >= recommend.LIKED)]
        popular = recommend.top(counts.astype(np.float32), K, exclude=seen).tolist()
        if len(own_likes):
            taste = recommend.fold_in(factors, own_likes)
            top = recommend.top(factors.items @ taste, K, exclude=seen).tolist()
        else:
            top = popular  # what the API answers for someone the model cannot place
        rankings["model (ALS, folded in)"].add(top, relevant)
        rankings["most popular"].add(popular, relevant)
        best = recommend.top(weighted.astype(np.float32), K, exclude=seen).tolist()
        rankings["weighted score"].add(best, relevant)

    evaluated = rankings["most popular"].users
    print(f"{args.path}: {len(users):,} ratings, {n_users:,} users, {n_items:,} movies; "
          f"{int(held.sum()):,} held out, {evaluated:,} users evaluated")  # fmt: skip
    print(f"{'ranking':<26}{'recall@10':>11}{'NDCG@10':>10}{'coverage':>10}")
    for name, ranking in rankings.items():
        recall, ndcg, coverage = ranking.row()
        print(f"{name:<26}{recall:>11.4f}{ndcg:>10.4f}{coverage:>10.4f}")
    model_ndcg = rankings["model (ALS, folded in)"].row()[1]
    popular_ndcg = rankings["most popular"].row()[1]
    ratio = model_ndcg / popular_ndcg if popular_ndcg else float("inf")
    print(f"NDCG@10 against most popular: {ratio:.2f}x (target {TARGET}x)")
    print(f"training: {seconds:.2f} s for {int(liked.sum()):,} likes "
          f"({recommend.FACTORS} factors, {recommend.ITERATIONS} iterations); "
          f"process peak memory {peak_mb:.0f} MB, {rss_before:.0f} MB before training")  # fmt: skip
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
