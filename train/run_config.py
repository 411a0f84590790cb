"""Where the CLI records a run's resolved config, and what it does when a config is already there.

Lightning's ``SaveConfigCallback`` writes ``config.yaml`` into the trainer's log folder and, when one exists,
stops with a multi-line ``RuntimeError`` from inside the trainer. With the default loggers every run has a fresh
version folder, so that only happens when the loggers are off (``--trainer.logger false``), where the log folder
is ``--trainer.default_root_dir`` (the working directory by default), the same for every run:

- ``fit`` there refuses in one line, naming the file, before anything is trained or overwritten;
- ``validate`` / ``test`` / ``predict`` without a logger record nothing (they write no other file either).
"""

from __future__ import annotations

import os

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from robocds.errors import ConfigError


class SaveRunConfig(SaveConfigCallback):
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved or not self.save_to_log_dir:
            return super().setup(trainer, pl_module, stage)
        if trainer.logger is None and stage != "fit":
            self.already_saved = True
            return None
        if not self.overwrite:  # a resumed run overwrites its own config: nothing to check
            config_path = os.path.join(trainer.log_dir, self.config_filename)
            # Decided on rank 0 and broadcast, as upstream, so every rank raises together (none waits for another).
            exists = os.path.isfile(config_path) if trainer.is_global_zero else False
            if trainer.strategy.broadcast(exists):
                raise ConfigError(
                    f"{config_path}: the config of an earlier run is there (each run records its config in its log "
                    "folder, --trainer.default_root_dir when the loggers are off); give the run a folder of its own: "
                    "a new --trainer.default_root_dir, or the default loggers (one version folder a run)"
                )
        return super().setup(trainer, pl_module, stage)
