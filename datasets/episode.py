"""One recorded episode: its arrays, encoding it as a sample and decoding (validating) it.

Recording an episode in the simulator lives in ``robocds.datasets.recording`` (generation only): this
module, like every reader, never loads the simulator.

``decode_episode`` is the single gate every reader goes through (in-memory loader, streaming
loader, inspection): it rejects anything that does not match ``robocds.datasets.schema`` with a
``DatasetError`` naming the shard, the sample key and the field.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import cv2
import numpy as np

from robocds.datasets.errors import DatasetError
from robocds.datasets.schema import (
    ARRAY_SPECS,
    KEY_ACTIONS,
    KEY_FRAMES,
    KEY_META,
    KEY_PROPRIO,
    KEY_TASK_REWARDS,
    KEY_TASK_SUCCESSES,
    KEY_TERMINATED,
    KEY_TRUNCATED,
    SAMPLE_KEYS,
    SCHEMA_VERSION,
    UNSAFE_SUFFIXES,
    EpisodeMeta,
    episode_key,
)
from robocds.envs.actions import NUM_ACTIONS
from robocds.envs.suite import check_task

PNG_COMPRESSION = 3  # zlib level: 3 is ~2x faster to write than 9 for a few % more bytes


@dataclass
class Episode:
    """Arrays of one episode (L steps, L+1 states); see ``robocds.datasets.schema`` for the layout."""

    frames: np.ndarray  # uint8 [L+1, S, S, 3] RGB (after decoding: a view, not necessarily contiguous)
    proprio: np.ndarray  # float32 [L+1, P]
    actions: np.ndarray  # int64 [L]
    task_rewards: np.ndarray  # float32 [L, R]
    task_successes: np.ndarray  # bool [L, R]
    terminated: np.ndarray  # bool [L]
    truncated: np.ndarray  # bool [L]
    meta: EpisodeMeta

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def key(self) -> str:
        return episode_key(self.meta.task, self.meta.episode)

    def returns_positive(self, columns: list[int]) -> np.ndarray:
        """float32 [len(columns)]: 1 where the episode's return for that reward column is > 0 (it holds a
        success of that task: the reward is 1 exactly when the task is solved), else 0."""
        return (self.task_rewards[:, columns].sum(axis=0) > 0).astype(np.float32)

    def steps_to_success(self, columns: list[int]) -> np.ndarray:
        """float32 [L, len(columns)]: for step t and each task column, the steps after t until the task is first
        solved (0 when step t's next state solves it), +inf when no state after t solves it."""
        solved = self.task_successes[:, columns]
        steps = np.empty(solved.shape, dtype=np.float32)
        following = np.full(solved.shape[1], np.inf, dtype=np.float32)
        for t in range(self.length - 1, -1, -1):  # backwards: each step is one more than the next, or 0
            following = np.where(solved[t], 0.0, following + 1.0).astype(np.float32)
            steps[t] = following
        return steps

    def bootstrap_steps(self, n_step: int) -> np.ndarray:
        """int64 [L]: steps from step t's observation to the one an ``n_step`` target bootstraps from, n_step
        or fewer where the episode ends first (frame L, its last)."""
        check_n_step(n_step)
        return np.minimum(n_step, self.length - np.arange(self.length, dtype=np.int64))


def check_n_step(n_step: int) -> None:
    """ValueError naming ``n_step`` unless it is an int >= 1 (how far a transition's target frame may lie)."""
    if isinstance(n_step, bool) or not isinstance(n_step, int) or n_step < 1:
        raise ValueError(f"n_step={n_step!r}: must be an int >= 1")


# ----------------------------------------------------------------------------- encoding


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode_frames(frames: np.ndarray) -> bytes:
    """uint8 [N, S, S, 3] RGB -> one PNG of the frames stacked vertically ([N*S, S, 3])."""
    # Channel flip in numpy, not cv2.cvtColor: cvtColor runs on OpenCV's thread pool, and a pool that
    # exists when a DataLoader forks its workers can deadlock them. PNG coding itself is single-threaded.
    bgr = np.ascontiguousarray(frames.reshape(-1, frames.shape[2], 3)[..., ::-1])
    ok, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


def encode_episode(episode: Episode) -> dict[str, bytes | str]:
    """The WebDataset sample of an episode: ``__key__`` plus one bytes value per ``SAMPLE_KEYS`` entry."""
    sample: dict[str, bytes | str] = {
        "__key__": episode.key,
        KEY_FRAMES: encode_frames(episode.frames),
        KEY_PROPRIO: npy_bytes(episode.proprio),
        KEY_ACTIONS: npy_bytes(episode.actions),
        KEY_TASK_REWARDS: npy_bytes(episode.task_rewards),
        KEY_TASK_SUCCESSES: npy_bytes(episode.task_successes),
        KEY_TERMINATED: npy_bytes(episode.terminated),
        KEY_TRUNCATED: npy_bytes(episode.truncated),
        KEY_META: json.dumps(episode.meta.to_json_dict(), sort_keys=True).encode(),
    }
    assert set(sample) - {"__key__"} == set(SAMPLE_KEYS)
    return sample


# ----------------------------------------------------------------------------- decoding


def check_sample_keys(sample: dict, source: str | None, key: str | None) -> None:
    """Exactly ``SAMPLE_KEYS``, and never a member that would need unpickling."""
    for name in sample:
        if name.startswith("__"):
            continue  # WebDataset's own bookkeeping (__key__, __url__, ...)
        if name.rsplit(".", 1)[-1].lower() in UNSAFE_SUFFIXES:
            raise DatasetError("would need unpickling; this reader never unpickles", source, key, name)
        if name not in SAMPLE_KEYS:
            raise DatasetError(f"unexpected key (expected {', '.join(SAMPLE_KEYS)})", source, key, name)
    for name in SAMPLE_KEYS:
        if name not in sample:
            raise DatasetError("missing", source, key, name)


def load_npy(data: bytes, source: str | None, key: str | None, name: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:  # object arrays need pickle: refused here
        raise DatasetError(f"not a plain .npy array ({err})", source, key, name) from None
    except Exception as err:  # noqa: BLE001 - a corrupt header raises many kinds of error
        raise DatasetError(f"unreadable .npy ({type(err).__name__}: {err})", source, key, name) from None


def decode_frames(data: bytes, length: int, image_size: int, source: str | None, key: str | None) -> np.ndarray:
    """PNG strip -> uint8 [L+1, S, S, 3] RGB."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise DatasetError("not a readable PNG", source, key, KEY_FRAMES)
    if image.dtype != np.uint8:
        raise DatasetError(f"dtype {image.dtype}, expected uint8", source, key, KEY_FRAMES)
    expected = ((length + 1) * image_size, image_size, 3)
    if image.shape != expected:
        raise DatasetError(
            f"shape {list(image.shape)}, expected {list(expected)} (L+1={length + 1} RGB frames)",
            source,
            key,
            KEY_FRAMES,
        )
    # BGR -> RGB as a view (see encode_frames for why not cv2.cvtColor): every consumer copies the
    # frames once anyway (into CHW batches or the replay), and that copy does the flip for free.
    return image[..., ::-1].reshape(length + 1, image_size, image_size, 3)


def decode_meta(sample: dict, source: str | None) -> EpisodeMeta:
    """The type-checked ``meta.json`` of a raw sample (whose members are all checked present first)."""
    key = sample.get("__key__")
    check_sample_keys(sample, source, key)
    try:
        meta_json = json.loads(sample[KEY_META])
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(f"not valid JSON ({err})", source, key, KEY_META) from None
    return EpisodeMeta.from_json_dict(meta_json, source, key)


def decode_episode(
    sample: dict,
    source: str | None = None,
    expected_task: str | None = None,
    image_size: int | None = None,
    proprio_dim: int | None = None,
) -> Episode:
    """Decode and validate one raw sample (member suffix -> bytes) into an ``Episode``.

    ``source`` names the shard in errors (defaults to the sample's ``__url__``). ``expected_task``,
    ``image_size`` and ``proprio_dim`` are checked when given (from the manifest / shard folder).
    """
    source = source if source is not None else sample.get("__url__")
    key = sample.get("__key__")
    meta = decode_meta(sample, source)

    def bad(field: str, problem: str) -> DatasetError:
        return DatasetError(problem, source, key, field)

    if meta.schema_version != SCHEMA_VERSION:
        raise bad(f"{KEY_META}:schema_version", f"{meta.schema_version}, this reader supports {SCHEMA_VERSION}")
    try:
        check_task(meta.task)
    except ValueError as err:
        raise bad(f"{KEY_META}:task", str(err)) from None
    if expected_task is not None and meta.task != expected_task:
        raise bad(f"{KEY_META}:task", f"{meta.task!r} in the shard set of task {expected_task!r}")
    for name in meta.reward_tasks:
        try:
            check_task(name)
        except ValueError as err:
            raise bad(f"{KEY_META}:reward_tasks", str(err)) from None
    if meta.length < 1:
        raise bad(f"{KEY_META}:length", f"{meta.length}, must be >= 1")
    if image_size is not None and meta.image_size != image_size:
        raise bad(f"{KEY_META}:image_size", f"{meta.image_size}, the dataset's image size is {image_size}")
    if key is not None and key != episode_key(meta.task, meta.episode):
        raise bad(f"{KEY_META}:episode", f"{meta.episode} does not match the sample key")

    arrays = {}
    for name, spec in ARRAY_SPECS.items():
        array = load_npy(sample[name], source, key, name)
        if array.dtype != spec.dtype:
            raise bad(name, f"dtype {array.dtype}, expected {spec.dtype}")
        dims = dict(zip(spec.shape, array.shape)) if array.ndim == len(spec.shape) else {}
        p = proprio_dim if proprio_dim is not None else dims.get("P", -1)
        expected = spec.expected_shape(meta.length, p, len(meta.reward_tasks))
        if array.shape != expected:
            raise bad(name, f"shape {list(array.shape)}, expected {list(expected)} (L={meta.length})")
        arrays[name] = array

    rewards = arrays[KEY_TASK_REWARDS]
    if not np.isfinite(rewards).all():
        step = int(np.argwhere(~np.isfinite(rewards))[0][0])
        raise bad(KEY_TASK_REWARDS, f"non-finite reward at step {step}")
    if not np.isfinite(arrays[KEY_PROPRIO]).all():
        raise bad(KEY_PROPRIO, "non-finite value")
    actions = arrays[KEY_ACTIONS]
    if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
        raise bad(KEY_ACTIONS, f"values outside [0, {NUM_ACTIONS})")
    for name in (KEY_TERMINATED, KEY_TRUNCATED):
        if arrays[name][:-1].any():
            raise bad(name, "set before the last step")
    if bool(arrays[KEY_TERMINATED][-1]) != meta.success:
        raise bad(f"{KEY_META}:success", f"{meta.success} but terminated[-1] is {bool(arrays[KEY_TERMINATED][-1])}")

    frames = decode_frames(sample[KEY_FRAMES], meta.length, meta.image_size, source, key)
    return Episode(
        frames=frames,
        proprio=arrays[KEY_PROPRIO],
        actions=actions,
        task_rewards=rewards,
        task_successes=arrays[KEY_TASK_SUCCESSES],
        terminated=arrays[KEY_TERMINATED],
        truncated=arrays[KEY_TRUNCATED],
        meta=meta,
    )
