"""The comparison driver's bookkeeping: resumable stages and the per-method diagnostics."""

import dataclasses
import json

import pytest

from robocds.datasets.errors import DatasetError
from robocds.errors import ConfigError
from robocds.pipeline.compare import (
    SCALES,
    ExperimentLayout,
    check_existing_data,
    method_analyses,
    run_name,
    with_overrides,
)


def test_diagnostics_are_averaged_over_the_seeds_of_each_method(tmp_path):
    scale = SCALES["quick"]
    tasks = ["a", "b"]
    for seed, value in zip(scale.seeds, (1.0,)):
        for method in scale.methods[:2]:
            folder = ExperimentLayout(tmp_path).analysis(run_name(method, seed))
            folder.mkdir(parents=True)
            result = {"checkpoint": "x", "tasks": tasks, "q_matrix": [[value, 0.0], [2.0, value]],
                      "agreement": [0.5, 1.0], "data_nll": [1.0, 2.0]}  # fmt: skip
            (folder / "analysis.json").write_text(json.dumps(result))
    summaries = method_analyses(ExperimentLayout(tmp_path), scale)
    assert list(summaries) == list(scale.methods[:2])  # a method without analyses is left out
    assert summaries[scale.methods[0]]["q_own"] == [1.0, 1.0]
    assert summaries[scale.methods[0]]["q_shared"] == [0.0, 2.0]


def test_command_line_overrides_replace_only_what_they_name():
    cpu = SCALES["cpu"]
    assert with_overrides(cpu) == cpu
    probe = with_overrides(cpu, recipe="benchmark_cpu_borrow", methods=["no_sharing", "cds"], seeds=[1])
    assert (probe.recipe, probe.methods, probe.seeds) == ("benchmark_cpu_borrow", ("no_sharing", "cds"), (1,))
    assert probe.train_configs == cpu.train_configs and probe.eval_episodes == cpu.eval_episodes


def test_resuming_on_data_from_another_recipe_is_refused_by_name(tmp_path, tiny_root):
    check_existing_data(tmp_path, "quickstart")  # no dataset yet: nothing to check
    check_existing_data(tiny_root, "tiny")
    with pytest.raises(ConfigError, match=r"manifest.json: holds dataset 'tiny' but the recipe is 'quickstart'"):
        check_existing_data(tiny_root, "quickstart")


def test_an_unreadable_manifest_ends_the_comparison_naming_file_and_field(dataset_copy):
    manifest = dataset_copy / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "name": 7}))
    with pytest.raises(DatasetError, match=r"manifest.json.*name.*expected str, got 7"):
        check_existing_data(dataset_copy, "tiny")


def test_every_method_and_scale_config_is_a_packaged_training_config():
    import yaml

    from robocds.callbacks import DataSharing, check_objective_sharing
    from robocds.config import OBJECTIVES
    from robocds.pipeline.compare import METHODS, NO_SHARING_METHODS
    from robocds.train.cli import CONFIG_DIR

    for method in METHODS:
        config = yaml.safe_load((CONFIG_DIR / f"{method}.yaml").read_text())
        DataSharing(**config["sharing"])  # a valid sharing section (the CLI's `sharing` is DataSharing's arguments)
        check_objective_sharing(config.get("model", {}).get("objective", "cql"), config["sharing"]["mode"])
    for method in ("bc", "filtered_bc"):  # the behaviour-cloning references: the objective, no sharing, own run name
        config = yaml.safe_load((CONFIG_DIR / f"{method}.yaml").read_text())
        assert config == {"run_name": method, "model": {"objective": method}, "sharing": {"mode": "none"}}
        assert method in OBJECTIVES and method in NO_SHARING_METHODS
    assert yaml.safe_load((CONFIG_DIR / "uds.yaml").read_text())["sharing"] == {"mode": "uds"}
    for scale in SCALES.values():
        assert set(scale.methods) <= set(METHODS)
        assert all((CONFIG_DIR / f"{name}.yaml").is_file() for name in scale.train_configs)


