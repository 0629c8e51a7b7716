"""Recommendations served from the newest published model (`training` publishes them):
similar movies looked up, and a person's list folded in from their ratings at each read."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from core import recommend
from core.cache import Cache
from core.errors import NotFound
from core.services.movies import canonical_genre
from core.store import chunked
from core.store import movies as movie_store
from core.store import ratings as rating_store
from core.store import recommender as model_store
from core.store import users as user_store
from core.store.movies import Filters, MovieCard
from models import PydanticObjectId

MIN_LIKES = 3  # fewer liked movies than this: the person gets what is liked lately instead
CHECK_EVERY = 10.0  # seconds between a reader's looks for a newer model
COLLABORATIVE, POPULAR_NOW, TOP_RATED = "collaborative", "popular-recently", "top-rated"
STRATEGIES = (COLLABORATIVE, POPULAR_NOW, TOP_RATED)


@dataclass(frozen=True)
class LoadedModel:
    version: int
    trained_at: datetime
    movie_ids: list[PydanticObjectId]
    index: dict[PydanticObjectId, int]
    model: recommend.Model
    near: recommend.Neighbours
    unit: recommend.Floats  # factor rows of length 1, for reasons


@dataclass
class ModelStore:
    """This process's copy of the newest ready model, looked for every CHECK_EVERY seconds
    (one small query), loaded again only when its version changed."""

    check_every: float = CHECK_EVERY
    model: LoadedModel | None = None
    _checked: float = field(default=-1e18)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def current(self) -> LoadedModel | None:
        if time.monotonic() - self._checked < self.check_every:
            return self.model
        async with self._lock:
            if time.monotonic() - self._checked >= self.check_every:
                self.model = await _load_newer(self.model)
                self._checked = time.monotonic()
        return self.model


async def _load_newer(have: LoadedModel | None) -> LoadedModel | None:
    newest = await model_store.newest_version()
    if newest is None or (have is not None and have.version == newest):
        return have if newest is not None else None
    stored = await model_store.load(newest)
    if stored is None:  # deleted since: two newer versions were published meanwhile
        return have
    model, near = recommend.load(stored.data, stored.params)
    return LoadedModel(
        version=stored.version,
        trained_at=stored.trained_at,
        movie_ids=stored.movie_ids,
        index={movie_id: i for i, movie_id in enumerate(stored.movie_ids)},
        model=model,
        near=near,
        unit=recommend.unit_rows(model.items),
    )


@dataclass(frozen=True)
class Suggestion:
    movie: MovieCard
    score: float
    reason: str | None = None


@dataclass(frozen=True)
class Suggestions:
    items: list[Suggestion]
    strategy: str
    model: LoadedModel | None


async def similar_movies(
    *, movie_id: PydanticObjectId, limit: int, store: ModelStore
) -> Suggestions:
    """The movies closest to this one in the newest model among those enough people like,
    each with how many who like this one like it too; none while no model knows it.
    NotFound for a movie that does not exist."""
    if not await movie_store.exists(movie_id):
        raise NotFound("No movie with that id.")
    model = await store.current()
    if model is None or movie_id not in model.index:
        return Suggestions(items=[], strategy=COLLABORATIVE, model=model)
    row = model.index[movie_id]
    near = model.near
    kept = [n for n in range(min(limit, near.rows.shape[1])) if near.rows[row, n] >= 0]
    ids = [model.movie_ids[near.rows[row, n]] for n in kept]
    cards = await movie_store.cards([*ids, movie_id])
    title = cards[movie_id]["title"] if movie_id in cards else "this movie"
    fans = int(model.model.likes[row])
    items = [
        Suggestion(
            movie=cards[i],
            score=round(float(near.cosines[row, n]), 4),
            reason=f"{near.together[row, n]} of the {fans} people who like {title} like it too",
        )
        for i, n in zip(ids, kept, strict=True)
        if i in cards
    ]
    return Suggestions(items=items, strategy=COLLABORATIVE, model=model)


async def for_user(
    *,
    user_id: PydanticObjectId,
    limit: int,
    store: ModelStore,
    cache: Cache,
    genre: str | None = None,
    year_min: int | None = None,
    year_max: int | None = None,
) -> Suggestions:
    """Movies this person has not rated, best first: from the newest model, their taste
    folded in from the ratings they have now (a new rating shows at once) and blended with
    what is liked lately, each with the liked movie that led to it; with fewer than
    MIN_LIKES likes it knows, what people liked lately; before any model, the top-rated
    movies by weighted score."""
    if not await user_store.exists(user_id):
        raise NotFound("No user with that id.")
    if genre:
        genre = await canonical_genre(genre, cache=cache)
        if genre is None:
            return Suggestions(items=[], strategy=TOP_RATED, model=None)
    filters = Filters(genre=genre, year_min=year_min, year_max=year_max)
    rated = await rating_store.scores_of(user_id)
    model = await store.current()
    liked = (
        [model.index[m] for m, s in rated.items() if s >= recommend.LIKED and m in model.index]
        if model
        else []
    )
    if model is None:
        return await _top_rated(rated, filters=filters, limit=limit, model=model)
    known = np.array([model.index[m] for m in rated if m in model.index], dtype=np.int64)
    if len(liked) < MIN_LIKES:
        scores = model.model.recent
        found = await _in_order(model, scores, known, filters=filters, limit=limit)
        return Suggestions(items=[s for _, s in found], strategy=POPULAR_NOW, model=model)
    mine = np.array(liked, dtype=np.int64)
    scores = recommend.scores(model.model, mine)
    found = await _in_order(model, scores, known, filters=filters, limit=limit)
    items = [s for _, s in found]
    # Each with the liked movie closest to it, named.
    reasons = [recommend.because(model.unit, row, mine) for row, _ in found]
    named = await movie_store.cards([model.movie_ids[r] for r in set(reasons)])
    for n, because in enumerate(reasons):
        source = named.get(model.movie_ids[because])
        if source is not None:
            score = rated[model.movie_ids[because]]
            reason = f"because you rated {source['title']} {score:g}"
            items[n] = dataclasses.replace(items[n], reason=reason)
    return Suggestions(items=items, strategy=COLLABORATIVE, model=model)


async def _in_order(
    model: LoadedModel,
    scores: recommend.Floats,
    known: recommend.Ints,
    *,
    filters: Filters,
    limit: int,
) -> list[tuple[int, Suggestion]]:
    """The best-scored movies the person has not rated that pass the filters, with their
    rows: a top-k of the catalogue (never a full sort), read in chunks until `limit`."""
    ranked = recommend.top(scores, max(limit * 20, 200), exclude=known)
    items: list[tuple[int, Suggestion]] = []
    for part in chunked(ranked.tolist(), size=max(limit * 2, 20)):
        cards = await movie_store.cards([model.movie_ids[row] for row in part], filters)
        for row in part:
            card = cards.get(model.movie_ids[row])
            if card is not None:
                items.append((row, Suggestion(movie=card, score=round(float(scores[row]), 4))))
            if len(items) == limit:
                return items
    return items


async def _top_rated(
    rated: dict[Any, float], *, filters: Filters, limit: int, model: LoadedModel | None
) -> Suggestions:
    """The catalogue by weighted score, without what the person rated."""
    items = []
    for card in await movie_store.top_weighted(filters, limit=limit + min(len(rated), 1_000)):
        if card["id"] in rated:
            continue
        items.append(Suggestion(movie=card, score=round(card["rating"]["weighted"], 4)))
        if len(items) == limit:
            break
    return Suggestions(items=items, strategy=TOP_RATED, model=model)
