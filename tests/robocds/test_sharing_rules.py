"""Sharing maths: CDS weights (mean, percentile, soft), relabeling, and one battery over every mode."""

from __future__ import annotations

import pytest
import torch

from robocds.config import SharingConfig
from robocds.cql import cql_terms, data_action_values
from robocds.sharing import (
    SharingRouter,
    batch_thresholds,
    cds_weights,
    fixed_weights,
    own_task_values,
    relabel,
    sharing_matrix,
    success_weights,
)

# q_data [T_src=2, B=4, T_tgt=2]: column i holds Q_i; task 0's own values (row 0, col 0) are 0, 1, 2, 5.
Q_DATA = torch.tensor(
    [
        [[0.0, 9.0], [1.0, 9.0], [2.0, 9.0], [5.0, 9.0]],
        [[1.0, 4.0], [2.0, 6.0], [3.0, 8.0], [4.0, 10.0]],
    ]
)


def test_own_task_values_is_the_source_target_diagonal() -> None:
    assert own_task_values(Q_DATA).tolist() == [[0.0, 1.0, 2.0, 5.0], [4.0, 6.0, 8.0, 10.0]]


def test_mean_threshold_and_hard_weights() -> None:
    thresholds = batch_thresholds(own_task_values(Q_DATA), "mean")
    assert thresholds.tolist() == [2.0, 7.0]
    w = cds_weights(Q_DATA, thresholds)
    # Task 1's data into task 0: Q_0 = 1, 2, 3, 4 >= 2 -> 0, 1, 1, 1. Task 0's into task 1: Q_1 = 9 >= 7 -> all.
    assert w[1, :, 0].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert w[0, :, 1].tolist() == [1.0, 1.0, 1.0, 1.0]
    # Own data always has weight 1, even below the threshold.
    assert w[0, :, 0].tolist() == [1.0] * 4 and w[1, :, 1].tolist() == [1.0] * 4


def test_percentile_threshold() -> None:
    own = own_task_values(Q_DATA)
    assert batch_thresholds(own, "percentile", 50.0).tolist() == [1.5, 7.0]  # linear interpolation
    assert batch_thresholds(own, "percentile", 100.0).tolist() == [5.0, 10.0]
    assert batch_thresholds(own, "percentile", 0.0).tolist() == [0.0, 4.0]
    w = cds_weights(Q_DATA, batch_thresholds(own, "percentile", 75.0))  # task 0: 2.75, task 1: 8.5
    assert w[1, :, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert w[0, :, 1].tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="threshold='median'"):
        batch_thresholds(own, "median")


def test_soft_weights_are_sigmoids_with_temperature() -> None:
    thresholds = torch.tensor([2.0, 7.0])
    w = cds_weights(Q_DATA, thresholds, temperature=0.5)
    expected = torch.sigmoid((torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.0) / 0.5)
    torch.testing.assert_close(w[1, :, 0], expected)
    assert w[1, 1, 0].item() == pytest.approx(0.5)
    assert w[0, :, 0].tolist() == [1.0] * 4


def test_relabel_reads_the_target_tasks_stored_reward() -> None:
    t, b = 3, 2
    # rewards[j, b, i] = 10 * j + i + b / 10: every (source, target) pair is distinguishable.
    rewards = (
        10 * torch.arange(t)[:, None, None] + torch.arange(t)[None, None, :] + torch.arange(b)[None, :, None] / 10
    ).float()
    successes = (torch.arange(t)[:, None, None] == torch.arange(t)[None, None, :]).float().expand(t, b, t)
    r, d = relabel(rewards, successes)
    assert r[2, 1, 0].item() == pytest.approx(20.1)  # task 2's transition 1 read for task 0
    assert r[0, 0, 2].item() == pytest.approx(2.0)
    torch.testing.assert_close(d, successes)
    r0, d0 = relabel(rewards, successes, zero_shared=True)
    off = ~torch.eye(t, dtype=torch.bool)[:, None, :].expand(t, b, t)
    assert (r0[off] == 0).all() and (d0[off] == 0).all()
    torch.testing.assert_close(r0[~off], rewards[~off])


