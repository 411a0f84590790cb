"""Discrete conservative Q-learning (CQL) maths as small pure functions.

Shapes: K Q-heads, T_src source tasks (rows of the batch), B transitions per row, T_tgt target tasks
(the task whose Q-values/rewards are used), A actions. Entry [j, b, i] of a [T_src, B, T_tgt] tensor
is transition b of task j's data, read as a transition for task i.

Loss normalisation (weighted terms). With routing weights w[j, b, i] >= 0 (own data w[i, b, i] = 1)
and a per-transition loss l[j, b, i], the loss of target task i is the weighted mean

    L_i = sum_{j, b} w[j, b, i] * l[j, b, i] / max(sum_{j, b} w[j, b, i], eps)

and the optimised loss is the plain mean of L_i over tasks, so every task weighs the same whatever
amount of data is routed into it. Own data always counts (w = 1), so the denominator is >= B and eps
never bites in practice. ``none`` makes L_i the mean over task i's own B transitions; ``all`` the
mean over all T * B transitions relabeled for i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robocds.config import CONSERVATIVE_WEIGHTINGS

EPS = 1e-6


def data_action_values(q: Tensor, actions: Tensor) -> Tensor:
    """Q-values of the data actions.

    Args:
        q: [..., T_src, B, T_tgt, A].
        actions: int64 [T_src, B].

    Returns:
        [..., T_src, B, T_tgt]: q[..., j, b, i, actions[j, b]].
    """
    index = actions[:, :, None, None].expand(*q.shape[:-1], 1)
    return q.gather(-1, index).squeeze(-1)


def next_state_values(next_q_target: Tensor, next_q_online: Tensor | None = None) -> Tensor:
    """Bootstrapped value of the next state: min over heads of the target network at a greedy action.

    Args:
        next_q_target: [K, ..., A] target-network Q-values of the next observations.
        next_q_online: optional [K, ..., A] online-network Q-values of the same (double DQN: the online
            network picks the action, the target network scores it). None: the target network picks.

    Returns:
        [...]: min_k Q_target_k(s', a*) with a* = argmax_a min_k Q_select_k(s', a).
    """
    select = next_q_target if next_q_online is None else next_q_online
    greedy = select.min(dim=0).values.argmax(dim=-1, keepdim=True)  # [..., 1]
    index = greedy.unsqueeze(0).expand(next_q_target.shape[0], *greedy.shape)
    return next_q_target.gather(-1, index).squeeze(-1).min(dim=0).values


def td_targets(rewards: Tensor, dones: Tensor, next_values: Tensor, gamma: float) -> Tensor:
    """y = r + gamma * (1 - done) * V(s'); all [T_src, B, T_tgt] (done = terminal for the target task)."""
    return rewards + gamma * (1.0 - dones) * next_values


def n_step_targets(
    rewards: Tensor,
    dones: Tensor,
    steps_to_success: Tensor,
    bootstrap_steps: Tensor,
    next_values: Tensor,
    gamma: float,
    reward: float = 1.0,
) -> Tensor:
    """TD targets of transitions that bootstrap m = ``bootstrap_steps`` steps on; [T_src, B, T_tgt].

    m = 1: ``td_targets`` (any reward). m > 1 relies on the schema's sparse reward (``reward`` exactly when a task
    is solved, which ends the episode for it): the data's next m steps return ``reward * gamma ** s`` when the
    task is solved s < m steps on, and otherwise nothing, then ``gamma ** m * V(s_{t+m})``. ``steps_to_success`` is
    +inf where the task is never solved (or unknown), ``bootstrap_steps`` is [T_src, B], ``rewards`` already
    scaled by ``reward``.
    """
    m = bootstrap_steps[:, :, None].float()
    one_step = td_targets(rewards, dones, next_values, gamma)
    discount = torch.as_tensor(gamma, dtype=torch.float32, device=next_values.device)
    solved = steps_to_success < m
    longer = torch.where(solved, reward * discount.pow(steps_to_success), discount.pow(m) * next_values)
    return torch.where(m > 1, longer, one_step)


def monte_carlo_returns(steps_to_success: Tensor, gamma: float) -> Tensor:
    """Discounted return the data's behaviour collected from each transition: gamma ** steps (reward 1 at the first
    success, which ends the episode for that task); [T_src, B, T_tgt] steps, +inf where never solved -> 0."""
    return torch.pow(torch.as_tensor(gamma, dtype=torch.float32), steps_to_success.float())


def per_task_weighted_mean(values: Tensor, weights: Tensor, eps: float = EPS) -> Tensor:
    """[T_src, B, T_tgt] values and weights -> [T_tgt]: sum(w * v) / max(sum(w), eps) over sources and batch."""
    return (weights * values).sum(dim=(0, 1)) / weights.sum(dim=(0, 1)).clamp_min(eps)


def weighted_task_mean(values: Tensor, weights: Tensor, eps: float = EPS) -> Tensor:
    """Mean over target tasks of ``per_task_weighted_mean`` (the loss normalisation of this module)."""
    return per_task_weighted_mean(values, weights, eps).mean()


def elementwise_td_loss(q_data: Tensor, targets: Tensor, kind: str = "huber") -> Tensor:
    """TD loss of each head, summed over heads.

    Args:
        q_data: [K, T_src, B, T_tgt] Q-values of the data actions.
        targets: [T_src, B, T_tgt] TD targets (no gradient flows into them).
        kind: "huber" (smooth L1, delta 1) or "mse" (squared error).

    Returns:
        [T_src, B, T_tgt].
    """
    targets = targets.detach().unsqueeze(0).expand_as(q_data)
    if kind == "huber":
        loss = F.smooth_l1_loss(q_data, targets, reduction="none", beta=1.0)
    elif kind == "mse":
        loss = (q_data - targets).square()
    else:
        raise ValueError(f"td_loss={kind!r}: must be 'huber' or 'mse'")
    return loss.sum(dim=0)


def conservative_weights(
    rule: str, weights: Tensor, q: Tensor, actions: Tensor, episode_successes: Tensor, failed_weight: float = 0.0
) -> Tensor:
    """Weights [T_src, B, T_tgt] of the conservative term: the routing weights, kept where ``rule`` keeps a transition.

    Args:
        rule: "uniform" (every routed transition), "success" or "success_else_mean" (those whose episode succeeded
            for the target task; the latter's other transitions are anchored at the mean, see ``cql_terms``) or
            "advantage" (those whose data action has a non-negative advantage under ``q``: Q(s, a_data) >=
            sum_a softmax(Q)(a) Q(s, a), with Q the minimum over heads).
        weights: [T_src, B, T_tgt] routing weights.
        q: [K, T_src, B, T_tgt, A] online Q-values (read without gradient).
        actions: int64 [T_src, B] data actions.
        episode_successes: [T_src, B, T_tgt] 1 where the transition's episode succeeded for the target task (0 where
            that is unknown, e.g. for UDS-shared data).
        failed_weight: with "success", the weight kept on the other transitions (0 = none, 1 = as "uniform").
    """
    weights = weights.detach()
    if rule == "uniform":
        return weights
    if rule in ("success", "success_else_mean"):
        succeeded = (episode_successes.detach() > 0).float()
        return weights * (succeeded + failed_weight * (1.0 - succeeded))
    if rule == "advantage":
        q = q.detach().min(dim=0).values  # [T_src, B, T_tgt, A]
        value = (q.softmax(dim=-1) * q).sum(dim=-1)
        return weights * (data_action_values(q, actions) >= value)
    raise ValueError(f"conservative_weighting={rule!r}: must be one of {list(CONSERVATIVE_WEIGHTINGS)}")


@dataclass(frozen=True)
class CQLTerms:
    """Named terms of the CQL loss; all are scalars, weighted and normalised as in the module docstring."""

    loss: Tensor  # td_loss + alpha * cql_loss: the optimised scalar
    td_loss: Tensor  # TD loss, summed over heads
    cql_loss: Tensor  # logsumexp_a Q(s, a) - Q(s, a_data), summed over heads
    q_data: Tensor  # mean Q(s, a_data) (mean over heads)
    logsumexp: Tensor  # mean logsumexp_a Q(s, a) (mean over heads)
    target: Tensor  # mean TD target
    # Mean squared TD error (mean over heads) over the targets' variance within each target task: 1 for the best
    # constant per task, 0 for a perfect fit (1 - explained variance). Unlike td_loss it does not grow with the
    # targets' scale as the values are learned from zero.
    td_relative: Tensor
    routed_weight: Tensor  # mean routing weight over all [T_src, B, T_tgt] entries (1 = everything shared)
    # Mean dot product of consecutive observations' last hidden features (DR3; ``feature_coadaptation``), when
    # the loss includes it (``CQLConfig.dr3_weight`` > 0), else None.
    coadaptation: Tensor | None = None

    def metrics(self) -> dict[str, Tensor]:
        """Every term by name, detached (for logging); terms that were not computed are left out."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {name: value.detach() for name, value in values.items() if value is not None}


def feature_coadaptation(features: Tensor, next_features: Tensor) -> Tensor:
    """DR3's explicit regulariser (Kumar et al., ICLR 2022): the mean over heads and transitions of
    phi(s) . phi(s'), the dot product of the features the Q-values are linear in, for an observation and the next.

    TD learning from a fixed dataset implicitly drives these features of consecutive observations to align,
    which DR3 measures as the cause of values that fit worse the longer they train; adding this term (with
    gradient through both observations) counteracts it.

    Args:
        features, next_features: [K, N, H] (``MultiTaskQNetwork.values_and_features``).

    Returns:
        scalar.
    """
    return (features.float() * next_features.float()).sum(dim=-1).mean()


def cql_terms(
    q: Tensor,
    actions: Tensor,
    targets: Tensor,
    weights: Tensor,
    alpha: float,
    td_loss: str = "huber",
    conservative: Tensor | None = None,
    mean_elsewhere: bool = False,
) -> CQLTerms:
    """Discrete CQL loss for every (source row, transition, target task), weighted by routing weights.

    Args:
        q: [K, T_src, B, T_tgt, A] online Q-values of the observations (with gradient).
        actions: int64 [T_src, B] data actions.
        targets: [T_src, B, T_tgt] TD targets.
        weights: [T_src, B, T_tgt] routing weights (no gradient).
        alpha: weight of the conservative term.
        td_loss: "huber" or "mse".
        conservative: [T_src, B, T_tgt] weights of the conservative term (``conservative_weights``; no gradient);
            None: the routing weights. A target task they leave without weight adds 0 to the term.
        mean_elsewhere: where ``conservative`` is 0 but the routing weight is not, the term is logsumexp_a Q -
            mean_a Q instead of nothing (the highest actions pushed down, none pulled up), normalised over the
            routing weights.

    Returns:
        CQLTerms.
    """
    weights = weights.detach()
    conservative = weights if conservative is None else conservative.detach()
    q_data = data_action_values(q, actions)  # [K, T_src, B, T_tgt]
    logsumexp = torch.logsumexp(q, dim=-1)  # [K, T_src, B, T_tgt]
    td = weighted_task_mean(elementwise_td_loss(q_data, targets, td_loss), weights)
    if mean_elsewhere:
        anchor = torch.where(conservative > 0, q_data, q.mean(dim=-1))
        gap = weighted_task_mean((logsumexp - anchor).sum(dim=0), weights)
    else:
        gap = weighted_task_mean((logsumexp - q_data).sum(dim=0), conservative)
    with torch.no_grad():
        q_mean = weighted_task_mean(q_data.mean(dim=0), weights)
        lse_mean = weighted_task_mean(logsumexp.mean(dim=0), weights)
        target_mean = weighted_task_mean(targets, weights)
        squared_error = weighted_task_mean(elementwise_td_loss(q_data, targets, "mse") / q_data.shape[0], weights)
        spread = weighted_task_mean((targets - per_task_weighted_mean(targets, weights)).square(), weights)
        td_relative = squared_error / spread.clamp_min(EPS)
        routed = weights.mean()
    return CQLTerms(
        loss=td + alpha * gap,
        td_loss=td,
        cql_loss=gap,
        q_data=q_mean,
        logsumexp=lse_mean,
        target=target_mean,
        td_relative=td_relative,
        routed_weight=routed,
    )
