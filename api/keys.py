"""Typed application keys: every shared resource the app holds, declared in one place."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web
from motor.motor_asyncio import AsyncIOMotorClient
from redis.asyncio import Redis

from api.cache import Cache
from api.oidc import OIDCClient
from api.queue import TaskQueue
from api.ratelimit import RateLimiter
from api.security import TokenService
from api.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
MONGO = web.AppKey("mongo", AsyncIOMotorClient)
REDIS = web.AppKey("redis", Redis)
CACHE = web.AppKey("cache", Cache)
LIMITER = web.AppKey("limiter", RateLimiter)
QUEUE = web.AppKey("queue", TaskQueue)
TOKENS = web.AppKey("tokens", TokenService)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
HTTP = web.AppKey("http", aiohttp.ClientSession)
OIDC = web.AppKey("oidc", OIDCClient)