def test_sharing_matrix_rows_are_targets() -> None:
    w = cds_weights(Q_DATA, torch.tensor([2.0, 7.0]))
    m = sharing_matrix(w)
    assert m.tolist() == [[1.0, 0.75], [1.0, 1.0]]  # into task 0: 3 of task 1's 4 transitions


def test_running_threshold_ema() -> None:
    router = SharingRouter(SharingConfig(mode="cds", ema=0.5))
    router(Q_DATA)
    assert router.running_threshold.tolist() == [2.0, 7.0]  # first batch initialises the estimate
    router(Q_DATA + 2.0)
    assert router.running_threshold.tolist() == [3.0, 8.0]
    state = router.state_dict()
    fresh = SharingRouter(SharingConfig(mode="cds", ema=0.5))
    fresh.load_state_dict(state)
    assert fresh.num_updates == 2 and fresh.running_threshold.tolist() == [3.0, 8.0]


def test_heldout_thresholds_route_every_batch_until_the_next_estimate() -> None:
    router = SharingRouter(SharingConfig(mode="cds", threshold_from="heldout"))
    with pytest.raises(RuntimeError, match="no held-out threshold yet"):
        router(Q_DATA)
    # Held-out Q_i over task i's own held-out transitions [T=2, N=3]: means 1 and 5.
    held_out = torch.tensor([[0.0, 1.0, 2.0], [3.0, 5.0, 7.0]])
    assert router.set_heldout_thresholds(held_out).tolist() == [1.0, 5.0]
    routing = router(Q_DATA)  # the batch's own means (2 and 7) play no part
    assert routing.thresholds.tolist() == [1.0, 5.0]
    assert routing.weights[1, :, 0].tolist() == [1.0, 1.0, 1.0, 1.0]  # Q_0 = 1, 2, 3, 4 >= 1
    assert routing.weights[0, :, 1].tolist() == [1.0] * 4  # Q_1 = 9 >= 5
    lower = router(Q_DATA - 4.0)  # the same estimate routes the next batch: Q_0 = -3..0 < 1, Q_1 = 5 >= 5
    assert lower.weights[1, :, 0].tolist() == [0.0] * 4 and lower.weights[0, :, 1].tolist() == [1.0] * 4
    assert lower.weights[0, :, 0].tolist() == [1.0] * 4  # own data stays 1
    assert router.running_threshold is None  # the batch rule's state is untouched

    state = router.state_dict()
    fresh = SharingRouter(SharingConfig(mode="cds", threshold_from="heldout"))
    fresh.load_state_dict(state)
    assert fresh.heldout_threshold.tolist() == [1.0, 5.0] and fresh.last_thresholds.tolist() == [1.0, 5.0]
    torch.testing.assert_close(fresh(Q_DATA).weights, router(Q_DATA).weights)

    percentile = SharingRouter(
        SharingConfig(mode="cds", threshold="percentile", percentile=75.0, threshold_from="heldout")
    )
    assert percentile.set_heldout_thresholds(held_out).tolist() == [1.5, 6.0]


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"mode": "all", "threshold_from": "heldout"}, "threshold_from='heldout' with mode='all'"),
        ({"mode": "cds", "threshold_from": "heldout", "ema": 0.5}, "ema=0.5 with threshold_from='heldout'"),
        ({"mode": "cds", "threshold_from": "validation"}, "threshold_from='validation'"),
    ],
)
def test_heldout_threshold_settings_are_checked(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SharingConfig(**kwargs)


@pytest.mark.parametrize("field,value", [("mode", "some"), ("percentile", 101.0), ("temperature", 0.0), ("ema", 1.0)])
def test_sharing_config_errors_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{field}="):
        SharingConfig(**{field: value})


def test_share_successes_routes_the_episodes_that_succeed_for_the_target() -> None:
    # episode_successes [T_src=2, B=3, T_tgt=2]: entry [j, b, i] = 1 when transition b's episode succeeds for i.
    episode_successes = torch.tensor(
        [
            [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]],  # task 0's data: its episodes succeed for task 1 at b = 0, 2
            [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]],  # task 1's data: succeeds for task 0 at b = 0 only
        ]
    )
    router = SharingRouter(SharingConfig(mode="share_successes"))
    q_data = torch.full((2, 3, 2), -5.0)  # Q plays no part (CDS would share nothing this low)
    routing = router(q_data, {"episode_successes": episode_successes})
    w = routing.weights
    assert w[0, :, 1].tolist() == [1.0, 0.0, 1.0]  # task 0's transitions into task 1
    assert w[1, :, 0].tolist() == [1.0, 0.0, 0.0]  # task 1's into task 0
    # Own data always weight 1, whatever its episode's own return (b = 1 of task 0 failed task 0).
    assert w[0, :, 0].tolist() == [1.0] * 3 and w[1, :, 1].tolist() == [1.0] * 3
    assert not routing.zero_shared_rewards and routing.thresholds is None  # rewards relabeled as `all`
    torch.testing.assert_close(success_weights(episode_successes), w)
    torch.testing.assert_close(router.pop_matrix(), torch.tensor([[1.0, 1 / 3], [2 / 3, 1.0]]))  # [target, source]
    with pytest.raises(ValueError, match="needs the batch's 'episode_successes'"):
        router(q_data)
    with pytest.raises(ValueError, match=r"batch\['episode_successes'\] has shape \(2, 2, 2\)"):
        router(q_data, {"episode_successes": episode_successes[:, :2]})


