"""Thread defaults: what spawned workers inherit, and that the user's settings win."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from robocds.threads import THREAD_COUNT_VARIABLES, use_thread_defaults, worker_thread_environment


def _report_environment(queue) -> None:
    queue.put({name: os.environ.get(name) for name in (*THREAD_COUNT_VARIABLES, "OMP_WAIT_POLICY")})


def test_workers_get_one_thread_and_the_parent_environment_is_restored(monkeypatch) -> None:
    for name in (*THREAD_COUNT_VARIABLES, "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # set by the user: kept
    context = mp.get_context("spawn")
    queue = context.Queue()
    with worker_thread_environment():
        process = context.Process(target=_report_environment, args=(queue,))
        process.start()
    seen = queue.get(timeout=60)
    process.join(timeout=60)
    assert seen == {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "3",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["OPENBLAS_NUM_THREADS"] == "3"


def test_wait_policy_default_never_overrides_the_user(monkeypatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    use_thread_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    use_thread_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    with pytest.raises(ValueError, match="threads=0"):
        with worker_thread_environment(0):
            pass
