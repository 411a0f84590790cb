"""Trainer and run settings that Lightning, numpy or torch would refuse deep inside a fit (a division by zero, a
bounds error, a folder that is a file, a missing accelerator): one ``ConfigError`` naming the flag, before any
run folder is made."""

from __future__ import annotations

import re

import pytest
from test_cli_fit import TINY, base_config, fit  # noqa: F401 - the fixture is used by name

from robocds.errors import ConfigError
from robocds.train.cli import check_fit_arguments

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--trainer.max_steps", "-5"], "--trainer.max_steps -5: must be >= 0 (or -1: no limit)"),
        (["--trainer.check_val_every_n_epoch", "0"], "--trainer.check_val_every_n_epoch 0: must be >= 1"),
        (["--trainer.accumulate_grad_batches", "0"], "--trainer.accumulate_grad_batches 0: must be >= 1"),
        (["--trainer.val_check_interval", "0"], "--trainer.val_check_interval 0: must be > 0"),
        (["--seed_everything", "-1"], "--seed_everything -1: must be in [0, 4294967295]"),
        (["--seed_everything", "4294967296"], "--seed_everything 4294967296: must be in [0, 4294967295]"),
        (["--runs_dir", "{file}"], "--runs_dir '{file}': exists and is not a folder"),
        (["--checkpoint.dirpath", "{file}"], "--checkpoint.dirpath '{file}': exists and is not a folder"),
    ],
)
def test_settings_refused_before_the_fit_name_their_flag(base_config, tmp_path, flags, words):  # noqa: F811
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    flags = [flag.format(file=file) for flag in flags]
    with pytest.raises(ConfigError) as caught:
        check_fit_arguments(["fit", "--config", base_config, *TINY, *flags])
    assert str(caught.value) == words.format(file=file)
    with pytest.raises(ConfigError, match="^" + re.escape(words.format(file=file)) + "$"):
        fit(base_config, ["--config", "no_sharing"], tmp_path / "runs", *flags)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--trainer.devices", "0"], r"^--trainer: `Trainer\(devices='0'\)` value is not a valid input"),
        (["--trainer.limit_val_batches", "-1"], r"^--trainer: You have passed invalid value -1 for limit_val_batches"),
        (["--model.optimizer.init_args.lr", "-1"], r"^--model.optimizer: Invalid learning rate: -1.0$"),
    ],
)
def test_settings_lightning_or_torch_refuse_are_one_line(base_config, tmp_path, flags, words):  # noqa: F811
    with pytest.raises(ConfigError, match=words):
        fit(base_config, ["--config", "no_sharing"], tmp_path / "runs", *flags)
