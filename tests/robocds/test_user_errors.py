"""The user-error contract of every console script: one line ``<program>: error: <what>: <why>`` on stderr,
exit status 2, no traceback; a bug keeps its traceback. Checkpoints: weights_only, "not a checkpoint".

The console scripts run as real subprocesses (all started at once: the suite stays fast), with inputs
that are refused before any work starts.
"""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robocds.checkpoint import load_checkpoint, load_module
from robocds.errors import CheckpointError, ConfigError, UserError, one_line, output_dir, run_cli, user_error_in

BIN = Path(sys.executable).parent


class _Evil:
    """Unpickling this would create a file: a stand-in for code hidden in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    random_bytes = root / "random.ckpt"
    random_bytes.write_bytes(bytes(range(256)) * 40)
    a_file = root / "a_file"
    a_file.write_text("not a folder\n")
    recipe = root / "small_images.yaml"
    recipe.write_text("name: small\nimage_size: 8\ntasks:\n  lift-cube: {episodes: 1}\n")
    empty = root / "empty"
    empty.mkdir()
    return {"random": random_bytes, "file": a_file, "recipe": recipe, "empty": empty, "root": root}


def contract_cases(f: dict[str, Path]) -> dict[str, tuple[str, list[str], str]]:
    """case -> (program, its arguments, words the error line must hold)."""
    out = str(f["root"] / "out")
    return {
        "robocds: missing manifest.json": (
            "robocds",
            ["fit", "--config", "base", "--config", "no_sharing", "--data.root", str(f["empty"])],
            f"{f['empty']}/manifest.json: missing",
        ),
        "robocds: a setting the data module refuses": (
            "robocds",
            ["fit", "--config", "base", "--data.root", str(f["empty"]), "--data.batch_size", "abc"],
            "--data.batch_size: Expected a <class 'int'>",
        ),
        "robocds: random bytes as --ckpt_path": (
            "robocds",
            ["fit", "--config", "base", "--data.root", str(f["empty"]), "--ckpt_path", str(f["random"])],
            f"{f['random']}: not a checkpoint",
        ),
        "robocds: checkpoints are never fully unpickled": (
            "robocds",
            ["fit", "--config", "base", "--data.root", str(f["empty"]), "--weights_only", "false"],
            "--weights_only false: refused",
        ),
        "generate: image size the camera refuses": (
            "robocds-generate",
            [str(f["recipe"]), "--root", out],
            "image_size=8: the camera renders frames of >= 16 pixels",
        ),
        "inspect: not a dataset": ("robocds-inspect", [str(f["empty"])], "manifest.json: missing"),
        "eval: --out is a file": (
            "robocds-eval",
            ["--policy", "random", "--out", str(f["file"]), "--episodes", "1"],
            f"--out '{f['file']}': exists and is not a folder",
        ),
        "eval: random bytes as --checkpoint": (
            "robocds-eval",
            ["--checkpoint", str(f["random"]), "--out", out],
            f"{f['random']}: not a checkpoint",
        ),
        "eval: bad flag value": ("robocds-eval", ["--policy", "random", "--out", out, "--episodes", "0"], "--episodes"),
        "report: not an evaluation folder": (
            "robocds-report",
            [str(f["empty"]), "--out", out],
            "no evaluation summary",
        ),
        "analyse: random bytes as --checkpoint": (
            "robocds-analyse",
            ["--checkpoint", str(f["random"]), "--data", str(f["empty"]), "--out", out],
            "not a checkpoint",
        ),
        "demo: unknown task": ("robocds-demo", ["--tasks", "lift-sphere", "--out", out], "--tasks lift-sphere"),
        "compare: --out is a file": ("robocds-compare", ["--out", str(f["file"])], "exists and is not a folder"),
        "curves: not a training run": (
            "robocds-curves",
            [str(f["empty"]), "--out", f"{out}/curves.png"],
            f"{f['empty']}: no csv/metrics.csv and no version_N folder",
        ),
    }


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: program -> ``module:function``."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    return pyproject["project"]["scripts"]


def _entry_main(program: str):
    module, _, function = console_scripts()[program].partition(":")
    return importlib.import_module(module).main


def check_error_line(program: str, status: int | None, err: str, words: str, case: str) -> None:
    """Exit status 2 and the last stderr line; in a subprocess, where stderr is the program's own, no traceback."""
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert status == 2, f"{case}: exit {status}\n{err}"
    assert last.startswith(f"{program}: error: ") and words in last, f"{case}: {last!r}"


@pytest.mark.parametrize("program", list(console_scripts()))
def test_every_console_script_runs_through_run_cli(program, monkeypatch, capsys) -> None:
    module, _, function = console_scripts()[program].partition(":")
    loaded = importlib.import_module(module)

    def refuse(argv=None):
        raise ConfigError("--x 1: refused")

    monkeypatch.setattr(loaded, "main", refuse)
    with pytest.raises(SystemExit) as info:
        getattr(loaded, function)()
    assert info.value.code == 2 and capsys.readouterr().err == f"{program}: error: --x 1: refused\n"


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
@pytest.mark.parametrize(
    "case", list(contract_cases({k: Path("/x") for k in ("random", "file", "recipe", "empty", "root")}))
)
def test_a_user_error_is_one_line_with_status_2(bad_files, case, capsys) -> None:
    program, args, words = contract_cases(bad_files)[case]
    with pytest.raises(SystemExit) as info:
        run_cli(_entry_main(program), program, args)
    check_error_line(program, info.value.code, capsys.readouterr().err, words, case)
    assert not (bad_files["root"] / "out").exists()  # refused before anything was written


