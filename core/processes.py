"""Child processes: start, wait for, supervise and stop them (the embedded stack, the
API's WEB_CONCURRENCY supervisor, tests and benchmarks)."""

from __future__ import annotations

import ctypes
import errno
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


def spawn(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    log_file: Path | None = None,
    own_session: bool = False,
    pass_fds: tuple[int, ...] = (),
):
    """Start `cmd`; `own_session` keeps the terminal's Ctrl-C (sent to the whole foreground
    process group) away from it, so its supervisor alone decides when and in which order
    it stops. `pass_fds` are inherited (a listening socket shared by a server's processes)."""
    out = open(log_file, "ab") if log_file else None
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        start_new_session=own_session,
        pass_fds=pass_fds,
    )


class PortInUse(Exception):
    """The address to listen on is taken (by another stack or program)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"port {port} on {host} is in use (another stack or program listens there): "
            "stop it, or set PORT to a free one"
        )


def listen(host: str, port: int) -> socket.socket:
    """A listening socket this process owns alone: no SO_REUSEPORT, so a second server (or
    stack) on the same port is refused instead of silently sharing its connections.
    PortInUse when the port is taken."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise
    sock.set_inheritable(True)
    return sock


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


class StopRequest(Protocol):
    """What a supervising loop polls: stop in order, or stop now."""

    @property
    def received(self) -> bool: ...

    @property
    def forced(self) -> bool: ...


class StopSignal:
    """SIGINT and SIGTERM turned into flags a supervising loop polls: the first asks for an
    orderly stop, a second one forces it."""

    def __init__(self) -> None:
        self.count = 0
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    @property
    def received(self) -> bool:
        return self.count > 0

    @property
    def forced(self) -> bool:
        return self.count > 1

    def _on_signal(self, signum: int, frame: object) -> None:
        self.count += 1


def supervise(procs: list[subprocess.Popen], stop_signal: StopSignal, *, what: str) -> int:
    """Wait for a stop signal (0) or a child's exit (its code, at least 1)."""
    while not stop_signal.received:
        exited = [p for p in procs if p.poll() is not None]
        if exited:
            log.error("%s exited; stopping the rest", what, extra={"pid": exited[0].pid})
            return exited[0].returncode or 1
        time.sleep(0.2)
    return 0


class Probe(Protocol):
    """A health check of a running component: True when it works, False when it answered
    that it cannot (a database that fails a write), None when it did not answer in time."""

    def __call__(self) -> bool | None: ...


@dataclass
class Health:
    """When a live process counts as broken: `failures` failed probes in a row, or no answer
    for `silence` seconds (a stall shorter than that is waited out). Probed every `every` s."""

    probe: Probe
    every: float = 2.0
    failures: int = 3
    silence: float = 60.0


@dataclass
class Component:
    """One supervised process: how to start it, and how it stops (signals with the
    seconds each is given, in order; SIGKILL follows the last). With `health`, a process that
    stays alive but broken is killed and restarted too; `backoff_max` caps the wait between
    restarts (None: the supervisor's)."""

    name: str
    start: Callable[[], subprocess.Popen]
    stop_signals: tuple[tuple[int, float], ...] = ((signal.SIGTERM, 10.0),)
    health: Health | None = None
    backoff_max: float | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    probed_at: float = 0.0
    failed_probes: int = 0
    answered_at: float = 0.0


class Supervisor:
    """Keeps components running: one that exits is logged and started again after an
    exponential backoff (as compose's `restart: unless-stopped`), while the others go on.
    Stops them in reverse start order, each finished before the next is asked."""

    BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 0.5, 30.0, 30.0

    def __init__(self, stop_signal: StopRequest) -> None:
        self.components: list[Component] = []
        self.stop_signal = stop_signal
        self.restarts = 0

    def add(self, component: Component) -> Component:
        """Start a component now (its start function waits until it is ready)."""
        component.proc = component.start()
        component.started_at = time.monotonic()
        self.components.append(component)
        return component

    def run(self, *, poll: float = 0.2) -> int:
        """Supervise until a stop signal arrives; then stop everything in order."""
        while not self.stop_signal.received:
            self.check()
            time.sleep(poll)
        self.stop()
        return 0

    def _backoff(self, component: Component) -> float:
        cap = self.BACKOFF_MAX if component.backoff_max is None else component.backoff_max
        return min(cap, self.BACKOFF_FIRST * 2**component.failures)

    def _probe(self, component: Component, now: float) -> None:
        """Kill a live component its health check finds broken (the exit is then handled
        like any other: logged and restarted)."""
        health, proc = component.health, component.proc
        if health is None or proc is None or proc.poll() is not None:
            return
        if now - component.probed_at < health.every:
            return
        component.probed_at = now
        if component.answered_at < component.started_at:
            component.answered_at = component.started_at
        answer = health.probe()
        if answer is not None:
            component.answered_at = time.monotonic()
        component.failed_probes = 0 if answer else component.failed_probes + (answer is False)
        silent = time.monotonic() - component.answered_at
        if component.failed_probes >= health.failures or silent >= health.silence:
            log.error(
                "%s is alive but broken (%s); killing it",
                component.name,
                f"{component.failed_probes} failed checks" if answer is False else
                f"no answer for {silent:.0f} s",
                extra={"component": component.name},
            )  # fmt: skip
            component.failed_probes = 0
            proc.kill()
            proc.wait()

    def check(self) -> None:
        """One pass: probe the live, notice exits, schedule and perform restarts."""
        now = time.monotonic()
        for component in self.components:
            self._probe(component, now)
            proc = component.proc
            if component.restart_at is None and proc is not None and proc.poll() is not None:
                if now - component.started_at > self.STABLE_AFTER:
                    component.failures = 0
                delay = self._backoff(component)
                component.failures += 1
                component.restart_at = now + delay
                log.error(
                    "%s exited with code %s; restarting in %.1f s",
                    component.name,
                    proc.returncode,
                    delay,
                    extra={"component": component.name, "code": proc.returncode},
                )
            if component.restart_at is not None and now >= component.restart_at:
                try:
                    component.proc = component.start()
                except (RuntimeError, OSError) as exc:
                    component.proc = None
                    component.failures += 1
                    component.restart_at = now + self._backoff(component)
                    log.error("%s could not restart: %s", component.name, exc)
                    continue
                component.started_at = time.monotonic()
                component.restart_at = None
                self.restarts += 1
                log.warning("%s restarted", component.name, extra={"component": component.name})

    def stop(self) -> None:
        """Newest first, each one given its signals and time before the next is asked; a
        second stop signal kills whatever is still running."""
        for component in reversed(self.components):
            proc = component.proc
            if proc is None or proc.poll() is not None:
                continue
            log.info("stopping %s", component.name, extra={"component": component.name})
            for signum, grace in component.stop_signals:
                if self.stop_signal.forced:
                    break
                proc.send_signal(signum)
                if _wait(proc, grace, self.stop_signal):
                    break
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait(proc: subprocess.Popen, seconds: float, stop_signal: StopRequest) -> bool:
    """Wait for `proc` to exit; False on timeout or when a second signal forces the stop."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop_signal.forced:
        if proc.poll() is not None:
            return True
        time.sleep(0.05)
    return proc.poll() is not None
