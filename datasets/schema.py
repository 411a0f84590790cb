"""The one place that names the data: episode sample keys in the shards and training batch keys.

Writers, readers, validators and the learner all import these names; nothing else spells a key.

Training batch (what every loader yields and the Lightning module consumes). T is the number of
tasks, B the number of transitions drawn from each task's own data, H x W the image size:

===========================  ==========  ===============  ============================================
key                          dtype       shape            meaning
===========================  ==========  ===============  ============================================
``BATCH_IMAGE``              uint8       [T, B, 3, H, W]  observation frame, row t drawn from task t's data
``BATCH_NEXT_IMAGE``         uint8       [T, B, 3, H, W]  the frame bootstrapped from: the next one (``n_step`` 1), else
                                                          ``bootstrap_steps`` frames on
``BATCH_PROPRIO``            float32     [T, B, P]        measured and commanded arm state (envs.env)
``BATCH_NEXT_PROPRIO``       float32     [T, B, P]        proprio of that frame
``BATCH_ACTION``             int64       [T, B]           action taken
``BATCH_REWARDS``            float32     [T, B, T]        reward of *every* task k for the transition (last axis)
``BATCH_SUCCESSES``          float32     [T, B, T]        1 where task k is solved at the next state (terminal for k)
``BATCH_EPISODE_SUCCESSES``  float32     [T, B, T]        1 where the transition's *episode* has a return > 0 for
                                                          task k (it holds a success of k), else 0
``BATCH_STEPS_TO_SUCCESS``   float32     [T, B, T]        steps after this one until task k is first solved in
                                                          the episode: 0 when the next state solves k, +inf
                                                          when no later state of the episode does
``BATCH_BOOTSTRAP_STEPS``    float32     [T, B]           steps from the observation to ``next_image``: the
                                                          loader's ``n_step``, fewer in an episode's last steps
===========================  ==========  ===============  ============================================

Relabeling a transition of task j for task i reads ``rewards[j, :, i]`` and ``successes[j, :, i]``;
``episode_successes[j, b, i]`` is the same for every transition of one episode (the sum of the
episode's rewards for task i, over all its steps, is > 0), whichever of its steps was drawn.
``gamma ** steps_to_success[j, b, i]`` is the discounted return for task i that the data's own behaviour
went on to collect from that transition (0 when it never solved i): a Monte-Carlo return, with which a
learner can bound its TD targets (the data need not know the discount).

Episode sample (one WebDataset sample per recorded episode, in ``<root>/<task>/shard-NNNNNN.tar``).
L is the episode length in steps (>= 1), R the number of tasks whose reward is recorded (the whole
suite, in the order of ``EpisodeMeta.reward_tasks``), P the proprio size, S the image size:

=======================  ======================  ==========  =====================  ==========================
constant                 tar member suffix       dtype       shape (decoded)        meaning
=======================  ======================  ==========  =====================  ==========================
``KEY_FRAMES``           ``frames.png``          uint8       [(L+1)*S, S, 3] RGB    frames 0..L stacked top to
                                                                                    bottom; frame t is ``s_t``
``KEY_PROPRIO``          ``proprio.npy``         float32     [L+1, P]               proprio of ``s_0..s_L``
``KEY_ACTIONS``          ``actions.npy``         int64       [L]                    action taken in ``s_t``
``KEY_TASK_REWARDS``     ``task_rewards.npy``    float32     [L, R]                 reward of every task for step t
``KEY_TASK_SUCCESSES``   ``task_successes.npy``  bool        [L, R]                 task k solved in ``s_{t+1}``
``KEY_TERMINATED``       ``terminated.npy``      bool        [L]                    own task solved (last step only)
``KEY_TRUNCATED``        ``truncated.npy``       bool        [L]                    time limit hit (last step only)
``KEY_META``             ``meta.json``           JSON        object                 ``EpisodeMeta`` fields
=======================  ======================  ==========  =====================  ==========================

Frames are stored once (``next_image`` of step t is frame t+1): a lossless PNG strip that any image
reader opens. Arrays are ``.npy`` written and read with ``allow_pickle=False``; metadata is JSON.
Nothing in a dataset ever needs unpickling; suffixes that would (``UNSAFE_SUFFIXES``) are rejected.

The dataset root holds one folder of shards per task and ``manifest.json`` (``Manifest``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from robocds.datasets.errors import DatasetError
from robocds.envs.suite import EnvSettings
from robocds.files import TEMP_SUFFIX  # noqa: F401 - files in progress: hidden dot-files, never SHARD_PATTERN

BATCH_IMAGE = "image"
BATCH_NEXT_IMAGE = "next_image"
BATCH_PROPRIO = "proprio"
BATCH_NEXT_PROPRIO = "next_proprio"
BATCH_ACTION = "action"
BATCH_REWARDS = "rewards"
BATCH_SUCCESSES = "successes"
BATCH_EPISODE_SUCCESSES = "episode_successes"
BATCH_STEPS_TO_SUCCESS = "steps_to_success"
BATCH_BOOTSTRAP_STEPS = "bootstrap_steps"

BATCH_KEYS = (
    BATCH_IMAGE,
    BATCH_NEXT_IMAGE,
    BATCH_PROPRIO,
    BATCH_NEXT_PROPRIO,
    BATCH_ACTION,
    BATCH_REWARDS,
    BATCH_SUCCESSES,
    BATCH_EPISODE_SUCCESSES,
    BATCH_STEPS_TO_SUCCESS,
    BATCH_BOOTSTRAP_STEPS,
)

# Bump when the sample or manifest layout changes; readers refuse any other version.
SCHEMA_VERSION = 3  # 2: proprio gained the controller command (4 -> 8 values); 3: the manifest's env settings

# ----------------------------------------------------------------------------- episode samples

KEY_FRAMES = "frames.png"
KEY_PROPRIO = "proprio.npy"
KEY_ACTIONS = "actions.npy"
KEY_TASK_REWARDS = "task_rewards.npy"
KEY_TASK_SUCCESSES = "task_successes.npy"
KEY_TERMINATED = "terminated.npy"
KEY_TRUNCATED = "truncated.npy"
KEY_META = "meta.json"

SAMPLE_KEYS = (
    KEY_FRAMES,
    KEY_PROPRIO,
    KEY_ACTIONS,
    KEY_TASK_REWARDS,
    KEY_TASK_SUCCESSES,
    KEY_TERMINATED,
    KEY_TRUNCATED,
    KEY_META,
)

# Member suffixes that common WebDataset decoders would unpickle (pickle, torch.load): never read.
UNSAFE_SUFFIXES = frozenset({"pyd", "pickle", "pkl", "pth", "pt", "torch", "ckpt", "joblib"})


@dataclass(frozen=True)
class ArraySpec:
    """dtype and shape of one ``.npy`` member; shape entries are ints or symbols 'L', 'L+1', 'P', 'R'."""

    dtype: np.dtype
    shape: tuple[str | int, ...]

    def expected_shape(self, length: int, proprio_dim: int, num_reward_tasks: int) -> tuple[int, ...]:
        sizes = {"L": length, "L+1": length + 1, "P": proprio_dim, "R": num_reward_tasks}
        return tuple(sizes[dim] if isinstance(dim, str) else dim for dim in self.shape)


ARRAY_SPECS: dict[str, ArraySpec] = {
    KEY_PROPRIO: ArraySpec(np.dtype(np.float32), ("L+1", "P")),
    KEY_ACTIONS: ArraySpec(np.dtype(np.int64), ("L",)),
    KEY_TASK_REWARDS: ArraySpec(np.dtype(np.float32), ("L", "R")),
    KEY_TASK_SUCCESSES: ArraySpec(np.dtype(np.bool_), ("L", "R")),
    KEY_TERMINATED: ArraySpec(np.dtype(np.bool_), ("L",)),
    KEY_TRUNCATED: ArraySpec(np.dtype(np.bool_), ("L",)),
}


def episode_key(task: str, episode: int) -> str:
    """WebDataset ``__key__`` of episode ``episode`` of ``task`` (no dots: a dot starts the suffix)."""
    return f"{task}-{episode:06d}"


def episode_from_key(key: str) -> int:
    """Episode index of a ``__key__`` written by ``episode_key`` (-1 if it is not one)."""
    _, _, number = key.rpartition("-")
    return int(number) if number.isdigit() else -1


@dataclass(frozen=True)
class EpisodeMeta:
    """Contents of ``meta.json``: what the episode was collected for and how."""

    schema_version: int  # SCHEMA_VERSION of the writer
    task: str  # task the oracle was solving (also the shard folder)
    episode: int  # index of the episode within its task (0-based, dense)
    seed: int  # env reset seed (robocds.envs.seeds.data_episode_seed)
    oracle_seed: int  # seed of the oracle's noise generator, derived from ``seed``
    random_action_prob: float  # oracle noise: probability of a uniformly random action
    position_std: float  # oracle noise: std (m) of the per-episode xy misperception
    length: int  # number of steps L
    success: bool  # the own task was solved (the episode terminated)
    episode_return: float  # sum of the own task's rewards
    image_size: int  # S: frames are S x S
    reward_tasks: tuple[str, ...] = field(default_factory=tuple)  # order of the R reward/success columns

    def to_json_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reward_tasks"] = list(self.reward_tasks)
        return out

    @classmethod
    def from_json_dict(cls, data: Any, source: str | None = None, key: str | None = None) -> EpisodeMeta:
        """Type-checked ``meta.json``; a ``DatasetError`` names the shard, the sample and ``meta.json:<field>``."""
        fields = check_fields(data, META_FIELD_TYPES, source, key, prefix=f"{KEY_META}:")
        if not all(isinstance(name, str) for name in fields["reward_tasks"]):
            raise DatasetError("expected a list of task names", source, key, f"{KEY_META}:reward_tasks")
        return cls(**{**fields, "reward_tasks": tuple(fields["reward_tasks"])})


META_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {  # JSON type of every meta.json field
    "schema_version": int,
    "task": str,
    "episode": int,
    "seed": int,
    "oracle_seed": int,
    "random_action_prob": (int, float),
    "position_std": (int, float),
    "length": int,
    "success": bool,
    "episode_return": (int, float),
    "image_size": int,
    "reward_tasks": list,
}

# ----------------------------------------------------------------------------- dataset layout

MANIFEST_FILE = "manifest.json"
RECIPE_FILE = "recipe.json"  # the resolved recipe, written first so a resumed run can check it
SHARD_PATTERN = re.compile(r"^shard-(\d{6})\.tar$")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def shard_relpath(task: str, index: int) -> str:
    """Path of a shard relative to the dataset root (always '/'-separated, also for URLs)."""
    return f"{task}/{shard_name(index)}"


@dataclass(frozen=True)
class ShardEntry:
    """One shard as recorded in the manifest."""

    path: str  # relative to the root, e.g. "lift-cube/shard-000000.tar"
    first_episode: int  # episode index of its first sample; samples are consecutive episodes
    samples: int  # number of episodes in the shard
    transitions: int  # sum of episode lengths
    successes: int  # episodes whose own task was solved
    bytes: int  # size of the tar file
    sha256: str  # hex digest of the tar file


@dataclass(frozen=True)
class TaskEntry:
    """One task's shard set as recorded in the manifest."""

    name: str
    episodes: int
    transitions: int
    success_rate: float  # the oracle's success rate on its own task over these episodes
    mean_return: float
    mean_length: float
    random_action_prob: float
    position_std: float
    shards: tuple[ShardEntry, ...]


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: what a dataset holds, enough to verify every shard and to size a model."""

    schema_version: int
    name: str  # recipe name
    env: EnvSettings  # every env setting that shaped the observations (image size, horizon, camera, actions...)
    proprio_dim: int
    reward_tasks: tuple[str, ...]  # order of the reward/success columns in every sample
    tasks: tuple[TaskEntry, ...]
    recipe: dict[str, Any]  # the resolved recipe that produced the dataset

    @property
    def image_size(self) -> int:
        return self.env.image_size

    @property
    def max_steps(self) -> int:
        return self.env.max_steps

    @property
    def actions(self) -> tuple[str, ...]:
        """Action names, index = action id."""
        return self.env.actions

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    @property
    def num_actions(self) -> int:
        return len(self.actions)

    def task(self, name: str) -> TaskEntry:
        for entry in self.tasks:
            if entry.name == name:
                return entry
        raise ValueError(f"task {name!r} is not in dataset {self.name!r}; it holds: {', '.join(self.task_names)}")

    def to_json_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # asdict keeps tuples; JSON wants lists (json.dumps handles both, this keeps round trips exact).
        return _lists(out)

    @classmethod
    def from_json_dict(cls, data: Any, source: str = MANIFEST_FILE) -> Manifest:
        """Parse and type-check a manifest; a ``DatasetError`` names ``source`` and the field."""
        top = check_fields(data, MANIFEST_FIELD_TYPES, source, prefix="")
        if top["schema_version"] != SCHEMA_VERSION:
            raise DatasetError(
                f"{top['schema_version']!r}, this reader supports {SCHEMA_VERSION}", source, field="schema_version"
            )
        tasks = []
        for i, task in enumerate(top["tasks"]):
            t = check_fields(task, TASK_FIELD_TYPES, source, prefix=f"tasks[{i}].")
            shards = [
                ShardEntry(**check_fields(shard, SHARD_FIELD_TYPES, source, prefix=f"tasks[{i}].shards[{j}]."))
                for j, shard in enumerate(t["shards"])
            ]
            tasks.append(TaskEntry(**{**t, "shards": tuple(shards)}))
        try:
            env = EnvSettings.from_json_dict(top["env"])
        except (TypeError, ValueError) as err:
            raise DatasetError(str(err), source, field="env") from None
        return cls(**{**top, "env": env, "tasks": tuple(tasks), "reward_tasks": tuple(top["reward_tasks"])})


_Types = dict[str, "type | tuple[type, ...]"]

MANIFEST_FIELD_TYPES: _Types = {
    "schema_version": int,
    "name": str,
    "env": dict,
    "proprio_dim": int,
    "reward_tasks": list,
    "tasks": list,
    "recipe": dict,
}
TASK_FIELD_TYPES: _Types = {
    "name": str,
    "episodes": int,
    "transitions": int,
    "success_rate": (int, float),
    "mean_return": (int, float),
    "mean_length": (int, float),
    "random_action_prob": (int, float),
    "position_std": (int, float),
    "shards": list,
}
SHARD_FIELD_TYPES: _Types = {
    "path": str,
    "first_episode": int,
    "samples": int,
    "transitions": int,
    "successes": int,
    "bytes": int,
    "sha256": str,
}


def check_fields(data: Any, types: _Types, source: str, key: str | None = None, prefix: str = "") -> dict[str, Any]:
    """``data`` as a dict with exactly the fields of ``types``, each of the right JSON type.

    A ``DatasetError`` names ``source``, the sample ``key`` (if any) and ``prefix + field``.
    """
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or None
        raise DatasetError(f"expected a JSON object, got {type(data).__name__}", source, key, where)
    for name in types:
        if name not in data:
            raise DatasetError("missing", source, key, prefix + name)
    for name in data:
        if name not in types:
            raise DatasetError("unexpected field", source, key, prefix + str(name))
    for name, kind in types.items():
        value = data[name]
        # bool is an int in Python; a JSON true where a number is expected is still wrong.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise DatasetError(f"expected {_type_name(kind)}, got {value!r}", source, key, prefix + name)
    return dict(data)


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
