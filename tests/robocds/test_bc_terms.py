"""Behaviour-cloning maths (``robocds.bc``) against values computed by hand, and a module that learns by it."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic_batches import TINY_ENCODER, make_batch

from robocds.bc import bc_terms, bc_weights
from robocds.config import CQLConfig, EncoderConfig
from robocds.cql import cql_terms
from robocds.module import MultiTaskCQL, own_data_router

torch.set_num_threads(1)


def log_softmax(logits: tuple[float, ...], index: int) -> float:
    return logits[index] - math.log(sum(math.exp(x) for x in logits))


# One head, T = 2 tasks, B = 2 transitions per task, A = 2 actions. Entry [j, b, i]: transition b of task j read
# for task i. Only own entries ([0, b, 0] and [1, b, 1]) count in BC; the others hold values that would change
# every term if they leaked in.
Q = torch.tensor(
    [
        [[[1.0, 2.0], [9.0, -9.0]], [[0.0, 3.0], [9.0, -9.0]]],  # j = 0: own Q_0 = (1, 2), (0, 3)
        [[[9.0, -9.0], [2.0, 0.0]], [[9.0, -9.0], [1.0, 1.0]]],  # j = 1: own Q_1 = (2, 0), (1, 1)
    ]
)[None]  # [K=1, T_src=2, B=2, T_tgt=2, A=2]
ACTIONS = torch.tensor([[1, 0], [1, 0]])  # task 0 took 1 then 0; task 1 took 1 then 0
# Episode successes [j, b, i]: task 0's first transition is from a successful episode of task 0, its second not;
# no transition of task 1 is from a successful episode of task 1 (its off-own entries are 1: they must not count).
EPISODE_SUCCESSES = torch.tensor([[[1.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])

NLL = {  # -log softmax of the data action on own entries
    (0, 0): -log_softmax((1.0, 2.0), 1),
    (0, 1): -log_softmax((0.0, 3.0), 0),
    (1, 0): -log_softmax((2.0, 0.0), 1),
    (1, 1): -log_softmax((1.0, 1.0), 0),
}


def test_bc_weights_keep_own_data_and_filter_by_own_episode_success() -> None:
    own = bc_weights(EPISODE_SUCCESSES, filtered=False)
    assert own.tolist() == [[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]  # the diagonal [i, :, i]
    filtered = bc_weights(EPISODE_SUCCESSES, filtered=True)
    assert filtered.tolist() == [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
    with pytest.raises(ValueError, match=r"shape \(2, 2, 3\): expected \[T, B, T\]"):
        bc_weights(torch.zeros(2, 2, 3), filtered=True)


def test_bc_terms_match_hand_computed_values() -> None:
    terms = bc_terms(Q, ACTIONS, bc_weights(EPISODE_SUCCESSES, filtered=False))
    task0, task1 = (NLL[0, 0] + NLL[0, 1]) / 2, (NLL[1, 0] + NLL[1, 1]) / 2
    assert terms.loss.item() == pytest.approx((task0 + task1) / 2, rel=1e-6)
    assert terms.cross_entropy.item() == pytest.approx(terms.loss.item(), rel=1e-6)  # one head
    # Greedy actions on own entries: task 0 -> 1, 1 (data 1, 0); task 1 -> 0, 0 (a tie picks the first; data 1, 0).
    assert terms.accuracy.item() == pytest.approx((0.5 + 0.5) / 2)
    assert terms.used_fraction.item() == pytest.approx(1.0)
    assert set(terms.metrics()) == {"loss", "cross_entropy", "accuracy", "used_fraction"}


def test_filtered_bc_counts_only_successful_own_transitions_and_a_task_without_any_adds_zero() -> None:
    terms = bc_terms(Q, ACTIONS, bc_weights(EPISODE_SUCCESSES, filtered=True))
    # Task 0: its one successful transition; task 1: none, so L_1 = 0 (not NaN) and the mean over tasks halves L_0.
    assert terms.loss.item() == pytest.approx(NLL[0, 0] / 2, rel=1e-6)
    assert terms.accuracy.item() == pytest.approx(1.0)  # task 0's greedy 1 == data 1; task 1 is not counted
    assert terms.used_fraction.item() == pytest.approx((0.5 + 0.0) / 2)
    q = Q.clone().requires_grad_(True)
    bc_terms(q, ACTIONS, bc_weights(EPISODE_SUCCESSES, filtered=True)).loss.backward()
    assert torch.isfinite(q.grad).all() and q.grad[0, 1].abs().sum() == 0  # nothing reaches task 1's rows
    none = bc_terms(Q, ACTIONS, torch.zeros(2, 2, 2))
    assert [none.loss.item(), none.accuracy.item(), none.used_fraction.item()] == [0.0, 0.0, 0.0]


def test_heads_are_summed_in_the_loss_and_the_loss_is_cqls_conservative_term_on_own_data() -> None:
    q2 = torch.cat([Q, 2.0 * Q])
    weights = bc_weights(EPISODE_SUCCESSES, filtered=False)
    one, doubled = bc_terms(Q, ACTIONS, weights), bc_terms(2.0 * Q, ACTIONS, weights)
    two = bc_terms(q2, ACTIONS, weights)
    assert two.loss.item() == pytest.approx(one.loss.item() + doubled.loss.item(), rel=1e-6)
    assert two.cross_entropy.item() == pytest.approx(two.loss.item() / 2, rel=1e-6)
    cql = cql_terms(q2, ACTIONS, torch.zeros(2, 2, 2), weights, alpha=1.0)
    assert two.loss.item() == pytest.approx(cql.cql_loss.item(), rel=1e-6)


def tiny_bc_model(objective: str) -> MultiTaskCQL:
    torch.manual_seed(0)
    return MultiTaskCQL(
        num_tasks=3,
        num_actions=4,
        image_size=16,
        proprio_dim=4,
        encoder=EncoderConfig(**TINY_ENCODER),
        cql=CQLConfig(head_hidden=32, augment_pad=0),
        objective=objective,
    )


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_bc_learns_the_data_actions_of_a_tiny_batch() -> None:
    # The action is a function of the image's colour (state), different per task: a policy can get it right.
    batch = make_batch(num_tasks=3, batch_size=16, num_states=4)
    state = (batch["image"][:, :, 0].float().mean(dim=(-1, -2)) // 50).long()  # [T, B]: one colour per state
    batch["action"] = (state + torch.arange(3)[:, None]) % 4
    model = tiny_bc_model("bc")
    optimizer = torch.optim.Adam(model.q.parameters(), lr=3e-3)
    model.train()
    first = model.compute_bc_terms(batch)
    for _ in range(60):
        terms = model.compute_bc_terms(batch)  # no router needed
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
    terms = model.compute_bc_terms(batch)
    assert first.accuracy.item() < 0.6 and terms.accuracy.item() == 1.0
    assert terms.cross_entropy.item() < 0.25 * first.cross_entropy.item()
    own = model.batch_q_values(batch).argmax(dim=-1).diagonal(dim1=0, dim2=2).T  # what act() picks on own data
    assert torch.equal(own, batch["action"])
    # The training step logs BC's terms, with no DataSharing callback attached.
    assert model.training_step(batch, 0).item() == pytest.approx(model.compute_bc_terms(batch).loss.item(), rel=1e-4)


def test_objective_is_checked_named_and_kept_as_a_plain_string() -> None:
    model = tiny_bc_model("filtered_bc")
    assert model.hparams["objective"] == "filtered_bc" and type(model.hparams["objective"]) is str
    assert MultiTaskCQL(**dict(model.hparams)).objective == "filtered_bc"
    with pytest.raises(ValueError, match=r"objective='dagger': must be one of \['cql', 'bc', 'filtered_bc'\]"):
        tiny_bc_model("dagger")
    # Validation scores the same CQL diagnostics in every objective (so val/td_loss exists) besides BC's own terms.
    terms, _ = model.compute_terms(make_batch(num_tasks=3), own_data_router)
    assert torch.isfinite(terms.td_loss)


def test_the_sharing_callback_refuses_to_route_for_behaviour_cloning() -> None:
    from robocds.callbacks import DataSharing
    from robocds.errors import ConfigError

    model = tiny_bc_model("bc")
    with pytest.raises(ConfigError, match=r"model.objective='bc' .* sharing.mode='all' would be ignored"):
        DataSharing(mode="all").setup(None, model, "fit")  # type: ignore[arg-type]
    DataSharing(mode="none").setup(None, model, "fit")  # type: ignore[arg-type]
    assert model.router is not None  # attached, never called by a BC training step
