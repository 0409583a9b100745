"""ViT taps against an official DINO module's output (tests/fixtures/official/dino_vit: a tiny
ViT-S-style network written and run by facebookresearch/dino's own ``vision_transformer.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from featlab.backbones import create, register_backbone

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official" / "dino_vit"
CONFIG = json.loads((FIXTURE / "config.json").read_text())["constructor_args"]

register_backbone(
    "dino_official_fixture_test",
    "vit",
    "vit_small_patch16_224",
    overwrite=True,
    test_only=True,
    input_size=CONFIG["img_size"][0],
    model_kwargs={"img_size": CONFIG["img_size"][0], "patch_size": CONFIG["patch_size"],
                  "embed_dim": CONFIG["embed_dim"], "depth": CONFIG["depth"], "num_heads": CONFIG["num_heads"],
                  "mlp_ratio": CONFIG["mlp_ratio"], "qkv_bias": CONFIG["qkv_bias"]},
    description="TEST SIZE: the official DINO fixture's architecture",
)


@pytest.mark.parametrize("layers", [["last", "cls"], ["block0", "last"], ["cls"]])
def test_official_dino_checkpoint_gives_the_official_final_tokens(layers):
    fx = create("dino_official_fixture_test", layers, pretrained=False, checkpoint=str(FIXTURE / "checkpoint.pth"))
    x = torch.load(FIXTURE / "input.pt", weights_only=True)  # already in normalised space
    official = torch.load(FIXTURE / "output.pt", weights_only=True)  # (B, 1 + N, C) after the final norm
    with torch.no_grad():
        out = fx.taps.run(fx.model, x, fx.layers)
    side = x.shape[-1] // CONFIG["patch_size"]
    if "cls" in layers:
        torch.testing.assert_close(out["cls"], official[:, 0], rtol=1e-5, atol=1e-5)
    if "last" in layers:
        grid = official[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(out["last"], grid, rtol=1e-5, atol=1e-5)
