"""Image grids: saved as PNG in the run directory and logged to W&B when it is active."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from featlab.interface import Previews
from featlab.visualize import save_png


class ImageGridLogger(L.Callback):
    """Asks the task for ``preview(batch)`` on the first validation batch of each epoch.

    ``dirpath`` None means ``<run dir>/images`` (train sets it, as for ModelCheckpoint).
    """

    def __init__(self, dirpath: str | Path | None = None, every_n_epochs: int = 1) -> None:
        self.dir = Path(dirpath) if dirpath is not None else None
        self.every_n_epochs = max(1, every_n_epochs)
        self.saved: list[Path] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if trainer.current_epoch % self.every_n_epochs or not trainer.is_global_zero:
            return
        if not isinstance(pl_module, Previews):
            return
        with torch.no_grad():
            image = pl_module.preview(batch)
        if image is None:
            return
        folder = self.dir if self.dir is not None else Path(trainer.default_root_dir) / "images"
        path = save_png(image, folder / f"val_epoch{trainer.current_epoch:03d}.png")
        self.saved.append(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/preview", images=[str(path)], step=trainer.global_step)
