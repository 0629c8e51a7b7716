"""Recommendation routes: movies like a movie, and a person's suggestions."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apigami import match_info_schema, querystring_schema, response_schema

from api.appkeys import CACHE, RECOMMENDER
from api.handlers import person_id
from api.http import PRIVATE, PUBLIC, authenticated, cached_json, cached_read, docs, errors
from api.schemas import (
    MovieIdPath,
    RecommendationsQuery,
    RecommendationsSchema,
    SimilarQuery,
    SimilarSchema,
    SuggestionSchema,
)
from core.services import recommendations as recommendation_service

_suggestions = SuggestionSchema(many=True)


def _body(found: recommendation_service.Suggestions) -> dict[str, Any]:
    model = found.model
    return {
        "items": _suggestions.dump(found.items),
        "model": {"version": model.version, "trained_at": model.trained_at.isoformat()}
        if model
        else None,
    }


@docs(
    tags=["recommendations"],
    summary="Movies like this one",
    description="The movies whose learnt taste profile is closest (cosine of item factors "
    "in the newest trained model), with the cosine as `score`, among the movies at least "
    "SIMILAR_MIN_LIKES people like (10 unless set); each `reason` says how many who like "
    "this movie like that one too. Empty while no model knows the movie (nobody liked it "
    "yet, or it was added since the last training).",
    responses=errors(404, 422),
)
@match_info_schema(MovieIdPath)
@querystring_schema(SimilarQuery)
@response_schema(SimilarSchema, 200)
async def similar_movies(request: web.Request) -> web.Response:
    """The movies most like one movie."""
    movie_id = request["match_info"]["movie_id"]
    limit = request["querystring"]["limit"]
    store = request.app[RECOMMENDER]

    async def load() -> dict[str, Any]:
        found = await recommendation_service.similar_movies(
            movie_id=movie_id, limit=limit, store=store
        )
        return _body(found)

    model = await store.current()
    if model is None:
        return cached_json(request, await load(), cache_control=PUBLIC)
    key = request.app[CACHE].keys.similar(movie_id, model.version, limit)
    return await cached_read(request, key, load, cache_control=PUBLIC)


@docs(
    tags=["recommendations"],
    summary="Movies for you",
    description="Movies you have not rated, best first. With 3 or more liked movies (4.0 "
    "or more) that the newest model knows: from your likes as they are now (a new rating "
    "counts at once), blended with what people liked lately, each with the liked movie "
    "that led to it. With fewer: what people liked lately. Before the first model: the "
    "top-rated movies by weighted score. `strategy` says which answered.",
    responses=errors(404, 422),
)
@authenticated(person=True)
@querystring_schema(RecommendationsQuery)
@response_schema(RecommendationsSchema, 200)
async def my_recommendations(request: web.Request) -> web.Response:
    """The caller's suggestions."""
    query = request["querystring"]
    found = await recommendation_service.for_user(
        user_id=person_id(request),
        limit=query["limit"],
        genre=query.get("genre"),
        year_min=query.get("year_min"),
        year_max=query.get("year_max"),
        store=request.app[RECOMMENDER],
        cache=request.app[CACHE],
    )
    body = {**_body(found), "strategy": found.strategy}
    return cached_json(request, body, cache_control=PRIVATE)
