"""(Shifted-)window self-attention with relative position bias, shared by SwinIR and SCUNet.

Both papers use the Swin Transformer block unchanged (LN -> W-MSA/SW-MSA -> residual, LN -> MLP
-> residual); only widths, head counts and MLP ratios differ, so one implementation serves both.
Tensors are channels-last ``(B, H, W, C)`` with H and W multiples of the window (the networks pad
once at their input). The shift mask is picked per window from four fixed patterns, so it is
correct for every input size and a dynamic-shape ONNX export of it is plain Concat/Gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

MASK_VALUE = -100.0
"""Added to logits of token pairs from different image regions in a shifted window; finite (not
-inf) so a bf16 softmax stays NaN-free, and exp(-100) is 0 in every float format."""


def window_partition(x: Tensor, window: int) -> Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, window * window, C)``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window^2, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def window_edge_masks(window: int, shift: int) -> Tensor:
    """The four additive masks ``(4, N, N)`` a rolled map's windows can need, indexed by
    ``2 * (last window row) + (last window column)``.

    After the roll by ``-shift``, only the last window row and column stitch together pixels from
    opposite image borders: along an axis, the last window holds region 1 (``window - shift``
    pixels) then the wrapped region 2; every other window lies in one region and needs no mask.
    """
    inner = torch.zeros(window, dtype=torch.long)
    edge = 1 + (torch.arange(window) >= window - shift).long()
    masks = []
    for row in (inner, edge):
        for col in (inner, edge):
            ids = (row[:, None] * 3 + col[None, :]).flatten()
            masks.append((ids[:, None] != ids[None, :]).float() * MASK_VALUE)
    return torch.stack(masks)


def shifted_window_mask(h: int, w: int, window: int, shift: int, device: torch.device,
                        edge_masks: Tensor | None = None) -> Tensor:
    """Additive attention mask ``(nW, N, N)`` for the windows of an ``h x w`` map rolled by ``-shift``.

    One of :func:`window_edge_masks` per window, picked by whether it is in the last window row or
    column. Built from the window grid with zeros/concat/gather only, so it is right for every
    input size and a dynamic-shape ONNX export needs no Range or comparison operators.
    """
    edge_masks = window_edge_masks(window, shift).to(device) if edge_masks is None else edge_masks
    rows, cols = h // window, w // window
    ones = torch.ones(1, dtype=torch.long, device=device)
    last_row = torch.cat([torch.zeros(rows - 1, dtype=torch.long, device=device), ones])
    last_col = torch.cat([torch.zeros(cols - 1, dtype=torch.long, device=device), ones])
    return edge_masks.index_select(0, (2 * last_row[:, None] + last_col[None, :]).flatten())


def relative_position_index(window: int) -> Tensor:
    """``(N, N)`` index into a ``(2w-1)^2`` bias table for every pair of positions in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows, plus a learned relative
    position bias per head (Swin, Liu et al. 2021)."""

    fused = True
    """Fused attention kernel (``forward``) or the reference formulation (:meth:`reference_forward`)."""

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("bias_index", relative_position_index(window).flatten(), persistent=False)
        trunc_normal_(self.bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B * nW, N, C)``; ``mask``: ``(nW, N, N)`` additive, or None.

        The relative position bias and the shift mask are one additive ``attn_mask`` of a fused
        :func:`~torch.nn.functional.scaled_dot_product_attention`: the same function as the papers'
        ``softmax(q k^T * scale + bias + mask) v`` (within 1e-6 in fp32), but one kernel instead of a
        matmul, two broadcast adds, a softmax and a matmul, each writing a ``(B * nW, heads, N, N)``
        tensor; measured 10x faster for SwinIR-light's windows on one CPU thread (``featlab
        deploy-bench``). Windows that share a mask are folded into the head axis so the mask
        broadcasts over the batch instead of being repeated.
        """
        if not self.fused:
            return self.reference_forward(x, mask)
        bn, n, c = x.shape
        heads, head_dim = self.num_heads, c // self.num_heads
        q, k, v = self.qkv(x).reshape(bn, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.bias_table[self.bias_index].reshape(n, n, heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is None:
            attn_mask = bias.unsqueeze(0)  # (1, heads, N, N)
        else:
            nw = mask.shape[0]
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1).to(bias.dtype)).reshape(1, nw * heads, n, n)
            q, k, v = (t.reshape(bn // nw, nw * heads, n, head_dim) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype), scale=self.scale)
        out = out.reshape(bn, heads, n, head_dim).transpose(1, 2).reshape(bn, n, c)
        return self.proj(out)

    def reference_forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The papers' formulation, op by op as the official SwinIR/SCUNet code computes it: the
        baseline ``featlab deploy-bench`` times the fused path against (``fused = False``)."""
        bn, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bn, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*nW, heads, N, N)
        bias = self.bias_table[self.bias_index].reshape(n, n, self.num_heads).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(-1, nw, self.num_heads, n, n) + mask[None, :, None].to(attn.dtype)
            attn = attn.reshape(bn, self.num_heads, n, n)
        attn = attn.softmax(dim=-1).to(v.dtype)
        return self.proj((attn @ v).transpose(1, 2).reshape(bn, n, c))


def use_fused_attention(net: nn.Module, fused: bool = True) -> nn.Module:
    """Switch every :class:`WindowAttention` of ``net`` between the fused kernel (default) and the
    reference formulation; returns ``net``."""
    for module in net.modules():
        if isinstance(module, WindowAttention):
            module.fused = fused
    return net


class Mlp(nn.Sequential):
    """Transformer feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class SwinBlock(nn.Module):
    """Pre-norm Swin block on ``(B, H, W, C)``; ``shift > 0`` makes it the SW-MSA variant.

    The caller passes the shift mask (:func:`shifted_window_mask`) so that a stage of blocks at
    one resolution builds it once per forward instead of once per block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if shift:  # not in the state dict: published files and featlab checkpoints stay as they are
            self.register_buffer("edge_masks", window_edge_masks(window, shift), persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask if self.shift else None)
        y = window_reverse(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def make_mask(self, h: int, w: int, device: torch.device) -> Tensor | None:
        """The mask this block needs at feature size ``(h, w)`` (None for unshifted windows)."""
        if not self.shift:
            return None
        return shifted_window_mask(h, w, self.window, self.shift, device, self.edge_masks.to(device))


class SwinStage(nn.Module):
    """Blocks alternating W-MSA / SW-MSA (shift = window // 2) at one resolution."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop_path: list[float],
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, drop_path[i], qkv_bias)
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        _, h, w, _ = x.shape
        shifted = [b for b in self.blocks if b.shift]
        mask = shifted[0].make_mask(h, w, x.device) if shifted else None
        for block in self.blocks:
            x = block(x, mask)
        return x


def init_transformer_weights(module: nn.Module) -> None:
    """Swin/SwinIR initialisation: truncated-normal(0.02) linears, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
