"""Behaviour cloning on the multi-task Q-network (the reference methods ``bc`` and ``filtered_bc``), as pure maths.

The network's Q-values [K, T_src, B, T_tgt, A] are read as action logits: head k's policy for task i is
softmax_a Q_k,i(s, a), and the policy acts like every robocds policy, with argmax_a min_k Q_k,i(s, a). So a BC
checkpoint is a ``MultiTaskCQL`` checkpoint that evaluation, analysis and the comparison read unchanged.

The per-transition loss is the cross-entropy of the data action, summed over heads:

    l[j, b, i] = sum_k (logsumexp_a Q_k,i(s_jb, a) - Q_k,i(s_jb, a_jb))

which is exactly CQL's conservative term (``robocds.cql``): BC is CQL without the TD term. Weights and
normalisation are those of ``robocds.cql.weighted_task_mean``; the weights are

- ``bc``: 1 on task i's own data (source row i read for task i), 0 elsewhere (no sharing);
- ``filtered_bc``: that, times ``episode_successes[i, b, i]`` (1 when the transition's episode has a return > 0
  for task i): only the transitions of task i's own successful episodes. A task with no such transition in a
  batch gets weight 0 there and contributes 0 to the loss (its L_i is 0 / eps = 0, not NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robocds.cql import data_action_values, per_task_weighted_mean, weighted_task_mean
from robocds.sharing import fixed_weights


def bc_weights(episode_successes: Tensor, filtered: bool) -> Tensor:
    """Loss weights [T_src, B, T_tgt] of behaviour cloning, no gradient.

    Args:
        episode_successes: [T, B, T] the batch's ``episode_successes`` (entry [j, b, i] = 1 when the episode of
            transition b of row j has a return > 0 for task i); only its shape is read unless ``filtered``.
        filtered: ``filtered_bc``: keep only own transitions whose episode succeeds for their own task.

    Returns:
        float32 [T, B, T]: own data (the [i, :, i] entries) 1, or its episode success when filtered; 0 elsewhere.
    """
    t, b, t_tgt = episode_successes.shape
    if t != t_tgt:
        raise ValueError(f"episode_successes has shape {tuple(episode_successes.shape)}: expected [T, B, T]")
    weights = fixed_weights("none", t, b, episode_successes.device)
    if filtered:
        weights = weights * (episode_successes.detach().float() > 0)
    return weights


@dataclass(frozen=True)
class BCTerms:
    """Named terms of the behaviour-cloning loss; scalars, weighted and normalised as in ``robocds.cql``."""

    loss: Tensor  # cross-entropy of the data action summed over heads: the optimised scalar
    cross_entropy: Tensor  # the same, mean over heads (log A for a uniform policy)
    accuracy: Tensor  # how often argmax_a min_k Q (the action taken) is the data action; mean over tasks with weight
    used_fraction: Tensor  # total weight per target task / B, mean over tasks (bc 1; filtered_bc: successful share)

    def metrics(self) -> dict[str, Tensor]:
        """Every term by name, detached (for logging)."""
        return {name: getattr(self, name).detach() for name in self.__dataclass_fields__}


def bc_terms(q: Tensor, actions: Tensor, weights: Tensor) -> BCTerms:
    """Behaviour-cloning loss of the Q-logits for every (source row, transition, target task), weighted.

    Args:
        q: [K, T_src, B, T_tgt, A] online Q-values of the observations, read as logits (with gradient).
        actions: int64 [T_src, B] data actions.
        weights: [T_src, B, T_tgt] loss weights (``bc_weights``; no gradient).

    Returns:
        BCTerms. ``accuracy`` averages over the target tasks with a positive total weight (0 if none), so a task
        without data in the batch does not count as wrong.
    """
    weights = weights.detach()
    nll = torch.logsumexp(q, dim=-1) - data_action_values(q, actions)  # [K, T_src, B, T_tgt]
    loss = weighted_task_mean(nll.sum(dim=0), weights)
    with torch.no_grad():
        cross_entropy = weighted_task_mean(nll.mean(dim=0), weights)
        greedy = q.min(dim=0).values.argmax(dim=-1)  # [T_src, B, T_tgt]
        correct = (greedy == actions[:, :, None]).float()
        present = (weights.sum(dim=(0, 1)) > 0).float()  # [T_tgt]
        accuracy = (per_task_weighted_mean(correct, weights) * present).sum() / present.sum().clamp_min(1.0)
        used = weights.sum(dim=(0, 1)).mean() / weights.shape[1]
    return BCTerms(loss=loss, cross_entropy=cross_entropy, accuracy=accuracy, used_fraction=used)
