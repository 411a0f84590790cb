"""Data-sharing maths (none / all / cds / uds / share_successes) as pure functions, and the stateful router
that applies them.

Shapes follow ``robocds.cql``: ``q_data`` is [T_src, B, T_tgt], entry [j, b, i] = Q_i(s, a) of
transition b of task j's data (computed without gradient, from the network being trained, in the
same forward pass as the loss). Weights have the same shape; own data (j == i) always has weight 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from robocds.config import SharingConfig
from robocds.datasets.schema import BATCH_EPISODE_SUCCESSES


def own_mask(num_tasks: int, device: torch.device | str | None = None) -> Tensor:
    """bool [T, 1, T], True where source == target (broadcasts over the batch axis of [T_src, B, T_tgt])."""
    return torch.eye(num_tasks, dtype=torch.bool, device=device)[:, None, :]


def own_task_values(q_data: Tensor) -> Tensor:
    """[T, B, T] -> [T, B]: Q_i over task i's own transitions (the diagonal in source/target)."""
    return torch.diagonal(q_data, dim1=0, dim2=2).transpose(0, 1)


def batch_thresholds(own_q: Tensor, rule: str = "mean", percentile: float = 50.0) -> Tensor:
    """Threshold of every task from Q_i on its own transitions.

    Args:
        own_q: [T, N] Q_i over N own transitions of task i.
        rule: "mean", or "percentile" (linear interpolation, as ``torch.quantile``).
        percentile: in [0, 100], used by rule "percentile".

    Returns:
        [T].
    """
    if rule == "mean":
        return own_q.mean(dim=1)
    if rule == "percentile":
        return torch.quantile(own_q, percentile / 100.0, dim=1)
    raise ValueError(f"threshold={rule!r}: must be 'mean' or 'percentile'")


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_thresholds(own_q: Tensor, rule: str = "mean", percentile: float = 50.0) -> Tensor:
    """``batch_thresholds`` over the own transitions of *every* process (DDP), so all ranks route alike.

    The mean all-reduces sums and counts; the percentile all-gathers the [T, N] values (every rank must
    hold the same N, as fixed-size batches do). Without an initialised process group it is
    ``batch_thresholds``. Returns [T], identical on every rank.
    """
    world = _world_size()
    if world == 1:
        return batch_thresholds(own_q, rule, percentile)
    if rule == "mean":
        stats = torch.stack([own_q.sum(dim=1), torch.full_like(own_q[:, 0], own_q.shape[1])])
        dist.all_reduce(stats)
        return stats[0] / stats[1]
    gathered = [torch.empty_like(own_q) for _ in range(world)]
    dist.all_gather(gathered, own_q.contiguous())
    return batch_thresholds(torch.cat(gathered, dim=1), rule, percentile)


def broadcast_from_rank_zero(values: Tensor) -> Tensor:
    """``values`` as rank 0 holds them, on every rank (DDP); unchanged without a process group."""
    if _world_size() == 1:
        return values
    values = values.contiguous().clone()
    dist.broadcast(values, src=0)
    return values


def cds_weights(q_data: Tensor, thresholds: Tensor, temperature: float | None = None) -> Tensor:
    """CDS weights w(s, a; j -> i).

    Args:
        q_data: [T_src, B, T_tgt] Q_i(s, a) of every transition for every target task.
        thresholds: [T_tgt] threshold_i.
        temperature: None -> 1[Q_i(s, a) >= threshold_i]; > 0 -> sigmoid((Q_i(s, a) - threshold_i) / temperature).

    Returns:
        [T_src, B, T_tgt] in [0, 1]; own data (j == i) gets 1.
    """
    delta = q_data - thresholds[None, None, :]
    shared = (delta >= 0).to(q_data.dtype) if temperature is None else torch.sigmoid(delta / temperature)
    return torch.where(own_mask(q_data.shape[0], q_data.device), torch.ones_like(shared), shared)


def success_weights(episode_successes: Tensor) -> Tensor:
    """share_successes weights: task j's transition goes into task i when its episode holds a success of i.

    Args:
        episode_successes: [T_src, B, T_tgt], entry [j, b, i] > 0 where the episode of transition b of task
            j's data has a return > 0 for task i (the batch's ``episode_successes``).

    Returns:
        [T_src, B, T_tgt] float32 in {0, 1}; own data (j == i) gets 1 whatever its episode's return.
    """
    shared = (episode_successes > 0).float()
    return torch.where(own_mask(shared.shape[0], shared.device), torch.ones_like(shared), shared)


