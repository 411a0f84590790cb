"""Env step cost against its floor: a frame render plus the physics steps of one action.

Runs oracle episodes of every task and times, in the same steps, the whole ``env.step`` and its
two unavoidable parts (the ``substeps`` physics steps and the camera render). The floor is their
sum; the ratio step / floor is what the env adds on top (IK, motor commands, contact queries,
every task's reward). A second, bare loop times a render and a physics step on a fresh client
with the same scene, for reference, from each policy camera in turn (same scene, interleaved renders).

    python benchmarks/bench_env.py --episodes 3 --image-size 64 [--camera wrist]
"""

from __future__ import annotations

import argparse
import statistics
import time

from robocds.envs.camera import Camera
from robocds.envs.env import ManipulationEnv
from robocds.envs.suite import CAMERAS
from robocds.envs.tasks import TASK_NAMES, ScriptedOracle, get_task


class _Timed:
    """Wraps a bound method and accumulates its wall time into ``self.seconds``."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


POLICY_CAMERAS = tuple(name for name in CAMERAS if name != "viewer")


def measure_task(task: str, episodes: int, image_size: int, renderer: str, camera: str) -> list[tuple[float, float]]:
    """Per step: (env.step seconds, floor seconds = physics + render inside that step)."""
    env = ManipulationEnv(task, image_size=image_size, renderer=renderer, camera=camera)
    oracle = ScriptedOracle(get_task(task), seed=0)
    physics, render = _Timed(env.scene.step_physics), _Timed(env.camera.render)
    env.scene.step_physics, env.camera.render = physics, render
    samples = []
    for episode in range(episodes):
        env.reset(seed=episode)
        oracle.reset()
        done = False
        while not done:
            action = oracle.act(env)
            physics.seconds = render.seconds = 0.0
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            samples.append((time.perf_counter() - start, physics.seconds + render.seconds))
            done = terminated or truncated
    env.close()
    return samples


def bare_costs(image_size: int, renderer: str, repeats: int = 200) -> tuple[dict[str, float], float]:
    """Median seconds of one render from each policy camera (interleaved) and of one physics step, idle scene."""
    env = ManipulationEnv(TASK_NAMES[0], image_size=image_size, renderer=renderer)
    env.reset(seed=0)
    client = env.scene.client
    grasp_point = env.scene.state().grasp_point  # where a gripper-mounted camera renders from
    cameras = {name: Camera(client, image_size, renderer, name) for name in POLICY_CAMERAS}
    renders: dict[str, list[float]] = {name: [] for name in cameras}
    steps = []
    for _ in range(repeats):
        for name, camera in cameras.items():
            start = time.perf_counter()
            camera.render(grasp_point)
            renders[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        client.stepSimulation()
        steps.append(time.perf_counter() - start)
    env.close()
    return {name: statistics.median(times) for name, times in renders.items()}, statistics.median(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3, help="oracle episodes per task")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--renderer", default="tiny", choices=["tiny", "egl"])
    parser.add_argument("--camera", default="front", choices=POLICY_CAMERAS, help="the camera of the timed steps")
    args = parser.parse_args()

    samples = []
    for task in TASK_NAMES:
        samples += measure_task(task, args.episodes, args.image_size, args.renderer, args.camera)
    step = statistics.median(s for s, _ in samples)
    floor = statistics.median(f for _, f in samples)
    ratio = statistics.median(s / f for s, f in samples)
    renders, physics_step = bare_costs(args.image_size, args.renderer)
    print(
        f"steps timed: {len(samples)} ({args.episodes} oracle episodes x {len(TASK_NAMES)} tasks, {args.camera} camera)"
    )
    print(f"env.step            median {step * 1e3:7.2f} ms   ({1 / step:6.1f} steps/s)")
    print(f"floor in the step   median {floor * 1e3:7.2f} ms   ({1 / floor:6.1f} steps/s)  render + physics")
    print(f"step / floor        median {ratio:7.3f}   (target <= 1.25)")
    for name, render in renders.items():
        ratio_to_front = f", {render / renders['front']:.2f}x front" if name != "front" else ""
        size = f"{args.image_size}x{args.image_size}"
        print(f"bare render         median {render * 1e3:7.2f} ms   ({size}, {args.renderer}, {name}{ratio_to_front})")
    print(f"bare physics step   median {physics_step * 1e3:7.3f} ms   (idle scene)")


if __name__ == "__main__":
    main()
