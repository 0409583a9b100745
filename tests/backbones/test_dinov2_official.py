"""DINOv2 through ``create`` against the official module (facebookresearch/dinov2's own
``DinoVisionTransformer`` ran on these files: tests/fixtures/official/dinov2_vit*, config.json inside).

Covers what differs from timm: position embeddings resampled per input size exactly as the official
``interpolate_pos_encoding`` (no antialias + 0.1 offset for the original models, antialias + exact size
for register models), hub keys (``mask_token``, ``register_tokens``, chunked blocks, fused SwiGLU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from featlab.backbones import available, create, get_spec
from featlab.backbones.dinov2 import register_dinov2
from featlab.errors import ConfigError

OFFICIAL = Path(__file__).resolve().parents[1] / "fixtures" / "official"


def _register(folder: str, arch: str, registers: bool, **extra) -> str:
    args = json.loads((OFFICIAL / folder / "config.json").read_text())["constructor_args"]
    name = f"{folder}_fixture_test"
    register_dinov2(
        name, arch, registers=registers, overwrite=True, test_only=True, input_size=args["img_size"],
        model_kwargs={"img_size": args["img_size"], "patch_size": args["patch_size"], "embed_dim": args["embed_dim"],
                      "depth": args["depth"], "num_heads": args["num_heads"], "mlp_ratio": args["mlp_ratio"], **extra},
        description=f"TEST SIZE: the official {folder} fixture's architecture",
    )
    return name


FIXTURES = {
    "dinov2_vit": _register("dinov2_vit", "vit_small_patch14_dinov2", registers=False),
    "dinov2_vit_reg": _register("dinov2_vit_reg", "vit_small_patch14_reg4_dinov2", registers=True, reg_tokens=2),
    # official SwiGLU hidden width: (int(4 * 32 * 2 / 3) + 7) // 8 * 8 = 88, packed fc1 = 2 * 88 = 5.5 * 32
    "dinov2_vit_swiglu": _register("dinov2_vit_swiglu", "vit_giant_patch14_dinov2", registers=False, mlp_ratio=5.5),
}
SIZES = ["16x16", "24x24", "28x20", "36x44"]


def _extract(folder: str, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    fx = create(FIXTURES[folder], layers, pretrained=False, checkpoint=str(OFFICIAL / folder / "checkpoint.pth"))
    with torch.no_grad():
        return fx.taps.run(fx.model, x, fx.layers)


@pytest.mark.parametrize("folder", sorted(FIXTURES))
@pytest.mark.parametrize("size", SIZES)
def test_final_tokens_match_the_official_model_at_every_input_size(folder, size):
    ref = torch.load(OFFICIAL / folder / "sizes.pt", weights_only=True)[size]
    x = ref["input"]
    out = _extract(folder, x, ["last", "cls", "block0"])
    grid = (x.shape[-2] // 4, x.shape[-1] // 4)
    patch = ref["patch"].reshape(x.shape[0], *grid, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(out["cls"], ref["cls"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["last"], patch, rtol=1e-4, atol=1e-4)
    block0 = ref["blocks"][0].reshape(x.shape[0], *grid, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(out["block0"], block0, rtol=1e-4, atol=1e-4)


def test_the_shipped_fixture_output_at_the_trained_size():
    x = torch.load(OFFICIAL / "dinov2_vit" / "input.pt", weights_only=True)
    official = torch.load(OFFICIAL / "dinov2_vit" / "output.pt", weights_only=True)  # cat(cls, patch) normed
    out = _extract("dinov2_vit", x, ["cls", "last"])
    torch.testing.assert_close(out["cls"], official[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["last"].flatten(2).transpose(1, 2), official[:, 1:], rtol=1e-5, atol=1e-5)


def test_resampling_is_not_timms_antialiased_one():
    """The check above could pass by luck if both resamplings agreed; at 24 px they must not."""
    from timm.layers import resample_abs_pos_embed

    from featlab.backbones.dinov2 import resample_patch_positions

    pos = torch.randn(1, 16, 8)
    official = resample_patch_positions(pos, (6, 6), antialias=False, offset=0.1)
    timm_way = resample_abs_pos_embed(pos, new_size=[6, 6], old_size=[4, 4], num_prefix_tokens=0)
    assert official.shape == timm_way.shape == (1, 36, 8)
    assert (official - timm_way).abs().max() > 1e-3
    assert resample_patch_positions(pos, (4, 4), antialias=False, offset=0.1) is pos  # trained grid: unchanged


def test_a_file_of_another_grid_keeps_its_grid_instead_of_being_resampled_at_load():
    """The fixture's 4x4 position grid loads into a model built for 8x8 (as 518-px hub files load into
    a model built at any size): features must still be the official ones."""
    args = json.loads((OFFICIAL / "dinov2_vit" / "config.json").read_text())["constructor_args"]
    register_dinov2("dinov2_other_grid_test", "vit_small_patch14_dinov2", overwrite=True, test_only=True, input_size=32,
                    model_kwargs={"img_size": 32, "patch_size": 4, "embed_dim": args["embed_dim"],
                                  "depth": args["depth"], "num_heads": args["num_heads"]})
    ref = torch.load(OFFICIAL / "dinov2_vit" / "sizes.pt", weights_only=True)["24x24"]
    fx = create("dinov2_other_grid_test", ["cls"], pretrained=False,
                checkpoint=str(OFFICIAL / "dinov2_vit" / "checkpoint.pth"))
    assert tuple(fx.model.pos_embed.shape) == (1, 17, args["embed_dim"])
    with torch.no_grad():
        out = fx.taps.run(fx.model, ref["input"], ["cls"])
    torch.testing.assert_close(out["cls"], ref["cls"], rtol=1e-4, atol=1e-4)


def test_a_register_file_without_registers_in_the_model_names_the_keys():
    with pytest.raises(ConfigError, match=r"checkpoint.*reg_token"):
        create(FIXTURES["dinov2_vit"], ["last"], pretrained=False,
               checkpoint=str(OFFICIAL / "dinov2_vit_reg" / "checkpoint.pth"))


def test_hub_sizes_are_registered_with_their_resampling():
    names = {f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg")}
    assert names <= set(available())
    for name in names:
        spec = get_spec(name)
        assert spec.finish.keywords == ({"antialias": True, "offset": 0.0} if name.endswith("_reg")
                                        else {"antialias": False, "offset": 0.1})
        assert spec.input_size == 224 and spec.model_kwargs["img_size"] == 518
