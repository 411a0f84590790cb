"""Q-value and policy-distance diagnostics on a real (tiny) dataset and a real checkpoint."""

import numpy as np
import pytest
import torch

from robocds.envs.suite import PROPRIO_DIM, EnvSettings
from robocds.errors import CheckpointError
from robocds.eval.analysis import analyse, main, markdown, on_policy_agreement, summarize
from robocds.module import MultiTaskCQL


def constant_batches(num_tasks: int, batch_size: int, action: int, image_size: int = 16):
    g = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randint(0, 255, (num_tasks, batch_size, 3, image_size, image_size), dtype=torch.uint8,
                                   generator=g),
            "proprio": torch.rand(num_tasks, batch_size, 4, generator=g),
            "action": torch.full((num_tasks, batch_size), action),
        }
    ]  # fmt: skip


def test_a_model_that_always_prefers_the_data_action_agrees_everywhere():
    torch.manual_seed(0)
    model = MultiTaskCQL(num_tasks=2, num_actions=4, image_size=16, proprio_dim=4,
                         encoder={"channels": (4,), "kernel_sizes": (3,), "strides": (2,), "feature_dim": 8},
                         cql={"head_hidden": 8})  # fmt: skip
    model.eval()
    with torch.no_grad():  # the last layer of every head outputs Q = [0, 0, 3, 0] for every task
        for head in model.q.modules():
            if isinstance(head, torch.nn.Linear) and head.out_features == 2 * 4:
                head.weight.zero_()
                head.bias.copy_(torch.tensor([0.0, 0.0, 3.0, 0.0] * 2))
    result = analyse(model, constant_batches(2, 5, action=2))
    assert result["agreement"] == [1.0, 1.0]
    np.testing.assert_allclose(result["q_matrix"], [[3.0, 3.0], [3.0, 3.0]], rtol=1e-6)
    expected_nll = -np.log(np.exp(3) / (np.exp(3) + 3))
    assert result["data_nll"] == pytest.approx([expected_nll] * 2, rel=1e-5)
    other = analyse(model, constant_batches(2, 5, action=0))
    assert other["agreement"] == [0.0, 0.0]
    summary = summarize([result, other])
    assert summary["q_own"] == pytest.approx([1.5, 1.5]) and summary["q_shared"] == pytest.approx([1.5, 1.5])
    assert "| task_0 |" in markdown({"m": summary})


def test_cli_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nope.ckpt: no such file"):
        main(["--checkpoint", str(tmp_path / "nope.ckpt"), "--data", str(tmp_path), "--out", str(tmp_path)])
    assert not (tmp_path / "analysis.json").exists()


def test_closed_loop_agreement_plays_real_episodes_and_names_the_disagreements():
    torch.manual_seed(0)
    env = EnvSettings(image_size=16, max_steps=6).to_json_dict()  # the settings the model's data was recorded in
    model = MultiTaskCQL(num_tasks=1, num_actions=8, image_size=16, proprio_dim=PROPRIO_DIM, task_names=["lift-cube"],
                         env=env, encoder={"channels": (4,), "kernel_sizes": (3,), "strides": (2,), "feature_dim": 8},
                         cql={"head_hidden": 8})  # fmt: skip
    model.eval()
    with torch.no_grad():  # always "open" (index 7): never what the oracle does when starting a lift
        for layer in model.q.modules():
            if isinstance(layer, torch.nn.Linear) and layer.out_features == 8:
                layer.weight.zero_()
                layer.bias.copy_(torch.tensor([0.0] * 7 + [5.0]))
    result = on_policy_agreement(model, episodes=1)
    assert result["on_policy_episodes"] == 1
    (agreement,) = result["oracle_agreement"]
    (confusions,) = result["confusions"]
    assert 0.0 <= agreement < 0.5
    assert confusions and all(policy == "open" for policy, _, _ in confusions)
    assert sum(fraction for _, _, fraction in confusions) <= 1.0 - agreement + 1e-9
