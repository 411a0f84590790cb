"""Roll a policy out in the simulated arm: per-episode records, success rates with intervals, videos.

    robocds-eval --checkpoint runs/cds/checkpoints/last.ckpt --episodes 50 --out runs/cds/eval

Output folder:

- ``summary.json``: settings, per-task success rate with its 95% Wilson interval, the average, and
  one record per episode (see ``EpisodeRecord``);
- ``results.md``: the per-task table in Markdown;
- ``videos/<task>-<episode>-<success|failure>.mp4``: the first few episodes of every task, 256x256 from
  the viewer camera with the policy's own frame inset and the task, step, action and outcome written on it.

The env is rebuilt from the settings the checkpoint carries (those of the data it was trained on);
a command-line setting that contradicts them is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from robocds.envs.actions import ACTION_NAMES
from robocds.envs.media import overlay, write_video
from robocds.envs.seeds import EVAL_SEED_START, SEED_END, eval_episode_seed
from robocds.envs.suite import CAMERAS, DEFAULT_ENV, RENDERERS, TASK_NAMES, EnvSettings, check_task
from robocds.errors import ConfigError, int_at_least, output_dir, run_cli
from robocds.eval.markdown import markdown_table
from robocds.eval.policy import ModulePolicy, OraclePolicy, Policy, RandomPolicy, load_checkpoint_policy
from robocds.eval.stats import wilson_interval
from robocds.eval.workers import ORACLE_ACTION, WorkerPool
from robocds.files import write_text_atomic
from robocds.threads import POLICY_THREADS

SUMMARY_FILE = "summary.json"
TABLE_FILE = "results.md"


@dataclass
class EpisodeRecord:
    """One evaluation episode."""

    task: str
    episode: int  # index within the task, 0-based
    seed: int  # env seed, from the evaluation range (never a dataset seed)
    success: bool
    episode_return: float  # sum of rewards (0 or 1: rewards are sparse and the episode ends on success)
    length: int  # steps taken
    error: str | None = None  # why the episode failed early (env error, simulation blow-up, dead worker)


@dataclass
class EpisodeFrames:
    """What a recorded episode's video is made of: L+1 states and the L actions taken."""

    images: list[np.ndarray] = field(default_factory=list)  # the policy's frames, uint8 [H, W, 3]
    views: list[np.ndarray] = field(default_factory=list)  # the viewer camera's frames, uint8 [256, 256, 3]
    actions: list[int] = field(default_factory=list)

    def add(self, obs: dict, view: np.ndarray | None) -> None:
        self.images.append(obs["image"])
        self.views.append(view)


@dataclass
class _Running:
    record: EpisodeRecord
    obs: dict
    frames: EpisodeFrames | None = None  # kept for the episodes that get a video


@dataclass
class TaskResult:
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_return: float
    mean_length: float
    errors: int


