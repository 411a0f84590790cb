"""Dataset recipes: per task, how many episodes and how noisy an oracle, read from a small YAML file.

A recipe fully determines a dataset: with the same recipe (and the same simulator) every run, on
any number of workers, writes byte-identical shards.

.. code-block:: yaml

    name: tiny
    base_seed: 0
    image_size: 32
    max_steps: 12
    episodes_per_shard: 2
    tasks:
      lift-cube: {episodes: 3}
      place-cube-blue: {episodes: 2, random_action_prob: 0.3, position_std: 0.01}
      lift-block:                      # replay-like: a mixture of oracle noise levels, in this order
        components:
          - {episodes: 2, random_action_prob: 0.8, position_std: 0.03}   # episodes 0-1
          - {episodes: 1, random_action_prob: 0.1}                       # episode 2
    groups:                            # optional: named sets of tasks, for reporting only
      lifts: [lift-cube, lift-block]

Packaged recipes (``robocds/datasets/recipes/*.yaml``) can be named without a path: ``tiny``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from robocds.datasets.errors import DatasetError
from robocds.envs.suite import DEFAULT_ENV, MIN_IMAGE_SIZE, RENDERERS, EnvSettings, OracleNoise, check_task
from robocds.errors import repeated

GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # group names become parts of report file names


def _check_episodes(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"episodes={value!r} ({where}): must be an int >= 1")


@dataclass(frozen=True)
class NoiseComponent:
    """A run of consecutive episodes recorded with one oracle noise level (one part of a mixture)."""

    episodes: int  # how many episodes (>= 1)
    random_action_prob: float = 0.0  # oracle noise: probability of a uniformly random action
    position_std: float = 0.0  # oracle noise: std (m) of a per-episode xy misperception

    def __post_init__(self) -> None:
        _check_episodes(self.episodes, "component")
        self.noise  # noqa: B018 - OracleNoise checks both noise fields

    @property
    def noise(self) -> OracleNoise:
        return OracleNoise(float(self.random_action_prob), float(self.position_std))


@dataclass(frozen=True)
class TaskRecipe:
    """One task's share of a dataset: one oracle noise level, or a mixture of them (``components``).

    A mixture makes a task's data look like a learning agent's replay buffer: near-random early
    episodes, competent late ones. Components are laid out in order (the first ``components[0].episodes``
    episodes use its noise, and so on); every episode keeps its own seed, so a mixture is as
    deterministic as a single level.
    """

    task: str  # a name from robocds.envs.tasks.TASK_NAMES
    episodes: int  # how many episodes to record (>= 1); with components, their sum
    random_action_prob: float = 0.0  # oracle noise (single level): probability of a uniformly random action
    position_std: float = 0.0  # oracle noise (single level): std (m) of a per-episode xy misperception
    components: tuple[NoiseComponent, ...] = ()  # a mixture instead of the single level above

    def __post_init__(self) -> None:
        try:
            check_task(self.task)
        except ValueError as err:
            raise ValueError(f"task={self.task!r}: {err}") from None
        _check_episodes(self.episodes, f"task {self.task}")
        try:
            self.noise  # noqa: B018 - OracleNoise checks both noise fields
            for component in self.components:
                if not isinstance(component, NoiseComponent):
                    raise ValueError(f"components: expected NoiseComponent entries, got {component!r}")
        except ValueError as err:
            raise ValueError(f"task {self.task}: {err}") from None
        if self.components:
            total = sum(c.episodes for c in self.components)
            if total != self.episodes:
                raise ValueError(f"task {self.task}: episodes={self.episodes} but its components hold {total}")
            if self.random_action_prob or self.position_std:
                raise ValueError(
                    f"task {self.task}: give the noise either per component or for the task, not both "
                    f"(random_action_prob={self.random_action_prob}, position_std={self.position_std})"
                )

    @property
    def noise(self) -> OracleNoise:
        """The single noise level (a mixture's is 0: see ``noise_of``)."""
        return OracleNoise(float(self.random_action_prob), float(self.position_std))

    def mixture(self) -> tuple[NoiseComponent, ...]:
        """The components, a single level counting as one component."""
        if self.components:
            return self.components
        return (NoiseComponent(self.episodes, self.random_action_prob, self.position_std),)

    def component_of(self, episode: int) -> int:
        """Index of the component that records ``episode`` (0-based within the task)."""
        if not 0 <= episode < self.episodes:
            raise ValueError(f"episode={episode}: task {self.task} has episodes 0..{self.episodes - 1}")
        end = 0
        for index, component in enumerate(self.mixture()):
            end += component.episodes
            if episode < end:
                return index
        raise AssertionError("unreachable: components sum to episodes")

    def noise_of(self, episode: int) -> OracleNoise:
        """Oracle noise of ``episode``."""
        return self.mixture()[self.component_of(episode)].noise


@dataclass(frozen=True)
class Recipe:
    """A whole dataset: its tasks and the settings shared by every episode."""

    name: str  # dataset name, recorded in the manifest
    tasks: tuple[TaskRecipe, ...]  # in the order of the manifest (and of the batch rows by default)
    base_seed: int = 0  # every episode seed derives from it (robocds.envs.seeds.data_episode_seed)
    image_size: int = DEFAULT_ENV.image_size  # frames are image_size x image_size RGB
    max_steps: int = DEFAULT_ENV.max_steps  # episodes are truncated after this many steps
    episodes_per_shard: int = 25  # one shard is one unit of (parallel, resumable) work
    renderer: str = DEFAULT_ENV.renderer  # "tiny" (CPU) or "egl" (GPU machines); frames differ slightly between them
    substeps: int | None = None  # physics steps per action; None: the environment's default
    camera: str = DEFAULT_ENV.camera  # the policy's viewpoint, a name from robocds.envs.suite.CAMERAS
    description: str = ""  # free text: why the dataset looks the way it does
    # Named sets of the recipe's tasks that reports aggregate over (e.g. borrowers vs controls); they do
    # not change the data, so they are not part of the fingerprint.
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r}: must be a non-empty string")
        if not self.tasks:
            raise ValueError("tasks=(): a recipe needs at least one task")
        names = [task.task for task in self.tasks]
        duplicates = repeated(names)
        if duplicates:
            raise ValueError(f"tasks: {duplicates[0]!r} is listed more than once")
        for name in ("base_seed", "image_size", "max_steps", "episodes_per_shard"):
            value = getattr(self, name)
            low = 0 if name == "base_seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: must be an int >= {low}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size={self.image_size}: the camera renders frames of >= {MIN_IMAGE_SIZE} pixels")
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer={self.renderer!r}: must be one of {RENDERERS}")
        if self.substeps is not None and (not isinstance(self.substeps, int) or self.substeps < 1):
            raise ValueError(f"substeps={self.substeps!r}: must be an int >= 1 or null")
        self.env  # noqa: B018 - EnvSettings checks the settings together (e.g. the camera's smallest image)
        self._check_groups()

    def _check_groups(self) -> None:
        if not isinstance(self.groups, dict):
            raise ValueError(f"groups={self.groups!r}: must be a mapping of group name -> list of task names")
        for group, tasks in self.groups.items():
            if not isinstance(group, str) or not GROUP_NAME.fullmatch(group):
                raise ValueError(f"groups: name {group!r} must be letters, digits, '_' or '-' (it names report files)")
            if not isinstance(tasks, tuple) or not tasks or not all(isinstance(t, str) for t in tasks):
                raise ValueError(f"groups.{group}={tasks!r}: must be a non-empty list of task names")
            for task in tasks:
                if task not in self.task_names:
                    raise ValueError(
                        f"groups.{group}: task {task!r} is not in this recipe (its tasks: {', '.join(self.task_names)})"
                    )
            if len(set(tasks)) != len(tasks):
                raise ValueError(f"groups.{group}: a task is listed more than once ({', '.join(tasks)})")

    @property
    def env(self) -> EnvSettings:
        """The env settings every episode is recorded with (what the manifest and checkpoints carry)."""
        substeps = DEFAULT_ENV.substeps if self.substeps is None else self.substeps
        return EnvSettings(
            image_size=self.image_size,
            max_steps=self.max_steps,
            substeps=substeps,
            renderer=self.renderer,
            camera=self.camera,
        )

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.task for task in self.tasks)

    @property
    def total_episodes(self) -> int:
        return sum(task.episodes for task in self.tasks)

    def task(self, name: str) -> TaskRecipe:
        for task in self.tasks:
            if task.task == name:
                return task
        raise ValueError(f"task {name!r} is not in recipe {self.name!r}")

    def num_shards(self, task: str) -> int:
        return -(-self.task(task).episodes // self.episodes_per_shard)

    def to_json_dict(self) -> dict[str, Any]:
        """Canonical JSON form (tasks as a mapping, like the YAML; ``components`` only for mixtures and
        ``groups`` only when there are some, and ``camera`` only when it is not ``front``, so a recipe
        without them keeps the form, and the fingerprint, it had before they existed)."""
        out = asdict(self)
        if not self.groups:
            del out["groups"]
        if self.camera == "front":  # the only camera before recipes named one
            del out["camera"]
        out["tasks"] = {}
        for task in self.tasks:
            entry = {k: v for k, v in asdict(task).items() if k not in ("task", "components")}
            if task.components:
                entry = {"episodes": task.episodes, "components": [asdict(c) for c in task.components]}
            out["tasks"][task.task] = entry
        return out

    def fingerprint(self) -> str:
        """sha256 of everything that determines the data (not the name, description or groups)."""
        data = self.to_json_dict()
        del data["name"], data["description"]
        data.pop("groups", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def with_overrides(self, **changes: Any) -> Recipe:
        """A copy with top-level settings changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def recipe_from_dict(data: Any, source: str = "<recipe>") -> Recipe:
    """Build a ``Recipe`` from parsed YAML/JSON; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise DatasetError(f"expected a mapping, got {type(data).__name__}", source)
    known = {f.name for f in fields(Recipe)}
    for key in data:
        if key not in known:
            raise DatasetError(f"unknown field; known fields: {', '.join(sorted(known))}", source, field=str(key))
    tasks_data = data.get("tasks")
    if not isinstance(tasks_data, dict) or not tasks_data:
        raise DatasetError("expected a non-empty mapping of task name -> {episodes: ...}", source, field="tasks")
    task_known = {f.name for f in fields(TaskRecipe)} - {"task"}
    tasks = []
    for name, spec in tasks_data.items():
        where = f"tasks.{name}"
        if not isinstance(spec, dict):
            raise DatasetError(f"expected a mapping like {{episodes: 10}}, got {spec!r}", source, field=where)
        for key in spec:
            if key not in task_known:
                raise DatasetError(
                    f"unknown field; known: {', '.join(sorted(task_known))}", source, field=f"{where}.{key}"
                )
        spec = dict(spec)
        if "components" in spec:
            spec["components"] = _components_from_list(spec["components"], source, f"{where}.components")
            spec.setdefault("episodes", sum(c.episodes for c in spec["components"]))
        try:
            tasks.append(TaskRecipe(task=str(name), **spec))
        except (TypeError, ValueError) as err:
            raise DatasetError(str(err), source, field=where) from None
    groups = data.get("groups", {})
    if isinstance(groups, dict):  # lists (YAML, JSON) -> tuples; anything else is refused by Recipe
        groups = {name: tuple(tasks) if isinstance(tasks, list) else tasks for name, tasks in groups.items()}
    try:
        return Recipe(**{**data, "tasks": tuple(tasks), "groups": groups})
    except (TypeError, ValueError) as err:
        raise DatasetError(str(err), source) from None


def _components_from_list(data: Any, source: str, where: str) -> tuple[NoiseComponent, ...]:
    if not isinstance(data, list) or not data:
        example = "[{episodes: 10, random_action_prob: 0.5}]"
        raise DatasetError(f"expected a non-empty list like {example}, got {data!r}", source, field=where)
    known = {f.name for f in fields(NoiseComponent)}
    components = []
    for index, spec in enumerate(data):
        here = f"{where}[{index}]"
        if not isinstance(spec, dict):
            raise DatasetError(f"expected a mapping like {{episodes: 10}}, got {spec!r}", source, field=here)
        for key in spec:
            if key not in known:
                raise DatasetError(f"unknown field; known: {', '.join(sorted(known))}", source, field=f"{here}.{key}")
        try:
            components.append(NoiseComponent(**spec))
        except (TypeError, ValueError) as err:
            raise DatasetError(str(err), source, field=here) from None
    return tuple(components)


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    folder = resources.files("robocds.datasets") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(path_or_name: str | Path) -> Recipe:
    """Read a recipe from a YAML file, or a packaged recipe by name (``tiny``, ``benchmark``)."""
    path = Path(path_or_name)
    if path.is_file():
        text, source = path.read_text(), str(path)
    else:
        resource = resources.files("robocds.datasets") / "recipes" / f"{path_or_name}.yaml"
        if not resource.is_file():
            raise DatasetError(
                f"no such file, and not a packaged recipe (packaged: {', '.join(packaged_recipes())})",
                str(path_or_name),
            )
        text, source = resource.read_text(), f"recipes/{path_or_name}.yaml"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DatasetError(f"invalid YAML: {err}", source) from None
    return recipe_from_dict(data, source)
