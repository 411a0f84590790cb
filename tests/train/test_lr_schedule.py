"""The cosine learning-rate schedule's values and checks (a fit on it: tests/train/test_cli_fit.py)."""

from __future__ import annotations

import pytest
import torch

from robocds.errors import ConfigError
from robocds.module import MultiTaskCQL, cosine_to_zero

torch.set_num_threads(1)


def learning_rates(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def test_cosine_to_zero_is_torch_s_cosine_annealing_over_the_run_and_stays_at_zero_after_it() -> None:
    total = 20
    ours = cosine_to_zero(torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=3e-4), total)
    torchs = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=3e-4), T_max=total
    )
    ours_rates, torch_rates = learning_rates(ours, total + 1), learning_rates(torchs, total + 1)
    assert ours_rates == pytest.approx(torch_rates, abs=1e-12)
    assert ours_rates[0] == 3e-4 and ours_rates[total // 2] == pytest.approx(1.5e-4) and ours_rates[total] == 0.0
    # Past the end it stays at 0 (torch's CosineAnnealingLR would climb back up).
    assert learning_rates(ours, 5) == [0.0] * 5
    with pytest.raises(ConfigError, match=r"trainer.max_steps, which is -1"):
        cosine_to_zero(torch.optim.Adam([torch.zeros(1, requires_grad=True)]), -1)


def test_the_schedule_names_are_checked_and_only_one_schedule_is_given() -> None:
    shapes = {"num_tasks": 2, "num_actions": 8, "image_size": 32, "proprio_dim": 0, "encoder": {"use_proprio": False}}
    with pytest.raises(ValueError, match=r"lr_schedule='linear': must be one of \['constant', 'cosine'\]"):
        MultiTaskCQL(**shapes, lr_schedule="linear")
    with pytest.raises(ValueError, match="give one or the other"):
        MultiTaskCQL(**shapes, lr_schedule="cosine", lr_scheduler=torch.optim.lr_scheduler.ConstantLR)
