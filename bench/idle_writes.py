"""Writes after a quiet spell: one client with the store's connection options and one
without `maxIdleTimeMS`, each used, left idle past SecantusDB's 300 s cut, then asked for 9
concurrent writes. Standalone servers retry no writes, so a write drawn on a connection the
server cut fails (AutoReconnect, a 503 at the API). About 5 minutes; loopback only.

    .venv/bin/python -m bench.idle_writes [--idle SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from core import processes
from core.store.client import MAX_IDLE
from embedded import stack as embedded

WRITES = 9


async def burst(client: AsyncMongoClient[dict[str, Any]]) -> Counter[str]:
    async def one(i: int) -> str:
        try:
            await client.idle.things.update_one(
                {"i": i}, {"$set": {"at": time.time()}}, upsert=True
            )
            return "ok"
        except PyMongoError as exc:
            return type(exc).__name__

    return Counter(await asyncio.gather(*(one(i) for i in range(WRITES))))


async def main(idle: float) -> None:
    port = processes.free_port()
    proc = embedded.start_secantus(storage=":memory:", port=port, log_file=None)
    try:
        url = f"mongodb://127.0.0.1:{port}"
        clients: dict[str, AsyncMongoClient[dict[str, Any]]] = {
            f"maxIdleTimeMS {MAX_IDLE:.0f} s (the store's)": AsyncMongoClient(
                url, maxIdleTimeMS=int(MAX_IDLE * 1000)
            ),
            "no maxIdleTimeMS": AsyncMongoClient(url),
        }
        for client in clients.values():
            await burst(client)  # fills each pool with WRITES connections
        print(f"idle {idle:.0f} s …", flush=True)
        await asyncio.sleep(idle)
        for label, client in clients.items():
            print(f"{label:<34} {dict(await burst(client))}")
            await client.close()
    finally:
        processes.stop([proc])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.idle_writes", description=__doc__)
    parser.add_argument("--idle", type=float, default=310.0, help="seconds left idle")
    asyncio.run(main(parser.parse_args().idle))
