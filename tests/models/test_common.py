"""Pure rating arithmetic: buckets, exact means from histograms."""

from __future__ import annotations

import pytest
from beanie import PydanticObjectId

from models import SCORES, RatingStats, bucket


def test_buckets_cover_the_half_star_scale():
    assert [bucket(s) for s in SCORES] == list(range(10))
    assert SCORES[0] == 0.5 and SCORES[-1] == 5.0


def test_stats_from_histogram_are_exact():
    histogram = [1, 0, 0, 0, 0, 0, 0, 2, 0, 1]  # 0.5, 4.0, 4.0, 5.0
    version = PydanticObjectId()
    stats = RatingStats.from_histogram(histogram, version=version)
    assert (stats.count, stats.sum, stats.mean, stats.version) == (4, 13.5, 3.375, version)


def test_empty_histogram_has_no_mean():
    stats = RatingStats.from_histogram([0] * 10)
    assert stats.count == 0 and stats.mean is None


def test_histogram_length_is_checked():
    with pytest.raises(ValueError):
        RatingStats.from_histogram([1, 2, 3])
