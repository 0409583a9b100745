"""EdgeFace weight files as published: the int8 ``*_q.pt`` state dicts and the official float layout.

Fixtures (tests/fixtures/official, written and run by the official otroshi/edgeface code):
``edgeface_xxs_q`` is ``quantize_dynamic(get_model('edgeface_xxs'), {nn.Linear}, qint8).state_dict()``
with its raw 512-d output; ``edgeface`` is a float low-rank tiny EdgeNeXt (= ``edgeface_tiny_test``).
Both were fed ``(input - 0.5) / 0.5``; featlab's extractors and embedders take the [0, 1] input.

Measured on the int8 fixture (2 faces): the int8 path reproduces the official output exactly (max
abs difference 0.0, cosine 1.0000); the dequantised float network, which the identity loss trains
with, has cosine 0.99985 (min over the batch) with the int8 model's embeddings.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.functional import cosine_similarity

from featlab.backbones import create
from featlab.backbones.checkpoints import read_raw_state
from featlab.backbones.edgeface import EdgeFaceEmbedder, EdgeFaceNet, LowRankLinear, matching_variant
from featlab.errors import ConfigError
from featlab.losses.identity import IdentityLoss

OFFICIAL = Path(__file__).resolve().parents[1] / "fixtures" / "official"
INT8 = OFFICIAL / "edgeface_xxs_q"
FLOAT = OFFICIAL / "edgeface"


def fixture(folder: Path) -> tuple[str, torch.Tensor, torch.Tensor]:
    x = torch.load(folder / "input.pt", weights_only=True)
    official = torch.load(folder / "output.pt", weights_only=True)
    return str(folder / "checkpoint.pth"), x, official


def int8_copy(net: nn.Module) -> nn.Module:
    """What the official hubconf does for edgeface_xs_q / edgeface_xxs_q."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(net.eval(), {nn.Linear}, dtype=torch.qint8)


def test_int8_file_reads_with_weights_only():
    """The published format needs no unsafe unpickling: quantised tensors, dtypes, tuples are allowed."""
    state = torch.load(INT8 / "checkpoint.pth", weights_only=True)
    packed = [k for k in state if k.endswith("._packed_params._packed_params")]
    assert "model.head.fc._packed_params._packed_params" in packed
    weight, bias = state["model.head.fc._packed_params._packed_params"]
    assert weight.dtype == torch.qint8 and bias.dtype == torch.float32


def test_int8_file_runs_as_the_published_model():
    path, x, official = fixture(INT8)
    embedder = EdgeFaceEmbedder("edgeface_xxs_q", checkpoint=path, config_key="task.recognizer")
    assert embedder.quantized  # quantized=auto follows the file
    out = embedder(x)
    assert cosine_similarity(out, official).min() >= 0.999
    torch.testing.assert_close(out, official, rtol=0, atol=1e-3)  # same int8 kernels: equal in practice


def test_int8_file_dequantised_for_create_and_the_identity_loss():
    path, x, official = fixture(INT8)
    int8 = EdgeFaceEmbedder("edgeface_xxs", checkpoint=path)(x)
    fx = create("edgeface_xxs", layers=["stages.1", "pool"], checkpoint=path)  # float, differentiable
    with torch.no_grad():
        dequantised = fx(x)["pool"]
    cosine = cosine_similarity(dequantised, int8).min().item()
    assert 0.999 <= cosine < 1.0, cosine  # measured 0.99985: int8 also quantises each linear's input
    assert cosine_similarity(dequantised, official).min() >= 0.999
    float_embedder = EdgeFaceEmbedder("edgeface_xxs", checkpoint=path, quantized=False)
    assert not float_embedder.quantized
    torch.testing.assert_close(float_embedder(x), dequantised, rtol=0, atol=1e-5)

    loss = IdentityLoss("edgeface_xxs_q", checkpoint=path)
    assert not loss.embedder.quantized
    sr = x.flip(-1).clone().requires_grad_(True)
    loss(sr, x).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_quantized_option():
    path, x, _ = fixture(FLOAT)
    float_out = EdgeFaceEmbedder("edgeface_tiny_test", checkpoint=path)(x)
    int8 = EdgeFaceEmbedder("edgeface_tiny_test", checkpoint=path, quantized=True)  # a float file, quantised
    assert int8.quantized and cosine_similarity(int8(x), float_out).min() > 0.99
    assert EdgeFaceEmbedder("edgeface_tiny_test", checkpoint=path, quantized="false").spec[-1] is False
    with pytest.raises(ConfigError, match=r"^task\.recognizer\.quantized: 'maybe' is not one of auto, true, false$"):
        EdgeFaceEmbedder("edgeface_tiny_test", checkpoint=path, quantized="maybe", config_key="task.recognizer")


def test_int8_model_stays_on_the_cpu_when_its_owner_moves():
    path, x, _ = fixture(INT8)
    embedder = EdgeFaceEmbedder("edgeface_xxs_q", checkpoint=path)
    before = embedder(x)
    embedder.to(torch.float64)  # a stand-in for .to("cuda"): the int8 network must not convert
    assert next(embedder.runner.module.parameters()).dtype == torch.float32
    torch.testing.assert_close(embedder(x.double()), before.double(), rtol=0, atol=1e-6)


