"""Identity loss: a face recogniser should see the same person in the SR output as in the HR image.

``1 - cos(e(SR), e(HR))`` with ``e`` a frozen EdgeFace embedding, L2-normalised here because the
network does not normalise it. The HR embedding is a fixed target computed under ``no_grad``;
the SR side keeps its graph, so the gradient reaches the SR image (and through it the DSR
network) while EdgeFace's own parameters never receive one.
"""

from __future__ import annotations

import torch
from torch import nn

from featlab.backbones.edgeface import EdgeFaceEmbedder
from featlab.metrics.identification import l2_normalize


class IdentityLoss(nn.Module):
    """Mean over the batch of ``1 - cosine similarity`` between EdgeFace embeddings of SR and HR."""

    def __init__(self, backbone: str = "edgeface_xs_gamma_06", checkpoint: str | None = None,
                 pretrained: bool = True, config_key: str = "loss.identity") -> None:
        super().__init__()
        # Float weights always: an int8 state dict (edgeface_*_q.pt) is dequantised, since int8 linears
        # have no autograd; a quantised TorchScript file, which cannot be dequantised, is refused.
        self.embedder = EdgeFaceEmbedder(backbone, checkpoint, pretrained, config_key=config_key,
                                         name_key=f"{config_key}.backbone", quantized=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_emb = l2_normalize(self.embedder(target))
        pred_emb = l2_normalize(self.embedder(pred))
        return (1.0 - (pred_emb * target_emb).sum(dim=-1)).mean()
