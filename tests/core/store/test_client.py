"""The connection every process makes: durable writes, and no connection kept past the
idle time servers cut at."""

from __future__ import annotations

from core import store
from core.store.client import MAX_IDLE

# SecantusDB closes a client connection idle this long (its DEFAULT_CLIENT_IDLE_TIMEOUT_S).
SECANTUSDB_IDLE_CUT = 300.0


async def test_every_write_waits_for_the_journal(settings):
    client = await store.connect(settings)
    try:
        assert client.write_concern.document == {"w": "majority", "j": True}
        blocking = store.blocking_client(settings, op_budget=5)
        assert blocking.write_concern.document == {"w": "majority", "j": True}
        blocking.close()
    finally:
        await store.close(client)


async def test_pooled_connections_are_dropped_before_a_server_cuts_them(settings):
    assert MAX_IDLE < SECANTUSDB_IDLE_CUT
    client = await store.connect(settings)
    try:
        assert client.options.pool_options.max_idle_time_seconds == MAX_IDLE
        blocking = store.blocking_client(settings, op_budget=5)
        assert blocking.options.pool_options.max_idle_time_seconds == MAX_IDLE
        blocking.close()
    finally:
        await store.close(client)
