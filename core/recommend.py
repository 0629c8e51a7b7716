"""Collaborative filtering with recency: item factors learnt from who liked what, a person's
taste folded in from their own ratings at request time, blended with what people liked
lately; and similar items by cosine among films with enough likes.

A rating of 4.0 or more is a "like". ALS for implicit feedback (Hu, Koren, Volinsky 2008,
as implemented by `implicit`) learns one vector per item from the likes; a person's vector
is then solved in closed form from the vectors of the items they like, so a new rating
changes their list at once, without retraining. Each item's score adds its recent
popularity (likes decayed by age, half-life `half_life_days`, scaled to at most 1) times
`recency_weight`: tastes follow what is being watched now. People the model cannot place
get the recent popularity alone. `make eval-recs` chose every parameter on validation
periods and measures the result against strong baselines on later ones.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import sparse
from threadpoolctl import threadpool_limits

LIKED = 4.0  # the lowest score that counts as liking a movie (the evaluation's "relevant")
DAY = 86_400.0

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Params:
    """What training and scoring need; the defaults are what `make eval-recs` chose."""

    factors: int = 32
    regularization: float = 10.0
    confidence: float = 2.0  # the weight of a like against an unseen item (1)
    iterations: int = 15
    half_life_days: float = 90.0
    recency_weight: float = 0.5


PARAMS = Params()


@dataclass(frozen=True)
class Model:
    """One trained model: a factor row, a recent popularity and a like count per item."""

    items: Floats  # (items, factors)
    recent: Floats  # likes decayed by age, the most recently popular item at 1
    likes: Ints  # how many people like each item
    params: Params = PARAMS
    gram: Floats = field(init=False, repr=False)  # items.T @ items, shared by every fold-in

    def __post_init__(self) -> None:
        items = np.ascontiguousarray(self.items, dtype=np.float32)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "gram", items.T @ items)


def likes_matrix(users: Ints, items: Ints, *, n_users: int, n_items: int) -> sparse.csr_matrix:
    """Users by items, 1 where the user likes the item (duplicates count once)."""
    likes = sparse.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items)
    )
    likes.sum_duplicates()
    likes.data[:] = 1
    return likes


def recent_popularity(
    items: Ints, times: npt.NDArray, n_items: int, half_life_days: float
) -> Floats:
    """Each item's likes weighted by 2^(-age / half-life), the age counted back from the
    newest like (so a dataset from years ago still ranks), scaled to at most 1."""
    if not len(items):
        return np.zeros(n_items, dtype=np.float32)
    age_days = (float(np.max(times)) - times.astype(np.float64)) / DAY
    decayed = np.bincount(items, weights=np.exp2(-age_days / half_life_days), minlength=n_items)
    return (decayed / decayed.max()).astype(np.float32)


def fit(
    users: Ints,
    items: Ints,
    times: npt.NDArray,
    *,
    n_users: int,
    n_items: int,
    params: Params = PARAMS,
    seed: int = 1,
) -> Model:
    """A model from likes as (user index, item index, unix time); at most a quarter as
    many factors as there are users or items."""
    likes = likes_matrix(users, items, n_users=n_users, n_items=n_items)
    from implicit.cpu.als import AlternatingLeastSquares  # heavy: only where training runs

    # implicit runs its own threads; a multi-threaded BLAS under them only oversubscribes
    # (limited once implicit has loaded the BLAS it uses).
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            # A small catalogue cannot fill many dimensions: they would fit noise.
            factors=min(params.factors, max(2, min(n_users, n_items) // 4)),
            regularization=params.regularization,
            iterations=params.iterations,
            random_state=seed,
            calculate_training_loss=False,
        )
        als.fit(likes * params.confidence, show_progress=False)
    return Model(
        items=als.item_factors,
        recent=recent_popularity(items, times, n_items, params.half_life_days),
        likes=np.asarray(likes.sum(axis=0)).ravel().astype(np.int64),
        params=params,
    )


def fold_in(model: Model, liked: Ints) -> Floats:
    """A person's vector from the items they like: the ALS user step for one row,
    (YᵀY + Σ (c-1)·yᵢyᵢᵀ + λI)·x = Σ c·yᵢ."""
    c, rows = model.params.confidence, model.items[liked]
    gram = model.gram + (c - 1) * rows.T @ rows
    gram += model.params.regularization * np.eye(gram.shape[0], dtype=np.float32)
    return np.linalg.solve(gram, c * rows.sum(axis=0)).astype(np.float32)


def scores(model: Model, liked: Ints) -> Floats:
    """Every item's score for a person who likes `liked`: predicted preference plus the
    weighted recent popularity."""
    return model.items @ fold_in(model, liked) + model.params.recency_weight * model.recent


def top(scores: Floats, n: int, *, exclude: Ints | None = None) -> Ints:
    """The indexes of the `n` highest scores, best first, never one of `exclude`."""
    scores = scores.copy()
    if exclude is not None and len(exclude):
        scores[exclude] = -np.inf
    n = min(n, int(np.isfinite(scores).sum()))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    best = np.argpartition(-scores, n - 1)[:n]
    return best[np.argsort(-scores[best], kind="stable")].astype(np.int64)


def unit_rows(items: Floats) -> Floats:
    """Each row scaled to length 1 (for cosines); zero rows stay zero."""
    norms = np.linalg.norm(items, axis=1, keepdims=True)
    return (items / np.where(norms == 0, 1, norms)).astype(np.float32)


def because(unit: Floats, item: int, liked: Ints) -> int:
    """Which of the liked items is closest to `item`: the reason to show for it."""
    return int(liked[np.argmax(unit[liked] @ unit[item])])


@dataclass(frozen=True)
class Neighbours:
    """Each item's most similar items (-1 past the end), their cosines, and how many people
    like both."""

    rows: npt.NDArray[np.int32]  # (items, kept)
    cosines: Floats
    together: npt.NDArray[np.int32]


def neighbours(
    model: Model, likes: sparse.csr_matrix, *, min_likes: int, kept: int, batch: int = 256
) -> Neighbours:
    """For every item, the `kept` items closest by cosine of their factors among those that
    `min_likes` people or more like (a film liked a handful of times has its few fans'
    direction, not a taste of its own), and the people who like both."""
    n_items = model.items.shape[0]
    unit = unit_rows(model.items)
    candidates = np.flatnonzero(model.likes >= min_likes)
    kept = min(kept, max(len(candidates) - 1, 0))
    rows = np.full((n_items, kept), -1, dtype=np.int32)
    cosines = np.zeros((n_items, kept), dtype=np.float32)
    together = np.zeros((n_items, kept), dtype=np.int32)
    if kept == 0:
        return Neighbours(rows, cosines, together)
    by_item = likes.T.tocsr()
    pool = unit[candidates]
    for start in range(0, n_items, batch):
        block = np.arange(start, min(start + batch, n_items))
        sims = unit[block] @ pool.T
        sims[candidates[None, :] == block[:, None]] = -np.inf  # never an item itself
        best = np.argpartition(-sims, kept - 1, axis=1)[:, :kept]
        order = np.argsort(-np.take_along_axis(sims, best, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        rows[block] = candidates[best]
        cosines[block] = np.take_along_axis(sims, best, axis=1)
        both = (by_item[block] @ by_item[candidates].T).tocsr()  # people liking each pair
        together[block] = np.take_along_axis(both.toarray(), best, axis=1)
    return Neighbours(rows, cosines, together)


def dump(model: Model, near: Neighbours) -> bytes:
    """A model and its neighbours as one NumPy archive (no pickles)."""
    out = io.BytesIO()
    np.savez(
        out,
        items=model.items,
        recent=model.recent,
        likes=model.likes,
        rows=near.rows,
        cosines=near.cosines,
        together=near.together,
    )
    return out.getvalue()


def load(data: bytes, params: dict[str, float]) -> tuple[Model, Neighbours]:
    """What `dump` wrote, with the parameters it was trained with."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        model = Model(
            items=arrays["items"],
            recent=arrays["recent"],
            likes=arrays["likes"],
            params=Params(**params),  # type: ignore[arg-type]
        )
        near = Neighbours(arrays["rows"], arrays["cosines"], arrays["together"])
    return model, near


def params_dict(params: Params) -> dict[str, float]:
    """The parameters as stored beside a model."""
    return asdict(params)
