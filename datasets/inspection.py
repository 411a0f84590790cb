"""``robocds-inspect <root>``: verify a dataset against its manifest, print statistics, write a contact sheet and video.

    robocds-inspect data/tiny
    robocds-inspect data/benchmark --out inspect/ --episodes lift-cube:0 place-cube-blue:3 --frames 10

Exit status 0 when the dataset verifies; when it does not, one line naming the shard, sample key and
field, and exit status 2 (like every user error, see ``robocds.errors``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import cv2
import numpy as np

from robocds.datasets.episode import Episode
from robocds.datasets.manifest import TaskStats, read_manifest, verify_dataset
from robocds.datasets.recipe import recipe_from_dict
from robocds.datasets.replay import load_task_episodes
from robocds.datasets.schema import Manifest
from robocds.datasets.storage import is_url, local_path
from robocds.envs.actions import ACTION_NAMES
from robocds.envs.media import label, upscale, write_png, write_video
from robocds.errors import ConfigError, int_at_least, output_dir, run_cli

LABEL_WIDTH = 150  # pixels of task-name margin on the contact sheet


def format_stats(manifest: Manifest, stats: dict[str, TaskStats]) -> str:
    """A plain-text table: per task, episodes, transitions, success rate, return, length, action histogram."""
    header = f"{'task':<24}{'episodes':>9}{'transitions':>12}{'success':>9}{'return':>8}{'length':>8}"
    header += "  noise (p, std)"
    lines = [
        f"dataset {manifest.name!r}: {len(manifest.tasks)} tasks, {manifest.image_size}x{manifest.image_size} "
        f"images, {manifest.num_actions} actions, schema v{manifest.schema_version}",
        header,
        "-" * len(header),
    ]
    for task in manifest.tasks:
        s = stats[task.name]
        lines.append(
            f"{task.name:<24}{len(s.lengths):>9}{sum(s.lengths):>12}{np.mean(s.successes):>9.2f}"
            f"{np.mean(s.returns):>8.2f}{np.mean(s.lengths):>8.1f}"
            f"  ({task.random_action_prob:g}, {task.position_std:g})"
        )
    lines += component_lines(manifest, stats)
    lines += ["", "action histogram (fraction of each task's actions)"]
    lines.append(f"{'task':<24}" + "".join(f"{a:>7}" for a in ACTION_NAMES))
    for task in manifest.tasks:
        counts = stats[task.name].action_counts
        fractions = counts / max(1, counts.sum())
        lines.append(f"{task.name:<24}" + "".join(f"{f:>7.2f}" for f in fractions))
    return "\n".join(lines)


def component_lines(manifest: Manifest, stats: dict[str, TaskStats]) -> list[str]:
    """Success per noise component of every task recorded as a mixture (none for single-level tasks)."""
    recipe = recipe_from_dict(manifest.recipe, "manifest.json:recipe")
    lines = []
    for task in manifest.tasks:
        mixture = recipe.task(task.name).mixture()
        if len(mixture) < 2:
            continue
        s = stats[task.name]
        by_component: list[list[bool]] = [[] for _ in mixture]
        for episode, success in zip(s.episodes, s.successes):
            by_component[recipe.task(task.name).component_of(episode)].append(success)
        lines += ["", f"{task.name}: success per noise component (in episode order)"]
        first = 0
        for k, (component, successes) in enumerate(zip(mixture, by_component)):
            last = first + component.episodes - 1
            lines.append(
                f"  {k}: episodes {first}-{last}, noise ({component.random_action_prob:g}, "
                f"{component.position_std:g}): success {np.mean(successes):.2f} of {len(successes)}"
            )
            first = last + 1
    return lines


def parse_episode_refs(refs: Sequence[str], manifest: Manifest) -> list[tuple[str, int]]:
    """'task:index' strings -> (task, index), checked against the manifest; default: episode 0 of every task."""
    if not refs:
        return [(task, 0) for task in manifest.task_names]
    out = []
    for ref in refs:
        task, sep, index = ref.rpartition(":")
        if not sep or not index.isdigit():
            raise ConfigError(f"--episodes {ref!r}: expected TASK:INDEX, e.g. lift-cube:0")
        try:
            entry = manifest.task(task)
        except ValueError as err:
            raise ConfigError(f"--episodes {ref!r}: {err}") from None
        if int(index) >= entry.episodes:
            raise ConfigError(f"--episodes {ref!r}: task {task} has episodes 0..{entry.episodes - 1}")
        out.append((task, int(index)))
    return out


def load_episodes(root: str, manifest: Manifest, refs: list[tuple[str, int]]) -> list[Episode]:
    episodes = []
    for task, index in refs:
        episodes += load_task_episodes(root, manifest, task, range(index, index + 1))
    return episodes


def _label(text: str, height: int, width: int) -> np.ndarray:
    panel = np.zeros((height, width, 3), dtype=np.uint8)
    scale = 0.4
    for i, line in enumerate(text.split("\n")):
        cv2.putText(panel, line, (4, 14 + 14 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def episode_strips(episodes: list[Episode], frames_per_row: int = 8, cell: int = 96) -> np.ndarray:
    """One row per episode: a label, then ``frames_per_row`` frames spread over the episode. uint8 [H, W, 3]."""
    rows = []
    for episode in episodes:
        picks = np.unique(np.linspace(0, episode.length, frames_per_row).round().astype(int))
        frames = np.ascontiguousarray(episode.frames)  # OpenCV wants contiguous arrays
        tiles = [upscale(frames[i], cell) for i in picks]
        tiles += [np.zeros((cell, cell, 3), np.uint8)] * (frames_per_row - len(tiles))
        outcome = "success" if episode.meta.success else "failure"
        text = f"{episode.meta.task}\nepisode {episode.meta.episode}\n{episode.length} steps, {outcome}"
        gap = np.full((cell, 2, 3), 40, np.uint8)
        row = [_label(text, cell, LABEL_WIDTH)]
        for tile in tiles:
            row += [gap, tile]
        rows.append(np.concatenate(row, axis=1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 40, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def episode_video_frames(episodes: list[Episode], size: int = 256) -> list[np.ndarray]:
    """Every frame of every episode, upscaled to ``size`` and captioned with task, episode and step."""
    out = []
    for episode in episodes:
        for t, frame in enumerate(np.ascontiguousarray(episode.frames)):
            caption = f"{episode.meta.task} #{episode.meta.episode} t={t}/{episode.length}"
            out.append(label(upscale(frame, size), caption))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robocds-inspect", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("root", help="dataset folder (or URL) holding manifest.json")
    parser.add_argument("--out", help="folder for contact_sheet.png and episodes.mp4 (default: <root>/inspect)")
    parser.add_argument(
        "--episodes", nargs="*", default=[], help="TASK:INDEX episodes to show (default: episode 0 of each task)"
    )
    parser.add_argument("--frames", type=int_at_least(2), default=8, help="frames per episode on the contact sheet")
    parser.add_argument("--no-media", action="store_true", help="verify and print statistics only")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = None
    if not args.no_media:
        if args.out is None and is_url(args.root):
            raise ConfigError(f"--out: required for a URL dataset ({args.root})")
        out = output_dir(args.out if args.out else local_path(args.root) / "inspect")
    manifest = read_manifest(args.root)
    refs = parse_episode_refs(args.episodes, manifest)  # bad references fail before the long verification
    stats = verify_dataset(args.root, manifest, progress=not args.no_progress)
    print(format_stats(manifest, stats))
    n_shards = sum(len(t.shards) for t in manifest.tasks)
    print(f"\nOK: {n_shards} shards match the manifest (counts, sizes, sha256, schema v{manifest.schema_version})")
    if out is None:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    episodes = load_episodes(args.root, manifest, refs)
    write_png(out / "contact_sheet.png", episode_strips(episodes, args.frames))
    write_video(out / "episodes.mp4", episode_video_frames(episodes), fps=8)
    print(f"wrote {out / 'contact_sheet.png'} and {out / 'episodes.mp4'} ({len(episodes)} episodes)")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-inspect``)."""
    run_cli(main, "robocds-inspect")


if __name__ == "__main__":
    cli()
