"""The movie rating HTTP API (aiohttp)."""
