"""Command line: `python -m api serve | create-admin | create-client`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import shlex
import socket
import sys
from functools import partial

from core import stacks
from core.cli import OPERATOR_ENV, subcommand, subparsers
from core.logs import configure_logging
from core.security import use_password_cost
from core.settings import Settings, settings_problem

log = logging.getLogger("api")


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX system
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> int:
    """Serve the API: one process, or WEB_CONCURRENCY processes sharing one socket. A port
    in use is a one-line error (exit 2), never a port shared with another server."""

    from core.processes import PortInUse, listen

    if settings.listen_fd is not None:  # one of a multi-process server's processes
        sock = socket.socket(fileno=settings.listen_fd)
    else:
        try:
            sock = listen(settings.host, settings.port)
        except PortInUse as exc:
            print(f"api serve: {exc}", file=sys.stderr)
            return 2
        if settings.web_concurrency > 1:
            return _supervise(settings, sock)
    from api.app import create_app
    from api.server import serve_app

    loop = _event_loop()
    log.info(
        "api listening",
        extra={"host": settings.host, "port": settings.port, "loop": type(loop).__module__},
    )
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serve_app(create_app(settings), sock=sock, shutdown_timeout=60))
    loop.close()
    return 0


def _supervise(settings: Settings, sock: socket.socket) -> int:
    """Run WEB_CONCURRENCY single-process servers on one listening socket (each accepts
    from it); stop them all when one exits or on a signal."""
    from core.processes import StopSignal, spawn, stop, supervise

    stop_signal = StopSignal()
    env = dict(os.environ, WEB_CONCURRENCY="1", LISTEN_FD=str(sock.fileno()))
    procs = [
        spawn([sys.executable, "-m", "api", "serve"], env=env, pass_fds=(sock.fileno(),))
        for _ in range(settings.web_concurrency)
    ]
    sock.close()  # the processes hold it now
    log.info(
        "api processes started",
        extra={"port": settings.port, "processes": [p.pid for p in procs]},
    )
    try:
        return supervise(procs, stop_signal, what="an api process")
    finally:
        stop(procs)


async def _create_admin(settings: Settings, args: argparse.Namespace) -> int:
    from core import store
    from core.errors import DomainError, InvalidInput
    from core.services.users import AdminMode, ensure_admin

    mode: AdminMode = (
        "promote" if args.promote else "reset-password" if args.reset_password else "create"
    )
    password = None if mode == "promote" else _read_password()
    client = await store.connect(settings, op_budget=settings.mongodb_worker_timeout)
    try:
        user, done = await ensure_admin(
            username=args.username,
            email=args.email,
            password=password,
            mode=mode,
            refresh_ttl=settings.refresh_token_ttl,
        )
    except InvalidInput as exc:
        print(f"refused: {_sentence(exc.errors)}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"refused: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await store.close(client)
    print(f"{done}: admin {user.username} ({user.id})")
    return 0


def _sentence(messages: dict) -> str:
    """{"password": ["Shorter than minimum length 10."]} -> "password: Shorter than …"."""
    return "; ".join(
        f"{field}: {' '.join(map(str, problems if isinstance(problems, list) else [problems]))}"
        for field, problems in messages.items()
    )


def _read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Password (≥ 10 characters): ")
    return sys.stdin.readline().rstrip("\n")


def create_admin(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_create_admin(settings, args))


async def _create_client(
    settings: Settings, name: str, scopes: list[str], *, shell: bool = False
) -> int:
    from core import store
    from core.errors import InvalidInput
    from core.services.tokens import create_client

    client = await store.connect(settings, op_budget=settings.mongodb_worker_timeout)
    try:
        registered, secret = await create_client(name=name, scopes=scopes)
    except InvalidInput as exc:
        print(f"refused: {exc.errors.get('scopes', [exc.detail])[0]}", file=sys.stderr)
        return 2
    finally:
        await store.close(client)
    # The only time the secret exists in clear: it is stored as a digest.
    if shell:  # for eval "$(…)": the values quoted, nothing else on stdout
        print(f"export CLIENT_ID={shlex.quote(registered.client_id)}")
        print(f"export CLIENT_SECRET={shlex.quote(secret)}")
    else:
        print(f"client_id:     {registered.client_id}")
        print(f"client_secret: {secret}")
        print(f"scopes:        {' '.join(registered.scopes)}")
    print("Keep the secret now: it cannot be shown again.", file=sys.stderr)
    return 0


def _operator() -> str:
    """Who runs an operator command, for the audit log."""
    return f"cli:{getpass.getuser()}"


async def _user_command(settings: Settings, action: str, username: str) -> int:
    from redis.asyncio import Redis

    from core import store
    from core.cache import cache_for
    from core.errors import DomainError
    from core.queue import TaskQueue, make_producer
    from core.services import users as user_service

    client = await store.connect(settings, op_budget=settings.mongodb_worker_timeout)
    redis = Redis.from_url(settings.redis_url_required, socket_connect_timeout=2)
    cache = cache_for(settings, redis)
    celery = make_producer(settings)
    try:
        user = await user_service.user_by_name(username=username)
        assert user.id is not None
        actor, ttl = _operator(), settings.refresh_token_ttl
        if action == "disable":
            await user_service.disable_user(
                user_id=user.id, actor=actor, refresh_ttl=ttl, cache=cache
            )
        elif action == "enable":
            await user_service.enable_user(user_id=user.id, actor=actor, cache=cache)
        elif action in ("promote", "demote"):
            role = "admin" if action == "promote" else "user"
            await user_service.set_role(
                user_id=user.id, role=role, actor=actor, refresh_ttl=ttl, cache=cache
            )
        else:
            queue = TaskQueue(celery=celery, redis=redis, settings=settings)
            await user_service.delete_user(
                user_id=user.id,
                actor=actor,
                retire_days=settings.username_retired_days,
                queue=queue,
                cache=cache,
            )
    except DomainError as exc:
        print(f"refused: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        celery.close()
        await redis.aclose()
        await store.close(client)
    print(f"{action.removesuffix('e')}ed: {user.username} ({user.id})")
    return 0


async def _client_command(settings: Settings, action: str, client_id: str | None) -> int:
    from core import store
    from core.errors import DomainError
    from core.services import tokens as token_service

    client = await store.connect(settings, op_budget=settings.mongodb_worker_timeout)
    try:
        if action == "list":
            for registered in await token_service.list_clients():
                state = (
                    f"revoked {registered.revoked_at:%Y-%m-%d}"
                    if registered.revoked_at
                    else "active"
                )
                scopes = " ".join(registered.scopes)
                print(f"{registered.client_id}  {state:<18} {scopes:<40} {registered.name}")
            return 0
        assert client_id is not None
        await token_service.revoke_client(client_id=client_id, actor=_operator())
    except DomainError as exc:
        print(f"refused: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await store.close(client)
    print(f"revoked: {client_id}")
    return 0


async def _verify_summaries(settings: Settings, *, repair: bool, as_json: bool) -> int:
    import json

    from tqdm import tqdm

    from core import store, summaries

    client = await store.connect(settings, op_budget=settings.mongodb_worker_timeout)
    report: dict[str, object] = {}
    wrong = 0
    try:
        # Integrity first: orphan ratings would make the summaries below agree with ratings
        # that should not exist (and repairing them changes those summaries).
        orphans = await summaries.orphans()
        healed = []
        if repair and orphans.ids:
            healed = await summaries.heal_orphans(
                orphans.ids, prior_votes=settings.rating_prior_votes
            )
        if orphans.ratings and not healed:
            wrong += orphans.ratings
        report["integrity"] = {
            "orphan_ratings": orphans.ratings,
            "missing_movies": [str(i) for i in orphans.movies],
            "missing_users": [str(i) for i in orphans.users],
            "repaired": len(healed),
        }
        if not as_json:
            print(f"ratings: {orphans.ratings} naming {len(orphans.movies)} missing movies and "
                  f"{len(orphans.users)} missing users, "
                  f"{'purged' if healed else 'left' if orphans.ratings else 'none'}")  # fmt: skip
        for target in (summaries.MOVIES, summaries.USERS):
            total = await summaries.count(target)
            with tqdm(total=total, desc=f"{target.summary_field:<7}", file=sys.stderr) as bar:
                checked, differences = await summaries.verify(
                    target, prior_votes=settings.rating_prior_votes, progress=bar.update
                )
            repaired = 0
            if repair and differences:
                ids = summaries.ids_of(differences)
                if target is summaries.MOVIES:
                    done = await summaries.recompute_movies(
                        ids, prior_votes=settings.rating_prior_votes
                    )
                else:
                    done = await summaries.recompute_users(ids)
                repaired = len(done.stored)
            wrong += len(differences) - repaired
            report[target.name] = {
                "checked": checked,
                "different": len(differences),
                "repaired": repaired,
                "differences": [vars(d) for d in differences],
            }
            if not as_json:
                print(f"{target.name}: {checked} checked, "
                      f"{len(differences)} different, {repaired} repaired")  # fmt: skip
                for d in differences:
                    print(f"  {d.id}: stored {d.stored} expected {d.expected}")
    finally:
        await store.close(client)
    if as_json:
        print(json.dumps({**report, "ok": wrong == 0}, default=str))
    # Monitoring reads the exit status too: 1 while a stored summary is still wrong.
    return 0 if wrong == 0 else 1


async def _migrate(settings: Settings) -> int:
    from core import store
    from core.store import migrations

    client = await store.connect(settings, op_budget=settings.mongodb_worker_timeout)
    try:
        applied = await migrations.migrate()
    finally:
        await store.close(client)
    for step in applied:
        print(f"migrated: {step.version} {step.name} ({step.changed} changed)")
    if not applied:
        print(f"up to date: version {max(m.version for m in migrations.MIGRATIONS)}")
    return 0


SERVE_ENV = ("host", "port", "mongodb_url", "mongodb_db", "redis_url", "web_concurrency",
             "log_level", "environment")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """Every command and option, each with its help text."""
    parser = argparse.ArgumentParser(
        prog="python -m api",
        description="Serve the API and run operator commands. Every command reads its "
        "settings from the environment (`python -m api COMMAND --help` lists them). An "
        "operator command acts on the stack running in DATA_DIR (else ./data), else on "
        "MONGODB_URL, else on the one stack you run, and prints which first.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    command = partial(subcommand, sub, env=OPERATOR_ENV)
    serve_command = subcommand(
        sub,
        "serve",
        help="serve the API on HOST:PORT (needs MONGODB_URL and REDIS_URL; WEB_CONCURRENCY "
        "processes share one socket; a port in use is refused)",
        env=SERVE_ENV,
    )
    serve_command.add_argument("--host", help="the address to listen on (instead of HOST)")
    serve_command.add_argument("--port", type=int, help="the port to listen on (instead of PORT)")
    admin = command(
        "create-admin",
        help="create an admin (password read from stdin, or prompted on a terminal); an "
        "existing username is refused unless --promote or --reset-password says what to do",
    )
    admin.add_argument("--username", required=True, help="the account's username")
    admin.add_argument("--email", help="the new account's email (needed to create one)")
    existing = admin.add_mutually_exclusive_group()
    existing.add_argument(
        "--promote", action="store_true",
        help="make an existing user an admin; password and email unchanged, none is read",
    )  # fmt: skip
    existing.add_argument(
        "--reset-password", action="store_true",
        help="make an existing user an admin with the new password; ends their logins",
    )  # fmt: skip
    client = command("create-client", help="register an operator client; prints its secret once")
    client.add_argument("--name", required=True, help="a name to recognise the client by")
    client.add_argument(
        "--scope", action="append", required=True, dest="scopes",
        help="movies:write, imports:write or users:admin (repeat for several)",
    )  # fmt: skip
    client.add_argument(
        "--shell", action="store_true",
        help='print `export CLIENT_ID=… CLIENT_SECRET=…` lines, for eval "$(…)"',
    )  # fmt: skip
    user = command("user", help="disable, enable, promote, demote or delete an account (audited)")
    user.add_argument(
        "action", choices=["disable", "enable", "promote", "demote", "delete"],
        help="disable: no login or refresh, sessions end; enable; promote to admin; demote "
        "to user (sessions end); delete with ratings, links and sessions",
    )  # fmt: skip
    user.add_argument("username", help="the account's username")
    clients = command("client", help="list operator clients, or revoke one (audited)")
    clients.add_argument(
        "action", choices=["list", "revoke"],
        help="list: every client with its state and scopes; revoke: its tokens fail at once",
    )  # fmt: skip
    clients.add_argument("client_id", nargs="?", help="the client to revoke")
    command(
        "migrate",
        help="apply the pending one-off data changes of this version (run at every deploy, "
        "before the new API and workers start; `make run` runs it at start); idempotent",
    )
    verify = command(
        "verify-summaries",
        help="check that every rating names an existing movie and user, and compare every "
        "stored summary with a recomputation; exit 1 while anything is wrong",
    )
    verify.add_argument(
        "--repair", action="store_true",
        help="purge orphan ratings (healing what they touched) and recompute the summaries "
        "that differ",
    )  # fmt: skip
    verify.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # answered by the command's own usage, not the top level's
        subparsers(parser)[args.command].error(f"unrecognized arguments: {' '.join(extra)}")

    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError: one line, no traceback
        print(f"error: bad setting: {settings_problem(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    use_password_cost(settings.password_cost)
    if args.command == "serve":
        given = {"host": args.host, "port": args.port}
        settings = settings.model_copy(update={k: v for k, v in given.items() if v is not None})
        missing = [n for n in ("mongodb_url", "redis_url") if getattr(settings, n) is None]
        if missing:
            names = " and ".join(n.upper() for n in missing)
            print(
                f"error: python -m api serve needs {names} (or run `make run`, which starts "
                "the database and Redis and serves the API with them)",
                file=sys.stderr,
            )
            return 2
        return serve(settings)
    try:
        settings, where = stacks.for_command(settings)
    except stacks.StackNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(where, file=sys.stderr, flush=True)  # which stack this acts on, before anything
    if args.command == "create-client":
        return asyncio.run(_create_client(settings, args.name, args.scopes, shell=args.shell))
    if args.command == "user":
        return asyncio.run(_user_command(settings, args.action, args.username))
    if args.command == "client":
        if args.action == "revoke" and not args.client_id:
            parser.error("client revoke needs the client's id")
        return asyncio.run(_client_command(settings, args.action, args.client_id))
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "verify-summaries":
        return asyncio.run(_verify_summaries(settings, repair=args.repair, as_json=args.json))
    return create_admin(settings, args)


if __name__ == "__main__":
    sys.exit(main())
