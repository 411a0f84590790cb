"""Shared tiny datasets: generated once per test session (seconds), copied by tests that damage them; a local Ray
instance for the Ray executor's tests."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import torch

from robocds.datasets.generate import generate
from robocds.datasets.recipe import Recipe, load_recipe

torch.set_num_threads(1)  # the tests share a small machine; the data here is tiny anyway


@pytest.fixture(scope="session")
def tiny_recipe() -> Recipe:
    return load_recipe("tiny")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, tiny_recipe) -> Path:
    """The packaged tiny recipe, generated in-process. Read-only: copy it (``dataset_copy``) to damage it."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(tiny_recipe, str(root), workers=0, progress=False)
    return root


@pytest.fixture
def dataset_copy(tiny_root, tmp_path) -> Path:
    """A private copy of the tiny dataset."""
    return Path(shutil.copytree(tiny_root, tmp_path / "data"))


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance of 2 CPUs for the Ray executor's tests (skipped where Ray is not installed: the ray
    extra), up for one test module and shut down after it (not kept through the rest of the suite)."""
    ray = pytest.importorskip("ray")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if not ray.is_initialized():  # address="local": a new instance, never a cluster running on this machine
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2,
            logging_level="ERROR", log_to_driver=False,
        )  # fmt: skip
    for sig, handler in handlers.items():  # Ray's SIGTERM handler would end processes the tests fork
        signal.signal(sig, handler)
    yield ray
    ray.shutdown()
