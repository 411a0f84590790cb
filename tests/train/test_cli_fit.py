"""Short fits from the CLI in every sharing mode (CPU, 32x32 synthetic data), validate, checkpoint loading."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from robocds.checkpoint import load_module
from robocds.errors import ConfigError
from robocds.module import MultiTaskCQL
from robocds.train.cli import CONFIG_DIR, RoboCDSCLI, resolve_config_args

torch.set_num_threads(1)
# The CLI is driven in-process with explicit args while pytest owns sys.argv.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

TINY = [
    "--data=tiny_data.TinyDataModule",
    "--data.batch_size=4",
    "--data.steps_per_epoch=3",
    "--data.val_batches=1",
    "--trainer.max_steps=3",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
    "--model.encoder.channels=[8,16]",
    "--model.encoder.kernel_sizes=[4,3]",
    "--model.encoder.strides=[2,2]",
    "--model.encoder.feature_dim=32",
    "--model.cql.head_hidden=32",
    "--sharing.log_every_n_steps=1",
    "--sharing.image_every_n_steps=2",
]


@pytest.fixture
def base_config(tmp_path: Path) -> str:
    """The packaged base config without its data section (the real data module is not used here)."""
    config = yaml.safe_load((CONFIG_DIR / "base.yaml").read_text())
    config.pop("data")
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def fit(base: str, method: list[str], runs: Path | None, *extra: str) -> RoboCDSCLI:
    runs_dir = [] if runs is None else [f"--runs_dir={runs}"]
    return RoboCDSCLI(args=resolve_config_args(["fit", "--config", base, *method, *TINY, *runs_dir, *extra]))


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "method,run_name",
    [
        (["--config", "no_sharing"], "none"),
        (["--config", "sharing_all"], "all"),
        (["--config", "cds"], "cds"),
        (["--config", "cds_percentile"], "cds_percentile"),
        (["--sharing.mode=uds"], "uds"),
        (["--config", "share_successes"], "share_successes"),
        (["--config", "cds_heldout"], "cds_heldout"),
        (["--config", "bc"], "bc"),
        (["--config", "filtered_bc"], "filtered_bc"),
    ],
)
def test_fit_in_every_mode(base_config: str, tmp_path: Path, method: list[str], run_name: str) -> None:
    cli = fit(base_config, method, tmp_path / "runs")
    assert cli.trainer.global_step == 3
    run = tmp_path / "runs" / run_name / "version_0"
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    rows = read_metrics(run)
    columns = set(rows[0])
    assert {"train/loss", "val/loss", "val/td_loss", "val/action_agreement"} <= columns  # best.ckpt: val/td_loss
    if cli.model.objective != "cql":  # behaviour cloning: its own terms, no router, no sharing scalars
        assert {"train/cross_entropy", "train/accuracy", "train/used_fraction", "val/cross_entropy"} <= columns
        assert "train/td_loss" not in columns and not any(c.startswith("sharing/") for c in columns)
        used = [float(r["train/used_fraction"]) for r in rows if r.get("train/used_fraction")]
        if cli.model.objective == "bc":
            assert used and all(u == 1.0 for u in used)
        else:  # own transitions of successful episodes only (rewarded ones here, about 1 in 5)
            assert used and all(0.0 <= u < 1.0 for u in used) and max(used) > 0.0
        last = run / "checkpoints" / "last.ckpt"
        assert torch.load(last, weights_only=True, map_location="cpu")["hyper_parameters"]["objective"] == run_name
        model = load_module(last)  # as robocds-eval loads a policy
        assert model.objective == run_name
        actions = model.act(torch.randint(0, 255, (6, 32, 32, 3), dtype=torch.uint8).numpy(), torch.rand(6, 4))
        assert actions.shape == (6, 3) and int(actions.max()) < 5
        return
    assert {"train/td_loss", "train/cql_loss", "train/q_data"} <= columns
    assert "sharing/tiny-0/tiny-1" in columns and "sharing/shared_fraction" in columns
    fractions = [float(r["sharing/shared_fraction"]) for r in rows if r.get("sharing/shared_fraction")]
    mode = cli.config.fit.sharing.mode
    if mode == "none":
        assert fractions and all(f == 0.0 for f in fractions)
    elif mode in ("all", "uds"):
        assert fractions and all(f == 1.0 for f in fractions)
    elif mode == "share_successes":
        assert fractions and all(0.0 < f < 1.0 for f in fractions)  # rewarded transitions only (about 1 in 5)
    else:
        assert "sharing/threshold/tiny-2" in columns
    # The model got its shapes and names from the data module.
    assert cli.model.hparams["task_names"] == ["tiny-0", "tiny-1", "tiny-2"]
    assert cli.model.num_actions == 5 and cli.model.image_size == 32


def test_bc_refuses_a_sharing_mode_it_would_ignore(base_config: str, tmp_path: Path) -> None:
    from robocds.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.objective='filtered_bc' .* sharing.mode='cds' would be ignored"):
        fit(base_config, ["--config", "filtered_bc", "--config", "cds"], tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # refused while parsing, before any run folder is made


def test_heatmap_reaches_tensorboard_and_config_is_saved(base_config: str, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(base_config, ["--config", "cds"], tmp_path / "runs")
    run = tmp_path / "runs" / "cds" / "version_0"
    events = EventAccumulator(str(run))
    events.Reload()
    assert "sharing/matrix" in events.Tags()["images"]
    assert "sharing/tiny-2/tiny-0" in events.Tags()["scalars"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["sharing"]["mode"] == "cds" and saved["seed_everything"] == 0
    assert saved["model"]["optimizer"]["init_args"]["lr"] == 3.0e-4


def test_checkpoint_loads_on_cpu_with_weights_only_and_acts(base_config: str, tmp_path: Path) -> None:
    fit(base_config, ["--config", "cds"], tmp_path / "runs")
    ckpt = tmp_path / "runs" / "cds" / "version_0" / "checkpoints" / "best.ckpt"
    raw = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert raw["callbacks"]["DataSharing"]["mode"] == "cds"
    model = MultiTaskCQL.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert model.task_names == ["tiny-0", "tiny-1", "tiny-2"] and model.encoder_config.channels == (8, 16)
    frames = torch.randint(0, 255, (6, 32, 32, 3), dtype=torch.uint8).numpy()  # env layout, HWC
    actions = model.act(frames, torch.rand(6, 4))
    assert actions.shape == (6, 3) and int(actions.max()) < 5


def test_validate_from_checkpoint(base_config: str, tmp_path: Path) -> None:
    fit(base_config, ["--config", "sharing_all"], tmp_path / "runs")
    ckpt = tmp_path / "runs" / "all" / "version_0" / "checkpoints" / "last.ckpt"
    args = ["validate", "--config", base_config, "--config", "sharing_all", *TINY[:4], "--trainer.accelerator=cpu"]
    cli = RoboCDSCLI(args=resolve_config_args([*args, f"--runs_dir={tmp_path / 'runs'}", f"--ckpt_path={ckpt}"]))
    assert "val/td_loss" in cli.trainer.callback_metrics


def test_without_loggers_validate_records_nothing_and_a_second_fit_refuses_in_one_line(
    base_config: str, tmp_path: Path
) -> None:
    fit(base_config, ["--config", "sharing_all"], tmp_path / "runs")
    ckpt = tmp_path / "runs" / "all" / "version_0" / "checkpoints" / "last.ckpt"
    here = tmp_path / "here"
    no_logs = ["--trainer.logger=false", f"--trainer.default_root_dir={here}", "--config", "sharing_all", *TINY[:4]]
    for _ in range(2):  # the second call is the one Lightning refused (config.yaml of the first)
        args = ["validate", "--config", base_config, *no_logs, f"--ckpt_path={ckpt}"]
        cli = RoboCDSCLI(args=resolve_config_args(args))
        assert "val/td_loss" in cli.trainer.callback_metrics
    assert not (here / "config.yaml").exists()
    fit(base_config, [], None, *no_logs)
    assert (here / "config.yaml").is_file()
    with pytest.raises(ConfigError, match=rf"^{here / 'config.yaml'}: the config of an earlier run is there") as err:
        fit(base_config, [], None, *no_logs)
    assert "\n" not in str(err.value)


def test_python_m_entry_point_lists_the_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "robocds.train", "--help"], capture_output=True, text=True, check=True, timeout=120
    )
    assert "fit" in out.stdout and "validate" in out.stdout


def test_config_names_resolve_to_packaged_files(tmp_path: Path) -> None:
    own = tmp_path / "cds"
    own.write_text("")
    resolved = resolve_config_args(["fit", "--config", "cds", "-c", "base.yaml", "--config=gpu", "--config", "missing"])
    assert resolved[2] == str(CONFIG_DIR / "cds.yaml") and resolved[4] == str(CONFIG_DIR / "base.yaml")
    assert resolved[5] == f"--config={CONFIG_DIR / 'gpu.yaml'}" and resolved[7] == "missing"
    assert resolve_config_args(["--config", str(own)]) == ["--config", str(own)]  # existing paths win


def test_fit_on_a_generated_tiny_dataset_with_the_packaged_configs(tmp_path: Path) -> None:
    """base + cds + smoke as shipped, on OfflineDataModule over a freshly generated `tiny` dataset."""
    from robocds.datasets.generate import main as generate

    root = tmp_path / "tiny"
    assert generate(["tiny", "--root", str(root), "--workers", "0", "--no-progress"]) == 0
    args = ["fit", "--config", "base", "--config", "cds", "--config", "smoke", f"--data.root={root}"]
    steps = ["--trainer.max_steps=3", "--data.steps_per_epoch=3", "--trainer.enable_progress_bar=false"]
    cli = RoboCDSCLI(args=resolve_config_args([*args, *steps, f"--runs_dir={tmp_path / 'runs'}"]))
    assert cli.trainer.global_step == 3
    assert cli.model.task_names == list(cli.datamodule.task_names) and cli.model.image_size == 32
    # The packaged base config decays the learning rate to 0 over the run (the learner study, section 9).
    assert cli.model.lr_schedule == "cosine" and cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.0
    # ... and weighs failed episodes' transitions at a quarter in the conservative term (learner rounds 26-28).
    cql = cli.model.cql_config
    assert (cql.conservative_weighting, cql.failed_episode_weight) == ("success", 0.25)
    assert (tmp_path / "runs" / "cds" / "version_0" / "checkpoints" / "best.ckpt").is_file()
    # The env settings travel data -> checkpoint -> evaluation, which rebuilds the env from the checkpoint alone.
    from robocds.datasets.manifest import read_manifest
    from robocds.eval.evaluate import main as evaluate_main
    from robocds.eval.evaluate import resolve_settings
    from robocds.eval.policy import load_checkpoint_policy

    last = tmp_path / "runs" / "cds" / "version_0" / "checkpoints" / "last.ckpt"
    recorded = read_manifest(str(root)).env
    assert torch.load(last, weights_only=True)["hyper_parameters"]["env"] == recorded.to_json_dict()
    policy = load_checkpoint_policy(last, "cpu")
    assert resolve_settings(policy, None, None, None, None) == recorded
    assert resolve_settings(policy, str(root), 32, recorded.max_steps, "tiny") == recorded  # agreeing options pass
    from robocds.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--max-steps 40 contradicts the checkpoint last: its max_steps is 12"):
        evaluate_main(["--checkpoint", str(last), "--out", str(tmp_path / "eval"), "--max-steps", "40"])


def test_share_successes_fit_on_a_generated_tiny_dataset_routes_by_episode_return(tiny_root, tmp_path: Path) -> None:
    """base + share_successes + smoke as shipped. In `tiny` every place-cube-blue episode lifts the cube
    (a lift-cube success) and none places it, no lift-cylinder episode touches the cube: so the routing is
    known exactly, whatever transitions are drawn."""
    args = ["fit", "--config", "base", "--config", "share_successes", "--config", "smoke", f"--data.root={tiny_root}"]
    steps = ["--trainer.max_steps=3", "--data.steps_per_epoch=3", "--trainer.enable_progress_bar=false",
             "--sharing.log_every_n_steps=1"]  # fmt: skip
    cli = RoboCDSCLI(args=resolve_config_args([*args, *steps, f"--runs_dir={tmp_path}"]))
    assert cli.trainer.global_step == 3
    rows = read_metrics(tmp_path / "share_successes" / "version_0")
    rows = [row for row in rows if row.get("sharing/shared_fraction")]
    assert len(rows) == 3
    for row in rows:
        assert float(row["sharing/lift-cube/place-cube-blue"]) == 1.0
        assert float(row["sharing/lift-cube/lift-cylinder"]) == 0.0
        assert all(float(row[f"sharing/place-cube-blue/{source}"]) == 0.0 for source in ("lift-cube", "lift-cylinder"))
        assert float(row["sharing/lift-cylinder/lift-cube"]) == 0.0


def test_cds_heldout_fit_on_a_generated_tiny_dataset_routes_with_the_held_out_estimate(tiny_root, tmp_path: Path):
    """base + cds_heldout + smoke as shipped, on the real data module: the thresholds logged at every step are
    the estimate made from the held-out episodes at the start of training (the next one is 100 steps away)."""
    args = ["fit", "--config", "base", "--config", "cds_heldout", "--config", "smoke", f"--data.root={tiny_root}"]
    steps = ["--trainer.max_steps=3", "--data.steps_per_epoch=3", "--trainer.enable_progress_bar=false",
             "--sharing.log_every_n_steps=1"]  # fmt: skip
    cli = RoboCDSCLI(args=resolve_config_args([*args, *steps, f"--runs_dir={tmp_path}"]))
    assert cli.datamodule.holds_out_episodes and cli.trainer.global_step == 3
    rows = [
        row for row in read_metrics(tmp_path / "cds_heldout" / "version_0") if row.get("sharing/threshold/lift-cube")
    ]
    assert len(rows) == 3
    assert len({tuple(row[f"sharing/threshold/{task}"] for task in cli.model.task_names) for row in rows}) == 1
    saved = torch.load(tmp_path / "cds_heldout" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["callbacks"]["DataSharing"]["heldout_threshold"].shape == (3,)  # re-estimated after validation


def test_last_checkpoint_holds_the_final_weights_when_the_monitored_metric_stops_improving(
    base_config: str, tmp_path: Path
) -> None:
    """last.ckpt must follow training, not the best checkpoint: Lightning's save_last alone re-saves it only
    when the monitored checkpoint improves, which left evaluation on the first epoch's weights."""
    # No Sharing routes the same weights at every step: the monitored "best" never improves after epoch 1.
    extra = ["--trainer.max_steps=7", "--checkpoint.monitor=train/routed_weight", "--checkpoint.mode=min"]
    cli = fit(base_config, ["--config", "no_sharing"], tmp_path / "runs", *extra)
    checkpoints = tmp_path / "runs" / "none" / "version_0" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True, map_location="cpu")
    best = torch.load(checkpoints / "best.ckpt", weights_only=True, map_location="cpu")
    assert cli.trainer.global_step == 7
    assert last["global_step"] == 7 and best["global_step"] == 3
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    final = cli.model.q.state_dict()
    assert all(torch.equal(last["state_dict"][f"q.{k}"], v) for k, v in final.items())


