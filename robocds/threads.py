"""CPU thread settings of the project's processes (stdlib only: applied before torch is imported).

torch's CPU kernels run on OpenMP threads that busy-wait between parallel regions. On an idle
machine that saves a wake-up per operator; next to another busy process the spinning threads take
the cores the working thread needs: on a 2-core machine running other jobs, a 2-thread training step
measured 5x slower than a 1-thread one, while ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep when idle)
kept the 2-thread step within 1.15x of the 1-thread step (docs/PERFORMANCE.md).

The project's defaults, each applied only where the environment leaves it unset (so ``OMP_NUM_THREADS``,
``OMP_WAIT_POLICY`` and friends always win):

- every process: ``OMP_WAIT_POLICY=PASSIVE`` (no spinning). On an idle machine this can cost some
  speed; set ``OMP_WAIT_POLICY=ACTIVE`` to get it back where nothing else runs;
- training (``robocds``): torch's own default thread count (the machine's cores);
- evaluation's policy process (``robocds-eval``): ``POLICY_THREADS`` torch threads (``--threads``);
  it scores a few frames per step while the env workers render;
- env worker processes (evaluation and generation): ``WORKER_THREADS`` (1) thread each, for
  OpenMP, MKL and OpenBLAS: a worker steps PyBullet, which is single-threaded, and the cores belong
  to the other workers.

OpenMP reads its settings once, when its library loads (with torch), so ``use_thread_defaults`` must
run before torch is imported: the console scripts call it first thing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

WAIT_POLICY = "PASSIVE"  # default OMP_WAIT_POLICY of every process
POLICY_THREADS = 1  # default torch threads of robocds-eval's policy process
WORKER_THREADS = 1  # threads of each env worker process
THREAD_COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def use_thread_defaults() -> None:
    """Set ``OMP_WAIT_POLICY`` to ``WAIT_POLICY`` unless the environment sets it (call before importing torch)."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


@contextmanager
def worker_thread_environment(threads: int = WORKER_THREADS) -> Iterator[None]:
    """Within the block, processes started (spawned) inherit ``threads`` threads per library and no spinning.

    Variables the user set are kept; the parent's environment is restored on exit.
    """
    if threads < 1:
        raise ValueError(f"threads={threads}: must be >= 1")
    wanted = {name: str(threads) for name in THREAD_COUNT_VARIABLES}
    wanted["OMP_WAIT_POLICY"] = WAIT_POLICY
    added = [name for name in wanted if name not in os.environ]
    for name in added:
        os.environ[name] = wanted[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)
