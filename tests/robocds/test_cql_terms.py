"""CQL maths against values computed by hand on hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from robocds.cql import (
    conservative_weights,
    cql_terms,
    data_action_values,
    elementwise_td_loss,
    n_step_targets,
    next_state_values,
    per_task_weighted_mean,
    td_targets,
    weighted_task_mean,
)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


# One head, T = 2 tasks, B = 1 transition per task, A = 2 actions. Entry [j, 0, i] = transition of
# task j read for task i.
Q = torch.tensor(
    [
        [[[1.0, 2.0], [0.0, 0.0]]],  # j = 0: Q_0 = (1, 2), Q_1 = (0, 0)
        [[[3.0, 1.0], [-1.0, 1.0]]],  # j = 1: Q_0 = (3, 1), Q_1 = (-1, 1)
    ]
)[None]  # [K=1, T_src=2, B=1, T_tgt=2, A=2]
ACTIONS = torch.tensor([[1], [0]])  # task 0 took action 1, task 1 took action 0
TARGETS = torch.tensor([[[1.5, 0.0]], [[3.5, 0.0]]])  # [T_src, B, T_tgt]
WEIGHTS = torch.tensor([[[1.0, 0.5]], [[0.0, 1.0]]])  # 0 -> 1 shared at 0.5, 1 -> 0 not shared


def test_data_action_values_pick_the_taken_action_for_every_target_task() -> None:
    q_data = data_action_values(Q, ACTIONS)
    assert q_data.shape == (1, 2, 1, 2)
    assert q_data[0].tolist() == [[[2.0, 0.0]], [[3.0, -1.0]]]


def test_cql_terms_match_hand_computed_values() -> None:
    terms = cql_terms(Q, ACTIONS, TARGETS, WEIGHTS, alpha=2.0, td_loss="mse")
    # Squared TD errors: (2 - 1.5)^2, (0 - 0)^2, (3 - 3.5)^2, (-1 - 0)^2.
    td_task0 = (1.0 * 0.25 + 0.0 * 0.25) / 1.0
    td_task1 = (0.5 * 0.0 + 1.0 * 1.0) / 1.5
    gap = {(0, 0): lse(1, 2) - 2, (0, 1): lse(0, 0) - 0, (1, 0): lse(3, 1) - 3, (1, 1): lse(-1, 1) + 1}
    cql_task0 = gap[0, 0]
    cql_task1 = (0.5 * gap[0, 1] + gap[1, 1]) / 1.5
    td = (td_task0 + td_task1) / 2
    cql = (cql_task0 + cql_task1) / 2
    assert terms.td_loss.item() == pytest.approx(td, rel=1e-6)
    assert terms.cql_loss.item() == pytest.approx(cql, rel=1e-6)
    assert terms.loss.item() == pytest.approx(td + 2.0 * cql, rel=1e-6)
    assert terms.q_data.item() == pytest.approx((2.0 + (0.5 * 0.0 - 1.0) / 1.5) / 2, rel=1e-6)
    lse_task1 = (0.5 * lse(0, 0) + lse(-1, 1)) / 1.5
    assert terms.logsumexp.item() == pytest.approx((lse(1, 2) + lse_task1) / 2, rel=1e-6)
    assert terms.target.item() == pytest.approx((1.5 + 0.0) / 2, rel=1e-6)
    assert terms.routed_weight.item() == pytest.approx(2.5 / 4)
    assert set(terms.metrics()) == {
        "loss", "td_loss", "cql_loss", "q_data", "logsumexp", "target", "td_relative", "routed_weight"
    }  # fmt: skip


def test_relative_td_error_is_the_squared_error_over_the_targets_variance_within_each_task() -> None:
    targets = torch.tensor([[[1.5, 1.0]], [[3.5, 0.0]]])  # task 1 now sees targets 1 (weight 0.5) and 0 (weight 1)
    terms = cql_terms(Q, ACTIONS, targets, WEIGHTS, alpha=1.0, td_loss="huber")
    # Squared errors: task 0: (2 - 1.5)^2 (its only weighted row); task 1: (0 - 1)^2 at 0.5, (-1 - 0)^2 at 1.
    squared_error = (0.25 + (0.5 * 1.0 + 1.0 * 1.0) / 1.5) / 2
    # Variance of the targets within each task: task 0 has one weighted target (0); task 1 mean 1/3.
    variance = (0.0 + (0.5 * (2 / 3) ** 2 + 1.0 * (1 / 3) ** 2) / 1.5) / 2
    assert terms.td_relative.item() == pytest.approx(squared_error / variance, rel=1e-6)
    # A perfect fit: Q of the data action equals its target everywhere.
    q = Q.clone()
    q[0, 0, 0, :, 1], q[0, 1, 0, :, 0] = targets[0, 0], targets[1, 0]
    assert cql_terms(q, ACTIONS, targets, WEIGHTS, alpha=1.0).td_relative.item() == pytest.approx(0.0, abs=1e-9)


def test_heads_are_summed_in_the_losses_and_averaged_in_the_statistics() -> None:
    q2 = torch.cat([Q, Q + 1.0])  # second head: every Q one higher
    one = cql_terms(Q, ACTIONS, TARGETS, WEIGHTS, alpha=1.0, td_loss="mse")
    two = cql_terms(q2, ACTIONS, TARGETS, WEIGHTS, alpha=1.0, td_loss="mse")
    shifted = cql_terms(Q + 1.0, ACTIONS, TARGETS, WEIGHTS, alpha=1.0, td_loss="mse")
    assert two.td_loss.item() == pytest.approx(one.td_loss.item() + shifted.td_loss.item(), rel=1e-6)
    assert two.cql_loss.item() == pytest.approx(2 * one.cql_loss.item(), rel=1e-6)  # the gap is shift-invariant
    assert two.q_data.item() == pytest.approx(one.q_data.item() + 0.5, rel=1e-6)
    targets = torch.tensor([[[1.5, 1.0]], [[3.5, 0.0]]])  # targets with a spread in both tasks' columns
    one, shifted, two = (cql_terms(q, ACTIONS, targets, WEIGHTS, alpha=1.0) for q in (Q, Q + 1.0, q2))
    mean_relative = (one.td_relative.item() + shifted.td_relative.item()) / 2
    assert two.td_relative.item() == pytest.approx(mean_relative, rel=1e-6)


def test_huber_is_quadratic_inside_unit_error_and_linear_outside() -> None:
    q = torch.tensor([0.5, 3.0, -2.0]).view(1, 1, 3, 1)
    targets = torch.zeros(1, 3, 1)
    loss = elementwise_td_loss(q, targets, "huber").flatten().tolist()
    assert loss == pytest.approx([0.5 * 0.25, 3.0 - 0.5, 2.0 - 0.5])
    with pytest.raises(ValueError, match="td_loss='l1'"):
        elementwise_td_loss(q, targets, "l1")


def test_next_state_values_min_over_heads_at_greedy_action() -> None:
    # Two heads, one next state, A = 3.
    target = torch.tensor([[1.0, 5.0, 2.0], [3.0, 4.0, 0.0]]).view(2, 1, 3)
    # min over heads = (1, 4, 0) -> greedy action 1 -> value min(5, 4) = 4.
    assert next_state_values(target).item() == 4.0
    # Double DQN: online net prefers action 2 -> value min(2, 0) = 0.
    online = torch.tensor([[0.0, 0.0, 9.0], [0.0, 0.0, 8.0]]).view(2, 1, 3)
    assert next_state_values(target, online).item() == 0.0


def test_td_targets_mask_terminals() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.5])
    dones = torch.tensor([1.0, 0.0, 0.0])
    next_values = torch.tensor([10.0, 2.0, -1.0])
    assert td_targets(rewards, dones, next_values, gamma=0.9).tolist() == pytest.approx([1.0, 1.8, -0.4])


def test_n_step_targets_sum_the_sparse_reward_over_the_window_then_bootstrap() -> None:
    gamma, reward = 0.9, 10.0
    # One source row, five transitions, one target task; V(s_{t+m}) = 2 everywhere.
    steps_to_success = torch.tensor([[[1.0], [2.0], [3.0], [math.inf], [0.0]]])  # [1, 5, 1]
    bootstrap_steps = torch.tensor([[3.0, 3.0, 3.0, 2.0, 1.0]])  # [1, 5]: the last two near the episode's end
    rewards = reward * (steps_to_success == 0).float()
    dones = (steps_to_success == 0).float()
    next_values = torch.full((1, 5, 1), 2.0)
    targets = n_step_targets(rewards, dones, steps_to_success, bootstrap_steps, next_values, gamma, reward)
    expected = [
        reward * gamma,  # solved one step on, inside the window of 3: the reward, discounted, and the end
        reward * gamma**2,  # two steps on: still inside
        gamma**3 * 2.0,  # three steps on is outside the window: bootstrap from s_{t+3}
        gamma**2 * 2.0,  # never solved, two steps left in the episode: bootstrap from its last frame
        reward,  # one-step transition solved now: td_targets (r + gamma (1 - done) V)
    ]
    assert targets.flatten().tolist() == pytest.approx(expected)
    # Every transition one-step: exactly td_targets, whatever the steps to success say.
    ones = torch.ones(1, 5)
    assert torch.equal(
        n_step_targets(rewards, dones, steps_to_success, ones, next_values, gamma, reward),
        td_targets(rewards, dones, next_values, gamma),
    )


def test_weighted_means_normalise_per_target_task() -> None:
    values = torch.tensor([[[1.0, 10.0], [3.0, 20.0]], [[5.0, 30.0], [7.0, 40.0]]])  # [2, 2, 2]
    weights = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])  # own data only
    assert per_task_weighted_mean(values, weights).tolist() == [2.0, 35.0]
    assert weighted_task_mean(values, weights).item() == 18.5


def test_conservative_weights_keep_successful_or_non_negative_advantage_transitions() -> None:
    successes = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    assert torch.equal(conservative_weights("uniform", WEIGHTS, Q, ACTIONS, successes), WEIGHTS)
    kept = conservative_weights("success", WEIGHTS, Q, ACTIONS, successes)
    assert kept.tolist() == [[[1.0, 0.0]], [[0.0, 1.0]]]
    # Advantage of the data action under softmax(Q): (1, 2) took 2 >= 1.73; (0, 0) took 0 >= 0; (3, 1) took 3;
    # (-1, 1) took -1 < 0.52, dropped.
    kept = conservative_weights("advantage", WEIGHTS, Q, ACTIONS, successes)
    assert kept.tolist() == [[[1.0, 0.5]], [[0.0, 0.0]]]
    with pytest.raises(ValueError, match="conservative_weighting='all'"):
        conservative_weights("all", WEIGHTS, Q, ACTIONS, successes)


def test_the_conservative_term_is_normalised_over_the_transitions_it_keeps() -> None:
    kept = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    terms = cql_terms(Q, ACTIONS, TARGETS, WEIGHTS, alpha=2.0, td_loss="mse", conservative=kept)
    gap = ((lse(1, 2) - 2) + (lse(-1, 1) + 1)) / 2  # task 0 keeps (j=0), task 1 keeps (j=1): one transition each
    assert terms.cql_loss.item() == pytest.approx(gap, rel=1e-6)
    uniform = cql_terms(Q, ACTIONS, TARGETS, WEIGHTS, alpha=2.0, td_loss="mse")
    assert terms.td_loss.item() == pytest.approx(uniform.td_loss.item(), rel=1e-6)  # the TD term keeps every one
    nothing = cql_terms(Q, ACTIONS, TARGETS, WEIGHTS, alpha=2.0, td_loss="mse", conservative=torch.zeros_like(kept))
    assert nothing.cql_loss.item() == 0.0 and nothing.loss.item() == pytest.approx(uniform.td_loss.item(), rel=1e-6)


def test_mean_elsewhere_anchors_the_transitions_the_conservative_weights_leave_out_at_the_mean() -> None:
    kept = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [j, 0, i]: (0 -> 1) left out, routed at weight 0.5
    terms = cql_terms(Q, ACTIONS, TARGETS, WEIGHTS, alpha=2.0, td_loss="mse", conservative=kept, mean_elsewhere=True)
    task0 = lse(1, 2) - 2  # its only routed transition is kept: CQL's term
    task1 = (0.5 * (lse(0, 0) - 0.0) + 1.0 * (lse(-1, 1) + 1)) / 1.5  # left out: logsumexp - mean Q; kept: CQL's
    assert terms.cql_loss.item() == pytest.approx((task0 + task1) / 2, rel=1e-6)
    assert conservative_weights("success_else_mean", WEIGHTS, Q, ACTIONS, kept).tolist() == [[[1.0, 0.0]], [[0.0, 1.0]]]
