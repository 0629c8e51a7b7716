"""What one recommendation request costs in the API process at a large catalogue: the
product of every item's factors with a person's taste, and picking the best of the scores.
Printed by `make bench` and `make eval-recs`: a full sort against the top-k the service
takes, one BLAS thread (as the API runs) against two, side by side in one run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from threadpoolctl import threadpool_limits

from core import recommend

ITEMS = 59_000  # movies in ml-latest, the largest catalogue the figures are for
ROUNDS = 200


def _per_call_ms(work: Callable[[], object], rounds: int = ROUNDS) -> float:
    """The median time of one call, in milliseconds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def _cpu_per_call_ms(work: Callable[[], object], rounds: int = ROUNDS) -> float:
    """This process's CPU time per call (all its threads, spinning ones included), with a
    pause between calls as requests have, in milliseconds."""
    spent = 0.0
    for _ in range(rounds):
        started = time.process_time()
        work()
        time.sleep(0.002)  # what a BLAS thread spins through after its work counts too
        spent += time.process_time() - started
    return spent / rounds * 1e3


def figures(items: int = ITEMS, factors: int = recommend.PARAMS.factors) -> str:
    """The lines to print: sort and BLAS figures at `items` movies."""
    rng = np.random.default_rng(1)
    model = recommend.Model(
        items=rng.standard_normal((items, factors)).astype(np.float32),
        recent=rng.random(items).astype(np.float32),
        likes=np.ones(items, dtype=np.int64),
    )
    liked = rng.choice(items, 40, replace=False)
    scores = recommend.scores(model, liked)
    full = _per_call_ms(lambda: np.argsort(-scores))
    top_k = _per_call_ms(lambda: recommend.top(scores, 200, exclude=liked))
    taste = recommend.fold_in(model, liked)
    product: dict[tuple[int, bool], float] = {}
    cpu: dict[int, float] = {}
    for busy in (False, True):
        # The API shares its cores with other requests, processes and the database: a BLAS
        # thread that has to wait for a busy core holds the whole product up.
        with _other_cores_busy(busy):
            for threads in (1, 2):  # one first: a second thread spins on after its use
                with threadpool_limits(threads, "blas"):
                    product[threads, busy] = _per_call_ms(lambda: model.items @ taste)
                    if not busy:
                        cpu[threads] = _cpu_per_call_ms(lambda: model.items @ taste)
    with threadpool_limits(1, "blas"):
        request = _per_call_ms(
            lambda: recommend.top(recommend.scores(model, liked), 200, exclude=liked)
        )
    lines = [
        f"one person's scores at {items:,} movies, {factors} factors (median of {ROUNDS}):",
        f"  ranking: full sort {full:.2f} ms, top-200 {top_k:.2f} ms ({full / top_k:.1f}x)",
    ]
    for busy, label in ((False, "idle machine"), (True, "other cores busy")):
        two, one = product[2, busy], product[1, busy]
        lines.append(
            f"  items @ taste, {label}: 2 BLAS threads {two:.3f} ms, 1 thread {one:.3f} ms "
            f"({two / one:.1f}x)"
        )
    lines.append(
        f"  items @ taste, CPU time per call with 2 ms between calls: 2 BLAS threads "
        f"{cpu[2]:.3f} ms, 1 thread {cpu[1]:.3f} ms ({cpu[2] / cpu[1]:.1f}x)"
    )
    lines.append(
        f"  fold-in, scores and top-200 on one thread, as the API runs them: {request:.2f} ms"
    )
    return "\n".join(lines)


@contextmanager
def _other_cores_busy(busy: bool, seconds: float = 60.0) -> Iterator[None]:
    """While the block runs, one spinning process per other core (each ends by itself
    after `seconds` at the latest)."""
    if not busy:
        yield
        return
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    spinners = [
        subprocess.Popen([sys.executable, "-c", spin]) for _ in range((os.cpu_count() or 2) - 1)
    ]
    try:
        time.sleep(0.2)
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    print(figures())
