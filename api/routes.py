"""URL table: every route of the service, named."""

from __future__ import annotations

from aiohttp import web

from api.handlers import (
    admin,
    auth,
    health,
    imports,
    movies,
    oidc,
    problems,
    ratings,
    recommendations,
    users,
)

API = "/api/v1"


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/health", health.health, name="health")
    r.add_get("/ready", health.ready, name="ready")
    r.add_get("/", problems.to_docs, allow_head=False)
    r.add_get("/api/docs/", problems.to_docs, allow_head=False)
    r.add_get("/problems/{name}", problems.problem_page, name="problem")

    r.add_get("/.well-known/jwks.json", auth.jwks, name="jwks")
    r.add_post(f"{API}/auth/token", auth.token, name="token")
    r.add_post(f"{API}/auth/revoke", auth.revoke, name="revoke")
    r.add_get(f"{API}/auth/login/{{provider}}", oidc.login, name="oidc_login")
    r.add_get(f"{API}/auth/callback/{{provider}}", oidc.callback, name="oidc_callback")
    r.add_post(f"{API}/auth/link/{{provider}}", oidc.link, name="oidc_link")
    r.add_get(f"{API}/auth/link/{{provider}}/start", oidc.link_start, name="oidc_link_start")
    r.add_post(f"{API}/auth/link/{{provider}}/complete", oidc.link_complete)

    r.add_post(f"{API}/users", users.register, name="users")
    # /users/me* before /users/{user_id}: the router tries routes in order.
    r.add_get(f"{API}/users/me", users.get_me, name="me")
    r.add_patch(f"{API}/users/me", users.update_me)
    r.add_delete(f"{API}/users/me", users.delete_me)
    r.add_get(f"{API}/users/me/ratings", ratings.my_ratings, name="my_ratings")
    r.add_get(f"{API}/users/me/recommendations", recommendations.my_recommendations)
    r.add_get(f"{API}/users/me/identities", oidc.my_identities)
    r.add_delete(f"{API}/users/me/identities/{{provider}}", oidc.unlink_identity)
    r.add_get(f"{API}/users/{{user_id}}", users.get_user, name="user")
    r.add_get(f"{API}/users/{{user_id}}/ratings", ratings.user_ratings, name="user_ratings")
    r.add_delete(f"{API}/users/{{user_id}}", admin.delete_user)
    r.add_post(f"{API}/users/{{user_id}}/disable", admin.disable_user)
    r.add_post(f"{API}/users/{{user_id}}/enable", admin.enable_user)
    r.add_put(f"{API}/users/{{user_id}}/role", admin.set_role)
    r.add_get(f"{API}/clients", admin.list_clients)
    r.add_delete(f"{API}/clients/{{client_id}}", admin.revoke_client)

    r.add_get(f"{API}/genres", movies.list_genres, name="genres")
    r.add_get(f"{API}/movies", movies.list_movies, name="movies")
    r.add_post(f"{API}/movies", movies.create_movie)
    r.add_get(f"{API}/movies/{{movie_id}}", movies.get_movie, name="movie")
    r.add_patch(f"{API}/movies/{{movie_id}}", movies.update_movie)
    r.add_delete(f"{API}/movies/{{movie_id}}", movies.delete_movie)
    r.add_get(
        f"{API}/movies/{{movie_id}}/ratings", ratings.list_movie_ratings, name="movie_ratings"
    )
    r.add_get(f"{API}/movies/{{movie_id}}/similar", recommendations.similar_movies)
    r.add_put(f"{API}/movies/{{movie_id}}/rating", ratings.put_rating, name="my_rating")
    r.add_get(f"{API}/movies/{{movie_id}}/rating", ratings.get_rating)
    r.add_delete(f"{API}/movies/{{movie_id}}/rating", ratings.delete_rating)

    r.add_post(f"{API}/imports", imports.create_import, name="imports")
    r.add_get(f"{API}/imports", imports.list_imports)
    r.add_get(f"{API}/imports/{{import_id}}", imports.get_import, name="import_job")
    r.add_delete(f"{API}/imports/{{import_id}}", imports.cancel_import)
