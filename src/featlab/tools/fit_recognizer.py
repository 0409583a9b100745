"""Fit an EdgeFace recogniser to identity folders, when no published EdgeFace checkpoint is at hand.

    python -m featlab.tools.fit_recognizer out=runs/recognizer/edgeface_xxs.pt \
        [name=edgeface_xxs root=/faces epochs=40 batch_size=32 lr=2e-3 margin=0.35 device=auto
         identities=20 images_per_identity=12 probe_fraction=0.2 val_fraction=0.1 seed=0]

Why it exists: the face-DSR identity loss and recognition test are only as meaningful as the
recogniser. A randomly initialised EdgeFace maps every face to nearly the same embedding, so
every method scores chance; offline there is no published checkpoint to install. This trains the
EdgeFace architecture with a large-margin cosine (CosFace) head on the *train split* of exactly the
split the DSR task uses (same DataModule, same seed), so gallery, probe and validation images are
never seen. The output is a plain state dict under EdgeFace's published key names, used as

    python train.py experiment=dsr_identity task.recognizer.name=<name> task.recognizer.checkpoint=<out>

It is a stand-in for EdgeFace trained on millions of faces, not a replacement: a recogniser fitted
to the test identities makes identification easier than open-set recognition of strangers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR

from featlab.backbones.edgeface import EDGEFACE_VARIANTS, EdgeFaceNet
from featlab.checkpoints import save_checkpoint
from featlab.cli import run_cli
from featlab.data.face_augment import FaceAugment
from featlab.data.faces import FaceIdentityDataModule
from featlab.errors import ConfigError, require
from featlab.metrics.identification import identify, l2_normalize
from featlab.optim import build_lr_lambda, build_optimizer
from featlab.tools.upscale import resolve_device

log = logging.getLogger(__name__)


@dataclass
class FitRecognizerArgs:
    """Command-line keys; ``???`` marks the required ones. ``root=null``: the synthetic faces."""

    out: str = "???"                # where to write the fitted weights
    name: str = "edgeface_xxs"      # EdgeFace variant to fit
    root: str | None = None         # face folder (one subfolder per identity); null: synthetic faces
    identities: int = 20            # synthetic set only (as data/faces_synthetic.yaml)
    images_per_identity: int = 12   # synthetic set only
    seed: int = 0                   # the split seed: keep it equal to the DSR run's data.split_seed (or seed)
    probe_fraction: float = 0.2     # as the DSR run's data.probe_fraction (the split must match)
    val_fraction: float = 0.1       # as the DSR run's data.val_fraction
    epochs: int = 40                # passes over the training split
    batch_size: int = 32            # faces per step
    lr: float = 2.0e-3              # AdamW peak learning rate (cosine decay)
    weight_decay: float = 0.05      # AdamW weight decay
    margin: float = 0.35            # CosFace additive cosine margin
    logit_scale: float = 30.0       # CosFace scale s of the logits
    threshold: float = 0.35         # for the HR identification check printed at the end
    device: str = "auto"            # auto (CUDA if present), cpu, cuda, ...


class CosFaceHead(nn.Module):
    """Class logits ``s * (cos(theta_y) - m)`` for the true class, ``s * cos(theta_j)`` otherwise.

    The margin forces each identity's embeddings into a tight cone around its class direction,
    which is what makes cosine similarity with a threshold work for unseen images later.
    """

    def __init__(self, dim: int, classes: int, margin: float, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = l2_normalize(embeddings) @ l2_normalize(self.weight).T
        margin = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype) * self.margin
        return self.scale * (cosine - margin)


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """EdgeFace's input convention: RGB in [0, 1] -> [-1, 1]."""
    return (images - 0.5) / 0.5


