"""Catalogue routes: list, search, create, change, delete movies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web
from aiohttp_apigami import json_schema, match_info_schema, querystring_schema, response_schema

from api.appkeys import CACHE, QUEUE
from api.http import (
    PUBLIC,
    authenticated,
    cached_read,
    docs,
    errors,
    json_response,
    next_url,
    page_after,
)
from api.schemas import (
    GenreListSchema,
    MovieCreateSchema,
    MovieIdPath,
    MovieListQuery,
    MoviePageSchema,
    MoviePublicSchema,
    MovieUpdateSchema,
    movie_body,
)
from core.errors import Conflict
from core.services import movies as movie_service


@docs(tags=["movies"], summary="List, search, filter and sort movies", responses=errors(400, 422))
@querystring_schema(MovieListQuery)
@response_schema(MoviePageSchema, 200)
async def list_movies(request: web.Request) -> web.Response:
    """A page of movies."""
    params = dict(request["querystring"])
    limit, offset = params.pop("limit"), params.pop("offset")
    cursor = params.pop("cursor", None)
    after = page_after(request)

    async def load() -> dict:
        page = await movie_service.list_movies(
            query=movie_service.MovieQuery(**params),
            after=after,
            offset=offset,
            limit=limit,
            cache=request.app[CACHE],
        )
        items = [movie_body(movie) for movie in page.items]
        return {"items": items, "next": next_url(request, page.after)}

    key = request.app[CACHE].keys.movie_list(
        {**params, "limit": limit, "offset": offset, "cursor": cursor}
    )
    return await cached_read(request, key, load, cache_control=PUBLIC)


@docs(
    tags=["movies"],
    summary="Every genre, with its number of movies",
    description="Genre filters (`GET /movies?genre=`) match these names in any case.",
)
@response_schema(GenreListSchema, 200)
async def list_genres(request: web.Request) -> web.Response:
    """The catalogue's genres."""
    key = request.app[CACHE].keys.genres()
    return await cached_read(request, key, movie_service.genre_counts, cache_control=PUBLIC)


@contextmanager
def _naming_the_existing_movie(request: web.Request) -> Iterator[None]:
    """A duplicate external id's 409 carries the URL of the movie that has it."""
    try:
        yield
    except movie_service.DuplicateMovie as exc:
        url = str(request.app.router["movie"].url_for(movie_id=str(exc.existing)))
        raise Conflict(exc.detail, field=exc.extra["field"], existing=url) from None


_MOVIE_LINKS = {
    name: {"operationId": op, "parameters": {"movie_id": "$response.body#/id"}}
    for name, op in (
        ("GetMovie", "get_movie"),
        ("UpdateMovie", "update_movie"),
        ("DeleteMovie", "delete_movie"),
        ("RateMovie", "put_rating"),
        ("GetYourRating", "get_rating"),
        ("DeleteYourRating", "delete_rating"),
        ("ListMovieRatings", "list_movie_ratings"),
    )
}


@docs(
    tags=["movies"],
    summary="Add a movie (admin)",
    responses=errors(409, 415, 422),
    links={201: _MOVIE_LINKS},
)
@authenticated("movies:write")
@json_schema(MovieCreateSchema)
@response_schema(MoviePublicSchema, 201)
async def create_movie(request: web.Request) -> web.Response:
    """Create a movie."""
    body = request["json"]
    with _naming_the_existing_movie(request):
        movie = await movie_service.create_movie(
            title=body["title"],
            year=body.get("year"),
            genres=body.get("genres", []),
            external_ids=body.get("external_ids", {}),
            cache=request.app[CACHE],
        )
    location = str(request.app.router["movie"].url_for(movie_id=str(movie["id"])))
    return json_response(movie_body(movie), status=201, headers={"Location": location})


@docs(tags=["movies"], summary="A movie with its rating summary", responses=errors(404, 422))
@match_info_schema(MovieIdPath)
@response_schema(MoviePublicSchema, 200)
async def get_movie(request: web.Request) -> web.Response:
    """One movie."""
    movie_id = request["match_info"]["movie_id"]

    async def load() -> dict:
        return movie_body(await movie_service.movie_view(movie_id=movie_id))

    return await cached_read(
        request, request.app[CACHE].keys.movie(movie_id), load, cache_control=PUBLIC
    )


@docs(tags=["movies"], summary="Change a movie (admin)", responses=errors(404, 409, 415, 422))
@authenticated("movies:write")
@match_info_schema(MovieIdPath)
@json_schema(MovieUpdateSchema)
@response_schema(MoviePublicSchema, 200)
async def update_movie(request: web.Request) -> web.Response:
    """Apply a partial change to a movie."""
    with _naming_the_existing_movie(request):
        movie = await movie_service.update_movie(
            movie_id=request["match_info"]["movie_id"],
            changes=request["json"],
            cache=request.app[CACHE],
        )
    return json_response(movie_body(movie))


@docs(
    tags=["movies"],
    summary="Delete a movie and its ratings (admin)",
    responses={204: {"description": "Deleted"}, **errors(404, 422)},
)
@authenticated("movies:write")
@match_info_schema(MovieIdPath)
async def delete_movie(request: web.Request) -> web.Response:
    """Delete a movie; its ratings go in the background."""
    await movie_service.delete_movie(
        movie_id=request["match_info"]["movie_id"],
        queue=request.app[QUEUE],
        cache=request.app[CACHE],
    )
    return web.Response(status=204)
