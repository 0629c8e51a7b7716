"""Typed application keys: every shared resource the app holds, declared in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from redis.asyncio import Redis

from api.ratelimit import RateLimiter
from core.cache import Cache, NearCache
from core.load import RequestMeter
from core.oidc import OIDCClient
from core.queue import TaskQueue
from core.security import PageCursors, TokenService
from core.services.recommendations import ModelStore
from core.settings import Settings
from core.store import Client
from core.store.health import DiskWatch

if TYPE_CHECKING:  # api.admission reads these keys
    from api.admission import Budgets, InFlight

SETTINGS = web.AppKey("settings", Settings)
MONGO = web.AppKey("mongo", Client)
REDIS = web.AppKey("redis", Redis)
DISK = web.AppKey("disk", DiskWatch)
CACHE = web.AppKey("cache", Cache)
# This process's copy of hot public responses; None when CACHE_NEAR_TTL is 0 or caching is off.
NEAR: web.AppKey[NearCache | None] = web.AppKey("near")
LIMITER = web.AppKey("limiter", RateLimiter)
# The admitted requests running in this process, by share (api.admission).
ADMISSION: web.AppKey[InFlight] = web.AppKey("admission")
# Leases on clients' budgets this process holds (api.admission).
BUDGETS: web.AppKey[Budgets] = web.AppKey("budgets")
# Requests per second, added up in Redis: drains rest only while the API is busy.
METER = web.AppKey("meter", RequestMeter)
QUEUE = web.AppKey("queue", TaskQueue)
TOKENS = web.AppKey("tokens", TokenService)
CURSORS = web.AppKey("cursors", PageCursors)
RECOMMENDER = web.AppKey("recommender", ModelStore)
OIDC = web.AppKey("oidc", OIDCClient)
