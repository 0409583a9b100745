"""EdgeFace: published architecture facts, weight files (state dict, TorchScript, quantised), errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from featlab.backbones import available, create
from featlab.backbones.edgeface import (
    EDGEFACE_VARIANTS,
    EdgeFaceEmbedder,
    EdgeFaceNet,
    LowRankLinear,
    low_rank,
)
from featlab.errors import ConfigError
from featlab.losses.identity import IdentityLoss

TINY = "edgeface_tiny_test"


def faces(batch: int = 2, size: int = 112) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def reference_embedding(net: EdgeFaceNet, x: torch.Tensor) -> torch.Tensor:
    """What the published inference code computes: normalise to [-1, 1], run the network."""
    with torch.no_grad():
        return net.eval()((x - 0.5) / 0.5)


@pytest.mark.parametrize(("name", "millions"), [("edgeface_xs_gamma_06", 1.77), ("edgeface_s_gamma_05", 3.65),
                                                ("edgeface_xxs", 1.24)])
def test_parameter_counts_match_the_published_table(name, millions):
    with torch.device("meta"):  # shapes only
        count = sum(p.numel() for p in EdgeFaceNet(name).parameters())
    assert round(count / 1e6, 2) == millions


def test_low_rank_layers_follow_gamma_rule_including_the_head():
    with torch.device("meta"):
        net, plain = EdgeFaceNet("edgeface_xs_gamma_06"), EdgeFaceNet("edgeface_xxs")
    fc = net.model.head.fc
    assert isinstance(fc, LowRankLinear) and (fc.in_features, fc.out_features) == (192, 512)
    assert fc.rank == int(0.6 * 192) == 115
    assert not any(isinstance(m, nn.Linear) and not isinstance(p, LowRankLinear)
                   for p in net.modules() for m in p.children() if not isinstance(p, LowRankLinear))
    assert low_rank(3, 100, 0.5) == 2  # the floor of 2
    assert "model.head.fc.linear1.weight" in net.state_dict()  # the published key names
    assert not any(isinstance(m, LowRankLinear) for m in plain.modules())


def test_embedding_is_512d_raw_and_frozen():
    embedder = EdgeFaceEmbedder(TINY, pretrained=False)
    x = faces(3, 96).requires_grad_(True)  # any size: resized to 112 inside
    out = embedder(x)
    assert out.shape == (3, 512)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(3))  # not L2-normalised by the network
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in embedder.parameters())
    embedder.train()
    assert not any(m.training for m in embedder.modules())


def test_loads_a_state_dict_saved_from_itself(tmp_path):
    net = EdgeFaceNet(TINY)
    path = tmp_path / "edgeface.pt"
    torch.save(net.state_dict(), path)  # "model.stem.0.weight" ... as the published files
    x = faces()
    expected = reference_embedding(net, x)
    assert torch.allclose(EdgeFaceEmbedder(TINY, checkpoint=str(path))(x), expected, atol=1e-5)
    fx = create(TINY, layers=["stages.1", "pool"], checkpoint=str(path))  # the shared layer too
    assert torch.allclose(fx(x)["pool"], expected, atol=1e-5)
    assert fx.embed_dim == 512 and fx.input_size == 112


def test_loads_torchscript_and_quantised_torchscript(tmp_path):
    net = EdgeFaceNet(TINY).eval()
    x = faces()
    expected = reference_embedding(net, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, torch.rand(1, 3, 112, 112), check_trace=False).save(str(tmp_path / "scripted.pt"))
        quantised = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
        torch.jit.trace(quantised, torch.rand(1, 3, 112, 112), check_trace=False).save(str(tmp_path / "edgeface_q.pt"))
    scripted = EdgeFaceEmbedder(TINY, checkpoint=str(tmp_path / "scripted.pt"))
    assert not scripted.quantized
    assert torch.allclose(scripted(x), expected, atol=1e-5)
    q = EdgeFaceEmbedder(TINY, checkpoint=str(tmp_path / "edgeface_q.pt"))
    assert q.quantized
    cosine = torch.nn.functional.cosine_similarity(q(x), expected, dim=-1)
    assert (cosine > 0.99).all()
    # int8 dynamic linears have no autograd: fine for the recognition test, refused for the loss
    with pytest.raises(ConfigError, match="loss.identity.checkpoint: .*quantised"):
        IdentityLoss(TINY, checkpoint=str(tmp_path / "edgeface_q.pt"))


def test_missing_checkpoint_says_where_and_which_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        EdgeFaceEmbedder("edgeface_xs_gamma_06", pretrained=True, config_key="task.recognizer")
    message = str(err.value)
    assert message.startswith("task.recognizer.checkpoint:") and "\n" not in message
    assert "github.com/otroshi/edgeface" in message and "pretrained=false" in message
    with pytest.raises(ConfigError, match="no file at"):
        EdgeFaceEmbedder("edgeface_xxs", checkpoint=str(tmp_path / "nope.pt"))


def test_checkpoint_of_another_variant_names_differing_keys_and_the_match(tmp_path):
    path = tmp_path / "xxs.pt"
    torch.save(EdgeFaceNet("edgeface_xxs").state_dict(), path)
    with pytest.raises(ConfigError) as err:
        EdgeFaceEmbedder(TINY, checkpoint=str(path), config_key="task.recognizer")
    message = str(err.value)
    assert "does not match" in message and "missing" in message and "shape mismatch" in message
    assert "matches 'edgeface_xxs'" in message and "task.recognizer.name=edgeface_xxs" in message


def test_registered_in_the_shared_backbone_layer():
    assert set(EDGEFACE_VARIANTS) - {"edgeface_base"} <= set(available())
    fx = create(TINY, layers=["stages.0", "stages.3", "last", "pool"], pretrained=False)
    out = fx(faces(1))
    assert out["stages.0"].shape == (1, 16, 28, 28) and out["pool"].shape == (1, 512)
    assert fx.family == "cnn"
    with pytest.raises(ConfigError, match="unknown EdgeFace variant"):
        EdgeFaceEmbedder("edgeface_huge")