def rollout(
    policy: Policy,
    tasks: Sequence[str],
    episodes: int,
    workers: int = 0,
    settings: EnvSettings = EnvSettings(),
    base_seed: int = 0,
    videos_per_task: int = 0,
    progress: bool = True,
    envs_per_worker: int = 4,
) -> tuple[list[EpisodeRecord], dict[tuple[str, int], EpisodeFrames]]:
    """Play ``episodes`` episodes of every task; return records and the frames of the recorded ones.

    Episodes run concurrently, ``envs_per_worker`` per worker; the policy acts on all of them in one
    batch per step.
    """
    for task in tasks:
        check_task(task)
        if task not in policy.task_names:
            raise ValueError(f"task {task!r}: the policy knows only {list(policy.task_names)}")
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: must be >= 1")
    jobs = deque((task, e) for e in range(episodes) for task in tasks)  # interleaved: early results cover all tasks
    records: list[EpisodeRecord] = []
    videos: dict[tuple[str, int], EpisodeFrames] = {}
    with (
        WorkerPool(workers, settings, envs_per_worker) as pool,
        tqdm(total=len(jobs), desc="evaluation", unit="ep", disable=None if progress else True) as bar,
    ):
        running: dict[int, _Running] = {}

        def finish(slot: int, error: str | None = None) -> None:
            run = running.pop(slot)
            run.record.error = error
            records.append(run.record)
            if run.frames is not None:
                videos[(run.record.task, run.record.episode)] = run.frames
            bar.update()
            bar.set_postfix(success=f"{np.mean([r.success for r in records]):.0%}")

        while jobs or running:
            resets = {}
            for slot in range(len(pool)):
                if slot in running or not jobs:
                    continue
                task, episode = jobs.popleft()
                seed = eval_episode_seed(base_seed, TASK_NAMES.index(task), episode)
                record = EpisodeRecord(task, episode, seed, False, 0.0, 0)
                record_video = episode < videos_per_task
                running[slot] = _Running(record, {}, EpisodeFrames() if record_video else None)
                resets[slot] = ("reset", task, seed, record_video)
            for slot, (status, payload) in pool.exchange(resets).items():
                if status == "error":
                    finish(slot, payload)
                    continue
                running[slot].obs, view = payload
                if running[slot].frames is not None:
                    running[slot].frames.add(running[slot].obs, view)
            if not running:
                continue
            slots = sorted(running)
            if policy.runs_in_worker:
                actions = [ORACLE_ACTION] * len(slots)
            else:
                images = np.stack([running[s].obs["image"] for s in slots])
                proprio = np.stack([running[s].obs["proprio"] for s in slots])
                actions = [int(a) for a in policy.act(images, proprio, [running[s].record.task for s in slots])]
            policy_actions = {slot: action for slot, action in zip(slots, actions) if action is not ORACLE_ACTION}
            replies = pool.exchange({slot: ("step", action) for slot, action in zip(slots, actions)})
            for slot, (status, payload) in replies.items():
                if status == "error":
                    finish(slot, payload)
                    continue
                obs, reward, terminated, truncated, view = payload
                run = running[slot]
                run.obs = obs
                run.record.length += 1
                run.record.episode_return += float(reward)
                if run.frames is not None:
                    run.frames.actions.append(int(policy_actions.get(slot, -1)))
                    run.frames.add(obs, view)
                if terminated or truncated:
                    run.record.success = bool(terminated)
                    finish(slot)
    records.sort(key=lambda r: (tasks.index(r.task), r.episode))
    return records, videos


def summarize(records: Sequence[EpisodeRecord], tasks: Sequence[str]) -> dict[str, TaskResult]:
    """Per task: success rate with its 95% Wilson interval, mean return and length, error count."""
    results = {}
    for task in tasks:
        mine = [r for r in records if r.task == task]
        wins = sum(r.success for r in mine)
        results[task] = TaskResult(
            episodes=len(mine),
            successes=wins,
            success_rate=wins / len(mine) if mine else 0.0,
            ci95=wilson_interval(wins, len(mine)),
            mean_return=float(np.mean([r.episode_return for r in mine])) if mine else 0.0,
            mean_length=float(np.mean([r.length for r in mine])) if mine else 0.0,
            errors=sum(r.error is not None for r in mine),
        )
    return results


def results_table(results: dict[str, TaskResult]) -> str:
    """The per-task results in Markdown: success, its 95% Wilson interval, episodes, mean length, errors."""
    rows = [
        [
            task,
            f"{r.success_rate:.1%}",
            f"[{r.ci95[0]:.1%}, {r.ci95[1]:.1%}]",
            r.episodes,
            f"{r.mean_length:.1f}",
            r.errors,
        ]
        for task, r in results.items()
    ]
    average = float(np.mean([r.success_rate for r in results.values()]))
    rows.append(["**average**", f"**{average:.1%}**", "", sum(r.episodes for r in results.values()), "", ""])
    header = ["task", "success", "95% interval", "episodes", "mean length", "errors"]
    return markdown_table(header, rows) + "\n"


