"""One recorded episode: recording it from the env, encoding it as a sample and decoding (validating) it.

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
from robocds.envs.env import INFO_TASK_REWARDS, INFO_TASK_SUCCESSES, ManipulationEnv
from robocds.envs.seeds import data_episode_seed
from robocds.envs.tasks import TASK_NAMES, OracleNoise, ScriptedOracle, get_task, task_index

PNG_COMPRESSION = 3  # zlib level: 3 is ~2x faster to write than 9 for a few % more bytes
ORACLE_STREAM = 1  # mixes into the oracle's seed so its noise is independent of the scene's RNG


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


def oracle_seed(episode_seed: int) -> int:
    """Seed of the oracle's noise for the episode reset with ``episode_seed``."""
    return int(np.random.SeedSequence([episode_seed, ORACLE_STREAM]).generate_state(1, np.uint32)[0])


def record_episode(env: ManipulationEnv, noise: OracleNoise, base_seed: int, episode: int) -> Episode:
    """Play episode ``episode`` of ``env``'s task with a scripted oracle of the given noise.

    The episode is a pure function of (task, noise, base_seed, episode) and the env settings: the
    reset seed comes from ``data_episode_seed`` and the oracle gets a fresh RNG derived from it.
    """
    task = env.task.name
    seed = data_episode_seed(base_seed, task_index(task), episode)
    o_seed = oracle_seed(seed)
    oracle = ScriptedOracle(get_task(task), noise, seed=o_seed)
    obs, _ = env.reset(seed=seed)
    oracle.reset()
    frames, proprio = [obs["image"]], [obs["proprio"]]
    actions, rewards, successes, terminated, truncated = [], [], [], [], []
    done = False
    while not done:
        action = oracle.act(env)
        obs, _, term, trunc, info = env.step(action)
        frames.append(obs["image"])
        proprio.append(obs["proprio"])
        actions.append(action)
        rewards.append(info[INFO_TASK_REWARDS])
        successes.append(info[INFO_TASK_SUCCESSES])
        terminated.append(term)
        truncated.append(trunc)
        done = term or trunc
    own = task_index(task)
    task_rewards = np.asarray(rewards, dtype=np.float32)
    meta = EpisodeMeta(
        schema_version=SCHEMA_VERSION,
        task=task,
        episode=episode,
        seed=seed,
        oracle_seed=o_seed,
        random_action_prob=float(noise.random_action_prob),
        position_std=float(noise.position_std),
        length=len(actions),
        success=bool(terminated[-1]),
        episode_return=float(task_rewards[:, own].sum()),
        image_size=int(frames[0].shape[0]),
        reward_tasks=TASK_NAMES,
    )
    return Episode(
        frames=np.stack(frames).astype(np.uint8, copy=False),
        proprio=np.stack(proprio).astype(np.float32, copy=False),
        actions=np.asarray(actions, dtype=np.int64),
        task_rewards=task_rewards,
        task_successes=np.asarray(successes, dtype=bool),
        terminated=np.asarray(terminated, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        meta=meta,
    )


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
    check_sample_keys(sample, source, key)
    try:
        meta_json = json.loads(sample[KEY_META])
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(f"not valid JSON ({err})", source, key, KEY_META) from None
    meta = EpisodeMeta.from_json_dict(meta_json, source, key)

    def bad(field: str, problem: str) -> DatasetError:
        return DatasetError(problem, source, key, field)

    if meta.schema_version != SCHEMA_VERSION:
        raise bad(f"{KEY_META}:schema_version", f"{meta.schema_version}, this reader supports {SCHEMA_VERSION}")
    try:
        get_task(meta.task)
    except ValueError as err:
        raise bad(f"{KEY_META}:task", str(err)) from None
    if expected_task is not None and meta.task != expected_task:
        raise bad(f"{KEY_META}:task", f"{meta.task!r} in the shard set of task {expected_task!r}")
    for name in meta.reward_tasks:
        try:
            get_task(name)
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
