"""The model recovers planted tastes: two groups of people, each liking its own movies."""

from __future__ import annotations

import numpy as np

from core import recommend

GROUP = 30  # movies per group; movies 0-29 are group A's, 30-59 group B's


def _planted(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(200):
        own = np.arange(GROUP) + (0 if user < 100 else GROUP)
        liked = [*rng.choice(own, 10, replace=False), *rng.choice(2 * GROUP, 1)]  # and noise
        users += [user] * len(liked)
        items += liked
    return np.array(users), np.array(items)


def test_a_persons_list_and_similar_movies_come_from_their_group():
    users, items = _planted()
    factors = recommend.fit(users, items, n_users=200, n_items=2 * GROUP, factors=8)
    for liked, group in (([0, 3, 7], range(GROUP)), ([31, 40, 55], range(GROUP, 2 * GROUP))):
        taste = recommend.fold_in(factors, np.array(liked))
        best = recommend.top(factors.items @ taste, 5, exclude=np.array(liked))
        assert set(best.tolist()) <= set(group) and not set(best.tolist()) & set(liked)
    unit = recommend.unit_rows(factors.items)
    for movie in (2, 45):
        close, cosines = recommend.similar(unit, movie, 5)
        assert all((c < GROUP) == (movie < GROUP) for c in close.tolist())
        assert list(cosines) == sorted(cosines, reverse=True) and movie not in close
    assert recommend.because(unit, 4, np.array([1, 50])) == 1


def test_top_never_returns_what_is_excluded_and_copes_with_short_lists():
    scores = np.array([0.5, 0.9, 0.1], dtype=np.float32)
    assert recommend.top(scores, 2).tolist() == [1, 0]
    assert recommend.top(scores, 5, exclude=np.array([1])).tolist() == [0, 2]
    assert recommend.top(scores, 3, exclude=np.array([0, 1, 2])).tolist() == []