def evaluate(
    policy: Policy,
    out_dir: str | Path,
    tasks: Sequence[str] | None = None,
    episodes: int = 50,
    workers: int = 0,
    settings: EnvSettings = EnvSettings(),
    base_seed: int = 0,
    videos_per_task: int = 2,
    label_: str | None = None,
    progress: bool = True,
    envs_per_worker: int = 4,
) -> dict:
    """Roll ``policy`` out and write ``summary.json``, ``results.md`` and videos into ``out_dir``."""
    tasks = list(tasks or policy.task_names)
    start = time.perf_counter()
    records, videos = rollout(
        policy, tasks, episodes, workers, settings, base_seed, videos_per_task, progress, envs_per_worker
    )
    wall = time.perf_counter() - start
    results = summarize(records, tasks)
    out = Path(out_dir)
    for (task, episode), frames in videos.items():
        success = next(r.success for r in records if r.task == task and r.episode == episode)
        outcome = "success" if success else "failure"
        write_video(
            out / "videos" / f"{task}-{episode:03d}-{outcome}.mp4",
            video_frames(task, frames, success, settings.max_steps),
        )
    errors = sum(r.error is not None for r in records)
    summary = {
        "label": label_ or policy.name,
        "policy": policy.name,
        "tasks": tasks,
        "episodes_per_task": episodes,
        "base_seed": base_seed,
        "seed_range": [EVAL_SEED_START, SEED_END],
        "env": asdict(settings),
        "workers": workers,
        "envs_per_worker": envs_per_worker,
        "device": str(getattr(policy, "device", "cpu")),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "wall_time_s": round(wall, 2),
        "episodes_per_s": round(len(records) / wall, 3) if wall > 0 else None,
        "errors": errors,
        "average_success": float(np.mean([r.success_rate for r in results.values()])),
        "per_task": {task: asdict(r) for task, r in results.items()},
        "episodes": [asdict(r) for r in records],
    }
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    write_text_atomic(out / TABLE_FILE, f"# Evaluation: {summary['label']}\n\n" + results_table(results))
    return summary


def video_frames(task: str, frames: EpisodeFrames, success: bool, max_steps: int) -> list[np.ndarray]:
    """The frames of an episode's video: the viewer camera, the policy's frame inset, and a caption of
    task, step, the action taken from that state, and the outcome (once the episode has ended)."""
    out = []
    last = len(frames.views) - 1
    for t, (view, image) in enumerate(zip(frames.views, frames.images)):
        if t < last:
            action = frames.actions[t]
            status, color = f"action: {ACTION_NAMES[action] if action >= 0 else 'oracle'}", (255, 255, 255)
        elif success:
            status, color = "SUCCESS", (80, 255, 80)
        else:
            status, color = "failure", (255, 110, 110)
        out.append(overlay(view, image, [task, f"step {t}/{max_steps}", status], color))
    return out


def resolve_settings(
    policy: Policy,
    data: str | None,
    image_size: int | None,
    max_steps: int | None,
    renderer: str | None,
    camera: str | None = None,
) -> EnvSettings:
    """The env to evaluate in: a checkpoint's own settings, else a dataset's (``--data``), else the defaults.

    Options that contradict the checkpoint's or the dataset's settings are refused (the policy would be
    evaluated on observations it was never trained on); without either, they set the env.
    """
    sources = []
    if isinstance(policy, ModulePolicy):
        sources.append((f"the checkpoint {policy.name}", policy.env))
    if data is not None:
        from robocds.datasets.manifest import read_manifest  # only when asked: reading needs no simulator

        sources.append((f"the dataset {data}", read_manifest(data).env))
    if len(sources) == 2 and sources[0][1] != sources[1][1]:
        raise ConfigError(
            f"{sources[0][0]} was trained in another env than {sources[1][0]} records: "
            + "; ".join(sources[0][1].differences(sources[1][1]))
        )
    base = sources[0][1] if sources else DEFAULT_ENV
    options = {"image_size": image_size, "max_steps": max_steps, "renderer": renderer, "camera": camera}
    given = {name: value for name, value in options.items() if value is not None}
    if sources:
        for name, value in given.items():
            if getattr(base, name) != value:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"{flag} {value} contradicts {sources[0][0]}: its {name} is {getattr(base, name)!r} "
                    "(the settings of its data); drop the option"
                )
        return base
    return dataclasses.replace(base, **given)


def make_policy(checkpoint: str | None, policy: str | None, device: str | None, seed: int) -> Policy:
    if checkpoint:
        return load_checkpoint_policy(checkpoint, device)
    if policy == "oracle":
        return OraclePolicy(TASK_NAMES)
    if policy == "random":
        return RandomPolicy(TASK_NAMES, seed)
    raise ConfigError("--checkpoint / --policy: give --checkpoint, or --policy oracle|random")


