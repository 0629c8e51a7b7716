"""Child processes: start, wait for, supervise and stop them (the embedded stack, the
API's WEB_CONCURRENCY supervisor, tests and benchmarks)."""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # A child outlives a killed launcher otherwise; Linux can tie its life to ours.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def spawn(cmd: list[str], *, env: dict[str, str] | None = None, log_file: Path | None = None):
    out = open(log_file, "ab") if log_file else None
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def stop(procs: list[subprocess.Popen], timeout: float = 10) -> None:
    """Stop processes newest first: SIGTERM, then SIGKILL after `timeout`."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in reversed(procs):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class StopSignal:
    """SIGINT and SIGTERM turned into a flag that a supervising loop polls."""

    def __init__(self) -> None:
        self.received = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received = True


def supervise(procs: list[subprocess.Popen], stop_signal: StopSignal, *, what: str) -> int:
    """Wait for a stop signal (0) or a child's exit (its code, at least 1)."""
    while not stop_signal.received:
        exited = [p for p in procs if p.poll() is not None]
        if exited:
            log.error("%s exited; stopping the rest", what, extra={"pid": exited[0].pid})
            return exited[0].returncode or 1
        time.sleep(0.2)
    return 0
