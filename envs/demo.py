"""Watch the suite: run the scripted oracle on tasks and write videos and a contact sheet.

robocds-demo --out outputs/demo --episodes 1
"""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from robocds.envs.env import ManipulationEnv
from robocds.envs.media import frame_grid, label, write_png, write_video
from robocds.envs.rollout import play_oracle_episode
from robocds.envs.seeds import eval_episode_seed
from robocds.envs.suite import MIN_IMAGE_SIZE
from robocds.envs.tasks import TASK_NAMES, OracleNoise, ScriptedOracle, get_task
from robocds.errors import ConfigError, int_at_least, output_dir, run_cli

SHEET_COLUMNS = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="robocds-demo", description="Run the scripted oracles and write videos and a contact sheet."
    )
    parser.add_argument("--out", default="outputs/demo", help="output folder")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), help="task names (default: all)")
    parser.add_argument("--episodes", type=int_at_least(1), default=1, help="episodes per task")
    parser.add_argument(
        "--image-size", type=int_at_least(MIN_IMAGE_SIZE), default=128, help="camera resolution of the demo"
    )
    parser.add_argument("--random-action-prob", type=float, default=0.0, help="oracle noise: random action rate")
    parser.add_argument("--position-std", type=float, default=0.0, help="oracle noise: xy error std (metres)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="base seed (episodes use evaluation seeds)")
    args = parser.parse_args(argv)
    # Everything is checked before simulating anything.
    for name in args.tasks:
        try:
            get_task(name)
        except ValueError as err:
            raise ConfigError(f"--tasks {name}: {err}") from None
    try:
        noise = OracleNoise(args.random_action_prob, args.position_std)
    except ValueError as err:
        raise ConfigError(f"oracle noise: {err}") from None
    out = output_dir(args.out)
    rows, records = [], []
    with tqdm(total=len(args.tasks) * args.episodes, desc="oracle episodes", unit="ep", disable=None) as bar:
        for name in args.tasks:
            env = ManipulationEnv(name, image_size=args.image_size)
            oracle = ScriptedOracle(get_task(name), noise, seed=args.seed)
            for episode in range(args.episodes):
                seed = eval_episode_seed(args.seed, TASK_NAMES.index(name), episode)
                episode = play_oracle_episode(env, oracle, seed, keep=True)
                frames, success, steps = episode.frames, episode.success, episode.length
                tag = f"{name} {'success' if success else 'failure'}"
                write_video(out / "videos" / f"{name}-{episode:03d}.mp4", [label(f, tag) for f in frames])
                stride = max(1, len(frames) // SHEET_COLUMNS)
                rows.append(
                    [label(f, f"{name} t={i * stride}") for i, f in enumerate(frames[::stride][:SHEET_COLUMNS])]
                )
                records.append({"task": name, "seed": seed, "success": success, "length": steps})
                bar.update()
            env.close()
    write_png(out / "contact_sheet.png", frame_grid(rows))
    (out / "episodes.json").write_text(json.dumps(records, indent=2))
    for record in records:
        print(
            f"{record['task']:<24} seed {record['seed']:>10}  {'success' if record['success'] else 'failure'}"
            f"  in {record['length']} steps"
        )
    print(f"videos: {out / 'videos'}  contact sheet: {out / 'contact_sheet.png'}  records: {out / 'episodes.json'}")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-demo``)."""
    run_cli(main, "robocds-demo")


if __name__ == "__main__":
    cli()
