"""Image grids: saved as PNG in the run directory and logged to W&B when it is active."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image


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
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array).save(path)
    return path


class ImageGridLogger(L.Callback):
    """Asks the task for ``preview(batch)`` on the first validation batch of each epoch."""

    def __init__(self, run_dir: str | Path, every_n_epochs: int = 1) -> None:
        self.dir = Path(run_dir) / "images"
        self.every_n_epochs = max(1, every_n_epochs)
        self.saved: list[Path] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if trainer.current_epoch % self.every_n_epochs or not trainer.is_global_zero:
            return
        with torch.no_grad():
            image = pl_module.preview(batch)
        if image is None:
            return
        path = save_png(image, self.dir / f"val_epoch{trainer.current_epoch:03d}.png")
        self.saved.append(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/preview", images=[str(path)], step=trainer.global_step)
