import json

import numpy as np
import pytest

from robocds.envs.env import PROPRIO_DIM, ManipulationEnv
from robocds.envs.rollout import play_oracle_episode
from robocds.envs.seeds import eval_episode_seed, is_eval_seed
from robocds.envs.suite import EnvSettings
from robocds.envs.tasks import TASK_NAMES, ScriptedOracle, get_task
from robocds.eval.callback import SuccessRateCallback
from robocds.eval.evaluate import evaluate, rollout
from robocds.eval.policy import ModulePolicy, OraclePolicy, RandomPolicy

SMALL = EnvSettings(image_size=32, max_steps=40)


def test_oracle_policy_reproduces_the_oracle_episode_by_episode():
    tasks = ["lift-cube", "place-block-blue"]
    records, _ = rollout(OraclePolicy(TASK_NAMES), tasks, episodes=3, workers=0, settings=SMALL, progress=False)
    for task in tasks:
        env = ManipulationEnv(task, image_size=32)
        seeds = [eval_episode_seed(0, TASK_NAMES.index(task), e) for e in range(3)]
        expected = [play_oracle_episode(env, ScriptedOracle(get_task(task)), s) for s in seeds]
        env.close()
        mine = [r for r in records if r.task == task]
        assert [r.seed for r in mine] == seeds
        assert [r.success for r in mine] == [e.success for e in expected]
        assert [r.length for r in mine] == [e.length for e in expected]
    assert sum(r.success for r in records) >= 5  # the oracle does solve its tasks


