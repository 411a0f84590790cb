"""The results store of robocds-compare (``--store``): resume on a fresh folder, split and merge, rebuild the
report from the store alone, refuse records of another study. Stages are faked: each writes at once what its
real command writes (the records, the store and the report are the real ones)."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from robocds.errors import ConfigError
from robocds.pipeline.compare import SCALES, Study, main, run_comparison, with_overrides
from robocds.pipeline.store import (
    RECORD_FILE,
    CodeIdentity,
    ResultsStore,
    code_commit,
    code_version,
    episode_columns,
    episode_rows,
)
from robocds.train.layout import RunLayout

CODE = CodeIdentity("c0de" * 16, "1234567890abcdef1234567890abcdef12345678", False)
TRAIN_ARGS = ["--config", "smoke", "--trainer.max_steps", "20"]
REPS = 50  # bootstrap replicates of the reports: enough to exercise them


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


class Done:
    """A finished stage process."""

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code


class FakeStages:
    """A launcher for the comparison's stage commands that writes their outputs at once, deterministically."""

    def __init__(self, data: Path, sharing_run, fail: tuple[str, ...] = ()) -> None:
        self.data, self.sharing_run, self.fail = data, sharing_run, fail
        self.launched: list[str] = []

    def __call__(self, command, env=None, stdout=None, stderr=None) -> Done:
        module, args = command[2], list(command[3:])
        if module == "robocds.datasets.generate":
            key = "generate"
        elif module == "robocds.train":
            key = f"train-{option(args, '--run_name')}"
        elif module == "robocds.eval":
            key = f"evaluate-{Path(option(args, '--out')).name}"
        else:
            key = f"analyse-{Path(option(args, '--out')).name}"
        self.launched.append(key)
        if key in self.fail:
            return Done(1)
        if key == "generate":
            shutil.copytree(self.data, option(args, "--root"))
        elif key.startswith("train-"):
            run = RunLayout(Path(option(args, "--runs_dir")), option(args, "--run_name"))
            run.last_checkpoint.parent.mkdir(parents=True)
            run.last_checkpoint.write_bytes(b"weights")
            run.config.write_text(f"seed_everything: {option(args, '--seed_everything')}\nruns_dir: {run.runs_dir}\n")
            if "cds" in run.run_name:
                self.sharing_run(run.metrics_csv, self.tasks, [0.25, 0.75], thresholds=[[0.5] * 3, [1.0] * 3])
        elif key.startswith("evaluate-"):
            self.evaluate(Path(option(args, "--out")), option(args, "--label"), int(option(args, "--episodes")))
        else:
            q = [[1.0 if i == j else 0.5 for j in range(3)] for i in range(3)]
            result = {"checkpoint": "x", "tasks": self.tasks, "q_matrix": q, "agreement": [0.5] * 3,
                      "data_nll": [1.0] * 3}  # fmt: skip
            Path(option(args, "--out")).mkdir(parents=True)
            (Path(option(args, "--out")) / "analysis.json").write_text(json.dumps(result))
        return Done(0)

    tasks = ["lift-cube", "lift-cylinder", "place-cube-blue"]

    def evaluate(self, out: Path, label: str, episodes: int) -> None:
        per_task, records = {}, []
        for task in self.tasks:
            successes = zlib.crc32(f"{out.name}/{task}".encode()) % (episodes + 1)
            outcomes = [i < successes for i in range(episodes)]
            records += [{"task": task, "episode": i, "seed": 1000 + i, "success": s, "episode_return": float(s),
                         "length": 5, "error": None} for i, s in enumerate(outcomes)]  # fmt: skip
            per_task[task] = {"episodes": episodes, "successes": successes, "success_rate": successes / episodes}
        average = sum(r["success_rate"] for r in per_task.values()) / len(per_task)
        summary = {"label": label, "tasks": self.tasks, "wall_time_s": 1.0, "average_success": average,
                   "per_task": per_task, "episodes": records}  # fmt: skip
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))


def study_of(store: Path, seeds: list[int], recipe: str = "tiny", extra=TRAIN_ARGS, code=CODE, allow=()) -> tuple:
    scale = with_overrides(SCALES["quick"], recipe=recipe, methods=["no_sharing", "cds"], seeds=seeds)
    return scale, Study.of(store, "quick", scale, list(extra), allow, code=code)


