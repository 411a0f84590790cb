"""Encoder, augmentation, Q-network and the Lightning module on synthetic batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic_batches import TINY_ENCODER, make_batch

from robocds.augment import random_intensity, random_shift, shift_images
from robocds.config import CQLConfig, EncoderConfig, SharingConfig
from robocds.cql import data_action_values
from robocds.encoder import ConvEncoder, SpatialSoftmax
from robocds.module import MultiTaskCQL, own_data_router
from robocds.qnet import MultiTaskQNetwork, polyak_update
from robocds.sharing import SharingRouter

torch.set_num_threads(1)


def tiny_model(num_tasks: int = 3, num_actions: int = 4, image_size: int = 16, **cql: object) -> MultiTaskCQL:
    torch.manual_seed(0)
    return MultiTaskCQL(
        num_tasks=num_tasks,
        num_actions=num_actions,
        image_size=image_size,
        proprio_dim=4,
        encoder=EncoderConfig(**TINY_ENCODER),
        cql=CQLConfig(head_hidden=32, **cql),
    )


def test_shift_equals_replicate_pad_then_crop() -> None:
    images = torch.rand(3, 3, 8, 8)
    dy, dx = torch.tensor([-2, 0, 2]), torch.tensor([1, -2, 0])
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    expected = torch.stack([padded[n, :, 2 + dy[n] : 10 + dy[n], 2 + dx[n] : 10 + dx[n]] for n in range(3)])
    torch.testing.assert_close(shift_images(images, dy, dx), expected)


def test_shift_of_uint8_frames_matches_the_padded_crop_for_every_offset() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (81, 3, 12, 10), dtype=torch.uint8, generator=g)
    dy, dx = (d.reshape(-1) for d in torch.meshgrid(torch.arange(-4, 5), torch.arange(-4, 5), indexing="ij"))
    padded = F.pad(images.float(), (4, 4, 4, 4), mode="replicate").to(torch.uint8)
    expected = torch.stack([padded[n, :, 4 + dy[n] : 16 + dy[n], 4 + dx[n] : 14 + dx[n]] for n in range(81)])
    for bound in (4, 6, None):  # a looser bound pads more, None reads it from the offsets: same crops
        assert torch.equal(shift_images(images, dy, dx, max_shift=bound), expected)
    assert torch.equal(shift_images(images, torch.zeros(81, dtype=torch.int64), torch.zeros_like(dx)), images)


def test_random_shift_keeps_uint8_shape_and_is_off_at_zero_pad() -> None:
    images = torch.randint(0, 255, (5, 3, 16, 16), dtype=torch.uint8)
    out = random_shift(images, pad=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    assert random_shift(images, pad=0) is images


def test_intensity_jitter_scales_each_frame_within_its_bounds_and_moves_no_pixel() -> None:
    g = torch.Generator().manual_seed(0)
    flat = torch.full((64, 3, 6, 6), 100, dtype=torch.uint8)  # mean = every pixel: only the brightness acts
    out = random_intensity(flat, 0.3, g)
    assert out.dtype == torch.float32 and out.shape == flat.shape
    factors = out[:, 0, 0, 0] / (100 / 255)
    assert factors.min() >= 0.7 - 1e-6 and factors.max() <= 1.3 + 1e-6 and factors.std() > 0.1
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))  # one factor per frame, all channels alike
    # A bright dot on a dark frame stays the brightest pixel, at its place, in every jittered copy.
    dots = torch.full((64, 3, 8, 8), 20, dtype=torch.uint8)
    dots[:, :, 5, 2] = 200
    jittered = random_intensity(dots, 0.5, g)
    assert (jittered.flatten(1).argmax(dim=1) == dots.flatten(1).argmax(dim=1)).all()
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0
    assert random_intensity(dots, 0.0) is dots
    with pytest.raises(ValueError, match=r"augment_jitter=1.0: must be in \[0, 1\)"):
        CQLConfig(augment_jitter=1.0)


def test_intensity_jitter_acts_in_training_only() -> None:
    batch = make_batch(num_tasks=3, batch_size=5)
    router = SharingRouter(SharingConfig(mode="none"))
    plain, jittered = tiny_model(augment_pad=0), tiny_model(augment_pad=0, augment_jitter=0.3)
    assert jittered.compute_terms(batch, router)[0].loss.item() != plain.compute_terms(batch, router)[0].loss.item()
    plain.eval(), jittered.eval()
    assert jittered.compute_terms(batch, router)[0].loss.item() == plain.compute_terms(batch, router)[0].loss.item()


def test_q_network_outputs_every_head_task_and_action() -> None:
    net = MultiTaskQNetwork(EncoderConfig(), image_size=64, proprio_dim=4, num_tasks=9, num_actions=8)
    q = net(torch.randint(0, 255, (5, 3, 64, 64), dtype=torch.uint8), torch.rand(5, 4))
    assert q.shape == (2, 5, 9, 8)
    no_proprio = MultiTaskQNetwork(EncoderConfig(use_proprio=False), 64, 4, 9, 8, num_heads=1)
    assert no_proprio(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape == (1, 2, 9, 8)


def test_head_layernorm_normalises_each_heads_hidden_layer() -> None:
    net = MultiTaskQNetwork(EncoderConfig(**TINY_ENCODER), 16, 4, num_tasks=3, num_actions=4, head_layernorm=True)
    norms = [layer for head in net.heads for layer in head if isinstance(layer, torch.nn.LayerNorm)]
    assert len(norms) == 2 and all(norm.normalized_shape == (256,) for norm in norms)
    q = net(torch.randint(0, 255, (5, 3, 16, 16), dtype=torch.uint8), torch.rand(5, 4))
    assert q.shape == (2, 5, 3, 4)
    model = tiny_model(head_layernorm=True)
    assert any(isinstance(layer, torch.nn.LayerNorm) for layer in model.q.heads[0])


def test_head_dropout_thins_training_passes_only_and_keeps_parameter_names() -> None:
    model = tiny_model(head_dropout=0.5)
    assert list(model.state_dict()) == list(tiny_model().state_dict())  # checkpoints load either way
    images, proprio = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8), torch.rand(4, 4)
    model.train()
    assert not torch.equal(model.q(images, proprio), model.q(images, proprio))  # a fresh mask each pass
    assert not torch.equal(model.q_target(images, proprio), model.q_target(images, proprio))
    model.eval()
    assert torch.equal(model.q(images, proprio), model.q(images, proprio))
    with pytest.raises(ValueError, match="head_dropout=1.0: must be in"):
        CQLConfig(head_dropout=1.0)


def test_spatial_softmax_finds_a_hot_cell_and_follows_it() -> None:
    pool = SpatialSoftmax(5, 7)
    features = torch.full((1, 2, 5, 7), -30.0)
    features[0, 0, 0, 6] = 30.0  # top right: x = 1, y = -1
    features[0, 1, 2, 3] = 30.0  # centre: x = 0, y = 0
    torch.testing.assert_close(pool(features), torch.tensor([[1.0, -1.0, 0.0, 0.0]]), atol=1e-4, rtol=0)
    shifted = torch.roll(features, shifts=-3, dims=3)  # channel 1's cell moves to x = -1
    assert pool(shifted)[0, 2].item() == pytest.approx(-1.0, abs=1e-4)


def test_spatial_softmax_encoder_outputs_features_and_keeps_negative_activations() -> None:
    config = EncoderConfig(channels=(8, 8), kernel_sizes=(5, 3), strides=(2, 1), pooling="spatial_softmax")
    encoder = ConvEncoder(config, image_size=32, proprio_dim=4)
    assert not isinstance(encoder.convs[-1], torch.nn.ReLU)
    out = encoder(torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8), torch.rand(3, 4))
    assert out.shape == (3, encoder.out_dim) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="pooling='mean'"):
        EncoderConfig(pooling="mean")


def test_encoder_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="strides="):
        EncoderConfig(channels=(8, 8), kernel_sizes=(3, 3), strides=(2,))
    with pytest.raises(ValueError, match="image_size=16 is too small"):
        MultiTaskQNetwork(EncoderConfig(), image_size=16, proprio_dim=4, num_tasks=2, num_actions=2)
    with pytest.raises(ValueError, match="gamma=1.0"):
        CQLConfig(gamma=1.0)


def test_polyak_update() -> None:
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = b.weight.detach().clone()
    polyak_update(b, a, tau=0.25)
    torch.testing.assert_close(b.weight, 0.75 * before + 0.25 * a.weight)


def test_module_pairs_each_transition_with_the_target_tasks_reward() -> None:
    # gamma = 0, alpha = 0, MSE, no augmentation: td_loss is the mean over tasks i of the mean over every
    # (j, b) of sum_k (Q_k,i(s_jb, a_jb) - rewards[j, b, i])^2. Recompute it independently.
    model = tiny_model(gamma=0.0, alpha=0.0, td_loss="mse", augment_pad=0)
    batch = make_batch(num_tasks=3, batch_size=5)
    batch["rewards"] = torch.rand(3, 5, 3)  # distinct rewards for every (source, target)
    terms, _ = model.compute_terms(batch, SharingRouter(SharingConfig(mode="all")))
    t, b = 3, 5
    q = model.q(batch["image"].flatten(0, 1), batch["proprio"].flatten(0, 1)).view(2, t, b, t, 4)
    q_data = data_action_values(q, batch["action"])
    targets = model.cql_config.reward_scale * batch["rewards"]  # the default scale, 10
    expected = (q_data - targets).square().sum(0).mean(dim=(0, 1)).mean()
    assert terms.td_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_n_step_batches_take_the_window_return_and_uds_never_credits_a_shared_success() -> None:
    model = tiny_model(gamma=0.5, alpha=0.0, augment_pad=0, reward_scale=10.0)
    for parameter in model.q_target.parameters():
        parameter.detach().zero_()  # V(s_{t+m}) = 0: a target is exactly the window's return
    batch = make_batch(num_tasks=3, batch_size=5)
    batch["rewards"], batch["successes"] = torch.zeros(3, 5, 3), torch.zeros(3, 5, 3)
    batch["steps_to_success"] = torch.full((3, 5, 3), 2.0)  # every task solved two steps on
    batch["bootstrap_steps"] = torch.full((3, 5), 3.0)  # inside a window of three
    terms, _ = model.compute_terms(batch, SharingRouter(SharingConfig(mode="all")))
    assert terms.target.item() == pytest.approx(10.0 * 0.5**2)
    # UDS: a shared transition's success is unknown, so it bootstraps (to 0 here): a third of each task's targets.
    terms, _ = model.compute_terms(batch, SharingRouter(SharingConfig(mode="uds")))
    assert terms.target.item() == pytest.approx(10.0 * 0.5**2 / 3)
    batch["bootstrap_steps"] = torch.full((3, 5), 2.0)  # solved at the window's edge: outside it
    terms, _ = model.compute_terms(batch, SharingRouter(SharingConfig(mode="all")))
    assert terms.target.item() == 0.0


def test_batch_with_wrong_task_count_is_rejected_with_the_key_and_shapes() -> None:
    model = tiny_model(num_tasks=3)
    batch = make_batch(num_tasks=2)
    with pytest.raises(ValueError, match=r"batch\['action'\] has shape \(2, 8\).*num_tasks=3"):
        model.compute_terms(batch, own_data_router)
    batch = make_batch(num_tasks=3)
    batch["rewards"] = batch["rewards"][..., :2]
    with pytest.raises(ValueError, match=r"batch\['rewards'\] has shape \(3, 8, 2\): expected \[3, 8, 3\]"):
        model.compute_terms(batch, own_data_router)
    with pytest.raises(KeyError, match="successes"):
        model.compute_terms({k: v for k, v in batch.items() if k != "successes"}, own_data_router)


def test_training_step_without_router_explains_the_callback() -> None:
    with pytest.raises(RuntimeError, match="DataSharing"):
        tiny_model().training_step(make_batch(), 0)


def test_act_accepts_both_layouts_and_numpy() -> None:
    model = tiny_model()
    chw = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    proprio = torch.rand(4, 4)
    actions = model.act(chw, proprio)
    assert actions.shape == (4, 3) and actions.dtype == torch.int64
    hwc = chw.permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(model.act(hwc, proprio.numpy()), actions)
    torch.testing.assert_close(model.act(hwc[0], proprio[0].numpy()), actions[:1])
    torch.testing.assert_close(model.predict_step({"image": chw, "proprio": proprio}), actions)
    with pytest.raises(ValueError, match="expected frames of 3 x 16 x 16"):
        model.act(np.zeros((2, 32, 32, 3), dtype=np.uint8), proprio[:2])


def test_dr3_term_is_the_consecutive_features_dot_product_and_enters_the_loss_with_its_weight() -> None:
    batch = make_batch(num_tasks=3, batch_size=5)
    router = SharingRouter(SharingConfig(mode="none"))
    plain, _ = tiny_model(augment_pad=0).compute_terms(batch, router)
    assert plain.coadaptation is None and "coadaptation" not in plain.metrics()
    model = tiny_model(augment_pad=0, dr3_weight=0.5)
    terms, _ = model.compute_terms(batch, router)
    # Recomputed by hand: each head's hidden layer (Linear, ReLU) on the encoder's features of s and s'.
    flat = {key: batch[key].flatten(0, 1) for key in ("image", "proprio", "next_image", "next_proprio")}
    features = model.q.encoder(flat["image"], flat["proprio"])
    next_features = model.q.encoder(flat["next_image"], flat["next_proprio"])
    dots = [torch.relu(h[0](features)).mul(torch.relu(h[0](next_features))).sum(-1).mean() for h in model.q.heads]
    assert terms.coadaptation.item() == pytest.approx(torch.stack(dots).mean().item(), rel=1e-5)
    assert terms.coadaptation.item() > 0  # post-ReLU features: the term only ever pushes them apart
    assert terms.loss.item() == pytest.approx(plain.loss.item() + 0.5 * terms.coadaptation.item(), rel=1e-5)
    assert terms.metrics()["coadaptation"].item() == pytest.approx(terms.coadaptation.item())
    # Its gradient reaches the encoder through the next observations too (DR3 differentiates both sides).
    model.q.zero_grad()
    terms.coadaptation.backward()
    assert model.q.encoder.convs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="dr3_weight=-0.1: must be >= 0"):
        CQLConfig(dr3_weight=-0.1)


def test_dr3_on_the_target_networks_next_features_adds_no_pass_and_differentiates_phi_s_only() -> None:
    batch = make_batch(num_tasks=3, batch_size=5)
    router = SharingRouter(SharingConfig(mode="none"))
    plain, model = tiny_model(augment_pad=0), tiny_model(augment_pad=0, dr3_weight=0.5, dr3_next_features="target")
    with torch.no_grad():  # a target network apart from the online one, so the test sees whose features are read
        for m in (plain, model):
            for p in m.q_target.parameters():
                p.mul_(0.5)
    plain_terms, _ = plain.compute_terms(batch, router)
    online_passes = []
    model.q.encoder.register_forward_hook(lambda *_: online_passes.append(1))
    terms, _ = model.compute_terms(batch, router)
    assert len(online_passes) == 1  # phi(s) only: the next frames go through the target network alone
    flat = {key: batch[key].flatten(0, 1) for key in ("image", "proprio", "next_image", "next_proprio")}
    features = model.q.encoder(flat["image"], flat["proprio"])
    next_features = model.q_target.encoder(flat["next_image"], flat["next_proprio"])
    heads = zip(model.q.heads, model.q_target.heads)
    dots = [torch.relu(h[0](features)).mul(torch.relu(g[0](next_features))).sum(-1).mean() for h, g in heads]
    assert terms.coadaptation.item() == pytest.approx(torch.stack(dots).mean().item(), rel=1e-5)
    assert terms.loss.item() == pytest.approx(plain_terms.loss.item() + 0.5 * terms.coadaptation.item(), rel=1e-5)
    model.q.zero_grad()
    terms.coadaptation.backward()
    assert model.q.encoder.convs[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.q_target.parameters())
    with pytest.raises(ValueError, match="dr3_next_features='both': must be 'online' or 'target'"):
        CQLConfig(dr3_next_features="both")


def test_q_network_overfits_a_tiny_dataset() -> None:
    # gamma = 0: Q of the data action must fit the stored reward of every task.
    model = tiny_model(gamma=0.0, alpha=0.0, td_loss="mse", augment_pad=0, reward_scale=1.0)
    batch = make_batch(num_tasks=3, batch_size=16, num_states=3)
    router = SharingRouter(SharingConfig(mode="all"))
    optimizer = torch.optim.Adam(model.q.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(200):
        terms, _ = model.compute_terms(batch, router)
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
        first = terms.td_loss.item() if first is None else first
    assert terms.td_loss.item() < 0.02 * first
    q = model.q_values(batch["image"].flatten(0, 1), batch["proprio"].flatten(0, 1)).view(3, 16, 3, 4)
    q_data = data_action_values(q, batch["action"])
    assert (q_data - batch["rewards"]).abs().max().item() < 0.2


def test_conservative_loss_goes_down_with_cds_routing() -> None:
    model = tiny_model()
    batch = make_batch(num_tasks=3, batch_size=16)
    router = SharingRouter(SharingConfig(mode="cds"))
    optimizer = torch.optim.Adam(model.q.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        terms, _ = model.compute_terms(batch, router)
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
        polyak_update(model.q_target, model.q, 0.05)
        losses.append(terms.loss.item())
    # The conservative gap has a floor (several actions per state in the data), so expect a clear decrease only.
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:5])
    assert router.num_updates == 60


def test_hparams_are_plain_and_the_model_rebuilds_from_them() -> None:
    model = tiny_model()
    hp = dict(model.hparams)
    assert hp["task_names"] == ["task_0", "task_1", "task_2"]
    assert isinstance(hp["encoder"], dict) and isinstance(hp["cql"], dict)
    rebuilt = MultiTaskCQL(**hp)
    assert rebuilt.encoder_config == model.encoder_config and rebuilt.cql_config == model.cql_config


def test_target_bounds_clamp_the_td_targets_and_bad_bounds_are_named() -> None:
    batch = make_batch(num_tasks=3, batch_size=5)
    batch["successes"] = torch.zeros_like(batch["successes"])  # bootstrap everywhere
    free = tiny_model(gamma=0.99, augment_pad=0)
    with torch.no_grad():  # the target network's Q far above 1, as runaway over-estimation makes it
        for layer in free.q_target.modules():
            if isinstance(layer, torch.nn.Linear) and layer.out_features == 3 * 4:
                layer.bias.fill_(50.0)
    bounded = tiny_model(gamma=0.99, augment_pad=0, target_bounds=(0.0, 1.0))
    bounded.load_state_dict(free.state_dict())
    router = SharingRouter(SharingConfig(mode="none"))
    free_target = free.compute_terms(batch, router)[0].target.item()
    bounded_target = bounded.compute_terms(batch, router)[0].target.item()
    scale = bounded.cql_config.reward_scale  # the bounds are in units of the return: [0, scale] in Q's
    assert free_target > scale
    assert 0.0 <= bounded_target <= scale
    with pytest.raises(ValueError, match=r"target_bounds=\(1.0, 0.0\)"):
        CQLConfig(target_bounds=(1.0, 0.0))


def test_success_weighted_conservative_term_skips_failed_episodes_and_keeps_the_td_term() -> None:
    batch = make_batch(num_tasks=3, batch_size=5)
    router = SharingRouter(SharingConfig(mode="none"))
    uniform = tiny_model(augment_pad=0)
    filtered = tiny_model(augment_pad=0, conservative_weighting="success")
    filtered.load_state_dict(uniform.state_dict())
    batch["episode_successes"] = torch.zeros_like(batch["episode_successes"])
    failed, _ = filtered.compute_terms(batch, router)
    both, _ = uniform.compute_terms(batch, router)
    assert failed.cql_loss.item() == 0.0 and both.cql_loss.item() > 0.0
    assert failed.td_loss.item() == pytest.approx(both.td_loss.item(), rel=1e-6)
    batch["episode_successes"] = torch.ones_like(batch["episode_successes"])  # every episode solved every task
    solved, _ = filtered.compute_terms(batch, router)
    assert solved.cql_loss.item() == pytest.approx(both.cql_loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="conservative_weighting='successes'"):
        CQLConfig(conservative_weighting="successes")  # type: ignore[arg-type]


def test_failed_episode_weight_interpolates_between_success_and_uniform() -> None:
    batch = make_batch(num_tasks=3, batch_size=6)
    batch["episode_successes"] = (torch.arange(3 * 6 * 3).view(3, 6, 3) % 2).float()  # half the episodes solved
    router = SharingRouter(SharingConfig(mode="none"))
    uniform = tiny_model(augment_pad=0)
    losses = {}
    for weight in (0.0, 0.5, 1.0):
        model = tiny_model(augment_pad=0, conservative_weighting="success", failed_episode_weight=weight)
        model.load_state_dict(uniform.state_dict())
        losses[weight] = model.compute_terms(batch, router)[0].cql_loss.item()
    assert losses[1.0] == pytest.approx(uniform.compute_terms(batch, router)[0].cql_loss.item(), rel=1e-6)
    assert min(losses[0.0], losses[1.0]) < losses[0.5] < max(losses[0.0], losses[1.0])
    with pytest.raises(ValueError, match="failed_episode_weight=1.5: must be in"):
        CQLConfig(conservative_weighting="success", failed_episode_weight=1.5)
    with pytest.raises(ValueError, match="failed_episode_weight=0.5 applies to conservative_weighting 'success'"):
        CQLConfig(conservative_weighting="advantage", failed_episode_weight=0.5)
    assert CQLConfig(failed_episode_weight=0.5).conservative_weighting == "uniform"  # every transition weighs 1


def test_a_checkpoint_written_before_the_head_settings_existed_loads_as_it_was_trained(tmp_path) -> None:
    # Its stored cql dict lacks head_layernorm, conservative_weighting and reward_scale: it gets their values from
    # before they existed (no LayerNorm, uniform, 1), whatever today's defaults are, and its tensors load.
    import lightning

    from robocds.checkpoint import load_module

    model = tiny_model(head_layernorm=False, conservative_weighting="uniform", reward_scale=1.0)
    hparams = dict(model.hparams)
    later = ("head_layernorm", "conservative_weighting", "reward_scale")
    hparams["cql"] = {k: v for k, v in hparams["cql"].items() if k not in later}
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": lightning.__version__}, old)  # fmt: skip
    loaded = load_module(old)
    assert loaded.cql_config.head_layernorm is False and loaded.cql_config.conservative_weighting == "uniform"
    assert loaded.cql_config.reward_scale == 1.0 != CQLConfig().reward_scale
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