def test_evaluating_during_fit_with_the_packaged_config_logs_success_in_the_simulated_arm(tiny_root, tmp_path):
    args = ["fit", "--config", "base", "--config", "cds", "--config", "smoke", "--config", "eval_during_fit"]
    callback = "--trainer.callbacks.init_args."
    steps = ["--trainer.max_steps=2", "--data.steps_per_epoch=2", "--trainer.enable_progress_bar=false",
             f"{callback}every_n_steps=2", f"{callback}episodes_per_task=1"]  # fmt: skip
    RoboCDSCLI(args=resolve_config_args([*args, f"--data.root={tiny_root}", *steps, f"--runs_dir={tmp_path}"]))
    rows = read_metrics(tmp_path / "cds" / "version_0")
    logged = [row for row in rows if row.get("eval/success_average")]
    assert logged and {f"eval/success/{task}" for task in ("lift-cube", "lift-cylinder")} <= set(rows[0])


def test_trainer_default_root_dir_is_where_the_run_goes_and_a_contradicting_runs_dir_is_refused(
    base_config: str, tmp_path: Path
) -> None:
    from robocds.errors import ConfigError

    fit(base_config, ["--config", "no_sharing"], None, f"--trainer.default_root_dir={tmp_path / 'root'}")
    assert (tmp_path / "root" / "none" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(ConfigError, match=r"--trainer.default_root_dir .* / --runs_dir .*: both say where"):
        fit(base_config, ["--config", "no_sharing"], tmp_path / "runs", f"--trainer.default_root_dir={tmp_path}")


def test_resuming_a_checkpoint_of_another_dataset_is_refused_naming_the_setting(base_config: str, tmp_path: Path):
    """A checkpoint of 3 tasks resumed on a 2-task data module: one CheckpointError (a user error: one line,
    exit 2) naming the setting and both values, not torch's size-mismatch traceback."""
    from robocds.errors import CheckpointError
    from robocds.module import check_same_network

    fit(base_config, ["--config", "no_sharing"], tmp_path / "runs")
    ckpt = tmp_path / "runs" / "none" / "version_0" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"the checkpoint's num_tasks=3 differs from this run's num_tasks=2"):
        fit(base_config, ["--config", "no_sharing"], tmp_path / "other", "--data.num_tasks=2", f"--ckpt_path={ckpt}")
    # Model settings given with --ckpt_path yield to the checkpoint's (LightningCLI reads its hyperparameters);
    # a Python user's module is checked the same way: tuples and lists alike, shapes by name.
    saved = {"num_tasks": 3, "encoder": {"channels": (8, 16)}, "cql": {"head_hidden": 32, "alpha": 1.0}}
    check_same_network(saved, {"num_tasks": 3, "encoder": {"channels": [8, 16]}, "cql": {"head_hidden": 32}})
    with pytest.raises(CheckpointError, match=r"cql.head_hidden=32 differs from this run's cql.head_hidden=16"):
        check_same_network(saved, {"num_tasks": 3, "encoder": {"channels": [8, 16]}, "cql": {"head_hidden": 16}})
    with pytest.raises(CheckpointError, match=r"cql.head_layernorm=False differs from this run.s cql.head_layernorm"):
        check_same_network({"cql": {"head_layernorm": False}}, {"cql": {"head_layernorm": True}})


def test_a_cosine_fit_ends_at_learning_rate_zero_and_its_checkpoint_holds_the_schedule(
    base_config: str,
    tmp_path: Path,
) -> None:
    cli = fit(base_config, ["--config", "no_sharing"], tmp_path / "runs", "--model.lr_schedule=cosine",
              "--trainer.max_steps=6", "--data.steps_per_epoch=3")  # fmt: skip
    assert cli.trainer.global_step == 6
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert cli.model.hparams["lr_schedule"] == "cosine"
    # The checkpoint holds the schedule's position, so a run resumed from it continues the decay.
    last = tmp_path / "runs" / "none" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["lr_schedulers"][0]["last_epoch"] == 6
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