def test_the_report_aggregates_per_group_and_shows_what_each_method_routed(
    tmp_path, tiny_root, tiny_recipe, sharing_run
):
    from robocds.datasets.manifest import read_manifest
    from robocds.pipeline.compare import RANDOM_RUN, write_report

    recipe = tmp_path / "grouped.yaml"  # tiny, with groups added after its data was generated
    recipe.write_text(json.dumps({**tiny_recipe.to_json_dict(), "groups": {"lifts": ["lift-cube", "lift-cylinder"]}}))
    scale = with_overrides(SCALES["quick"], recipe=str(recipe), methods=["no_sharing", "cds"], seeds=[0, 1])
    layout, dirs = ExperimentLayout(tmp_path / "cmp"), []
    for label, seed in [("no_sharing", 0), ("no_sharing", 1), ("cds", 0), ("cds", 1), (RANDOM_RUN, 0)]:
        folder = layout.evaluation(run_name(label, seed))
        folder.mkdir(parents=True)
        rates = {task: 0.1 * seed + (0.5 if label == "cds" else 0.2) for task in tiny_recipe.task_names}
        per_task = {task: {"success_rate": rate} for task, rate in rates.items()}
        summary = {"label": label, "tasks": list(rates), "per_task": per_task, "average_success": 0.3}
        (folder / "summary.json").write_text(json.dumps(summary))
        dirs.append(folder)
    tasks = list(tiny_recipe.task_names)
    for seed in (0, 1):
        sharing_run(layout.run(run_name("cds", seed)).metrics_csv, tasks, [0.5], thresholds=[[0.25] * len(tasks)])
    comparison = write_report(layout, dirs, read_manifest(str(tiny_root)), scale, reps=100)
    assert comparison["aggregate"]["runs"] == {"no_sharing": 2, "cds": 2}  # the random reference is not a method
    text = (layout.report / "README.md").read_text()
    assert "## Aggregate success (rliable)" in text and "### lifts: lift-cube, lift-cylinder" in text
    assert "| cds | 55.0% [50.0%, 60.0%] | 55.0% [50.0%, 60.0%] | 1.00 [1.00, 1.00] |" in text
    assert (layout.report / "aggregate" / "profiles.png").is_file()
    assert "## Routing" in text and "### cds (`sharing/cds.png`)" in text and "| cds | 0.250 |" in text
    assert (layout.report / "sharing" / "cds.png").is_file()
    assert not (layout.report / "sharing" / "no_sharing.png").exists()


def test_the_plan_trains_each_run_before_its_evaluation_seed_by_seed_and_analyses_only_the_scales_seeds(tmp_path):
    from robocds.pipeline.compare import plan
    from robocds.pipeline.stages import check_plan

    scale = with_overrides(SCALES["evidence"], methods=["no_sharing", "cds"], seeds=[0, 1])
    scale = dataclasses.replace(scale, analyse_seeds=(0,))
    steps, eval_dirs = plan(scale, ExperimentLayout(tmp_path), ("lift-cube", "lift-block"), 2, 2, ["--x", "1"])
    check_plan(steps)
    keys = [step.key for step in steps]
    assert keys == ["generate", "evaluate-random",
                    "train-no_sharing-seed0", "evaluate-no_sharing-seed0", "analyse-no_sharing-seed0",
                    "train-cds-seed0", "evaluate-cds-seed0", "analyse-cds-seed0",
                    "train-no_sharing-seed1", "evaluate-no_sharing-seed1",
                    "train-cds-seed1", "evaluate-cds-seed1"]  # fmt: skip
    by_key = {step.key: step for step in steps}
    train = by_key["train-cds-seed1"]
    assert train.after == ("generate",) and train.marker and train.command[-2:] == ("--x", "1")
    assert "scale_evidence" in train.command and "--seed_everything" in train.command
    evaluate = by_key["evaluate-cds-seed1"].command
    assert evaluate[evaluate.index("--workers") + 1] == "0"  # two jobs on two cores: in-process evaluation
    assert eval_dirs[-1] == ExperimentLayout(tmp_path).evaluation("random") and len(eval_dirs) == 5


def test_concurrent_stages_get_one_thread_each_unless_the_user_set_threads(monkeypatch):
    from robocds.pipeline.compare import stage_environment, stage_workers

    assert stage_workers(2, 1) == 0 and stage_workers(2, 2) == 0 and stage_workers(16, 2) == 8
    assert stage_environment(1) is None
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    env = stage_environment(2)
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "3"


