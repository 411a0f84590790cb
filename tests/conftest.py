"""Shared tiny datasets: generated once per test session (seconds), copied by tests that damage them."""

from __future__ import annotations

import shutil
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
