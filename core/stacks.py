"""Embedded stacks (`make run`) on one machine: each holds a lock on its data folder for as
long as it runs, lists itself for its OS user, and operator commands find the one they act
on and say which.

A command's stack: the one running in DATA_DIR when DATA_DIR is set; else the one running
in ./data of the current folder; else MONGODB_URL; else the one stack this user runs
(several: it refuses and lists them). Nothing here is imported by the API's request path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from core.settings import Settings

LOCK_FILE = "stack.lock"  # in DATA_DIR: locked (flock) by the running stack, with its facts
URLS_FILE = "embedded.json"  # in DATA_DIR: the running stack's database and Redis URLs


@dataclass(frozen=True)
class StackInfo:
    """What a running stack says of itself."""

    data_dir: str
    pid: int
    api: str
    started_at: str

    def describe(self) -> str:
        return f"{self.data_dir} (pid {self.pid}, API {self.api}, since {self.started_at})"


class FolderInUse(Exception):
    """Another running stack holds the data folder."""

    def __init__(self, data_dir: Path, holder: StackInfo | None) -> None:
        who = f"the stack {holder.describe()}" if holder else "another stack"
        super().__init__(
            f"DATA_DIR {data_dir} is in use by {who}: stop it, or set DATA_DIR to another folder"
        )


class StackNotFound(Exception):
    """No stack (or several) for an operator command; the message says what to set."""


def _read_info(handle: IO[str]) -> StackInfo | None:
    handle.seek(0)
    try:
        return StackInfo(**json.loads(handle.read()))
    except (ValueError, TypeError):
        return None


def hold(data_dir: Path, info: StackInfo) -> IO[str]:
    """Lock `data_dir` for this stack (the kernel releases it when the process ends, however
    it ends) and record `info` in the lock file; FolderInUse when a live stack holds it.
    Keep the returned handle open for as long as the stack runs."""
    handle = open(data_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_info(handle)
        handle.close()
        raise FolderInUse(data_dir, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(asdict(info)))
    handle.flush()
    return handle


def running_in(data_dir: Path) -> StackInfo | None:
    """The stack running in `data_dir` (its lock is held), or None."""
    try:
        handle = open(data_dir / LOCK_FILE)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_info(handle) or StackInfo(str(data_dir), 0, "?", "?")
        return None  # free: whatever wrote the file has stopped


def registry() -> Path:
    """Where this OS user's running stacks list themselves (one file per stack)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    folder = Path(base) / f"movie-ratings-stacks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def register(info: StackInfo) -> Path:
    """List a stack for this user; returns the entry to remove when it stops."""
    entry = registry() / f"{info.pid}.json"
    entry.write_text(json.dumps(asdict(info)))
    return entry


def running_stacks() -> list[StackInfo]:
    """This user's running stacks (entries of stacks that are gone are dropped)."""
    found = []
    for entry in sorted(registry().glob("*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            listed = StackInfo(**json.loads(entry.read_text()))
            live = running_in(Path(listed.data_dir))
            if live is not None and live.pid == listed.pid:
                found.append(live)
                continue
            entry.unlink(missing_ok=True)
    return found


def redacted(url: str) -> str:
    """A URL without its user name and password."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def _with_stack(settings: Settings, info: StackInfo) -> tuple[Settings, str]:
    data_dir = Path(info.data_dir)
    try:
        urls = json.loads((data_dir / URLS_FILE).read_text())
    except (OSError, ValueError):
        raise StackNotFound(
            f"the stack in {data_dir} is still starting (or stopping): try again in a moment"
        ) from None
    found = settings.model_copy(update={**urls, "data_dir": data_dir})
    return found, f"stack: {data_dir} (database {redacted(urls['mongodb_url'])})"


def for_command(settings: Settings) -> tuple[Settings, str]:
    """The settings an operator command acts with, and the line saying which stack or
    database that is (its first line of output). StackNotFound says what to set."""
    given = "data_dir" in settings.model_fields_set
    here = running_in(settings.data_dir.resolve())  # DATA_DIR, else ./data
    if here is not None:
        return _with_stack(settings, here)
    if given and settings.mongodb_url is None:
        raise StackNotFound(
            f"no stack runs in DATA_DIR {settings.data_dir.resolve()}: start one there with "
            "`make run`, or set MONGODB_URL and REDIS_URL"
        )
    if settings.mongodb_url is not None:
        return settings, f"database: {redacted(settings.mongodb_url)} (MONGODB_URL)"
    stacks = running_stacks()
    if len(stacks) == 1:
        return _with_stack(settings, stacks[0])
    if not stacks:
        raise StackNotFound(
            f"no stack runs in {settings.data_dir.resolve()} and MONGODB_URL is not set: "
            "start `make run`, set DATA_DIR to the folder a running stack uses, or set "
            "MONGODB_URL and REDIS_URL"
        )
    listed = "; ".join(s.describe() for s in stacks)
    raise StackNotFound(
        f"{len(stacks)} stacks are running; set DATA_DIR to the one to act on: {listed}"
    )
