"""Settings of the learner as dataclasses: the image encoder, CQL and its optimisation, data sharing.

Each field carries a one-line meaning; ``__post_init__`` rejects bad values with an error that names
the field and the value. Checkpoints store these as plain dicts (see ``from_dict``), so a checkpoint
loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

TRAINING_SEED_MAX = 2**32 - 1  # the largest training seed: numpy's bound, so Lightning's seed_everything's

_C = TypeVar("_C")

SharingMode = Literal["none", "all", "cds", "uds", "share_successes"]
SHARING_MODES: tuple[str, ...] = get_args(SharingMode)
ThresholdRule = Literal["mean", "percentile"]
ThresholdSource = Literal["batch", "heldout"]
TargetRule = Literal["min", "double"]
TDLoss = Literal["huber", "mse"]
DR3NextFeatures = Literal["online", "target"]
# Which transitions CQL's conservative term pulls towards their data action (see CQLConfig.conservative_weighting).
ConservativeWeighting = Literal["uniform", "success", "success_else_mean", "advantage"]
CONSERVATIVE_WEIGHTINGS: tuple[str, ...] = get_args(ConservativeWeighting)
Pooling = Literal["flatten", "spatial_softmax"]
# What MultiTaskCQL optimises: CQL (with data sharing), or behaviour cloning on its Q-logits (robocds.bc).
Objective = Literal["cql", "bc", "filtered_bc"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
LRSchedule = Literal["constant", "cosine"]
LR_SCHEDULES: tuple[str, ...] = get_args(LRSchedule)


def from_dict(cls: type[_C], value: _C | dict[str, Any] | None) -> _C:
    """``value`` as a ``cls`` instance: dicts (as stored in checkpoints) are converted, None gives the defaults."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**value)
    raise TypeError(f"expected {cls.__name__} or dict, got {type(value).__name__}")


# A checkpoint stores every CQLConfig field of its day, so a field added later is absent from it and would take
# today's default. Where that default differs from the behaviour before the field existed, this is the value that
# rebuilds the checkpoint's own network and loss.
CQL_VALUES_BEFORE_THEY_WERE_STORED: dict[str, Any] = {
    "head_layernorm": False,
    "conservative_weighting": "uniform",
    "reward_scale": 1.0,
}


def stored_cql(stored: dict[str, Any] | None) -> dict[str, Any]:
    """A checkpoint's stored ``cql`` hyperparameters, completed with the values of the fields it predates."""
    return {**CQL_VALUES_BEFORE_THEY_WERE_STORED, **(stored or {})}


def _positive_ints(name: str, values: tuple[int, ...]) -> None:
    if not values or any(int(v) < 1 for v in values):
        raise ValueError(f"{name}={values!r}: must be a non-empty sequence of positive integers")


@dataclass
class EncoderConfig:
    """CNN encoder for RGB frames with optional fusion of the proprioceptive vector.

    The defaults are the DQN (Nature) conv stack, which maps a 64x64 frame to a 4x4x64 map.
    """

    channels: tuple[int, ...] = (32, 64, 64)  # output channels of each conv layer
    kernel_sizes: tuple[int, ...] = (8, 4, 3)  # kernel size of each conv layer
    strides: tuple[int, ...] = (4, 2, 1)  # stride of each conv layer
    # How the last conv map becomes a vector: "flatten" (DQN: every cell, position-specific weights) or
    # "spatial_softmax" (each channel's expected image coordinates: a keypoint per channel, the same read-out
    # wherever the object is, so localisation generalises across scene layouts from few episodes).
    pooling: Pooling = "flatten"
    feature_dim: int = 256  # size of the image embedding (linear projection + LayerNorm of the pooled map)
    use_proprio: bool = True  # concatenate an embedding of the proprio vector to the image embedding
    proprio_features: int = 64  # size of the proprio embedding (ignored when use_proprio is false)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        self.strides = tuple(int(s) for s in self.strides)
        _positive_ints("channels", self.channels)
        _positive_ints("kernel_sizes", self.kernel_sizes)
        _positive_ints("strides", self.strides)
        if not len(self.channels) == len(self.kernel_sizes) == len(self.strides):
            raise ValueError(
                f"channels={self.channels}, kernel_sizes={self.kernel_sizes}, strides={self.strides}: "
                "must have the same length (one entry per conv layer)"
            )
        if self.pooling not in ("flatten", "spatial_softmax"):
            raise ValueError(f"pooling={self.pooling!r}: must be 'flatten' or 'spatial_softmax'")
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim={self.feature_dim}: must be >= 1")
        if self.proprio_features < 1:
            raise ValueError(f"proprio_features={self.proprio_features}: must be >= 1")