def compare(tmp_path, store, seeds, world, out: str, **study) -> dict:
    scale, study = study_of(tmp_path / store, seeds, **study)
    return run_comparison(scale, tmp_path / out, 0, list(TRAIN_ARGS), reps=REPS, study=study, launch=world)


def report_files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}  # fmt: skip


def test_a_study_killed_between_runs_resumes_from_the_store_in_a_fresh_folder(tmp_path, tiny_root, sharing_run, capsys):
    killed = FakeStages(tiny_root, sharing_run, fail=("train-cds-seed0",))
    with pytest.raises(subprocess.CalledProcessError):
        compare(tmp_path, "store", [0], killed, "machine-a")
    store = ResultsStore(tmp_path / "store")
    assert store.has("no_sharing-seed0") and not store.has("cds-seed0")

    resumed = FakeStages(tiny_root, sharing_run)  # a fresh clone elsewhere: the same command, another --out
    compare(tmp_path, "store", [0], resumed, "machine-b")
    assert resumed.launched == ["generate", "evaluate-random", "train-cds-seed0", "evaluate-cds-seed0",
                                "analyse-cds-seed0"]  # fmt: skip
    assert "not run again: no_sharing-seed0" in capsys.readouterr().out
    record = json.loads(store.record_path("cds-seed0").read_text())
    assert record["key"]["recipe"] == "tiny" and record["key"]["train_args"] == TRAIN_ARGS
    assert record["code"] == CODE.to_json_dict() and record["analysis"]["q_matrix"][0] == [1.0, 0.5, 0.5]
    assert record["logged_means"]["sharing/lift-cube/place-cube-blue"] == 0.5
    assert record["checkpoint"]["stored"] is False and set(record["files"]) == {"config.yaml"}
    assert len(episode_rows(record["evaluation"]["episodes"])) == 3 * SCALES["quick"].eval_episodes
    assert record["reference"]["label"] == "random" and "episodes" not in record["reference"]
    assert store.record_path("cds-seed0").stat().st_size < 8_000  # 60 episodes, 3 tasks: a few KB
    text = (tmp_path / "machine-b" / "report" / "README.md").read_text()
    assert "## Runs (results store)" in text and "| cds-seed0 | 1234567890ab | c0dec0dec0de |" in text

    # The report from the store alone is the one the run wrote, byte for byte (PNG figures included).
    main(["--report-only", "--store", str(tmp_path / "store"), "--recipe", "tiny", "--methods", "no_sharing", "cds",
          "--seeds", "0", "--bootstrap-reps", str(REPS)])  # fmt: skip
    rebuilt = report_files(tmp_path / "store" / "report")
    assert rebuilt == report_files(tmp_path / "machine-b" / "report") and "success.png" in rebuilt


def test_a_study_split_across_machines_merges_to_the_report_of_one_study(tmp_path, tiny_root, sharing_run):
    compare(tmp_path, "split", [0], FakeStages(tiny_root, sharing_run), "here")  # --seeds 0 here
    compare(tmp_path, "split", [1], FakeStages(tiny_root, sharing_run), "there")  # --seeds 1 there, same store
    merged = FakeStages(tiny_root, sharing_run)
    compare(tmp_path, "split", [0, 1], merged, "merged")  # the whole study on a clone holding both
    assert merged.launched == []  # every run is in the store: nothing to train, not even data to generate
    assert not (tmp_path / "merged" / "data").exists()
    compare(tmp_path, "whole", [0, 1], FakeStages(tiny_root, sharing_run), "whole")  # the same study, unsplit
    whole = report_files(tmp_path / "whole" / "report")
    assert report_files(tmp_path / "merged" / "report") == whole
    assert "sharing/cds.png" in whole and "aggregate/profiles.png" in whole


