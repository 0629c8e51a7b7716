"""The model recovers planted tastes (two groups of people, each liking its own movies),
weighs recent likes up, and lists similar films only among those enough people like."""

from __future__ import annotations

import numpy as np
import pytest

from core import recommend

pytestmark = pytest.mark.fast

GROUP = 30  # movies per group; movies 0-29 are group A's, 30-59 group B's
DAY = int(recommend.DAY)
PARAMS = recommend.Params(factors=8, regularization=0.1, recency_weight=0.0)


def _planted(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(200):
        own = np.arange(GROUP) + (0 if user < 100 else GROUP)
        liked = [*rng.choice(own, 10, replace=False), *rng.choice(2 * GROUP, 1)]  # and noise
        users += [user] * len(liked)
        items += liked
    return np.array(users), np.array(items), np.full(len(users), 1_500_000_000)


def test_a_persons_list_comes_from_their_group():
    users, items, times = _planted()
    model = recommend.fit(users, items, times, n_users=200, n_items=2 * GROUP, params=PARAMS)
    for liked, group in (([0, 3, 7], range(GROUP)), ([31, 40, 55], range(GROUP, 2 * GROUP))):
        best = recommend.top(recommend.scores(model, np.array(liked)), 5, exclude=np.array(liked))
        assert set(best.tolist()) <= set(group) and not set(best.tolist()) & set(liked)
    unit = recommend.unit_rows(model.items)
    assert recommend.because(unit, 4, np.array([1, 50])) == 1
    assert model.likes.sum() == len(set(zip(users.tolist(), items.tolist(), strict=True)))


def test_similar_films_come_from_the_group_and_rarely_liked_films_are_never_listed():
    users, items, times = _planted()
    # Movie 60 is liked by one person of group A only: its one fan's direction, no taste.
    users, items, times = np.r_[users, 0], np.r_[items, 60], np.r_[times, times[0]]
    model = recommend.fit(users, items, times, n_users=200, n_items=61, params=PARAMS)
    matrix = recommend.likes_matrix(users, items, n_users=200, n_items=61)
    near = recommend.neighbours(model, matrix, min_likes=5, kept=5)
    for movie in (2, 45):
        close = near.rows[movie].tolist()
        assert all((c < GROUP) == (movie < GROUP) for c in close) and movie not in close
        assert list(near.cosines[movie]) == sorted(near.cosines[movie], reverse=True)
    assert 60 not in near.rows  # liked once: under the floor
    assert len(near.rows[60]) == 5  # but it has a list of its own
    # `together` counts the people who like both, exactly.
    fans = {m: set(users[items == m].tolist()) for m in range(61)}
    for movie in (2, 45, 60):
        for other, both in zip(near.rows[movie], near.together[movie], strict=True):
            assert both == len(fans[movie] & fans[other])


def test_recent_likes_weigh_more_and_blend_into_the_scores():
    items = np.array([0, 0, 0, 1, 1, 2])
    now = 1_700_000_000
    times = np.array([now - 400 * DAY] * 3 + [now, now - DAY, now])
    recent = recommend.recent_popularity(items, times, 4, half_life_days=90)
    assert recent[1] == pytest.approx(1, rel=1e-3) and recent[3] == 0
    assert recent[1] > recent[2] > recent[0]  # three old likes count less than one new
    users, items, times = _planted()
    plain = recommend.fit(users, items, times, n_users=200, n_items=2 * GROUP, params=PARAMS)
    boosted = recommend.Model(
        items=plain.items,
        recent=np.eye(2 * GROUP, dtype=np.float32)[59],
        likes=plain.likes,
        params=recommend.Params(factors=8, regularization=0.1, recency_weight=5.0),
    )
    liked = np.array([0, 3, 7])
    assert recommend.top(recommend.scores(boosted, liked), 1).tolist() == [59]
    assert recommend.top(recommend.scores(plain, liked), 1).tolist() != [59]


def test_a_stored_model_reads_back_the_same():
    users, items, times = _planted()
    model = recommend.fit(users, items, times, n_users=200, n_items=2 * GROUP, params=PARAMS)
    matrix = recommend.likes_matrix(users, items, n_users=200, n_items=2 * GROUP)
    near = recommend.neighbours(model, matrix, min_likes=1, kept=3)
    again, near_again = recommend.load(
        recommend.dump(model, near), recommend.params_dict(model.params)
    )
    assert again.params == model.params
    np.testing.assert_array_equal(again.items, model.items)
    np.testing.assert_array_equal(again.recent, model.recent)
    np.testing.assert_array_equal(near_again.together, near.together)


def test_top_never_returns_what_is_excluded_and_copes_with_short_lists():
    scores = np.array([0.5, 0.9, 0.1], dtype=np.float32)
    assert recommend.top(scores, 2).tolist() == [1, 0]
    assert recommend.top(scores, 5, exclude=np.array([1])).tolist() == [0, 2]
    assert recommend.top(scores, 3, exclude=np.array([0, 1, 2])).tolist() == []
