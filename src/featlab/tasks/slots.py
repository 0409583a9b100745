"""Object slots from frozen backbone features: which pretrained features separate objects best?

Method (DINOSAUR-style, Seitzer et al. 2023, on Locatello et al.'s slot attention):

1. A frozen backbone is tapped at one named layer, the same for every backbone (default ``last``:
   ViT patch tokens after the final LayerNorm; a CNN's last stage), and its grid is resized
   bilinearly to ``grid_size`` squared so that every backbone is compared on the same grid.
2. ``feature_norm`` (none | layernorm | standardize with frozen training-set statistics) removes
   the backbone's own feature scale. The normalised map is the reconstruction target.
3. Only where the backbone's channels differ from ``feature_dim`` does a learned 1x1 convolution map
   them to ``feature_dim`` (CLIP ViT-B: 768 -> 384); the target itself is never projected, so a
   projection cannot shrink the target to make the loss vanish.
4. Slot attention groups the tokens into ``num_slots`` slots; the MLP broadcast decoder rebuilds
   the feature map with one alpha mask per slot; the loss is the MSE to the target.
   (``decoder.slot_features=constant``: one feature vector per slot; with
   ``decoder.masks_from=attention`` its masks are slot attention's own assignment, a mixture
   model: the slots positive control, :class:`ConstantFeatureDecoder`.)

Evaluation: the decoder's masks (``mask_source=attention``: slot attention's own last-round
attention over the tokens, as SLATE/STEVE score it; DINOSAUR reports both), upsampled to the image, against ground-truth instance masks
(FG-ARI, mBO; :mod:`featlab.metrics.segmentation`), the loss on val/test and on the training split
with the final model (``test/gap`` = test - train), and figures (image | ground truth | slots |
each slot's masked image). The checkpoint is chosen by ``val/loss``: the method is unsupervised,
so model selection does not look at the masks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torchmetrics import MeanMetric

from featlab.backbones import create
from featlab.backbones.featnorm import FeatureNormalizer
from featlab.config import to_plain
from featlab.errors import ConfigError, require, unknown_name
from featlab.files import save_figure
from featlab.metrics.segmentation import SlotSegmentationMetrics, masks_to_ids, position_regions
from featlab.nets.decoders import MLPBroadcastDecoder
from featlab.nets.slot_attention import SlotAttention, mlp
from featlab.tasks.base import FeatlabTask
from featlab.visualize import colour_ids, grid_from_columns, save_png, save_titled_grid

log = logging.getLogger(__name__)

MASK_SOURCES = ("decoder", "attention")
SLOT_FEATURES = ("broadcast", "constant")
MASKS_FROM = ("position", "attention")


class ConstantFeatureDecoder(nn.Module):
    """Each slot decodes to ONE feature vector; only the masks say where it goes.

    The features come from an MLP of the slot alone; the reconstruction is the mask-weighted sum of
    the slots' vectors, so the loss is a soft k-means distortion: a slot that spans two regions of
    different features pays for it, whereas the broadcast decoder can paint several colours from
    one slot (its masks stayed smooth positional blobs on the slots control,
    experiments/slot_backbones/README.md). Where the masks come from (``masks_from``):

    - ``position``: the MLP broadcast decoder's alpha (slot + positional embedding -> MLP ->
      softmax over slots), so a slot must encode the shape and place of its region;
    - ``attention``: slot attention's own last-round assignment of the tokens. The model is then a
      mixture model (as in the Slot Mixture Module, Kirilenko et al. 2023): the loss trains the
      assignment directly, which on the slots control segments after a few hundred steps where
      the positional masks still tiled the image by position after thousands.

    Same outputs as :class:`MLPBroadcastDecoder`; ``attention`` is needed with ``masks_from=attention``.
    """

    def __init__(self, slot_dim: int, feature_dim: int, num_positions: int, hidden_dims=(1024, 1024, 1024),
                 pos_init_std: float = 0.02, masks_from: str = "position") -> None:
        super().__init__()
        if masks_from not in MASKS_FROM:
            raise unknown_name("task.decoder.masks_from", masks_from, MASKS_FROM, "mask origin")
        self.masks_from = masks_from
        self.masks = (MLPBroadcastDecoder(slot_dim, 0, num_positions, hidden_dims, pos_init_std)
                      if masks_from == "position" else None)
        self.features = mlp(slot_dim, list(hidden_dims)[-1:], feature_dim)

    def forward(self, slots: torch.Tensor, attention: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(reconstruction (B, N, F), masks (B, K, N), per-slot features (B, K, N, F))``."""
        if self.masks is not None:
            _, masks, _ = self.masks(slots)
        else:
            require(attention is not None, "task.decoder.masks_from", "masks_from=attention needs the attention")
            masks = attention
        features = self.features(slots)  # (B, K, F)
        reconstruction = torch.einsum("bkn,bkf->bnf", masks, features)
        return reconstruction, masks, features.unsqueeze(2).expand(-1, -1, masks.shape[-1], -1)


