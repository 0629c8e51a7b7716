"""`python -m embedded` (what `make run` runs): the whole stack until Ctrl-C."""

from __future__ import annotations

import sys

from core.logs import configure_logging
from core.settings import Settings
from embedded.stack import run_embedded


def main() -> int:
    settings = Settings()
    configure_logging(settings.log_level)
    return run_embedded(settings)


if __name__ == "__main__":
    sys.exit(main())
