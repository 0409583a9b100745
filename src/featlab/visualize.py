"""Pictures of tensors: image grids, PNG files, slot colours and titled figures.

One home for drawing, used by tasks (previews, test figures) and callbacks (saving and logging
them); it imports nothing from featlab, so any layer may use it.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from featlab.files import save_figure, save_image


def grid_from_columns(columns: Mapping[str, torch.Tensor], max_rows: int = 4, size: int | None = None) -> torch.Tensor:
    """Lay out ``{column: (B,3,H,W)}`` as rows of samples, columns side by side, at one size.

    Small inputs (LR images) are upscaled with nearest neighbour so their pixels stay visible.
    """
    tensors = [t.detach().float().clamp(0, 1)[:max_rows].cpu() for t in columns.values()]
    height = size or max(t.shape[-2] for t in tensors)
    width = size or max(t.shape[-1] for t in tensors)
    resized = [F.interpolate(t, size=(height, width), mode="nearest") if t.shape[-2:] != (height, width)
               else t for t in tensors]
    rows = [torch.cat([col[i] for col in resized], dim=-1) for i in range(resized[0].shape[0])]
    return torch.cat(rows, dim=-2)


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write a (3,H,W) float image in [0,1] as an 8-bit PNG."""
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    save_image(Image.fromarray(array), path)
    return path


def slot_palette(count: int) -> torch.Tensor:
    """(count, 3) well-separated colours (golden-ratio hues); row 0 is used for background ids."""
    return torch.tensor([colorsys.hsv_to_rgb((0.07 + i * 0.618034) % 1.0, 0.75, 0.95) for i in range(count)])


def colour_ids(ids: torch.Tensor, count: int, background_black: bool = False) -> torch.Tensor:
    """(B, H, W) ids -> (B, 3, H, W) colours; with ``background_black`` id 0 is drawn black."""
    palette = slot_palette(max(count, int(ids.max()) + 1)).to(ids.device)
    if background_black:
        palette[0] = 0.0
    return palette[ids].permute(0, 3, 1, 2)


def save_titled_grid(columns: Mapping[str, torch.Tensor], title: str, path: Path, dpi: int = 110) -> Path:
    """A matplotlib figure of ``{column title: (rows, 3, H, W)}`` images with column titles."""
    from matplotlib.figure import Figure

    rows = next(iter(columns.values())).shape[0]
    fig = Figure(figsize=(1.6 * len(columns), 1.6 * rows))
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for c, (column, images) in enumerate(columns.items()):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(images[r].clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi)
    return path
