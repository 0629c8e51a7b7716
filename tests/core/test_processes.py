"""The supervisor `make run` uses: restarts with backoff, ordered stop, a forced second stop."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from core import processes
from core.processes import Component, Health, Supervisor


class NoStop:
    """Never asks to stop (a real StopSignal would take over pytest's own signal handlers)."""

    received = False
    forced = False


def _python(code: str):
    return lambda: processes.spawn([sys.executable, "-c", code], own_session=True)


def test_a_part_that_dies_is_restarted_with_backoff_while_the_others_run(caplog):
    supervisor = Supervisor(NoStop())
    steady = supervisor.add(Component("steady", _python("import time; time.sleep(60)")))
    flaky = supervisor.add(Component("flaky", _python("raise SystemExit(3)")))
    deadline = time.monotonic() + 10
    while supervisor.restarts < 2 and time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.05)
    assert supervisor.restarts >= 2 and flaky.failures >= 2
    assert steady.proc is not None and steady.proc.poll() is None  # untouched meanwhile
    assert any(
        "flaky exited with code 3; restarting in 0.5 s" in r.getMessage() for r in caplog.records
    )
    assert any("restarting in 1.0 s" in r.getMessage() for r in caplog.records)
    supervisor.stop()
    assert steady.proc.poll() is not None


def test_stop_goes_newest_first_and_escalates_signals():
    supervisor = Supervisor(NoStop())
    # Ignores SIGTERM: the next signal in its list (SIGINT here) has to end it.
    stubborn = supervisor.add(
        Component(
            "stubborn",
            _python(
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
            ),
            ((signal.SIGTERM, 0.5), (signal.SIGINT, 5.0)),
        )
    )
    last = supervisor.add(Component("last", _python("import time; time.sleep(60)")))
    time.sleep(0.3)  # let the child install its handler
    supervisor.stop()
    assert last.proc.returncode == -signal.SIGTERM
    assert stubborn.proc.returncode not in (None, -signal.SIGKILL)


def test_a_live_part_whose_health_check_fails_is_killed_and_restarted(caplog):
    answers = iter([True, False, False, False])
    supervisor = Supervisor(NoStop())
    broken = supervisor.add(
        Component(
            "db",
            _python("import time; time.sleep(60)"),
            health=Health(lambda: next(answers, True), every=0.01, failures=3),
            backoff_max=0.05,
        )
    )
    first = broken.proc
    deadline = time.monotonic() + 10
    while supervisor.restarts < 1 and time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.02)
    assert supervisor.restarts == 1
    assert first.returncode == -signal.SIGKILL  # killed after the third failed check in a row
    assert broken.proc is not first and broken.proc.poll() is None
    assert any("db is alive but broken (3 failed checks)" in r.getMessage() for r in caplog.records)
    supervisor.stop()


def test_a_part_that_does_not_answer_is_waited_for_up_to_its_silence_limit():
    supervisor = Supervisor(NoStop())
    stalled = supervisor.add(
        Component(
            "db",
            _python("import time; time.sleep(60)"),
            health=Health(lambda: None, every=0.01, failures=1, silence=0.5),
        )
    )
    first = stalled.proc
    started = time.monotonic()
    while first.poll() is None and time.monotonic() - started < 10:
        supervisor.check()
        time.sleep(0.02)
    # Unanswered checks are not failures: only the silence limit ends it.
    assert first.returncode == -signal.SIGKILL
    assert time.monotonic() - started >= 0.5
    supervisor.stop()


def test_a_port_is_listened_on_by_one_socket_only():
    from core.processes import PortInUse, listen

    for host in ("127.0.0.1", "::1"):
        first = listen(host, 0)
        try:
            port = first.getsockname()[1]
            with pytest.raises(PortInUse, match=f"port {port} on {host} is in use"):
                listen(host, port)
        finally:
            first.close()
        listen(host, port).close()  # free again once closed
