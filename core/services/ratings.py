"""Ratings: one per user and movie; every change carries its durable recompute intent."""

from __future__ import annotations

from dataclasses import dataclass

from core import summaries
from core.cache import Cache
from core.errors import NotFound, ServiceUnavailable
from core.queue import TaskQueue
from core.store import DESC, Page, Position, Sort
from core.store import movies as movie_store
from core.store import ratings as rating_store
from core.store import users as user_store
from core.store.movies import MovieCard
from models import PydanticObjectId, Rating, utcnow

NEWEST_FIRST: Sort = [("rated_at", DESC), ("_id", DESC)]
PROFILE_SORTS: dict[str, Sort] = {
    "recent": NEWEST_FIRST,
    "score": [("score", DESC), ("_id", DESC)],
}


@dataclass(frozen=True, slots=True)
class ProfileItem:
    rating: Rating
    movie: MovieCard


async def _movie_exists(movie_id: PydanticObjectId, cache: Cache) -> bool:
    """Ask the database (the second round trip of a new rating), and remember a yes."""
    if not await movie_store.exists(movie_id):
        return False
    cache.known_movies.seen(movie_id)
    return True


async def _changed(*, user_id: PydanticObjectId, queue: TaskQueue, cache: Cache) -> None:
    # The caller's own profile shows the write at once; the movie's summary and the user's
    # stats follow when a drain recomputes them (and bumps their cache versions). The intent
    # is already in MongoDB: if the broker is down, beat's periodic drain finds it.
    await cache.users_changed([user_id])
    await queue.request_drain()


async def put_rating(
    *,
    user_id: PydanticObjectId,
    movie_id: PydanticObjectId,
    score: float,
    queue: TaskQueue,
    cache: Cache,
) -> tuple[Rating, bool]:
    """Set the caller's score for a movie; True when the rating is new.

    One upsert on the unique (user, movie) pair that also stamps the rating's `changed_at`
    with the server's clock, the durable intent to recompute both summaries, then at most
    one more round trip: a new rating checks its movie exists, unless this process saw it
    exist lately (KnownMovies: a movie deleted meanwhile takes such a rating with it at the
    next drain); an existing one reads its creation time (a deleted movie's ratings go with
    it, so an existing rating implies its movie; on MongoDB the upsert is a findAndModify
    that returns the rating as written). An unchanged score changes nothing, not even
    `updated_at`, and asks for no drain. The answer is what this request wrote, never a
    read-back of another write.
    """
    now = utcnow()
    written = await rating_store.upsert_score(user_id, movie_id, score, now=now)
    if written is None:
        raise ServiceUnavailable("The rating could not be stored; please retry.")
    stored, created = written
    if created:
        if not cache.known_movies.known(movie_id) and not await _movie_exists(movie_id, cache):
            # No such movie (or deleted meanwhile). Its mark is gone with it; the user's
            # stats never counted it unless a drain ran in between, which the next one fixes.
            await summaries.record_intent(user_ids=[user_id])
            await rating_store.delete(user_id, movie_id, rated_at=now)
            raise NotFound("No movie with that id.")
    if stored["updated_at"] == now or created:
        await _changed(user_id=user_id, queue=queue, cache=cache)
    rating = Rating(
        id=stored["_id"],
        user_id=user_id,
        movie_id=movie_id,
        score=score,
        rated_at=stored["rated_at"],
        updated_at=stored["updated_at"],
    )
    return rating, created


async def get_rating(*, user_id: PydanticObjectId, movie_id: PydanticObjectId) -> Rating:
    """The caller's rating of a movie, or NotFound (a deleted movie's ratings go with it)."""
    rating = await rating_store.get(user_id, movie_id)
    if rating is None:
        raise NotFound("You have not rated this movie.")
    return rating


async def delete_rating(
    *, user_id: PydanticObjectId, movie_id: PydanticObjectId, queue: TaskQueue, cache: Cache
) -> None:
    """Remove the caller's rating of a movie, or NotFound.

    The intent is written first: a crash between the two leaves a harmless extra recompute.
    """
    intent = await summaries.record_intent(movie_ids=[movie_id], user_ids=[user_id])
    if not await rating_store.delete(user_id, movie_id):
        await summaries.withdraw_intent(intent)
        raise NotFound("You have not rated this movie.")
    await _changed(user_id=user_id, queue=queue, cache=cache)


async def list_user_ratings(
    *, user_id: PydanticObjectId, sort: str, limit: int, after: Position | None = None,
    offset: int = 0,
) -> Page[ProfileItem]:  # fmt: skip
    """A profile page after `after` (else the first `offset`): the user's ratings with
    each movie's card, in two queries."""
    page = await rating_store.page(
        user_id=user_id, sort=PROFILE_SORTS[sort], after=after, offset=offset, limit=limit
    )
    if not page.items and not await user_store.exists(user_id):
        raise NotFound("No user with that id.")
    movies = await movie_store.cards(r.movie_id for r in page.items)
    # A rating whose movie was just deleted is skipped until the purge task removes it.
    items = [ProfileItem(r, movies[r.movie_id]) for r in page.items if r.movie_id in movies]
    return Page(items=items, after=page.after)


async def list_movie_ratings(
    *, movie_id: PydanticObjectId, limit: int, after: Position | None = None, offset: int = 0
) -> Page[Rating]:
    """A movie's ratings, newest first, after `after` (else the first `offset`)."""
    page = await rating_store.page(
        movie_id=movie_id, sort=NEWEST_FIRST, after=after, offset=offset, limit=limit
    )
    if not page.items and not await movie_store.exists(movie_id):
        raise NotFound("No movie with that id.")
    return page
