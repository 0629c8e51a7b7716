"""The application factory: one cleanup context per resource, routes, middlewares, docs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web
from aiohttp_apigami import setup_aiohttp_apispec, validation_middleware
from aiohttp_apigami.constants import APISPEC_PARSER
from redis.asyncio import Redis
from threadpoolctl import threadpool_limits

from api.admission import Budgets, admission_middleware, in_flight_for
from api.appkeys import (
    ADMISSION,
    BUDGETS,
    CACHE,
    CURSORS,
    DISK,
    LIMITER,
    METER,
    MONGO,
    NEAR,
    OIDC,
    QUEUE,
    RECOMMENDER,
    REDIS,
    SETTINGS,
    TOKENS,
)
from api.middlewares import (
    DecodedBodyParser,
    auth_middleware,
    disk_guard_middleware,
    json_body_middleware,
    near_cache_middleware,
    problem_middleware,
    request_id_middleware,
    secure_headers,
    webargs_error_callback,
)
from api.openapi import ContractPlugin
from api.ratelimit import RateLimiter
from api.routes import setup_routes
from api.schemas import OAuthErrorSchema, ProblemSchema, ReadySchema, TokenSchema
from core import store
from core.cache import NearCache, cache_for, follow_invalidations
from core.load import RequestMeter
from core.oidc import OIDCClient
from core.queue import TaskQueue, make_producer
from core.security import (
    CLIENT_SCOPES,
    USER_SCOPES,
    PageCursors,
    TokenService,
    load_keyset,
    use_password_cost,
    use_password_pool,
)
from core.services.recommendations import ModelStore
from core.settings import Settings
from core.store.health import DiskWatch

SCOPE_DESCRIPTIONS = {
    "ratings:write": "Rate movies",
    "movies:write": "Create, change and delete movies",
    "imports:write": "Start and cancel imports",
    "users:admin": "Administer users",
}


async def mongo_ctx(app: web.Application) -> AsyncIterator[None]:
    client = await store.connect(app[SETTINGS])
    app[MONGO] = client
    yield
    await store.close(client)


async def disk_ctx(app: web.Application) -> AsyncIterator[None]:
    """Watches the free space on the database's disk (writes are refused under the floor)."""
    settings = app[SETTINGS]
    watch = DiskWatch(
        floor=settings.disk_free_floor,
        every=settings.disk_check_interval,
        fallback=settings.database_disk_path,
    )
    app[DISK] = watch
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(app[MONGO][settings.mongodb_db], stop), name="disk-watch")
    yield
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    # Short timeouts: a hung Redis must turn into a cache bypass, not a stalled request.
    redis = Redis.from_url(
        app[SETTINGS].redis_url_required, socket_connect_timeout=0.5, socket_timeout=2
    )
    async with redis:
        app[REDIS] = redis
        yield


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis-backed helpers, sharing one breaker: read cache and rate limits."""
    settings = app[SETTINGS]
    near = None
    if settings.cache_enabled and settings.cache_near_ttl > 0:
        near = NearCache(ttl=settings.cache_near_ttl, max_bytes=settings.cache_near_max_bytes)
    app[NEAR] = near
    cache = cache_for(settings, app[REDIS], near=near)
    app[CACHE] = cache
    app[LIMITER] = RateLimiter(app[REDIS], prefix=f"{settings.mongodb_db}:", health=cache.health)
    app[BUDGETS] = Budgets(app[LIMITER], window=settings.admission_window)
    app[METER] = RequestMeter(app[REDIS], prefix=f"{settings.mongodb_db}:", health=cache.health)
    stop = asyncio.Event()
    listener = asyncio.create_task(follow_invalidations(cache, stop), name="cache-invalidations")
    yield
    stop.set()  # ends the loop within a second even if the cancellation below is lost
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener


async def queue_ctx(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="enqueue")
    celery = make_producer(app[SETTINGS])
    app[QUEUE] = TaskQueue(
        celery=celery,
        redis=app[REDIS],
        settings=app[SETTINGS],
        executor=executor,
        health=app[CACHE].health,
    )
    yield
    executor.shutdown(wait=True)
    celery.close()


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    """One outgoing HTTP session: the OpenID Connect providers' discovery, keys and tokens."""
    async with aiohttp.ClientSession(headers={"User-Agent": "movie-ratings"}) as session:
        app[OIDC] = OIDCClient(app[SETTINGS], session, app[REDIS])
        yield