def test_a_record_from_another_recipe_is_refused_with_one_line(tmp_path, tiny_root, tiny_recipe, sharing_run):
    compare(tmp_path, "store", [0], FakeStages(tiny_root, sharing_run), "a")
    other = tmp_path / "other.yaml"  # the tiny recipe but for its data seed: another dataset
    other.write_text(json.dumps({**tiny_recipe.to_json_dict(), "base_seed": 7}))
    world = FakeStages(tiny_root, sharing_run)
    with pytest.raises(ConfigError) as refused:
        compare(tmp_path, "store", [0], world, "b", recipe=str(other))
    message = str(refused.value)
    assert "\n" not in message and world.launched == [] and not (tmp_path / "b").exists()  # before any work
    assert message.startswith(f"{tmp_path / 'store' / 'runs' / 'no_sharing-seed0' / RECORD_FILE}: recorded with ")
    assert "fingerprint '42b4a0ade676...', this study has '" in message and "another --store" in message
    with pytest.raises(ConfigError, match="recorded with fingerprint"):
        main(["--report-only", "--store", str(tmp_path / "store"), "--recipe", str(other)])


def test_another_configuration_or_code_is_refused_unless_mixing_is_asked_for(tmp_path, tiny_root, sharing_run):
    compare(tmp_path, "store", [0], FakeStages(tiny_root, sharing_run), "a")
    with pytest.raises(ConfigError, match=r"recorded with train_args .*--allow-mixed config"):
        study_of(tmp_path / "store", [0], extra=["--config", "smoke"])[1].check()
    newer = CodeIdentity("beef" * 16, "fedcba9876543210fedcba9876543210fedcba98", True)
    refused = r"recorded with code 'c0dec0dec0de\.\.\.', this study has 'beefbeef.*made with \(commit 1234567890ab\)"
    with pytest.raises(ConfigError, match=refused):
        study_of(tmp_path / "store", [0, 1], code=newer)[1].check()
    world = FakeStages(tiny_root, sharing_run)
    compare(tmp_path, "store", [0, 1], world, "b", code=newer, allow=("code",))
    assert world.launched[0] == "generate" and "train-no_sharing-seed0" not in world.launched
    text = (tmp_path / "b" / "report" / "README.md").read_text()
    assert "| no_sharing-seed0 | 1234567890ab | c0dec0dec0de |" in text  # every run names the code it ran
    assert "| no_sharing-seed1 | fedcba987654 (dirty) | beefbeefbeef |" in text
    mixed = r"seed1/record.json: recorded with code 'beefbeefbeef\.\.\.', the store's .*no_sharing-seed0/record.json"
    with pytest.raises(ConfigError, match=mixed):  # from the store alone: the first record is the reference
        main(["--report-only", "--store", str(tmp_path / "store"), "--recipe", "tiny", "--seeds", "0", "1"])


def test_a_damaged_record_is_named_and_an_empty_store_has_nothing_to_report(tmp_path, tiny_root, sharing_run):
    with pytest.raises(ConfigError, match=r"--store .*: no record of this study's runs"):
        main(["--report-only", "--store", str(tmp_path / "empty"), "--recipe", "tiny"])
    with pytest.raises(ConfigError, match="--report-only: needs the --store"):
        main(["--report-only"])
    compare(tmp_path, "store", [0], FakeStages(tiny_root, sharing_run), "a")
    config = tmp_path / "store" / "runs" / "cds-seed0" / "config.yaml"
    config.write_text("edited by hand\n")
    with pytest.raises(ConfigError, match=r"cds-seed0/config.yaml: changed since the record was written"):
        study_of(tmp_path / "store", [0])[1].check()


def test_records_keep_episodes_by_task_and_the_code_version_follows_the_sources(tmp_path):
    episodes = [{"task": t, "episode": i, "success": i == 1, "error": None} for t in ("a", "b") for i in range(2)]
    columns = episode_columns(episodes)
    assert columns["b"] == {"episode": [0, 1], "success": [False, True], "error": [None, None]}
    assert episode_rows(columns) == episodes
    package = tmp_path / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    version = code_version([("pkg", package)])
    (package / "__pycache__" / "a.py").write_text("ignored")
    (package / "notes.txt").write_text("not code")
    assert code_version([("pkg", package)]) == version
    (package / "a.py").write_text("x = 2\n")
    assert code_version([("pkg", package)]) != version
    assert code_commit(package) == ("unknown", None)  # not a git checkout