def fixed_weights(mode: str, num_tasks: int, batch_size: int, device: torch.device | str | None = None) -> Tensor:
    """Weights of the modes that do not look at Q: "none" (own data only) and "all"/"uds" (everything).

    Returns [T, B, T] float32.
    """
    if mode == "none":
        return own_mask(num_tasks, device).expand(num_tasks, batch_size, num_tasks).float()
    if mode in ("all", "uds"):
        return torch.ones(num_tasks, batch_size, num_tasks, device=device)
    raise ValueError(f"mode={mode!r} has no fixed weights (only 'none', 'all', 'uds' do)")


def relabel(rewards: Tensor, successes: Tensor, zero_shared: bool = False) -> tuple[Tensor, Tensor]:
    """Rewards and terminals of every transition for every target task.

    Args:
        rewards, successes: [T_src, B, T_tgt] as stored in the batch: entry [j, b, i] is task i's reward
            (success) for transition b of task j's data, so relabeling j's data for task i reads [j, :, i].
        zero_shared: UDS: shared transitions (j != i) get reward 0 and are not terminal, since without
            reward information their success for task i is unknown.

    Returns:
        (rewards, dones), both [T_src, B, T_tgt] float.
    """
    rewards, dones = rewards.float(), successes.float()
    if zero_shared:
        own = own_mask(rewards.shape[0], rewards.device)
        rewards = torch.where(own, rewards, torch.zeros_like(rewards))
        dones = torch.where(own, dones, torch.zeros_like(dones))
    return rewards, dones


def sharing_matrix(weights: Tensor) -> Tensor:
    """[T_src, B, T_tgt] weights -> [T_tgt, T_src]: mean weight of source j's transitions routed into target i.

    With hard weights this is the fraction of j's transitions shared into i; the diagonal is 1.
    """
    return weights.mean(dim=1).transpose(0, 1)


@dataclass(frozen=True)
class Routing:
    """Routing of one batch."""

    weights: Tensor  # [T_src, B, T_tgt] loss weights, no gradient
    zero_shared_rewards: bool  # relabel shared rewards/terminals to 0 (uds)
    thresholds: Tensor | None  # [T] thresholds used (cds), else None


