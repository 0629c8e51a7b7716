"""`python -m seed sample`: load the shipped sample catalogue into an empty database."""

from __future__ import annotations

import argparse
import asyncio
import sys

from api import db
from api.logs import configure_logging
from api.settings import Settings
from seed.sample import seed_sample


async def _sample(settings: Settings) -> int:
    client = await db.connect(settings)
    try:
        added = await seed_sample()
    finally:
        client.close()
    print(f"sample catalogue: {added} movies added" if added else "catalogue not empty: no seed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seed")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sample", help="load the shipped sample catalogue if the database is empty")
    parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    return asyncio.run(_sample(settings))


if __name__ == "__main__":
    sys.exit(main())
