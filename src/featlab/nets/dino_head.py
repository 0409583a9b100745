"""The DINO projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes.

Normalising the bottleneck and weight-normalising the last layer makes the logits cosine-like
(bounded by the weight norms), which is what keeps the softmax over tens of thousands of
prototypes stable; ``norm_last_layer`` fixes those norms to 1, which DINO found stabilises ViTs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations

from featlab.errors import require


def positive_int(value: object, key: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; floats, strings and booleans are config mistakes."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    require(ok, key, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


class DINOHead(nn.Module):
    """Projection head shared by student and teacher (identical architecture, separate weights)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 4096,
        hidden_dim: int = 1024,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        in_dim = positive_int(in_dim, "net.backbone")
        hidden_dim = positive_int(hidden_dim, "net.hidden_dim")
        bottleneck_dim = positive_int(bottleneck_dim, "net.bottleneck_dim")
        # a softmax over fewer than two prototypes is constant and carries no training signal
        self.out_dim = out_dim = positive_int(out_dim, "net.out_dim", minimum=2)
        self.norm_last_layer = norm_last_layer
        # use_bn (DINO's use_bn_in_head): BatchNorm after the hidden layers removes the component
        # all images share, which keeps tiny models on small data from mapping everything to one output
        norm = (lambda: nn.BatchNorm1d(hidden_dim)) if use_bn else nn.Identity
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), norm(), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), norm(), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.mlp.apply(_init_linear)
        prototypes = nn.Linear(bottleneck_dim, out_dim, bias=False)
        _init_linear(prototypes)
        # parametrizations.weight_norm (not the deprecated nn.utils.weight_norm, which breaks
        # torch.compile): weight = g * v / ||v|| row-wise, g stored as original0, v as original1.
        self.last_layer = parametrizations.weight_norm(prototypes, name="weight", dim=0)
        with torch.no_grad():
            self.weight_g.fill_(1.0)
        self.weight_g.requires_grad_(not norm_last_layer)

    @property
    def weight_g(self) -> nn.Parameter:
        """Per-prototype norm ``g`` (fixed to 1 when ``norm_last_layer``)."""
        return self.last_layer.parametrizations.weight.original0

    @property
    def weight_v(self) -> nn.Parameter:
        """Unnormalised prototype directions ``v``."""
        return self.last_layer.parametrizations.weight.original1

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """What ``freeze_last_layer`` holds still during the first epochs."""
        return list(self.last_layer.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1, p=2)
        # Prototype logits in fp32 even under bf16 autocast: divided by a 0.04 teacher temperature,
        # bf16's ~2^-8 relative precision would be ~0.1 logit of noise; the matmul is <1% of a step.
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.last_layer(z.float())


def _init_linear(module: nn.Module) -> None:
    """DINO's init: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