@dataclass
class CQLConfig:
    """Discrete conservative Q-learning: Q-heads, TD target, conservative penalty, target network, augmentation."""

    gamma: float = 0.95  # discount
    # Weight of the conservative term logsumexp_a Q(s, a) - Q(s, a_data). 3 since 2026-12-03 (was 1): five seeds
    # of No Sharing on benchmark_cpu_replay's data-rich pair, 54.6% vs 46.8%, P(X > 1) 0.75 [0.52, 0.94], and
    # not lower on benchmark_cpu (docs/LEARNING.md, the learner study, section 5).
    alpha: float = 3.0
    num_q_heads: int = 2  # independent Q-heads on the shared encoder (2 = twin heads; targets use their min)
    head_hidden: int = 256  # hidden width of each Q-head's MLP
    # LayerNorm on each Q-head's hidden layer (Linear -> LayerNorm -> ReLU -> Linear): bounds the features the
    # output layer reads, hence how far Q can extrapolate.
    head_layernorm: bool = False
    # Dropout after each Q-head's hidden ReLU, in training only (online and target pass alike, as DroQ): against
    # values that fit the training episodes and not held-out ones. 0 = off: at 0.3 the held-out fit improved but the
    # data-rich tasks lost 4 points (docs/LEARNING.md, the learner study, section 10).
    head_dropout: float = 0.0
    target: TargetRule = "min"  # next action: "min" = argmax of the target net's min over heads (no extra
    # forward pass); "double" = argmax of the online net (double DQN; one more no-grad encoder pass)
    tau: float = 0.005  # Polyak factor of the target update (1.0 = hard copy)
    target_update_period: int = 1  # update the target network every this many optimizer steps
    td_loss: TDLoss = "huber"  # elementwise TD loss: Huber (delta 1) or squared error
    augment_pad: int = 4  # DrQ random shift in pixels (replicate padding) during training; 0 turns it off
    # Photometric jitter during training: each frame's brightness and contrast scaled by its own factors in
    # [1 - s, 1 + s], after the shift; pixels stay where they are. 0 = off (the learner study's round 39 measures it).
    augment_jitter: float = 0.0
    # Clamp TD targets to the returns the task can achieve: with reward 1 on the terminal success step and 0
    # otherwise, Q* lies in [0, 1]; bootstrapping past that bound is pure over-estimation. None: no clamp.
    target_bounds: tuple[float, float] | None = None
    # Multiply every reward by this in the TD targets (target_bounds and Monte-Carlo returns scale with it). Q-values
    # are also CQL's logits: with returns in [0, 1] they cannot separate actions without the conservative term's
    # pull on the data action outgrowing the TD fit; a larger scale gives the logits room. Argmax is unchanged by it.
    # 10 since 2026-12-03 (the learner study, section 8: Q inside the returns, +3 points on both wrist benchmarks).
    reward_scale: float = 10.0
    # Raise each TD target to at least the discounted return the data's own behaviour went on to collect from that
    # transition (gamma ** steps_to_success, 0 when the episode never solved the task; UDS-shared data: 0): with a
    # reward only at success, one-step targets carry it back one step per target update, this at once.
    mc_lower_bound: bool = False
    # Which routed transitions the conservative term pulls towards their data action (the TD term keeps every one):
    # "uniform" all of them (CQL); "success" those of episodes that succeeded for the target task (filtered_bc's
    # imitation under CQL's values); "success_else_mean" that, and on every other routed transition logsumexp_a Q -
    # mean_a Q (the highest actions pushed down, none pulled up); "advantage" those whose data action has a
    # non-negative advantage under the
    # learner's own Q, A = Q(s, a_data) - sum_a softmax(Q)(a) Q(s, a) (CRR's binary filter; it diverged on the wrist
    # benchmarks, docs/LEARNING.md, the learner study, section 7). The term is normalised over the transitions it keeps
    # (all routed ones for "success_else_mean"), so alpha keeps its scale.
    conservative_weighting: ConservativeWeighting = "uniform"
    # With conservative_weighting "success": the weight of the term on transitions of episodes that did not succeed
    # for the target task (0 = left out, as filtered_bc; 1 = every transition, as "uniform"); "uniform" weighs every
    # transition 1 whatever it is. The packaged configs ship "success" at 0.25 (train/configs/base.yaml; the learner
    # study's rounds 26-28, docs/results/learner/README.md); the code defaults stay plain CQL, so modules built in
    # code and old checkpoints train as before.
    failed_episode_weight: float = 0.0
    # Weight of DR3's regulariser (robocds.cql.feature_coadaptation) in the loss; 0 = off. It costs an online
    # forward and backward pass over the next observations. Opt-in: the learner study's round 32
    # (docs/results/learner/README.md) measures it against the held-out TD error's rise.
    dr3_weight: float = 0.0
    # Whose features of the next observation DR3's term reads: "online" (the paper's; gradient through both
    # observations, one more online forward and backward pass over the next frames) or "target" (the target
    # network's, from the pass the TD targets already make: gradient through phi(s) only, no extra pass).
    dr3_next_features: DR3NextFeatures = "online"

    def __post_init__(self) -> None:
        if self.target_bounds is not None:
            low, high = (float(v) for v in self.target_bounds)
            if not low < high:
                raise ValueError(f"target_bounds={self.target_bounds}: must be (low, high) with low < high")
            self.target_bounds = (low, high)
        if not self.reward_scale > 0.0:
            raise ValueError(f"reward_scale={self.reward_scale}: must be > 0")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma={self.gamma}: must be in [0, 1)")
        if self.alpha < 0.0:
            raise ValueError(f"alpha={self.alpha}: must be >= 0")
        if self.num_q_heads < 1:
            raise ValueError(f"num_q_heads={self.num_q_heads}: must be >= 1")
        if self.head_hidden < 1:
            raise ValueError(f"head_hidden={self.head_hidden}: must be >= 1")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout={self.head_dropout}: must be in [0, 1)")
        if self.target not in ("min", "double"):
            raise ValueError(f"target={self.target!r}: must be 'min' or 'double'")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau={self.tau}: must be in (0, 1]")
        if self.target_update_period < 1:
            raise ValueError(f"target_update_period={self.target_update_period}: must be >= 1")
        if self.td_loss not in ("huber", "mse"):
            raise ValueError(f"td_loss={self.td_loss!r}: must be 'huber' or 'mse'")
        if not self.dr3_weight >= 0.0:
            raise ValueError(f"dr3_weight={self.dr3_weight}: must be >= 0")
        if self.dr3_next_features not in ("online", "target"):
            raise ValueError(f"dr3_next_features={self.dr3_next_features!r}: must be 'online' or 'target'")
        if self.augment_pad < 0:
            raise ValueError(f"augment_pad={self.augment_pad}: must be >= 0")
        if not 0.0 <= self.augment_jitter < 1.0:
            raise ValueError(f"augment_jitter={self.augment_jitter}: must be in [0, 1)")
        if self.conservative_weighting not in CONSERVATIVE_WEIGHTINGS:
            valid = list(CONSERVATIVE_WEIGHTINGS)
            raise ValueError(f"conservative_weighting={self.conservative_weighting!r}: must be one of {valid}")
        if not 0.0 <= self.failed_episode_weight <= 1.0:
            raise ValueError(f"failed_episode_weight={self.failed_episode_weight}: must be in [0, 1]")
        if self.failed_episode_weight > 0.0 and self.conservative_weighting in ("success_else_mean", "advantage"):
            raise ValueError(
                f"failed_episode_weight={self.failed_episode_weight} applies to conservative_weighting 'success', "
                f"not {self.conservative_weighting!r} (with it, also pass --model.cql.failed_episode_weight 0)"
            )


