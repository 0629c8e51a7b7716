"""Rating routes: the caller's rating of a movie, a movie's ratings, profiles."""

from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import json_schema, match_info_schema, querystring_schema, response_schema

from api.appkeys import CACHE, QUEUE
from api.handlers import person_id
from api.http import (
    PRIVATE,
    PUBLIC,
    authenticated,
    cached_json,
    cached_read,
    docs,
    errors,
    json_response,
    next_url,
    page_after,
)
from api.schemas import (
    MovieIdPath,
    PageQuery,
    ProfileItemSchema,
    ProfilePageSchema,
    ProfileQuery,
    RatingPageSchema,
    RatingPublicSchema,
    RatingPutSchema,
    UserIdPath,
)
from core.errors import NotFound, Unauthorized
from core.services import ratings as rating_service
from models import PydanticObjectId

_rating = RatingPublicSchema()
_ratings = RatingPublicSchema(many=True)
_profile_items = ProfileItemSchema(many=True)


@docs(
    tags=["ratings"],
    summary="Rate a movie (0.5-5.0 in half stars)",
    description="201 (with Location) when the rating is new; 200 when it replaced an earlier "
    "score, or when the score was already this one (then nothing changes, `updated_at` "
    "included).",
    responses={
        200: {
            "description": "Changed, or unchanged",
            "content": {"application/json": {"schema": RatingPublicSchema}},
        },
        **errors(404, 415, 422),
    },
)
@authenticated("ratings:write", person=True)
@match_info_schema(MovieIdPath)
@json_schema(RatingPutSchema)
@response_schema(RatingPublicSchema, 201)
async def put_rating(request: web.Request) -> web.Response:
    """Set the caller's score for a movie."""
    movie_id = request["match_info"]["movie_id"]
    rating, created = await rating_service.put_rating(
        user_id=person_id(request),
        movie_id=movie_id,
        score=request["json"]["score"],
        queue=request.app[QUEUE],
        cache=request.app[CACHE],
    )
    if not created:
        return json_response(_rating.dump(rating))
    location = str(request.app.router["my_rating"].url_for(movie_id=str(movie_id)))
    return json_response(_rating.dump(rating), status=201, headers={"Location": location})


@docs(tags=["ratings"], summary="Your rating of a movie", responses=errors(404, 422))
@authenticated(person=True)
@match_info_schema(MovieIdPath)
@response_schema(RatingPublicSchema, 200)
async def get_rating(request: web.Request) -> web.Response:
    """The caller's rating of one movie."""
    rating = await rating_service.get_rating(
        user_id=person_id(request), movie_id=request["match_info"]["movie_id"]
    )
    return cached_json(request, _rating.dump(rating), cache_control=PRIVATE)


@docs(
    tags=["ratings"],
    summary="Remove your rating of a movie",
    responses={204: {"description": "Removed"}, **errors(404, 422)},
)
@authenticated("ratings:write", person=True)
@match_info_schema(MovieIdPath)
async def delete_rating(request: web.Request) -> web.Response:
    """Delete the caller's rating of one movie."""
    await rating_service.delete_rating(
        user_id=person_id(request),
        movie_id=request["match_info"]["movie_id"],
        queue=request.app[QUEUE],
        cache=request.app[CACHE],
    )
    return web.Response(status=204)


@docs(tags=["ratings"], summary="A movie's ratings, newest first", responses=errors(400, 404, 422))
@match_info_schema(MovieIdPath)
@querystring_schema(PageQuery)
@response_schema(RatingPageSchema, 200)
async def list_movie_ratings(request: web.Request) -> web.Response:
    """A page of one movie's ratings."""
    query = request["querystring"]
    page = await rating_service.list_movie_ratings(
        movie_id=request["match_info"]["movie_id"],
        after=page_after(request),
        offset=query["offset"],
        limit=query["limit"],
    )
    items = _ratings.dump([rating.model_dump() for rating in page.items])
    body = {"items": items, "next": next_url(request, page.after)}
    return cached_json(request, body, cache_control=PUBLIC)


async def _profile(request: web.Request, user_id: PydanticObjectId, *, own: bool) -> web.Response:
    cache_control = PRIVATE if own else PUBLIC
    query = request["querystring"]
    sort, offset, limit = query["sort"], query["offset"], query["limit"]
    after = page_after(request)

    async def load() -> dict:
        try:
            page = await rating_service.list_user_ratings(
                user_id=user_id, sort=sort, after=after, offset=offset, limit=limit
            )
        except NotFound:
            if own:  # the token outlived its account (deleted): it stops here
                raise Unauthorized("This account no longer exists.") from None
            raise
        items = _profile_items.dump(
            [{**item.rating.model_dump(), "movie": item.movie} for item in page.items]
        )
        return {"items": items, "next": next_url(request, page.after)}

    start = query.get("cursor") or str(offset)
    key = request.app[CACHE].keys.profile(user_id, sort, start, limit, own=own)
    # One's own profile skips the process-local copy: it must show one's write at once.
    return await cached_read(request, key, load, cache_control=cache_control, near=not own)


@docs(tags=["ratings"], summary="What a user rated", responses=errors(400, 404, 422))
@match_info_schema(UserIdPath)
@querystring_schema(ProfileQuery)
@response_schema(ProfilePageSchema, 200)
async def user_ratings(request: web.Request) -> web.Response:
    """A page of a user's rated movies."""
    return await _profile(request, request["match_info"]["user_id"], own=False)


@docs(tags=["ratings"], summary="What you rated", responses=errors(400, 422))
@authenticated(person=True)
@querystring_schema(ProfileQuery)
@response_schema(ProfilePageSchema, 200)
async def my_ratings(request: web.Request) -> web.Response:
    """A page of the caller's rated movies."""
    return await _profile(request, person_id(request), own=True)