@torch.no_grad()
def hr_identification_accuracy(net: EdgeFaceNet, data: FaceIdentityDataModule, threshold: float,
                               device: torch.device) -> float:
    """Accuracy of HR probes against the HR gallery: what the recogniser can do before any DSR."""
    net.eval()

    def embed(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = data.datasets[part]
        images = dataset.images.float().div(255.0).to(device)
        return torch.cat([net(to_network_input(chunk)) for chunk in images.split(64)]).cpu(), dataset.labels

    gallery, gallery_labels = embed("gallery")
    probes, probe_labels = embed("probe")
    return identify(probes, probe_labels, gallery, gallery_labels, threshold).scores.accuracy


def face_data(args: FitRecognizerArgs) -> FaceIdentityDataModule:
    """The DSR task's split of the same faces (gallery/probe/val held out), without DataLoader workers."""
    synthetic = None if args.root else {"identities": args.identities, "images_per_identity": args.images_per_identity,
                                        "size": 112, "seed": 0}
    data = FaceIdentityDataModule(root=args.root, synthetic=synthetic, seed=args.seed, num_workers=0,
                                  persistent_workers=False, pin_memory=False, batch_size=args.batch_size,
                                  probe_fraction=args.probe_fraction, val_fraction=args.val_fraction)
    data.prepare_data()
    data.setup("fit")
    return data


def fit(args: FitRecognizerArgs) -> dict[str, Any]:
    if args.name not in EDGEFACE_VARIANTS:
        raise ConfigError("name", f"unknown EdgeFace variant '{args.name}'. Valid: {', '.join(EDGEFACE_VARIANTS)}")
    require(args.epochs >= 1, "epochs", f"must be >= 1, got {args.epochs}")
    require(0.0 <= args.margin < 1.0, "margin", f"a cosine margin must be in [0, 1), got {args.margin}")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    data = face_data(args)
    train = data.datasets["train"]
    classes = len(data.identity_names)
    net = EdgeFaceNet(args.name).to(device)
    head = CosFaceHead(512, classes, args.margin, args.logit_scale).to(device)
    before = hr_identification_accuracy(net, data, args.threshold, device)
    optimizer = build_optimizer([*net.named_parameters(), *head.named_parameters()], lr=args.lr,
                                weight_decay=args.weight_decay)
    total = args.epochs * math.ceil(len(train) / args.batch_size)
    warmup = max(1, total // 10)
    scheduler = LambdaLR(optimizer, build_lr_lambda("warmup_cosine", total, warmup, min_factor=0.01))
    augment = FaceAugment()
    generator = torch.Generator().manual_seed(args.seed)
    images_all, labels_all = train.images, train.labels
    epoch_losses: list[float] = []
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(train), generator=generator)
        losses = []
        for index in order.split(args.batch_size):
            images = augment(images_all[index].float().div(255.0), generator).to(device)
            logits = head(net(to_network_input(images)), labels_all[index].to(device))
            loss = F.cross_entropy(logits, labels_all[index].to(device))
            if not torch.isfinite(loss):
                raise ConfigError("lr", f"the recogniser's loss became {loss.item()} in epoch {epoch}; lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))
        if epoch % 10 == 0 or epoch == args.epochs - 1:
            log.info("epoch %d: CosFace loss %.3f", epoch, epoch_losses[-1])
    after = hr_identification_accuracy(net, data, args.threshold, device)
    out = Path(args.out).expanduser()
    save_checkpoint({k: v.detach().cpu() for k, v in net.state_dict().items()}, out)
    result = {"checkpoint": str(out), "name": args.name, "identities": classes, "train_images": len(train),
              "first_epoch_loss": epoch_losses[0], "final_loss": epoch_losses[-1], "hr_accuracy_before": before, "hr_accuracy_after": after}
    print(f"{args.name} fitted on {len(train)} faces of {classes} identities: HR probe identification "
          f"{before:.3f} -> {after:.3f} (threshold {args.threshold}); wrote {out}\n"
          f"use it: task.recognizer.name={args.name} task.recognizer.checkpoint={out}")
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_cli(fit, FitRecognizerArgs, argv)


if __name__ == "__main__":
    raise SystemExit(main())
