"""What every command line here shares: commands whose --help says what they do and which
environment variables they read."""

from __future__ import annotations

import argparse
from typing import Any

from core.settings import environment_help

# What an operator command reads to find its stack (core.stacks).
OPERATOR_ENV = ("data_dir", "mongodb_url", "mongodb_db", "redis_url", "log_level")


def subcommand(
    sub: Any, name: str, *, help: str, env: tuple[str, ...] = OPERATOR_ENV
) -> argparse.ArgumentParser:
    """A command whose --help says what it does and which environment it reads."""
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=environment_help(*env),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