class SharingRouter:
    """Computes the routing weights of every batch and keeps the routing state.

    State: the running threshold estimate (cds with ``ema`` > 0), the latest held-out threshold estimate
    (cds with ``threshold_from="heldout"``, set by ``set_heldout_thresholds``), the number of routed
    batches, and the sharing matrix summed since it was last read. Everything is synchronised over DDP
    ranks where it matters (thresholds at every batch or estimate, the matrix when read), so every rank
    routes identically.
    """

    def __init__(self, config: SharingConfig) -> None:
        self.config = config
        self.running_threshold: Tensor | None = None
        self.heldout_threshold: Tensor | None = None  # [T], cds with threshold_from="heldout"
        self.last_thresholds: Tensor | None = None
        self.num_updates = 0
        self._matrix_sum: Tensor | None = None
        self._matrix_count = 0

    def __call__(self, q_data: Tensor, batch: Mapping[str, Tensor] | None = None) -> Routing:
        """q_data [T, B, T] (detached Q of the data actions) and the training batch -> Routing.

        ``batch`` (the schema's training batch) is read by the modes that look at the data rather than at Q:
        ``share_successes`` reads its ``episode_successes`` [T, B, T]; the other modes ignore it.
        """
        q_data = q_data.detach().float()
        num_tasks, batch_size, num_targets = q_data.shape
        if num_tasks != num_targets:
            raise ValueError(f"q_data has shape {tuple(q_data.shape)}: expected [T, B, T]")
        cfg = self.config
        thresholds = None
        if cfg.mode == "cds":
            if cfg.threshold_from == "heldout":
                if self.heldout_threshold is None:
                    raise RuntimeError(
                        "cds with threshold_from='heldout' has no held-out threshold yet: the DataSharing callback "
                        "estimates it at the start of training (set_heldout_thresholds)"
                    )
                thresholds = self.heldout_threshold.to(q_data.device)
            else:
                thresholds = self.update_thresholds(own_task_values(q_data))
            weights = cds_weights(q_data, thresholds, cfg.temperature)
        elif cfg.mode == "share_successes":
            if batch is None or BATCH_EPISODE_SUCCESSES not in batch:
                raise ValueError(
                    f"sharing mode 'share_successes' needs the batch's {BATCH_EPISODE_SUCCESSES!r} [T, B, T] "
                    "(every robocds loader yields it)"
                )
            episode_successes = batch[BATCH_EPISODE_SUCCESSES]
            if tuple(episode_successes.shape) != tuple(q_data.shape):
                raise ValueError(
                    f"batch[{BATCH_EPISODE_SUCCESSES!r}] has shape {tuple(episode_successes.shape)}: expected "
                    f"{list(q_data.shape)} like the Q-values of the data actions"
                )
            weights = success_weights(episode_successes.to(q_data.device))
        else:
            weights = fixed_weights(cfg.mode, num_tasks, batch_size, q_data.device)
        matrix = sharing_matrix(weights)
        self._matrix_sum = matrix if self._matrix_sum is None else self._matrix_sum.to(matrix.device) + matrix
        self._matrix_count += 1
        self.num_updates += 1
        return Routing(weights=weights, zero_shared_rewards=cfg.mode == "uds", thresholds=thresholds)

    def update_thresholds(self, own_q: Tensor) -> Tensor:
        """own_q [T, B] -> thresholds [T] (all-reduced over ranks; folded into the running estimate)."""
        batch = global_thresholds(own_q, self.config.threshold, self.config.percentile)
        ema = self.config.ema
        if ema > 0.0 and self.running_threshold is not None:
            batch = ema * self.running_threshold.to(batch.device) + (1.0 - ema) * batch
        if ema > 0.0:
            self.running_threshold = batch
        self.last_thresholds = batch
        return batch

    def set_heldout_thresholds(self, own_q: Tensor) -> Tensor:
        """Held-out threshold estimate from own_q [T, N], Q_i over N transitions of task i's held-out episodes.

        The config's rule (mean or percentile) over each row gives thresholds [T], used for every batch routed
        until the next estimate. Under DDP every rank draws the same held-out batches; rank 0's estimate is
        broadcast all the same, so every rank routes with identical thresholds. Returns the thresholds.
        """
        thresholds = batch_thresholds(own_q.detach().float(), self.config.threshold, self.config.percentile)
        self.heldout_threshold = broadcast_from_rank_zero(thresholds)
        self.last_thresholds = self.heldout_threshold
        return self.heldout_threshold

    def pop_matrix(self) -> Tensor | None:
        """Mean sharing matrix [T_tgt, T_src] since the last call (averaged over ranks), then reset; None if empty.

        Under DDP every rank must call this at the same step (it all-reduces).
        """
        if self._matrix_sum is None or self._matrix_count == 0:
            return None
        matrix = self._matrix_sum / self._matrix_count
        if _world_size() > 1:
            matrix = matrix.clone()
            dist.all_reduce(matrix)
            matrix /= _world_size()
        self._matrix_sum, self._matrix_count = None, 0
        return matrix

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors/ints/strings only (checkpoints load with weights_only=True).

        The matrix sum is this process's (under DDP the other ranks' partial sums since the last log are
        not saved, so the first matrix logged after a resume averages rank 0's batches only).
        """

        def cpu(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.detach().cpu()

        return {
            "mode": self.config.mode,
            "num_updates": self.num_updates,
            "running_threshold": cpu(self.running_threshold),
            "heldout_threshold": cpu(self.heldout_threshold),
            "matrix_sum": cpu(self._matrix_sum),
            "matrix_count": self._matrix_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        running = state.get("running_threshold")
        self.running_threshold = None if running is None else running.clone()
        heldout = state.get("heldout_threshold")  # absent from checkpoints written before cds_heldout existed
        self.heldout_threshold = None if heldout is None else heldout.clone()
        self.last_thresholds = self.heldout_threshold
        matrix = state.get("matrix_sum")  # absent from checkpoints written before it was saved
        self._matrix_sum = None if matrix is None else matrix.clone()
        self._matrix_count = int(state.get("matrix_count", 0)) if matrix is not None else 0
