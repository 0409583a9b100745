"""Slot attention, the MLP broadcast decoder and the feature normaliser in front of them."""

from __future__ import annotations

import pytest
import torch

from featlab.backbones.featnorm import FeatureNormalizer
from featlab.errors import ConfigError
from featlab.nets.decoders import MLPBroadcastDecoder
from featlab.nets.slot_attention import SlotAttention

pytestmark = pytest.mark.usefixtures("single_thread")


def small_slot_attention(init: str = "sampled") -> SlotAttention:
    torch.manual_seed(0)
    return SlotAttention(num_slots=4, slot_dim=16, input_dim=8, iterations=3, mlp_hidden=32,
                         input_mlp_hidden=24, init=init)


@pytest.mark.parametrize("init", ["sampled", "learned"])
def test_shapes_and_slots_compete_for_every_token(init):
    sa = small_slot_attention(init)
    slots, attn = sa(torch.randn(2, 10, 8))
    assert slots.shape == (2, 4, 16) and attn.shape == (2, 4, 10)
    assert torch.allclose(attn.sum(dim=1), torch.ones(2, 10), atol=1e-5)  # softmax over SLOTS
    assert (attn >= 0).all()


@pytest.mark.parametrize("init", ["sampled", "learned"])
def test_permuting_initial_slots_permutes_the_output_slots(init):
    sa = small_slot_attention(init).eval()
    inputs = torch.randn(2, 12, 8)
    start = sa.initial_slots(2, torch.Generator().manual_seed(3)).detach().clone()
    perm = torch.tensor([2, 0, 3, 1])
    slots, attn = sa(inputs, start)
    slots_p, attn_p = sa(inputs, start[:, perm])
    assert torch.allclose(slots_p, slots[:, perm], atol=1e-5)
    assert torch.allclose(attn_p, attn[:, perm], atol=1e-5)


def test_sampled_initialisation_is_reproducible_with_a_generator():
    sa = small_slot_attention()
    a = sa.initial_slots(3, torch.Generator().manual_seed(7))
    b = sa.initial_slots(3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.allclose(a[:, 0], a[:, 1])


def test_bad_slot_settings_name_the_key():
    with pytest.raises(ConfigError, match="task.slots.init"):
        SlotAttention(num_slots=3, slot_dim=8, input_dim=8, init="kmeans")
    with pytest.raises(ConfigError, match="task.slots.num_slots"):
        SlotAttention(num_slots=0, slot_dim=8, input_dim=8)


def test_decoder_masks_partition_each_position_and_weight_the_reconstruction():
    torch.manual_seed(0)
    decoder = MLPBroadcastDecoder(slot_dim=16, feature_dim=5, num_positions=9, hidden_dims=(32, 32))
    recon, masks, features = decoder(torch.randn(2, 4, 16))
    assert recon.shape == (2, 9, 5) and masks.shape == (2, 4, 9) and features.shape == (2, 4, 9, 5)
    assert torch.allclose(masks.sum(dim=1), torch.ones(2, 9), atol=1e-5)
    assert torch.allclose(recon, (masks.unsqueeze(-1) * features).sum(dim=1), atol=1e-6)


def test_decoder_position_embedding_starts_at_the_configured_scale():
    torch.manual_seed(0)
    default = MLPBroadcastDecoder(slot_dim=64, feature_dim=5, num_positions=256, hidden_dims=(8,))
    control = MLPBroadcastDecoder(slot_dim=64, feature_dim=5, num_positions=256, hidden_dims=(8,), pos_init_std=1.0)
    assert default.pos_embed.std().item() == pytest.approx(0.02, rel=0.05)  # DINOSAUR's
    assert control.pos_embed.std().item() == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ConfigError, match="task.decoder.pos_init_std"):
        MLPBroadcastDecoder(slot_dim=4, feature_dim=5, num_positions=4, pos_init_std=-1.0)


def test_slot_autoencoder_overfits_a_tiny_feature_set():
    """Slot attention + decoder reduce the feature-reconstruction MSE on two fixed maps."""
    torch.manual_seed(0)
    sa = SlotAttention(num_slots=3, slot_dim=16, input_dim=6, iterations=2, mlp_hidden=32, init="learned")
    decoder = MLPBroadcastDecoder(slot_dim=16, feature_dim=6, num_positions=16, hidden_dims=(32, 32))
    features = torch.zeros(2, 16, 6)
    features[:, :8, 0], features[:, 8:, 1] = 2.0, 2.0  # two regions with different features
    features += 0.1 * torch.randn_like(features)
    params = [*sa.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(60):
        recon, _, _ = decoder(sa(features)[0])
        loss = torch.nn.functional.mse_loss(recon, features)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert all(p.grad is not None for p in params)


def test_standardize_statistics_match_the_data_and_stay_frozen():
    norm = FeatureNormalizer(channels=3, mode="standardize")
    a, b = torch.randn(4, 3, 5, 5) * 3 + 1, torch.randn(2, 3, 5, 5) * 0.5 - 2
    norm.update(a)
    norm.update(b)
    norm.freeze(sync=False)
    data = torch.cat([a, b]).transpose(0, 1).reshape(3, -1).double()
    assert torch.allclose(norm.stats.mean.double(), data.mean(1), atol=1e-5)
    assert torch.allclose(norm.stats.std.double(), data.std(1, unbiased=False), atol=1e-4)
    frozen_mean, frozen_std = norm.stats.mean.clone(), norm.stats.std.clone()
    norm.update(torch.randn(4, 3, 5, 5) * 100)  # ignored once frozen
    norm.freeze(sync=False)
    assert torch.equal(norm.stats.mean, frozen_mean) and torch.equal(norm.stats.std, frozen_std)
    out = norm(torch.cat([a, b]))
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    raw_mean, raw_std = norm.raw_statistics()
    assert raw_mean == pytest.approx(data.mean().item(), abs=1e-6)
    assert raw_std == pytest.approx(data.std(unbiased=False).item(), rel=1e-5)


def test_normalizer_modes_and_errors():
    x = torch.randn(2, 4, 3, 3) * 5 + 2
    assert torch.equal(FeatureNormalizer(4, "none")(x), x)
    ln = FeatureNormalizer(4, "layernorm")(x)
    assert torch.allclose(ln.mean(dim=1), torch.zeros(2, 3, 3), atol=1e-5)
    assert not list(FeatureNormalizer(4, "layernorm").parameters())  # nothing learnable: the target cannot collapse
    with pytest.raises(ConfigError, match="task.feature_norm"):
        FeatureNormalizer(4, "standardize")(x)  # statistics not estimated yet
    with pytest.raises(ConfigError, match="task.feature_norm"):
        FeatureNormalizer(4, "batchnorm")
    with pytest.raises(ConfigError, match="task.stats_batches"):
        FeatureNormalizer(4, "standardize").freeze(sync=False)


def test_dead_channels_get_a_std_floor_so_unseen_data_cannot_explode():
    norm = FeatureNormalizer(channels=3, mode="standardize", min_std_fraction=0.1)
    train = torch.randn(8, 3, 4, 4)
    train[:, 2] = 0.0  # a channel that never fires in training (e.g. behind a ReLU6)
    norm.update(train)
    norm.freeze(sync=False)
    median = train[:, :2].transpose(0, 1).reshape(2, -1).std(1, unbiased=False).sort().values[0]
    assert norm.stats.std[2].item() == pytest.approx(0.1 * median.item(), rel=1e-3)
    unseen = torch.zeros(1, 3, 1, 1)
    unseen[0, 2] = 0.5
    assert norm(unseen)[0, 2].abs().item() < 10  # not 0.5 / 1e-3