def test_official_float_file_reproduces_the_official_output():
    config = json.loads((FLOAT / "config.json").read_text())
    path, x, official = fixture(FLOAT)
    fx = create(config["featlab_equivalent"], layers=["pool"], checkpoint=path)
    with torch.no_grad():
        torch.testing.assert_close(fx(x)["pool"], official, rtol=0, atol=1e-4)
    torch.testing.assert_close(EdgeFaceEmbedder("edgeface_tiny_test", checkpoint=path)(x), official,
                               rtol=0, atol=1e-4)


def test_xs_q_is_a_full_rank_edgenext_x_small_and_its_int8_file_loads(tmp_path):
    with torch.device("meta"):
        xs_q = EdgeFaceNet("edgeface_xs_q")
    assert not any(isinstance(m, LowRankLinear) for m in xs_q.modules())
    fc = xs_q.model.head.fc
    assert isinstance(fc, nn.Linear) and (fc.in_features, fc.out_features) == (192, 512)
    assert sum(p.numel() for p in xs_q.parameters()) == 2_242_620  # edgenext_x_small with a 512-d head

    torch.manual_seed(0)
    published = int8_copy(EdgeFaceNet("edgeface_xs_q"))
    path = tmp_path / "edgeface_xs_q.pt"
    torch.save(published.state_dict(), path)  # the format of the published file
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = published((x - 0.5) / 0.5)
    embedder = EdgeFaceEmbedder("edgeface_xs_q", checkpoint=str(path))
    assert embedder.quantized
    torch.testing.assert_close(embedder(x), expected, rtol=0, atol=1e-5)
    assert matching_variant(path) == "edgeface_xs_q"  # detected from the (dequantised) state dict


def test_exact_parameter_count_of_edgeface_xs_gamma_06():
    """The official figure quoted in experiments/sr_model_zoo/README.md (random init, all parameters)."""
    net = EdgeFaceNet("edgeface_xs_gamma_06")
    assert sum(p.numel() for p in net.parameters()) == 1_770_492


# -- bad input: one line naming the key ------------------------------------------------------------
def test_int8_file_of_another_size_names_the_key_and_the_variant_it_matches():
    path, _, _ = fixture(INT8)
    for quantized in ("auto", False):
        with pytest.raises(ConfigError) as err:
            EdgeFaceEmbedder("edgeface_xs_q", checkpoint=path, config_key="task.recognizer", quantized=quantized)
        message = str(err.value)
        assert "\n" not in message and message.startswith("task.recognizer.checkpoint:")
        assert "shape mismatch" in message and "task.recognizer.name=edgeface_xxs" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_int8_file_is_one_line(tmp_path, damage):
    data = (INT8 / "checkpoint.pth").read_bytes()
    path = tmp_path / "edgeface_xxs_q.pt"
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint" * 100)
    for build in (lambda: EdgeFaceEmbedder("edgeface_xxs_q", checkpoint=str(path), config_key="task.recognizer"),
                  lambda: create("edgeface_xxs_q", layers=["pool"], checkpoint=str(path), config_key="task.recognizer")):
        with pytest.raises(ConfigError) as err:
            build()
        message = str(err.value)
        assert message.startswith("task.recognizer.checkpoint:") and "\n" not in message
        assert "not a readable torch checkpoint" in message


def test_int8_layer_that_does_not_fit_names_the_key(tmp_path):
    state = read_raw_state(INT8 / "checkpoint.pth")
    weight, bias = state["head.fc._packed_params._packed_params"]
    state["head.fc._packed_params._packed_params"] = (weight[:, :8], bias)
    path = tmp_path / "bad_q.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError) as err:
        EdgeFaceEmbedder("edgeface_xxs_q", checkpoint=str(path), config_key="task.recognizer")
    assert str(err.value).startswith("task.recognizer.checkpoint:") and "\n" not in str(err.value)
    assert "head.fc.weight (512, 8) vs (512, 168)" in str(err.value)


def test_int8_file_resaved_as_a_plain_dict_still_loads(tmp_path):
    """Without the saved module versions the int8 layers would expect an old layout: the keys tell it."""
    path, x, official = fixture(INT8)
    plain = tmp_path / "plain_q.pt"
    torch.save(dict(torch.load(path, weights_only=True)), plain)  # drops _metadata
    out = EdgeFaceEmbedder("edgeface_xxs_q", checkpoint=str(plain))(x)
    torch.testing.assert_close(out, official, rtol=0, atol=1e-3)


def test_torchscript_given_to_create_is_one_line(tmp_path):
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(EdgeFaceNet("edgeface_tiny_test").eval(), torch.rand(1, 3, 112, 112),
                        check_trace=False).save(str(path))
    with pytest.raises(ConfigError) as err:
        create("edgeface_tiny_test", layers=["pool"], checkpoint=str(path))
    message = str(err.value)
    assert message.startswith("backbone.checkpoint:") and "TorchScript" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"^task\.recognizer\.quantized: .*float TorchScript"):
        EdgeFaceEmbedder("edgeface_tiny_test", checkpoint=str(path), quantized=True, config_key="task.recognizer")
