"""DINO head and student/teacher model: weight norm, norm_last_layer, bad sizes, one pass per resolution."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from featlab.errors import ConfigError
from featlab.nets.dino_head import DINOHead
from featlab.nets.dino_model import DINOModel


def effective_weight(head: DINOHead) -> torch.Tensor:
    return head.last_layer.weight


def test_last_layer_is_weight_normalised_with_the_parametrization_api():
    head = DINOHead(8, out_dim=16, hidden_dim=12, bottleneck_dim=4, norm_last_layer=False)
    assert parametrize.is_parametrized(head.last_layer, "weight")   # not the deprecated nn.utils.weight_norm
    with torch.no_grad():
        head.weight_g.copy_(torch.linspace(0.5, 2.0, 16)[:, None])
        head.weight_v.mul_(torch.rand(16, 1) * 3 + 0.1)
    v, g = head.weight_v, head.weight_g
    assert torch.allclose(effective_weight(head), g * v / v.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(effective_weight(head).norm(dim=1), g.squeeze(1), atol=1e-5)
    assert head.last_layer.bias is None


def test_norm_last_layer_fixes_g_to_one_through_training():
    torch.manual_seed(0)
    head = DINOHead(8, out_dim=16, hidden_dim=12, bottleneck_dim=4, norm_last_layer=True)
    assert not head.weight_g.requires_grad and head.weight_v.requires_grad
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    for _ in range(3):
        opt.zero_grad()
        head(torch.randn(5, 8)).pow(2).sum().backward()
        opt.step()
    assert torch.allclose(effective_weight(head).norm(dim=1), torch.ones(16), atol=1e-5)


def test_head_output_is_bounded_by_prototype_norms():
    """The bottleneck is L2-normalised, so with unit prototypes every logit is a cosine in [-1, 1]."""
    head = DINOHead(8, out_dim=32, hidden_dim=12, bottleneck_dim=4)
    out = head(torch.randn(7, 8) * 100)
    assert out.shape == (7, 32) and out.abs().max() <= 1.0 + 1e-5


@pytest.mark.parametrize(("kwargs", "key"), [({"out_dim": 1}, "net.out_dim"), ({"out_dim": 40.5}, "net.out_dim"),
                                            ({"hidden_dim": 0}, "net.hidden_dim")])
def test_bad_head_sizes_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DINOHead(8, **{"out_dim": 16, "hidden_dim": 12, "bottleneck_dim": 4, **kwargs})


def test_model_runs_one_backbone_call_per_resolution_and_can_return_features(monkeypatch):
    model = DINOModel.from_config("vit_tiny_test", out_dim=24, hidden_dim=16, bottleneck_dim=8)
    calls = []
    original = model.backbone.global_features
    monkeypatch.setattr(model.backbone, "global_features", lambda x: calls.append(x.shape) or original(x))
    crops = [torch.rand(2, 3, 32, 32)] * 2 + [torch.rand(2, 3, 16, 16)] * 3
    features, projections = model(crops, return_backbone_features=True)
    assert calls == [(4, 3, 32, 32), (6, 3, 16, 16)]
    assert features.shape == (10, model.embed_dim) and projections.shape == (10, 24)
    assert torch.equal(model(crops), projections)


def test_model_is_built_from_the_registry_and_rejects_unknown_backbones():
    assert DINOModel.from_config("resnet_tiny_test", out_dim=8, hidden_dim=8, bottleneck_dim=4).embed_dim == 64
    with pytest.raises(ConfigError, match="net.backbone: unknown backbone 'resnet7'"):
        DINOModel.from_config("resnet7")


def test_prototype_logits_stay_fp32_under_bf16_autocast():
    head = DINOHead(16, out_dim=32, hidden_dim=16, bottleneck_dim=8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, head(x), atol=0.05, rtol=0.05)  # only the MLP ran in bf16
