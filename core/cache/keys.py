"""Cache keys: each entry's data key and the version counter whose INCR invalidates it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class CacheKey:
    version: str  # the counter whose INCR invalidates this entry
    data: str  # the entry, before its @epoch.version suffix


class Keys:
    """The keys of one deployment's namespace (`prefix`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epoch = f"{prefix}v:epoch"  # its INCR invalidates every entry
        self.movies = f"{prefix}v:movies"  # every list page
        self.stats = f"{prefix}cache:stats"
        self.channel = f"{prefix}cache:invalidations"
        self.deleted_movie = f"{prefix}deleted:movie:"  # a note on the channel, not a counter

    def movie(self, movie_id: Any) -> CacheKey:
        return CacheKey(f"{self.prefix}v:movie:{movie_id}", f"{self.prefix}c:movie:{movie_id}")

    def movie_list(self, query: dict[str, Any]) -> CacheKey:
        digest = hashlib.blake2b(orjson.dumps(query, option=orjson.OPT_SORT_KEYS), digest_size=10)
        return CacheKey(self.movies, f"{self.prefix}c:movies:{digest.hexdigest()}")

    def similar(self, movie_id: Any, model_version: int, limit: int) -> CacheKey:
        # Follows its movie's version (changed, deleted); a new model is a new entry.
        data = f"{self.prefix}c:similar:{movie_id}:{model_version}:{limit}"
        return CacheKey(f"{self.prefix}v:movie:{movie_id}", data)

    def genres(self) -> CacheKey:
        # Its own version: only movie creations, changes and deletions move genre counts.
        return CacheKey(f"{self.prefix}v:genres", f"{self.prefix}c:genres")

    def user(self, user_id: Any) -> CacheKey:
        return CacheKey(f"{self.prefix}v:user:{user_id}", f"{self.prefix}c:user:{user_id}")

    def profile(self, user_id: Any, sort: str, start: str, limit: int, *, own: bool) -> CacheKey:
        """A profile page from `start` (an offset or a cursor), as its owner reads it (`own`:
        its links name /users/me) or as anyone else does. It shares its user's version: the
        user's own writes bump it at once."""
        page = hashlib.blake2b(start.encode(), digest_size=10).hexdigest()
        view = "own" if own else "public"
        data = f"{self.prefix}c:profile:{user_id}:{view}:{sort}:{page}:{limit}"
        return CacheKey(f"{self.prefix}v:user:{user_id}", data)