def test_random_network_runs_end_to_end_in_worker_processes_and_writes_every_output(tmp_path):
    torch = pytest.importorskip("torch")
    from robocds.module import MultiTaskCQL

    torch.manual_seed(0)
    module = MultiTaskCQL(
        num_tasks=len(TASK_NAMES), num_actions=8, image_size=64, proprio_dim=PROPRIO_DIM, task_names=TASK_NAMES
    )
    tasks = ["lift-cube", "place-cube-purple"]
    summary = evaluate(
        ModulePolicy(module, "untrained"), tmp_path, tasks, episodes=2, workers=2, settings=EnvSettings(64, 6),
        videos_per_task=1, progress=False,
    )  # fmt: skip
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["tasks"] == tasks and len(written["episodes"]) == 4
    assert set(written["per_task"]) == set(tasks)
    assert all(is_eval_seed(r["seed"]) for r in written["episodes"])
    assert all(r["length"] == 6 and r["error"] is None for r in written["episodes"])
    assert "| lift-cube |" in (tmp_path / "results.md").read_text()
    videos = sorted(p.name for p in (tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 2 and all(("-000-failure" in v) or ("-000-success" in v) for v in videos)
    import imageio.v2 as imageio

    with imageio.get_reader(tmp_path / "videos" / videos[0]) as reader:  # the viewer camera, not the 64x64 view
        assert reader.get_meta_data()["size"] == (256, 256) and reader.count_frames() == 7  # 6 steps + the reset
    assert summary["average_success"] == written["average_success"]


class _BrokenPolicy(RandomPolicy):
    """Sends an invalid action for one task: its env raises, the episode must count as failed."""

    def act(self, images, proprio, tasks):
        actions = super().act(images, proprio, tasks)
        return np.array([99 if t == "lift-block" else a for a, t in zip(actions, tasks)])


def test_an_env_error_is_a_failed_episode_with_its_reason_and_the_run_finishes(tmp_path):
    summary = evaluate(
        _BrokenPolicy(TASK_NAMES), tmp_path, ["lift-block", "lift-cube"], episodes=2, workers=0,
        settings=EnvSettings(32, 4), videos_per_task=0, progress=False,
    )  # fmt: skip
    broken = [r for r in summary["episodes"] if r["task"] == "lift-block"]
    assert all(not r["success"] and "action=99" in r["error"] for r in broken)
    assert summary["errors"] == 2
    assert all(r["error"] is None for r in summary["episodes"] if r["task"] == "lift-cube")


def test_unknown_task_is_rejected_before_any_simulation():
    with pytest.raises(ValueError, match="unknown task 'lift-moon'"):
        rollout(RandomPolicy(TASK_NAMES), ["lift-moon"], 1, progress=False)


def test_success_rate_callback_logs_every_task(tmp_path):
    torch = pytest.importorskip("torch")
    from robocds.module import MultiTaskCQL

    torch.manual_seed(0)
    module = MultiTaskCQL(num_tasks=2, num_actions=8, image_size=64, proprio_dim=PROPRIO_DIM, task_names=TASK_NAMES[:2],
                          env=EnvSettings(64, 3).to_json_dict())  # fmt: skip

    class _Logger:
        logged: list = []

        def log_metrics(self, metrics, step):
            self.logged.append((step, metrics))

    class _Trainer:
        loggers = [_Logger()]
        global_step = 10
        is_global_zero = True

    callback = SuccessRateCallback(every_n_steps=10, episodes_per_task=1)
    callback.on_train_batch_end(_Trainer(), module, None, None, 0)
    step, metrics = _Trainer.loggers[0].logged[0]
    assert step == 10
    assert set(metrics) == {f"eval/success/{t}" for t in TASK_NAMES[:2]} | {"eval/success_average"}


def test_concurrent_episodes_per_worker_give_the_same_records_as_one_at_a_time():
    def play(envs_per_worker):
        records, _ = rollout(OraclePolicy(TASK_NAMES), ["lift-cube"], 3, workers=0, settings=SMALL, progress=False,
                             envs_per_worker=envs_per_worker)  # fmt: skip
        return [(r.seed, r.success, r.length) for r in records]

    assert play(1) == play(3)


def test_rollout_gives_the_pool_its_envs_per_worker(monkeypatch):
    import robocds.eval.evaluate as evaluate_module

    seen = []

    class RecordingPool(evaluate_module.WorkerPool):
        def __init__(self, num_workers, settings, envs_per_worker=1):
            seen.append(envs_per_worker)
            super().__init__(num_workers, settings, envs_per_worker)

    monkeypatch.setattr(evaluate_module, "WorkerPool", RecordingPool)
    rollout(OraclePolicy(TASK_NAMES), ["lift-cube"], 1, workers=0, settings=SMALL, progress=False, envs_per_worker=3)
    assert seen == [3]


def test_reference_policies_take_the_env_from_a_dataset_and_options_only_without_one(tiny_root):
    from robocds.datasets.manifest import read_manifest
    from robocds.eval.evaluate import resolve_settings

    policy = RandomPolicy(TASK_NAMES)
    recorded = read_manifest(str(tiny_root)).env
    assert resolve_settings(policy, str(tiny_root), None, None, None) == recorded
    assert resolve_settings(policy, None, 48, 7, None) == EnvSettings(image_size=48, max_steps=7)
    with pytest.raises(ValueError, match=r"--image-size 64 contradicts the dataset .*: its image_size is 32"):
        resolve_settings(policy, str(tiny_root), 64, None, None)
    assert resolve_settings(policy, None, None, None, None, "wrist") == EnvSettings(camera="wrist")
    with pytest.raises(ValueError, match=r"--camera wrist contradicts the dataset .*: its camera is 'front'"):
        resolve_settings(policy, str(tiny_root), None, None, None, "wrist")


def test_a_checkpoint_and_a_dataset_of_other_settings_are_refused_naming_the_difference(tiny_root):
    torch = pytest.importorskip("torch")
    from robocds.eval.evaluate import resolve_settings
    from robocds.module import MultiTaskCQL

    torch.manual_seed(0)
    small = {"kernel_sizes": (4, 3, 3), "strides": (2, 2, 1)}  # a conv stack that fits 32x32 frames
    module = MultiTaskCQL(num_tasks=1, num_actions=8, image_size=32, proprio_dim=PROPRIO_DIM, task_names=TASK_NAMES[:1],
                          env=EnvSettings(32, 40).to_json_dict(), encoder=small)  # fmt: skip
    with pytest.raises(ValueError, match=r"another env than the dataset .*: max_steps=40 vs 12"):
        resolve_settings(ModulePolicy(module, "ckpt"), str(tiny_root), None, None, None)


def test_a_second_evaluation_into_the_same_out_is_refused_unless_overwrite(tmp_path, capsys):
    from robocds.errors import run_cli
    from robocds.eval.evaluate import main

    out = tmp_path / "eval"
    args = ["--policy", "random", "--tasks", "lift-cube", "--episodes", "1", "--workers", "0", "--videos", "1",
            "--image-size", "32", "--max-steps", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    first = (out / "summary.json").read_bytes(), (out / "results.md").read_bytes()
    assert "\r" not in capsys.readouterr().err  # stderr is no terminal here: no progress bar written into it
    with pytest.raises(SystemExit) as info:
        run_cli(main, "robocds-eval", [*args, "--label", "second"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err == (
        f"robocds-eval: error: --out '{out}': holds an earlier evaluation (summary.json, results.md); "
        "give --overwrite to replace it, or choose another --out\n"
    )
    assert ((out / "summary.json").read_bytes(), (out / "results.md").read_bytes()) == first  # untouched
    assert main([*args, "--label", "second", "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["label"] == "second"
    assert len(list((out / "videos").glob("*.mp4"))) == 1
