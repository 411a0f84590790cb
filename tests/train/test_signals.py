"""The signal contract of ``robocds fit``: SIGTERM (a scheduler's pre-emption) saves ``last.ckpt`` at the step
reached and exits 143, and the run goes on from it; Ctrl-C exits 130.

The fit runs as a real subprocess with SIGINT's default handling restored in it: a suite started as a
background job hands its children an ignored SIGINT, and such a child would never see the Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_cli_fit import TINY

from robocds.checkpoint import load_checkpoint
from robocds.train.resume import checkpoint_step

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fit_command(base_config: str, runs: Path, *extra: str) -> list[str]:
    tiny = [arg for arg in TINY if not arg.startswith("--trainer.max_steps")]
    return [str(BIN / "robocds"), "fit", "--config", base_config, *tiny, f"--runs_dir={runs}", "--run_name=sig",
            "--trainer.max_steps=100000", *extra]  # fmt: skip


def start_and_signal(command: list[str], last: Path, sig: int) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint
    )
    try:
        deadline = time.monotonic() + 240
        while not last.exists():  # the first epoch (3 steps) is done: training is under way
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the fit never saved its first last.ckpt"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _base_config(tmp_path: Path) -> str:
    import yaml

    from robocds.train.cli import CONFIG_DIR

    config = yaml.safe_load((CONFIG_DIR / "base.yaml").read_text())
    config.pop("data")
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_sigterm_saves_last_checkpoint_exits_143_and_the_run_goes_on(tmp_path):
    base = _base_config(tmp_path)
    runs = tmp_path / "runs"
    last = runs / "sig" / "version_0" / "checkpoints" / "last.ckpt"
    status, err = start_and_signal(fit_command(base, runs), last, signal.SIGTERM)
    assert status == 143, err
    assert err.strip().splitlines()[-1] == f"robocds: stopped by SIGTERM: {last} saved; resume with --ckpt_path {last}"
    step = checkpoint_step(last)
    assert step >= 3 and "state_dict" in load_checkpoint(last)
    assert not list(last.parent.glob("*.partial"))
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    resumed = subprocess.run(
        [*fit_command(base, runs), f"--trainer.max_steps={step + 2}", f"--ckpt_path={last}"],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint_step(last) == step + 2


def test_ctrl_c_ends_a_fit_with_status_130(tmp_path):
    runs = tmp_path / "runs"
    last = runs / "sig" / "version_0" / "checkpoints" / "last.ckpt"
    status, err = start_and_signal(fit_command(_base_config(tmp_path), runs), last, signal.SIGINT)
    assert status == 130, err
    assert err.strip().splitlines()[-1] == "robocds: interrupted"
