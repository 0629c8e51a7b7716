"""`python -m embedded` (what `make run` runs): the whole stack until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from core.logs import configure_logging
from core.settings import Settings, environment_help, settings_problem
from embedded.stack import run_embedded

DESCRIPTION = """\
Run the whole service on this machine until Ctrl-C: SecantusDB (the database, its own
process), Redis, a Celery worker and beat, and the API on HOST:PORT. Everything it keeps
(database, logs, keys, imports) lives in DATA_DIR, which it holds for as long as it runs:
a second stack on the same DATA_DIR or PORT is refused with a one-line error. Set
MONGODB_URL or REDIS_URL to use a server of yours instead of starting one."""

ENV = ("host", "port", "data_dir", "mongodb_url", "mongodb_db", "redis_url", "log_level")


def build_parser() -> argparse.ArgumentParser:
    """The command's help: what it starts, and the environment it reads."""
    return argparse.ArgumentParser(
        prog="python -m embedded",
        description=DESCRIPTION,
        epilog=environment_help(*ENV),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError: one line, no traceback
        print(f"error: bad setting: {settings_problem(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    return run_embedded(settings)


if __name__ == "__main__":
    sys.exit(main())
