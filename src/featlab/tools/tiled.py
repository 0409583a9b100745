"""Tiled inference: super-resolve images too large to push through a network in one piece.

The LR image is cut into overlapping tiles, tiles run in small batches under ``no_grad``, and
each SR tile is blended into the output canvas with a weight that is zero near the tile's
*interior* edges (where the tile lacks context) and ramps up linearly towards its centre; image
borders get full weight because a full-image forward sees no more context there either. With a
network whose receptive-field radius is below ``overlap / 4`` the result equals the full-image
forward up to float rounding; ``blend="crop"`` (a hard seam in the middle of each overlap) is
exact up to a radius of ``overlap / 2`` but can show seams for networks with wider context.

Tile offsets are multiples of the network's ``size_multiple`` (SwinIR windows, Real-ESRGAN's
pixel-unshuffle, U-Net levels), so tiles see the same window/phase grid as the full image; the
last tile on each axis then ends exactly at the image border and may be a little shorter.

The canvas lives on the device of ``lr`` while tiles run on the network's device, so a CPU
canvas with a GPU network works for images larger than GPU memory.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor, nn

from featlab.errors import require

Blend = Literal["feather", "crop"]


def tile_spans(size: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """``(start, length)`` of tiles covering ``[0, size)``: starts are multiples of ``align``
    (when ``tile - overlap >= align``), neighbours overlap by at least ``overlap`` and lengths
    are ``tile`` except possibly the last. Requires ``0 <= overlap < tile``."""
    if size <= tile:
        return [(0, size)]
    if tile - overlap < align:  # cannot align (tile too small for the net's grid): plain tiling
        align = 1
    stride = (tile - overlap) // align * align
    spans, start = [], 0
    while True:
        spans.append((start, min(tile, size - start)))
        if start + tile >= size:
            return spans
        # the next tile ends at (or past) the border: start it as late as alignment allows
        start = min(start + stride, -(-(size - tile) // align) * align)


@lru_cache(maxsize=64)
def edge_weights(length: int, at_start: bool, at_end: bool, overlap: float, mode: Blend) -> Tensor:
    """1-D blend weights for one tile axis of ``length`` output pixels (``overlap`` in the same
    units). ``at_start``/``at_end`` mark sides on the image border (kept at weight 1). Cached:
    a tiling has a handful of distinct tile profiles; callers must not mutate the result."""
    pos = torch.arange(length, dtype=torch.float64) + 0.5
    far = torch.full_like(pos, float(length))
    dist = torch.minimum(far if at_start else pos, far if at_end else length - pos)
    if mode == "crop":
        return (dist >= overlap / 2).to(torch.float32)
    return ((dist - overlap / 4) / (overlap / 2)).clamp(0.0, 1.0).to(torch.float32)


def _net_device(net: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return fallback


@torch.no_grad()
def tiled_forward(
    net: nn.Module,
    lr: Tensor,
    scale: int,
    tile: int = 128,
    overlap: int = 16,
    batch_tiles: int = 8,
    blend: Blend = "feather",
) -> Tensor:
    """Run ``net`` on ``lr`` ``(B, C, H, W)`` tile by tile; returns ``(B, C_out, H*scale, W*scale)``.

    Images no larger than one tile run in a single forward. The output is float32 on
    ``lr.device``; the network's own dtype / the caller's autocast decide compute precision.
    """
    require(lr.ndim == 4, "input", f"expected a (B, C, H, W) image batch, got shape {tuple(lr.shape)}")
    require(tile > 0 and 0 <= overlap < tile, "tile", f"need 0 <= overlap < tile, got {tile=}, {overlap=}")
    require(batch_tiles >= 1, "batch_tiles", f"must be >= 1, got {batch_tiles}")
    require(blend in ("feather", "crop"), "blend", f"must be 'feather' or 'crop', got {blend!r}")
    device = _net_device(net, lr.device)
    b, _, h, w = lr.shape
    if h <= tile and w <= tile:
        return net(lr.to(device)).float().to(lr.device)

    align = int(getattr(net, "size_multiple", 1))
    groups: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)  # tile shape -> origins
    for y, th in tile_spans(h, tile, overlap, align):
        for x, tw in tile_spans(w, tile, overlap, align):
            groups[(th, tw)].append((y, x))

    canvas: Tensor | None = None
    weight_sum = torch.zeros(1, 1, h * scale, w * scale, device=lr.device)
    for (th, tw), origins in groups.items():
        for first in range(0, len(origins), batch_tiles):
            chunk = origins[first : first + batch_tiles]
            tiles = torch.cat([lr[:, :, y : y + th, x : x + tw] for y, x in chunk]).to(device)
            out = net(tiles).float().to(lr.device)
            require(
                tuple(out.shape[-2:]) == (th * scale, tw * scale),
                "scale",
                f"network output {tuple(out.shape[-2:])} for a {th}x{tw} tile is not x{scale}",
            )
            if canvas is None:
                canvas = torch.zeros(b, out.shape[1], h * scale, w * scale, device=lr.device)
            for i, (y, x) in enumerate(chunk):
                wy = edge_weights(th * scale, y == 0, y + th == h, float(overlap * scale), blend)
                wx = edge_weights(tw * scale, x == 0, x + tw == w, float(overlap * scale), blend)
                weight = (wy[:, None] * wx[None, :]).to(lr.device)
                sy, sx = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
                canvas[:, :, sy, sx] += out[i * b : (i + 1) * b] * weight
                weight_sum[:, :, sy, sx] += weight
    assert canvas is not None
    return canvas / weight_sum