# ------------------------------------------------------------------ one battery, every mode
MODES = [
    SharingConfig(mode="none"),
    SharingConfig(mode="share_successes"),
    SharingConfig(mode="all"),
    SharingConfig(mode="uds"),
    SharingConfig(mode="cds"),
    SharingConfig(mode="cds", threshold="percentile", percentile=25.0),
    SharingConfig(mode="cds", temperature=0.3),
    SharingConfig(mode="cds", ema=0.9),
    SharingConfig(mode="cds", threshold_from="heldout"),
]


@pytest.mark.parametrize(
    "config", MODES, ids=lambda c: f"{c.mode}-{c.threshold}-{c.temperature}-{c.ema}-{c.threshold_from}"
)
def test_every_mode_routes_sanely(config: SharingConfig) -> None:
    torch.manual_seed(0)
    t, b, a = 3, 6, 4
    q = torch.randn(2, t, b, t, a, requires_grad=True)
    actions = torch.randint(0, a, (t, b))
    episode_successes = (torch.rand(t, b, t) > 0.5).float()
    router = SharingRouter(config)
    if config.threshold_from == "heldout":
        router.set_heldout_thresholds(torch.randn(t, 10))
    q_data = data_action_values(q.detach(), actions).min(dim=0).values
    routing = router(q_data, {"episode_successes": episode_successes})
    w = routing.weights
    assert w.shape == (t, b, t) and not w.requires_grad
    assert ((w >= 0) & (w <= 1)).all()
    own = torch.eye(t, dtype=torch.bool)[:, None, :].expand(t, b, t)
    assert (w[own] == 1).all()
    if config.mode == "none":
        assert (w[~own] == 0).all()
    if config.mode in ("all", "uds"):
        assert (w == 1).all()
    if config.mode == "share_successes":
        assert torch.equal(w[~own], episode_successes[~own])
    assert routing.zero_shared_rewards == (config.mode == "uds")
    assert (routing.thresholds is not None) == (config.mode == "cds")
    rewards, dones = relabel(torch.rand(t, b, t), torch.zeros(t, b, t), routing.zero_shared_rewards)
    terms = cql_terms(q, actions, rewards, w, alpha=1.0)
    assert torch.isfinite(terms.loss)
    terms.loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    matrix = router.pop_matrix()
    assert matrix.shape == (t, t) and torch.allclose(matrix.diagonal(), torch.ones(t))
    assert router.pop_matrix() is None  # reset after reading
    state = router.state_dict()
    assert state["mode"] == config.mode and state["num_updates"] == 1


def test_fixed_weights_reject_cds() -> None:
    with pytest.raises(ValueError, match="mode='cds'"):
        fixed_weights("cds", 2, 2)
