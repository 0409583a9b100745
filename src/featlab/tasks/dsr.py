"""Face deep super-resolution (DSR) that keeps the person recognisable.

Method: a DSR network maps a very-low-resolution face (14x14) to 112x112. Its loss is a weighted
sum of a pixel term, an identity term (``1 - cos`` between frozen EdgeFace embeddings of SR and
HR), a VGG perceptual term and TV (all in the ``loss`` config). Validation tracks PSNR/SSIM (Y)
and the SR-HR embedding cosine; the monitored metric is PSNR.

Test = recognition: a gallery of HR faces per identity (or, with ``gallery_via_dsr``, the same
faces degraded and restored by the DSR network) is embedded once; each probe, a VLR face of a
gallery identity, is restored and identified by cosine similarity of L2-normalised EdgeFace
embeddings, "unknown" below ``eval.threshold``. The same is done for bicubic-upscaled probes (the
baseline DSR must beat) and for the HR probes themselves (the ceiling). Results: accuracy,
unknown and wrong rates, a threshold sweep (markdown table + PNG), optionally a per-probe CSV.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featlab.backbones.edgeface import EdgeFaceEmbedder
from featlab.config import to_plain
from featlab.errors import require
from featlab.files import write_text
from featlab.losses.identity import IdentityLoss
from featlab.metrics.identification import (
    Identification,
    embed_with_flip,
    identify,
    l2_normalize,
    plot_sweep,
    sweep_markdown,
    threshold_grid,
    threshold_sweep,
    wilson_interval,
    write_predictions_csv,
)
from featlab.tasks.restoration import RestorationTask

log = logging.getLogger(__name__)

PROBE_METHODS = ("dsr", "bicubic", "hr")  # restored probes, the baseline, and the ceiling


@dataclass(frozen=True)
class EvalSettings:
    """The recognition test's options (``task.eval.*``; the experiment maps top-level shortcuts here)."""

    threshold: float = 0.35
    use_tta: bool = False
    limit: int | None = None  # applied by the DataModule (data.probe_limit follows it)
    dump_results: str | bool | None = None
    gallery_via_dsr: bool = False
    sweep_start: float = 0.25
    sweep_stop: float = 0.45
    sweep_step: float = 0.05
    plot: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> EvalSettings:
        options = dict(to_plain(cfg) or {})
        unknown = set(options) - set(cls.__dataclass_fields__)
        require(not unknown, "task.eval", f"unknown keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        settings = cls(**options)
        require(-1.0 <= settings.threshold <= 1.0, "task.eval.threshold",
                f"is a cosine similarity in [-1, 1], got {settings.threshold}")
        return settings

    @property
    def thresholds(self) -> list[float]:
        return threshold_grid(self.sweep_start, self.sweep_stop, self.sweep_step)


def gallery_key(method: str, via_dsr: bool) -> str:
    """Which gallery a probe method is matched against: HR, or with ``gallery_via_dsr`` the gallery
    restored the same way as the probes (bicubic probes against the bicubic-restored gallery)."""
    if not via_dsr:
        return "hr"
    return "bicubic" if method == "bicubic" else "dsr"


class FaceDSRTask(RestorationTask):
    def __init__(
        self,
        net: Mapping,
        loss: Mapping,
        recognizer: Mapping | None = None,
        eval: Mapping | None = None,  # noqa: A002  (the config key users type: task.eval.threshold)
        psnr_crop_border: int = 0,
        preview_rows: int = 4,
        **common: Any,
    ) -> None:
        """``common``: the base task's ``optim``, ``scheduler``, ``channels_last`` (default true), ``monitor``."""
        super().__init__(preview_rows=preview_rows, **common)
        self.save_hyperparameters()
        self.eval_settings = EvalSettings.from_config(eval)
        # The recogniser first: a missing EdgeFace checkpoint is then reported under the key that
        # the identity loss also follows (task.recognizer.checkpoint).
        self.recognizer = self._build_recognizer(recognizer)
        self.build_restoration(net, loss)
        self._share_recognizer()
        self.scale = int(getattr(self.net, "scale", 0) or 0)
        self.val_sr = self.sr_metrics(crop_border=psnr_crop_border)
        self.test_sr = nn.ModuleDict({m: self.sr_metrics(crop_border=psnr_crop_border) for m in ("dsr", "bicubic")})
        self._embeddings: dict[str, list[torch.Tensor]] = {}
        self.identification: dict[str, Any] = {}

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def _build_recognizer(cfg: Mapping | None) -> EdgeFaceEmbedder:
        """EdgeFace from ``{name, checkpoint, pretrained, quantized}``; other keys of a backbone config are
        ignored. ``quantized=auto`` runs an int8 file (edgeface_*_q.pt) as the published int8 model, while
        the identity loss reads the same file dequantised (it needs gradients)."""
        options = dict(to_plain(cfg) or {})
        return EdgeFaceEmbedder(
            name=options.get("name", "edgeface_xs_gamma_06"), checkpoint=options.get("checkpoint"),
            pretrained=bool(options.get("pretrained", True)), config_key="task.recognizer",
            quantized=options.get("quantized", "auto"),
        )

    def _share_recognizer(self) -> None:
        """Use one EdgeFace in memory when the identity loss was configured with the same one."""
        for term in self.loss.terms.values():
            if isinstance(term, IdentityLoss) and term.embedder.spec == self.recognizer.spec:
                term.embedder = self.recognizer

    def frozen_state_prefixes(self) -> tuple[str, ...]:
        """Also leave out EdgeFace networks run whole (int8 or TorchScript): rebuilt from the config too."""
        runners = tuple(f"{name}.runner." for name, module in self.named_modules(remove_duplicate=False)
                        if isinstance(module, EdgeFaceEmbedder) and module.runner is not None)
        return super().frozen_state_prefixes() + runners

    # -- validation ---------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        lr, hr = self.degraded_pair(batch)
        sr = self(lr).float()
        total, terms = self.loss(sr, hr)
        self.log_loss_terms("val", total, terms, batch_size=lr.shape[0])
        sr = sr.clamp(0.0, 1.0)
        self.val_sr.update(sr, hr.float())
        cosine = (l2_normalize(self.recognizer(sr)) * l2_normalize(self.recognizer(hr))).sum(-1).mean()
        self.log("val/id_cos", cosine, batch_size=lr.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = self.val_sr.compute()
        self.val_sr.reset()
        self.log("val/psnr", values["psnr"], prog_bar=True)
        for name in ("ssim", "ms_ssim", "ms_ssim_scales", "lpips"):
            if name in values:  # lpips only when its weights are on disk
                self.log(f"val/{name}", values[name])

    # -- recognition test ---------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._embeddings = {}
        self.identification = {}

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return embed_with_flip(self.recognizer, images, self.eval_settings.use_tta)

    def _store(self, key: str, value: torch.Tensor) -> None:
        value = value.detach()
        self._embeddings.setdefault(key, []).append(value.float() if value.is_floating_point() else value)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        lr, hr = self.degraded_pair(batch)
        labels, index = batch["label"], batch["index"]
        if dataloader_idx == 0:  # gallery
            if self.eval_settings.gallery_via_dsr:
                self._store("gallery/dsr", self._embed(self.restore(lr)))
                self._store("gallery/bicubic", self._embed(self.bicubic(lr, hr.shape[-2:])))
            else:
                self._store("gallery/hr", self._embed(hr.float()))
            self._store("gallery/label", labels)
            self._store("gallery/index", index)
            return
        sr = self.restore(lr)
        bicubic = self.bicubic(lr, hr.shape[-2:])
        self.test_sr["dsr"].update(sr, hr.float())
        self.test_sr["bicubic"].update(bicubic, hr.float())
        for method, images in zip(PROBE_METHODS, (sr, bicubic, hr.float())):
            self._store(f"probe/{method}", self._embed(images))
        self._store("probe/label", labels)
        self._store("probe/index", index)

    def _gathered(self, key: str) -> torch.Tensor:
        """All ranks' rows of one stored quantity (rank-local when not distributed)."""
        local = torch.cat(self._embeddings[key])
        if self.trainer.world_size <= 1:
            return local
        gathered = self.all_gather(local)
        return gathered.reshape(-1, *local.shape[1:])

    def _unique(self, split: str, keys: list[str]) -> dict[str, torch.Tensor]:
        """Gathered tensors with the DistributedSampler's padding duplicates removed (by dataset index)."""
        index = self._gathered(f"{split}/index").long()
        order = torch.argsort(index, stable=True)
        keep = order[torch.cat([torch.tensor([True], device=index.device), index[order][1:] != index[order][:-1]])]
        return {k: self._gathered(f"{split}/{k}")[keep] for k in keys}

    def on_test_epoch_end(self) -> None:
        for method, metric in self.test_sr.items():
            values = metric.compute()
            metric.reset()
            suffix = "" if method == "dsr" else f"_{method}"
            for name in ("psnr", "ssim", "ms_ssim", "lpips") + (("ms_ssim_scales",) if method == "dsr" else ()):
                if name in values:  # lpips only when its weights are on disk
                    self.log(f"test/{name}{suffix}", values[name], add_dataloader_idx=False)
        if "probe/label" not in self._embeddings or "gallery/label" not in self._embeddings:
            return
        settings = self.eval_settings
        via_dsr = settings.gallery_via_dsr
        gallery = self._unique("gallery", ["label", *(("dsr", "bicubic") if via_dsr else ("hr",))])
        probes = self._unique("probe", ["label", "index", *PROBE_METHODS])
        results: dict[str, Identification] = {}
        for method in PROBE_METHODS:
            reference = gallery[gallery_key(method, via_dsr)]
            results[method] = identify(probes[method], probes["label"], reference, gallery["label"],
                                       settings.threshold)
            suffix = "" if method == "dsr" else f"_{method}"
            for name, value in results[method].scores.as_dict().items():
                if name != "count":
                    self.log(f"test/id_{name}{suffix}", value, add_dataloader_idx=False)
        count = results["dsr"].scores.count
        self.log("test/id_probes", float(count), add_dataloader_idx=False)
        # how far the probe sample alone leaves the accuracy uncertain (Wilson 95 %), before seeds
        low, high = wilson_interval(round(results["dsr"].scores.accuracy * count), count)
        self.log("test/id_accuracy_ci_low", low, add_dataloader_idx=False)
        self.log("test/id_accuracy_ci_high", high, add_dataloader_idx=False)
        # a guess among the gallery's identities: the floor a study report draws under id_accuracy
        identities = gallery["label"].unique().numel()
        self.log("test/id_accuracy_chance", 1.0 / max(identities, 1), add_dataloader_idx=False)
        self._report(results, probes["index"].tolist())

    def _report(self, results: dict[str, Identification], probe_index: list[int]) -> None:
        """Sweep table and plot, optional CSV dump; written by rank 0 into the run directory."""
        settings = self.eval_settings
        sweeps = {m: threshold_sweep(r, settings.thresholds) for m, r in results.items()}
        table = sweep_markdown(sweeps)
        self.identification = {"test/id_threshold": settings.threshold, "test/id_sweep": sweeps,
                               "test/id_gallery_via_dsr": settings.gallery_via_dsr, "test/id_tta": settings.use_tta}
        log.info("identification threshold sweep (probes: %d)\n%s", results["dsr"].scores.count, table)
        if not self.trainer.is_global_zero:
            return
        run_dir = Path(self.trainer.default_root_dir)
        write_text(run_dir / "identification_sweep.md", table + "\n")
        if settings.plot:
            plot_sweep(sweeps, run_dir / "identification_sweep.png", settings.threshold)
        dump = settings.dump_results
        if dump:
            path = run_dir / "identification_predictions.csv" if dump is True else Path(str(dump)).expanduser()
            names = getattr(self.trainer.datamodule, "identity_names", None) or None
            write_predictions_csv(path, results["dsr"], names, probe_index)
            write_predictions_csv(path.with_name(f"{path.stem}_bicubic{path.suffix}"), results["bicubic"], names,
                                  probe_index)
            log.info("identification predictions written to %s", path)

    def extra_results(self) -> dict[str, Any]:
        return dict(self.identification)

    # -- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The base stores the resolved config and Lightning the epoch; add the val PSNR it was kept for."""
        super().on_save_checkpoint(checkpoint)
        metrics = self.trainer.callback_metrics
        if "val/psnr" in metrics:
            checkpoint["val_psnr"] = float(metrics["val/psnr"])