SUBPROCESS_CASES = [
    "robocds: random bytes as --ckpt_path",
    "generate: image size the camera refuses",
    "eval: --out is a file",
]


def test_the_real_console_scripts_keep_the_contract(bad_files) -> None:
    """A few cases through the installed entry points (started together: the suite stays fast)."""
    cases = contract_cases(bad_files)
    procs = {
        case: subprocess.Popen(
            [str(BIN / cases[case][0]), *cases[case][1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for case in SUBPROCESS_CASES
    }
    for case, proc in procs.items():
        _, stderr = proc.communicate(timeout=240)
        check_error_line(cases[case][0], proc.returncode, stderr.decode(), cases[case][2], case)
        assert "Traceback" not in stderr.decode(), f"{case}:\n{stderr.decode()}"


def test_a_bug_keeps_its_traceback() -> None:
    code = "from robocds.errors import run_cli\ndef main(argv):\n    return 1 / 0\nrun_cli(main, 'prog')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ZeroDivisionError" in done.stderr


def test_run_cli_reports_a_wrapped_user_error(capsys) -> None:
    def main(argv):
        try:
            raise ConfigError("--x 3: too big")
        except ConfigError as err:
            raise ValueError("a library's wrapper\nwith many lines") from err

    with pytest.raises(SystemExit) as info:
        run_cli(main, "prog", [])
    assert info.value.code == 2
    assert capsys.readouterr().err == "prog: error: --x 3: too big\n"
    assert user_error_in(ValueError("plain")) is None


def test_a_dataloader_worker_error_is_reported_by_its_original_message() -> None:
    # torch re-raises a worker's exception as Type("Caught Type in DataLoader worker ...\nOriginal Traceback ...").
    wrapped = UserError(
        "Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nrobocds.errors.UserError: shard.tar: sha256 mismatch\n'
    )
    assert one_line(wrapped) == "shard.tar: sha256 mismatch"


def test_output_dir_checks_without_creating(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        output_dir(tmp_path / "f")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        output_dir(tmp_path / "f" / "sub")
    assert output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()


def test_checkpoints_load_weights_only_and_refuse_what_is_not_one(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:600])
    with pytest.raises(CheckpointError, match="not a checkpoint: damaged or truncated"):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        load_checkpoint(plain)
    lightning_like = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}}, lightning_like)
    with pytest.raises(CheckpointError, match="not a MultiTaskCQL checkpoint"):
        load_module(lightning_like)


def test_a_checkpoint_hiding_code_is_refused_without_running_it(tmp_path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused: it holds Python objects") as info:
        load_checkpoint(evil)
    assert not marker.exists()
    # torch's own message offers weights_only=False: a user error never points at the unsafe path.
    message = str(info.value)
    assert "weights_only=False" not in message and "trust" not in message and "\x1b" not in message
    assert message.endswith("(weights_only=True: Unsupported global: GLOBAL getattr)"), message


def test_the_error_line_is_the_only_line_on_stderr(bad_files, tmp_path) -> None:
    """No ``pybullet build time``, ``argv[0]=``, ``Seed set to 0``, GPU/TPU or tip lines around the error."""
    cases = {
        "eval imports pybullet": (
            "robocds-eval",
            ["--policy", "random", "--tasks", "lift-sphere", "--out", str(tmp_path / "e")],
        ),
        "demo imports pybullet": ("robocds-demo", ["--tasks", "lift-sphere", "--out", str(tmp_path / "d")]),
        "fit on a missing dataset": ("robocds", ["fit", "--config", "base", "--data.root", str(bad_files["empty"])]),
    }
    procs = {
        case: subprocess.Popen(
            [str(BIN / program), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        for case, (program, args) in cases.items()
    }
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 2, f"{case}: {err}"
        assert len(err.splitlines()) == 1 and err.startswith(f"{cases[case][0]}: error: "), f"{case}: {err!r}"
        assert "argv[0]" not in out and "pybullet" not in out, f"{case}: {out!r}"


def test_a_checkpoint_with_a_changed_byte_is_refused(tmp_path) -> None:
    """torch.load does not compare the zip's CRCs: one flipped byte inside a tensor used to load silently."""
    path = tmp_path / "flipped.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096, dtype=torch.float32)}}, path)
    assert load_checkpoint(path)["state_dict"]["w"][1000] == 1000
    raw = bytearray(path.read_bytes())
    offset = raw.index(torch.tensor([1000.0]).numpy().tobytes())  # inside the tensor's bytes
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"flipped.ckpt: damaged: member '.*' does not match the checksum"):
        load_checkpoint(path)
