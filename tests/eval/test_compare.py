"""The comparison driver's bookkeeping: resumable stages and the per-method diagnostics."""

import json
import sys

import pytest

from robocds.eval.compare import SCALES, Stage, check_existing_data, method_analyses, with_overrides


def test_a_stage_whose_output_exists_is_skipped_and_a_missing_output_is_an_error(tmp_path, capsys):
    stage = Stage(total=3)
    done = tmp_path / "done"
    done.write_text("x")
    stage.run("first", done, [sys.executable, "-c", "raise SystemExit(1)"])  # would fail if it ran
    assert "already done" in capsys.readouterr().out
    marker = tmp_path / "marker"
    stage.run("second", marker, [sys.executable, "-c", "pass"], marker=True)
    assert marker.exists()
    with pytest.raises(RuntimeError, match="third: finished but .*missing"):
        stage.run("third", tmp_path / "never", [sys.executable, "-c", "pass"])


def test_diagnostics_are_averaged_over_the_seeds_of_each_method(tmp_path):
    scale = SCALES["quick"]
    tasks = ["a", "b"]
    for seed, value in zip(scale.seeds, (1.0,)):
        for method in scale.methods[:2]:
            folder = tmp_path / "analysis" / f"{method}-seed{seed}"
            folder.mkdir(parents=True)
            result = {"checkpoint": "x", "tasks": tasks, "q_matrix": [[value, 0.0], [2.0, value]],
                      "agreement": [0.5, 1.0], "data_nll": [1.0, 2.0]}  # fmt: skip
            (folder / "analysis.json").write_text(json.dumps(result))
    summaries = method_analyses(tmp_path, scale)
    assert list(summaries) == list(scale.methods[:2])  # a method without analyses is left out
    assert summaries[scale.methods[0]]["q_own"] == [1.0, 1.0]
    assert summaries[scale.methods[0]]["q_shared"] == [0.0, 2.0]


def test_command_line_overrides_replace_only_what_they_name():
    cpu = SCALES["cpu"]
    assert with_overrides(cpu) == cpu
    probe = with_overrides(cpu, recipe="benchmark_cpu_borrow", methods=["no_sharing", "cds"], seeds=[1])
    assert (probe.recipe, probe.methods, probe.seeds) == ("benchmark_cpu_borrow", ("no_sharing", "cds"), (1,))
    assert probe.train_configs == cpu.train_configs and probe.eval_episodes == cpu.eval_episodes


def test_resuming_on_data_from_another_recipe_is_refused_by_name(tmp_path):
    check_existing_data(tmp_path, "quickstart")  # no dataset yet: nothing to check
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "benchmark_cpu"}))
    check_existing_data(tmp_path, "benchmark_cpu")
    with pytest.raises(SystemExit, match=r"manifest.json holds dataset 'benchmark_cpu' but the recipe is 'quickstart'"):
        check_existing_data(tmp_path, "quickstart")
