"""Collaborative filtering: item factors learnt from who liked what, a person's taste folded
in from their own ratings at request time, and similar items by cosine.

A rating of 4.0 or more is a "like". ALS for implicit feedback (Hu, Koren, Volinsky 2008,
as implemented by `implicit`) learns one vector per item from the likes; a person's vector
is then solved in closed form from the vectors of the items they like, so a new rating
changes their list at once, without retraining. `make eval-recs` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse
from threadpoolctl import threadpool_limits

LIKED = 4.0  # the lowest score that counts as liking a movie (the evaluation's "relevant")
CONFIDENCE = 2.0  # the weight of a like against an unseen item (1); chosen by make eval-recs
FACTORS = 32
REGULARIZATION = 0.1
ITERATIONS = 15

Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Factors:
    """What a model keeps: one row per item, and what folding a person in needs."""

    items: Floats  # (items, FACTORS)
    gram: Floats  # items.T @ items, shared by every fold-in
    regularization: float = REGULARIZATION

    @classmethod
    def of(cls, items: Floats, regularization: float = REGULARIZATION) -> Factors:
        items = np.ascontiguousarray(items, dtype=np.float32)
        return cls(items=items, gram=items.T @ items, regularization=regularization)


def fit(
    users: Ints,
    items: Ints,
    *,
    n_users: int,
    n_items: int,
    factors: int = FACTORS,
    iterations: int = ITERATIONS,
    seed: int = 1,
) -> Factors:
    """Item factors from likes, as (user index, item index) pairs; at most a quarter as
    many factors as there are users or items."""
    likes = sparse.csr_matrix(
        (np.full(len(users), CONFIDENCE, dtype=np.float32), (users, items)),
        shape=(n_users, n_items),
    )
    likes.sum_duplicates()
    likes.data[:] = CONFIDENCE
    from implicit.cpu.als import AlternatingLeastSquares  # heavy: only where training runs

    # implicit runs its own threads; a multi-threaded BLAS under them only oversubscribes
    # (limited once implicit has loaded the BLAS it uses).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            # A small catalogue cannot fill 32 dimensions: they would fit noise.
            factors=min(factors, max(2, min(n_users, n_items) // 4)),
            regularization=REGULARIZATION,
            iterations=iterations,
            random_state=seed,
            calculate_training_loss=False,
        )
        model.fit(likes, show_progress=False)
    return Factors.of(model.item_factors)


def fold_in(factors: Factors, liked: Ints) -> Floats:
    """A person's vector from the items they like: the ALS user step for one row,
    (YᵀY + Σ (c-1)·yᵢyᵢᵀ + λI)·x = Σ c·yᵢ."""
    rows = factors.items[liked]
    gram = factors.gram + (CONFIDENCE - 1) * rows.T @ rows
    gram += factors.regularization * np.eye(gram.shape[0], dtype=np.float32)
    return np.linalg.solve(gram, CONFIDENCE * rows.sum(axis=0)).astype(np.float32)


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


def similar(unit: Floats, item: int, n: int) -> tuple[Ints, Floats]:
    """The `n` items closest to `item` by cosine, and their cosines."""
    cosines = unit @ unit[item]
    best = top(cosines, n, exclude=np.array([item]))
    return best, cosines[best]


def because(unit: Floats, item: int, liked: Ints) -> int:
    """Which of the liked items is closest to `item`: the reason to show for it."""
    return int(liked[np.argmax(unit[liked] @ unit[item])])