def check_tasks(tasks: Sequence[str] | None, policy: Policy) -> list[str]:
    """The tasks to evaluate (default: every task of the policy), each known to the suite and to the policy."""
    for task in tasks or ():
        try:
            check_task(task)
        except ValueError as err:
            raise ConfigError(f"--tasks {task}: {err}") from None
        if task not in policy.task_names:
            raise ConfigError(f"--tasks {task}: the policy knows only {list(policy.task_names)}")
    return list(tasks or policy.task_names)


def check_no_earlier_evaluation(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that holds an earlier evaluation, unless ``overwrite``: then its old videos go (the
    new ones are named by outcome, so an old one could otherwise sit beside the new one of the same episode)."""
    earlier = [name for name in (SUMMARY_FILE, TABLE_FILE) if (out / name).exists()]
    if not earlier:
        return
    if not overwrite:
        raise ConfigError(
            f"--out {str(out)!r}: holds an earlier evaluation ({', '.join(earlier)}); "
            "give --overwrite to replace it, or choose another --out"
        )
    for video in (out / "videos").glob("*.mp4"):
        video.unlink()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robocds-eval", description="Roll a trained policy out in the simulated arm and report success."
    )
    parser.add_argument("--checkpoint", help="a MultiTaskCQL checkpoint (.ckpt); the model is rebuilt from it")
    parser.add_argument("--policy", choices=["oracle", "random"], help="evaluate a reference policy instead")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tasks", nargs="+", help="task names (default: every task the policy knows)")
    parser.add_argument("--episodes", type=int_at_least(1), default=50, help="episodes per task")
    parser.add_argument(
        "--workers", type=int_at_least(0), default=os.cpu_count() or 1, help="env worker processes (0: in-process)"
    )
    parser.add_argument("--envs-per-worker", type=int_at_least(1), default=4, help="concurrent episodes per worker")
    parser.add_argument("--device", help="policy device (default: cuda if available, else cpu)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="base seed of the evaluation episodes")
    parser.add_argument("--videos", type=int_at_least(0), default=2, help="episodes per task to record as mp4")
    parser.add_argument(
        "--data", help="a dataset whose manifest gives the env settings (for --policy; checked against a checkpoint)"
    )
    default = "default: the checkpoint's or --data's setting, else"
    parser.add_argument("--image-size", type=int, help=f"camera resolution ({default} {DEFAULT_ENV.image_size})")
    parser.add_argument("--max-steps", type=int, help=f"horizon ({default} {DEFAULT_ENV.max_steps})")
    parser.add_argument("--renderer", choices=RENDERERS, help=f"{default} {DEFAULT_ENV.renderer}")
    parser.add_argument(
        "--camera", choices=tuple(CAMERAS), help=f"the policy's viewpoint ({default} {DEFAULT_ENV.camera})"
    )
    parser.add_argument("--label", help="name of this run in reports (default: the policy's name)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an earlier evaluation in --out ({SUMMARY_FILE}, {TABLE_FILE}, videos); without it, refused",
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=POLICY_THREADS,
        help="torch threads of the policy (this) process; env workers use 1 each",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Everything is checked before the first rollout: output folder, policy (checkpoint), tasks, env settings.
    out = output_dir(args.out)
    check_no_earlier_evaluation(out, args.overwrite)
    if args.checkpoint and args.policy:
        raise ConfigError("--checkpoint / --policy: give one of them, not both")
    torch.set_num_threads(args.threads)
    policy = make_policy(args.checkpoint, args.policy, args.device, args.seed)
    tasks = check_tasks(args.tasks, policy)
    settings = resolve_settings(policy, args.data, args.image_size, args.max_steps, args.renderer, args.camera)
    summary = evaluate(
        policy,
        out,
        tasks,
        args.episodes,
        args.workers,
        settings,
        args.seed,
        args.videos,
        args.label,
        envs_per_worker=args.envs_per_worker,
    )
    print(Path(out, TABLE_FILE).read_text())
    if summary["errors"]:
        print(f"{summary['errors']} episode(s) ended in an error, counted as failures; reasons in summary.json")
    print(f"outputs: {out}/{SUMMARY_FILE}, {out}/{TABLE_FILE}, {out}/videos/")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-eval``)."""
    run_cli(main, "robocds-eval")


if __name__ == "__main__":
    cli()