def test_the_evidence_scale_runs_every_method_on_the_cds_regime_recipe():
    evidence = SCALES["evidence"]
    assert evidence.recipe == "benchmark_cpu_replay"
    # The registered seven (docs/PREREGISTRATION.md), not every method robocds-compare knows.
    assert evidence.methods == (
        "no_sharing", "sharing_all", "cds", "cds_percentile", "uds", "share_successes", "cds_heldout"
    )  # fmt: skip
    assert evidence.seeds == (0, 1, 2, 3, 4) and evidence.eval_episodes == 50 and evidence.jobs == 1
    assert with_overrides(evidence, jobs=2).jobs == 2
    some = dataclasses.replace(evidence, analyse_seeds=(0, 3))
    assert with_overrides(some, seeds=[3, 4]).analyse_seeds == (3,)  # the analysed seeds that still run
    with pytest.raises(ValueError, match="analyse_seeds=\\(7,\\)"):
        dataclasses.replace(evidence, analyse_seeds=(7,))


def test_the_behaviour_cloning_references_run_only_when_named(tmp_path):
    from robocds.pipeline.compare import main, plan

    assert all("bc" not in scale.methods and "filtered_bc" not in scale.methods for scale in SCALES.values())
    scale = with_overrides(SCALES["quick"], methods=["no_sharing", "bc", "filtered_bc"])
    steps, _ = plan(scale, ExperimentLayout(tmp_path), ("lift-cube",), 1, 1, [])
    train = {step.key: step.command for step in steps}["train-filtered_bc-seed0"]
    assert train[train.index("--config", train.index("base")) + 1] == "filtered_bc"
    with pytest.raises(SystemExit):  # --methods accepts the methods robocds-compare knows, and only those
        main(["--methods", "bc", "dagger", "--out", str(tmp_path / "x")])
    with pytest.raises(DatasetError, match="no-such-recipe"):  # bc parsed: it got as far as loading the recipe
        main(["--methods", "bc", "filtered_bc", "--recipe", "no-such-recipe", "--out", str(tmp_path / "x")])


def test_training_arguments_are_checked_before_the_first_stage(tmp_path, monkeypatch):
    import robocds.pipeline.compare as compare

    started = []
    monkeypatch.setattr(compare, "run_comparison", lambda *args, **kwargs: started.append(args))
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match=r"^training arguments \(after --\) for no_sharing: batch_size=0: must be"):
        compare.main(["--recipe", "tiny", "--methods", "no_sharing", "cds", "--out", str(out), "--",
                      "--data.batch_size", "0"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"for no_sharing: --data.batch_size: Expected a <class 'int'>"):
        compare.main(["--recipe", "tiny", "--methods", "no_sharing", "--out", str(out), "--", "--data.batch_size",
                      "abc"])  # fmt: skip
    assert not started and not (out / "data").exists()
    assert compare.main(["--recipe", "tiny", "--methods", "no_sharing", "cds", "--out", str(out), "--",
                         "--data.batch_size", "8"]) == 0 and len(started) == 1  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--seeds", "0", "0"], r"^--seeds 0 0: \[0\] given more than once$"),
        (["--seeds", "4294967296"], r"^--seeds 4294967296: \[4294967296\] above 4294967295$"),
        (["--methods", "cds", "cds"], r"^--methods cds cds: \['cds'\] given more than once$"),
        (["--", "--data.root", "/elsewhere"], r"^training arguments \(after --\): --data.root: set by robocds-compare"),
        (["--", "--seed_everything=3"], r"--seed_everything: set by robocds-compare"),
        (["--", "--trainer.max_steps", "-5"], r"for no_sharing: --trainer.max_steps -5: must be >= 0"),
        (["--", "--trainer.check_val_every_n_epoch", "0"], r"--trainer.check_val_every_n_epoch 0: must be >= 1"),
    ],
)
def test_planner_inputs_that_used_to_crash_are_one_line_before_any_stage(tmp_path, monkeypatch, args, words):
    import robocds.pipeline.compare as compare

    monkeypatch.setattr(compare, "run_comparison", lambda *a, **k: pytest.fail("a stage started"))
    with pytest.raises(ConfigError, match=words):
        compare.main(["--recipe", "tiny", "--methods", "no_sharing", "--out", str(tmp_path / "x"), *args])