async def tokens_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    keyset = load_keyset(settings)
    app[TOKENS] = TokenService(settings, keyset)
    app[CURSORS] = PageCursors(keyset)  # signed with a key derived from the same keys
    yield


async def recommender_ctx(app: web.Application) -> AsyncIterator[None]:
    """The newest model, loaded at the first read that needs it. Its products run on one
    BLAS thread: a second saves a request about 0.06 ms at 59k movies but then spins,
    costing ten times the CPU (`make bench`), taken from the loop and the other requests."""
    app[RECOMMENDER] = ModelStore(check_every=app[SETTINGS].recommender_check)
    with threadpool_limits(1, "blas"):
        yield


def setup_docs(app: web.Application) -> None:
    spec = setup_aiohttp_apispec(
        app,
        title="Movie ratings API",
        version="1.0.0",
        url="/api/docs/openapi.json",
        swagger_path="/api/docs",
        static_path="/api/docs/static",
        openapi_version="3.0.3",
        error_callback=webargs_error_callback,
        info={"description": "Rate movies on the MovieLens half-star scale."},
    )
    contract = ContractPlugin()
    contract.init_spec(spec.spec)
    spec.spec.plugins = (*spec.spec.plugins, contract)  # after apigami's own plugin
    components = spec.spec.components
    # Schemas only referenced from hand-written response entries must be registered by hand.
    for schema in (ProblemSchema, TokenSchema, OAuthErrorSchema, ReadySchema):
        components.schema(schema.__name__.removesuffix("Schema"), schema=schema)
    components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    components.security_scheme(
        "OAuth2",
        {
            "type": "oauth2",
            "flows": {
                # Only what every account holds: ticking nothing grants an account all of
                # its own scopes (an admin's included), ticking more than it holds fails.
                "password": {
                    "tokenUrl": "/api/v1/auth/token",
                    "refreshUrl": "/api/v1/auth/token",
                    "scopes": {s: SCOPE_DESCRIPTIONS[s] for s in USER_SCOPES},
                },
                "clientCredentials": {
                    "tokenUrl": "/api/v1/auth/token",
                    "scopes": {s: SCOPE_DESCRIPTIONS[s] for s in CLIENT_SCOPES},
                },
            },
        },
    )


def create_app(settings: Settings) -> web.Application:
    """Build the application; all I/O happens in its cleanup contexts, at start-up."""
    app = web.Application(
        client_max_size=settings.client_max_size,
        middlewares=[
            near_cache_middleware,
            request_id_middleware,
            problem_middleware,
            admission_middleware,
            disk_guard_middleware,
            auth_middleware,
            json_body_middleware,
            validation_middleware,
        ],
    )
    app[SETTINGS] = settings
    app[ADMISSION] = in_flight_for(settings)
    app.on_response_prepare.append(secure_headers)
    use_password_cost(settings.password_cost)
    use_password_pool(settings.password_workers, settings.password_waiting)
    app.cleanup_ctx.extend(
        [
            mongo_ctx,
            disk_ctx,
            redis_ctx,
            cache_ctx,
            queue_ctx,
            http_ctx,
            tokens_ctx,
            recommender_ctx,
        ]
    )
    setup_routes(app)
    setup_docs(app)
    # In place of the module-wide webargs parser that aiohttp-apigami installs.
    app[APISPEC_PARSER] = DecodedBodyParser(error_handler=webargs_error_callback)
    return app
