"""Episode seed ranges: dataset generation and evaluation never share a seed.

Generation draws seeds from ``[0, EVAL_SEED_START)``; evaluation from ``[EVAL_SEED_START, 2**31)``.
Both derive per-episode seeds deterministically, so a dataset or an evaluation is reproducible
from its base seed alone, whatever the number of worker processes.
"""

from __future__ import annotations

import numpy as np

EVAL_SEED_START = 2**30
SEED_END = 2**31
ORACLE_STREAM = 1  # mixes into an oracle's seed so its noise is independent of the scene's RNG


def hash_seed(*parts: int, dtype: type = np.uint32) -> int:
    """A well-mixed seed from integer parts (numpy's ``SeedSequence``): the one seed derivation of the project."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype)[0])


def data_episode_seed(base_seed: int, task_index: int, episode: int) -> int:
    """Seed of episode ``episode`` of task ``task_index`` in a dataset built from ``base_seed``."""
    return _derive(base_seed, task_index, episode, 0, EVAL_SEED_START)


def eval_episode_seed(base_seed: int, task_index: int, episode: int) -> int:
    """Seed of evaluation episode ``episode`` of task ``task_index`` (never a data seed)."""
    return _derive(base_seed, task_index, episode, EVAL_SEED_START, SEED_END)


def oracle_seed(episode_seed: int) -> int:
    """Seed of the oracle's noise for the episode reset with ``episode_seed``."""
    return hash_seed(episode_seed, ORACLE_STREAM)


def is_eval_seed(seed: int) -> bool:
    return EVAL_SEED_START <= seed < SEED_END


def _derive(base_seed: int, task_index: int, episode: int, low: int, high: int) -> int:
    for name, value in (("base_seed", base_seed), ("task_index", task_index), ("episode", episode)):
        if value < 0:
            raise ValueError(f"{name}={value}: must be >= 0")
    return low + hash_seed(base_seed, task_index, episode, dtype=np.uint64) % (high - low)