TAP_DESCRIPTION = {
    "last": "final LayerNorm output of the patch tokens (ViT) / last stage (CNN)",
}


@dataclass
class SlotOutput:
    loss: torch.Tensor
    masks: torch.Tensor  # (B, K, G, G) decoder alpha masks, softmax over slots
    attention: torch.Tensor  # (B, K, N) slot-attention weights of the last iteration
    slots: torch.Tensor  # (B, K, D)


class SlotAttentionTask(FeatlabTask):
    """Slot attention + MLP broadcast decoder on a frozen backbone (see the module docstring)."""

    def __init__(
        self,
        backbone: Mapping,
        grid_size: int = 16,
        feature_dim: int = 384,
        project_channels: bool = True,
        feature_norm: str = "standardize",
        slots: Mapping | None = None,
        decoder: Mapping | None = None,
        stats_batches: int = 16,
        cache_features: bool = False,
        mask_source: str = "decoder",
        preview_rows: int = 4,
        figure_rows: int = 4,
        **common: Any,
    ) -> None:
        """``common``: the base task's ``optim``, ``scheduler``, ``channels_last``, ``monitor``."""
        super().__init__(**common)
        self.save_hyperparameters()
        backbone_cfg = dict(to_plain(backbone))
        slots_cfg = dict(to_plain(slots) or {})
        decoder_cfg = dict(to_plain(decoder) or {})
        require("name" in backbone_cfg, "task.backbone.name", "name the backbone, e.g. dinov2_vits14")
        require(grid_size >= 1, "task.grid_size", f"must be >= 1, got {grid_size}")
        require(stats_batches >= 1, "task.stats_batches", f"must be >= 1, got {stats_batches}")
        if mask_source not in MASK_SOURCES:
            raise unknown_name("task.mask_source", mask_source, MASK_SOURCES, "mask source")
        self.mask_source = mask_source

        self.backbone_name = str(backbone_cfg.pop("name"))
        self.tap_layer = str(backbone_cfg.pop("layer", "last"))
        if self.backbone_name == "checkpoint" and not backbone_cfg.get("checkpoint"):
            raise ConfigError("task.backbone.checkpoint", "name=checkpoint needs the path of a backbone file "
                                                          "written by the DINO task (featlab.backbones.save_backbone)")
        self.encoder = create(self.backbone_name, layers=[self.tap_layer], trainable=False, feature_norm="none",
                              config_key="task.backbone", **backbone_cfg)
        self.backbone_name = self.encoder.name  # the architecture, also when read from a checkpoint
        self.backbone_checkpoint = backbone_cfg.get("checkpoint")
        channels = int(self.encoder.channels[self.tap_layer])
        if channels != feature_dim and not project_channels:
            raise ConfigError("task.project_channels", f"{self.backbone_name} gives {channels} channels at "
                              f"'{self.tap_layer}' but task.feature_dim is {feature_dim}; set "
                              f"task.project_channels=true (learned 1x1 conv) or task.feature_dim={channels}")
        self.backbone_channels, self.feature_dim, self.grid_size = channels, feature_dim, grid_size
        self.projection = nn.Conv2d(channels, feature_dim, kernel_size=1) if channels != feature_dim else None
        self.normalizer = FeatureNormalizer(channels, feature_norm)
        self.num_slots = int(slots_cfg.get("num_slots", 7))
        slot_dim = int(slots_cfg.pop("slot_dim", 256))
        self.slot_attention = SlotAttention(slot_dim=slot_dim, input_dim=feature_dim, **slots_cfg)
        slot_features = str(decoder_cfg.get("slot_features", "broadcast"))
        if slot_features not in SLOT_FEATURES:
            raise unknown_name("task.decoder.slot_features", slot_features, SLOT_FEATURES, "decoder kind")
        self.masks_from = str(decoder_cfg.get("masks_from", "position"))
        decoder_args = dict(hidden_dims=decoder_cfg.get("hidden_dims", (1024, 1024, 1024)),
                            pos_init_std=float(decoder_cfg.get("pos_init_std", 0.02)))
        if slot_features == "broadcast":
            if self.masks_from != "position":
                raise ConfigError("task.decoder.masks_from", "the broadcast decoder makes its own masks; "
                                  "masks_from=attention needs task.decoder.slot_features=constant")
            self.decoder = MLPBroadcastDecoder(slot_dim, channels, grid_size * grid_size, **decoder_args)
        else:
            self.decoder = ConstantFeatureDecoder(slot_dim, channels, grid_size * grid_size,
                                                  masks_from=self.masks_from, **decoder_args)

        self.stats_batches, self.cache_features = stats_batches, cache_features
        self.preview_rows, self.figure_rows = preview_rows, figure_rows
        self.seg_metrics = nn.ModuleDict({s: SlotSegmentationMetrics(self.num_slots)
                                          for s in ("val", "test", "fixed_split", "other_source")})
        self.other_source = next(s for s in MASK_SOURCES if s != mask_source)
        self.fixed_regions: dict[tuple[int, int], torch.Tensor] = {}
        self.mean_losses = nn.ModuleDict({f"loss_{s}": MeanMetric() for s in ("train", "val", "test", "eval_train")})
        self.feature_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.history: list[dict[str, float]] = []
        self.last_val: dict[str, float] = {}
        self.figure_batch: dict[str, torch.Tensor] | None = None
        self.native_grid: tuple[int, int] | None = None

    # -- the method ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch: Mapping | None = None) -> torch.Tensor:
        """Raw backbone features on the common grid, (B, C, G, G); cached per item when enabled."""
        keys = None
        if self.cache_features and batch is not None and "index" in batch:
            keys = list(zip(batch["split"].tolist(), batch["index"].tolist()))
            if all(k in self.feature_cache for k in keys):
                return torch.stack([self.feature_cache[k] for k in keys]).to(images.device)
        features = self.encoder(images)[self.tap_layer].float()
        self.native_grid = tuple(features.shape[-2:])  # type: ignore[assignment]
        if features.shape[-2:] != (self.grid_size, self.grid_size):
            features = F.interpolate(features, size=(self.grid_size, self.grid_size), mode="bilinear",
                                     align_corners=False)
        features = features.contiguous()
        if keys is not None:
            for key, feature in zip(keys, features.cpu()):
                self.feature_cache[key] = feature
        return features

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None = None) -> SlotOutput:
        """Slots, masks and reconstruction loss from raw grid features (B, C, G, G)."""
        target = self.normalizer(raw)
        inputs = self.projection(target) if self.projection is not None else target
        tokens = inputs.flatten(2).transpose(1, 2)
        init = self.slot_attention.initial_slots(tokens.shape[0], generator) if generator is not None else None
        slots, attention = self.slot_attention(tokens, init)
        if self.masks_from == "attention":  # a mixture model: the assignment is slot attention's own
            reconstruction, masks, _ = self.decoder(slots, attention)
        else:
            reconstruction, masks, _ = self.decoder(slots)
        loss = F.mse_loss(reconstruction.float(), target.flatten(2).transpose(1, 2).float())
        masks = masks.reshape(masks.shape[0], masks.shape[1], self.grid_size, self.grid_size)
        return SlotOutput(loss=loss, masks=masks, attention=attention, slots=slots)

    def scored_masks(self, out: SlotOutput, source: str | None = None) -> torch.Tensor:
        """(B, K, G, G) the masks that are scored and drawn (``source``, default ``mask_source``)."""
        if (source or self.mask_source) == "decoder":
            return out.masks
        return out.attention.reshape(out.attention.shape[0], -1, self.grid_size, self.grid_size)

    def run_batch(self, batch: Mapping, seed: int | None = None) -> SlotOutput:
        """Encode and decode one batch; ``seed`` makes sampled slot initialisations reproducible."""
        generator = None
        if seed is not None and self.slot_attention.init == "sampled":
            generator = torch.Generator(device=batch["image"].device).manual_seed(seed)
        return self(self.encode(batch["image"], batch), generator)

    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        out = self.run_batch(batch)
        batch_size = batch["image"].shape[0]
        self.log_loss_terms("train", out.loss, {}, batch_size=batch_size)
        self.mean_losses["loss_train"].update(out.loss.detach(), batch_size)
        return out.loss

    # -- feature statistics -------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Estimate the raw feature statistics on training batches, then freeze them for good.

        Runs before any validation or training step; every DDP rank contributes its sums and
        :class:`ChannelStandardizer` all-reduces them. Skipped when a checkpoint brought them.
        """
        if self.normalizer.is_frozen:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        require(datamodule is not None, "data", "the slots task estimates feature statistics from a DataModule")
        batches = 1 if self.trainer.fast_dev_run else self.stats_batches
        for i, batch in enumerate(datamodule.train_dataloader()):
            if i >= batches:
                break
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            self.normalizer.update(self.encode(batch["image"], batch))
        self.normalizer.freeze(sync=True)
        mean, std = self.normalizer.raw_statistics()
        log.info("%s @ %s: raw feature mean %.4f std %.4f (feature_norm=%s)", self.backbone_name,
                 self.tap_layer, mean, std, self.normalizer.mode)
        for logger in self.loggers:
            logger.log_metrics({"features/raw_mean": mean, "features/raw_std": std}, step=0)

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, stage: str, batch: Mapping, batch_idx: int) -> SlotOutput:
        out = self.run_batch(batch, seed=batch_idx)
        images = batch["image"]
        self.mean_losses[f"loss_{stage}"].update(out.loss.detach(), images.shape[0])
        if stage in self.seg_metrics and "mask" in batch:
            pred_ids = masks_to_ids(self.scored_masks(out), tuple(images.shape[-2:]))
            self.seg_metrics[stage].update(pred_ids, batch["mask"], images.float())
            if stage == "test":
                self._update_fixed_split(batch["mask"])
                other = masks_to_ids(self.scored_masks(out, self.other_source), tuple(images.shape[-2:]))
                self.seg_metrics["other_source"].update(other, batch["mask"])
        return out

    def _update_fixed_split(self, true_ids: torch.Tensor) -> None:
        """Score the fixed-split baseline on the same test images: ``num_slots`` position-only regions.

        Logged as ``test/fg_ari_fixed_split`` / ``test/mbo_fixed_split`` (the report draws them as
        the baseline): on scenes of small spread-out objects this, not 0, is what a slot model
        has to beat to show segmentation (experiments/slot_backbones/README.md).
        """
        size = tuple(true_ids.shape[-2:])
        if size not in self.fixed_regions:
            self.fixed_regions[size] = position_regions(size, self.num_slots)  # type: ignore[arg-type]
        regions = self.fixed_regions[size].to(true_ids.device).expand(true_ids.shape[0], -1, -1)
        self.seg_metrics["fixed_split"].update(regions, true_ids)

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        out = self._evaluate("val", batch, batch_idx)
        self.log("val/loss", out.loss, prog_bar=True, on_epoch=True, batch_size=batch["image"].shape[0],
                 sync_dist=True)

    def test_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        stage = "test" if dataloader_idx == 0 else "eval_train"
        out = self._evaluate(stage, batch, batch_idx)
        if stage == "test":
            self._collect_figure_samples(batch, out)

    def _log_segmentation(self, stage: str) -> dict[str, float]:
        metric = self.seg_metrics[stage]
        values = metric.compute() if metric.update_count else {}
        metric.reset()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "fg_ari", add_dataloader_idx=False)
        return {k: float(v) for k, v in values.items()}

    def _mean_loss(self, stage: str) -> float:
        metric = self.mean_losses[f"loss_{stage}"]
        value = float(metric.compute()) if metric.update_count else float("nan")
        metric.reset()
        return value

    def on_validation_epoch_end(self) -> None:
        self.last_val = {"val_loss": self._mean_loss("val"), **self._log_segmentation("val")}

    def on_train_epoch_end(self) -> None:
        row = {"epoch": float(self.current_epoch), "train_loss": self._mean_loss("train"), **self.last_val}
        self.history.append(row)

    def on_test_epoch_start(self) -> None:
        self.figure_batch = None

    def on_test_epoch_end(self) -> None:
        test_loss, train_loss = self._mean_loss("test"), self._mean_loss("eval_train")
        self.log("test/loss", test_loss, add_dataloader_idx=False)
        if train_loss == train_loss:  # not NaN: the training split was evaluated
            self.log("eval_train/loss", train_loss, add_dataloader_idx=False)
            self.log("test/gap", test_loss - train_loss, add_dataloader_idx=False)
        self._log_segmentation("test")
        # the fixed split (the baseline the report draws) and the other mask source, same test images
        for metric_name, key in (("fixed_split", "test/{}_fixed_split"), ("other_source", "test/{}_" + self.other_source)):
            metric = self.seg_metrics[metric_name]
            if metric.update_count:
                values = metric.compute()
                for name in ("fg_ari", "mbo"):
                    self.log(key.format(name), values[name], add_dataloader_idx=False)
            metric.reset()
        if self.trainer.is_global_zero and self.figure_batch is not None:
            self._save_test_figure()

    # -- results --------------------------------------------------------------------------------
    def extra_results(self) -> dict:
        mean, std = self.normalizer.raw_statistics()
        return {
            "slots/backbone": self.backbone_name,
            "slots/backbone_checkpoint": self.backbone_checkpoint,
            "slots/tap_layer": self.tap_layer,
            "slots/tap": TAP_DESCRIPTION.get(self.tap_layer, "pre-norm residual stream" if
                                             self.tap_layer.startswith(("block", "feat")) else self.tap_layer),
            "slots/feature_norm": self.normalizer.mode,
            "slots/backbone_channels": self.backbone_channels,
            "slots/projection": self.projection is not None,
            "slots/native_grid": "x".join(map(str, self.native_grid)) if self.native_grid else None,
            "slots/grid": self.grid_size,
            "slots/num_slots": self.num_slots,
            "slots/mask_source": self.mask_source,
            "features/raw_mean": mean,
            "features/raw_std": std,
            "proxy_note": "proxy_slot_colour_std is a WEAK proxy (colour uniformity of slots), not a "
                          "segmentation score; use fg_ari and mbo",
        }

    def compile_networks(self) -> None:
        self.slot_attention = torch.compile(self.slot_attention)
        self.decoder = torch.compile(self.decoder)

    # -- pictures -------------------------------------------------------------------------------
    def visual_columns(self, batch: Mapping, out: SlotOutput, rows: int) -> dict[str, torch.Tensor]:
        """image | ground truth | slots coloured | each slot's masked image, for ``rows`` samples."""
        images = batch["image"][:rows].float()
        size = tuple(images.shape[-2:])
        soft = F.interpolate(self.scored_masks(out)[:rows].float(), size=size, mode="bilinear", align_corners=False)
        ids = soft.argmax(dim=1)
        columns = {"image": images}
        if "mask" in batch:
            columns["ground truth"] = colour_ids(batch["mask"][:rows], self.num_slots + 1, background_black=True)
        columns["slots"] = colour_ids(ids, self.num_slots)
        for k in range(soft.shape[1]):
            columns[f"slot {k}"] = images * soft[:, k:k + 1]
        return columns

    def preview(self, batch: Mapping) -> torch.Tensor:
        """Grid for the shared image callback (first validation batch)."""
        out = self.run_batch(batch, seed=0)
        return grid_from_columns(self.visual_columns(batch, out, self.preview_rows), max_rows=self.preview_rows)

    def _collect_figure_samples(self, batch: Mapping, out: SlotOutput) -> None:
        if self.figure_batch is not None or not self.trainer.is_global_zero:
            return
        columns = self.visual_columns(batch, out, self.figure_rows)
        self.figure_batch = {k: v.detach().cpu() for k, v in columns.items()}

    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def _save_test_figure(self) -> None:
        """Titled figure of test samples, saved under ``<run dir>/slots`` and logged as an image."""
        assert self.figure_batch is not None
        columns = self.figure_batch
        rows = next(iter(columns.values())).shape[0]
        title = f"{self.backbone_name} @ {self.tap_layer}, feature_norm={self.normalizer.mode}"
        path = save_titled_grid(columns, title, self.run_dir() / "slots" / "test_slots.png")
        save_png(grid_from_columns(columns, max_rows=rows), self.run_dir() / "slots" / "test_slots_grid.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="test/slots", images=[str(path)])

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and self.history:
            self._save_history_plot()

    def _save_history_plot(self) -> None:
        """Loss and segmentation scores per epoch: ``<run dir>/slots/history.png``."""
        epochs = [row["epoch"] for row in self.history]
        fig = Figure(figsize=(9, 3.2))
        ax_loss, ax_seg = fig.subplots(1, 2)
        for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
            ax_loss.plot(epochs, [row.get(key, float("nan")) for row in self.history], marker="o", label=label)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("feature MSE")
        ax_loss.legend()
        for key, label in (("fg_ari", "val FG-ARI"), ("mbo", "val mBO")):
            ax_seg.plot(epochs, [row.get(key, float("nan")) for row in self.history], marker="o", label=label)
        ax_seg.set_xlabel("epoch")
        ax_seg.set_ylim(0, 1)
        ax_seg.legend()
        fig.suptitle(f"{self.backbone_name}, feature_norm={self.normalizer.mode}", fontsize=9)
        fig.tight_layout()
        path = self.run_dir() / "slots" / "history.png"
        save_figure(fig, path, dpi=110)