@dataclass
class SharingConfig:
    """How the transitions of task j are routed into the loss of task i (j != i).

    - ``none``: task i learns from its own data only.
    - ``all``: every transition of every task, relabeled with task i's reward, weight 1.
    - ``cds``: weight 1[Q_i(s, a) >= threshold_i] (or the soft sigmoid weight), threshold_i from Q_i on task
      i's own transitions: those of the training batch (``threshold_from="batch"``, the paper's rule) or of
      its held-out episodes (``"heldout"``, estimated by the ``DataSharing`` callback).
    - ``uds``: every transition with weight 1, but shared rewards (and terminals) relabeled to 0.
    - ``share_successes``: task j's transition with weight 1 when its episode's return for task i is > 0 (the
      episode holds a success of task i), else 0; shared rewards are task i's, as in ``all``.
    """

    mode: SharingMode = "cds"  # routing of cross-task transitions
    threshold: ThresholdRule = "mean"  # cds: threshold_i = mean or a percentile of Q_i over task i's own data
    percentile: float = 50.0  # cds with threshold="percentile": which percentile (0-100)
    temperature: float | None = None  # cds: None = hard 0/1 weight; > 0 = sigmoid((Q - threshold) / temperature)
    ema: float = 0.0  # cds: 0 = per-batch threshold; in (0, 1) = running estimate t <- ema * t + (1 - ema) * batch
    # cds: whose own transitions threshold_i is taken over: "batch" = task i's rows of the training batch (the
    # paper); "heldout" = task i's held-out (validation) episodes, re-estimated at the start of training and
    # after every validation (the DataSharing callback), so a task whose few episodes the Q-function memorises
    # is not compared with its inflated training-data values
    threshold_from: ThresholdSource = "batch"

    def __post_init__(self) -> None:
        if self.mode not in SHARING_MODES:
            raise ValueError(f"mode={self.mode!r}: must be one of {', '.join(map(repr, SHARING_MODES))}")
        if self.threshold not in ("mean", "percentile"):
            raise ValueError(f"threshold={self.threshold!r}: must be 'mean' or 'percentile'")
        if not 0.0 <= self.percentile <= 100.0:
            raise ValueError(f"percentile={self.percentile}: must be in [0, 100]")
        if self.temperature is not None and not self.temperature > 0.0:
            raise ValueError(f"temperature={self.temperature}: must be > 0 (or None for the hard 0/1 weight)")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema={self.ema}: must be in [0, 1)")
        if self.threshold_from not in ("batch", "heldout"):
            raise ValueError(f"threshold_from={self.threshold_from!r}: must be 'batch' or 'heldout'")
        if self.threshold_from == "heldout" and self.mode != "cds":
            raise ValueError(f"threshold_from='heldout' with mode={self.mode!r}: it is a cds threshold; use mode 'cds'")
        if self.threshold_from == "heldout" and self.ema > 0.0:
            raise ValueError(
                f"ema={self.ema} with threshold_from='heldout': ema smooths per-batch thresholds; set it to 0"
            )
