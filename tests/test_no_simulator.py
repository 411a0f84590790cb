"""Reading shards and training never load the simulator: a training node needs no pybullet."""

from __future__ import annotations

import subprocess
import sys
import textwrap

TRAINING_PATH = textwrap.dedent(
    """
    import sys
    import torch
    import robocds.callbacks, robocds.datasets.streaming, robocds.module, robocds.train.cli
    from robocds.datasets.datamodule import OfflineDataModule
    from robocds.module import MultiTaskCQL
    from robocds.sharing import SharingRouter
    from robocds.config import SharingConfig

    data = OfflineDataModule(sys.argv[1], batch_size=4, steps_per_epoch=1, val_batches=1)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    model = MultiTaskCQL(data.num_tasks, data.num_actions, data.image_size, data.proprio_dim, data.task_names,
                         env=data.env, encoder={"kernel_sizes": (4, 3, 3), "strides": (2, 2, 1)})
    terms, _ = model.compute_terms(batch, SharingRouter(SharingConfig(mode="cds")))
    terms.loss.backward()
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("pybullet", "pybullet_utils"))
    assert not loaded, f"the training path loaded the simulator: {loaded}"
    print("ok", float(terms.loss))
    """
)


def test_reading_shards_and_a_training_step_do_not_import_pybullet(tiny_root):
    result = subprocess.run(
        [sys.executable, "-c", TRAINING_PATH, str(tiny_root)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")
