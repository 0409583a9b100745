"""fit_recognizer: the CosFace margin, a fitted EdgeFace that loads as the DSR recogniser, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from featlab.backbones.edgeface import EdgeFaceEmbedder, EdgeFaceNet
from featlab.data.faces import FaceIdentityDataModule
from featlab.errors import ConfigError
from featlab.tools.fit_recognizer import CosFaceHead, FitRecognizerArgs, face_data, fit, main

TINY = "edgeface_tiny_test"


def write_coloured_identities(root, identities: int = 3, images: int = 5) -> None:
    """Each identity a base colour plus per-image noise: separable, so a few epochs must fit it."""
    rng = np.random.default_rng(0)
    for i in range(identities):
        folder = root / f"person_{i}"
        folder.mkdir(parents=True)
        base = np.zeros(3)
        base[i % 3] = 200
        for j in range(images):
            pixels = np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{j}.png")


def test_cosface_subtracts_the_margin_from_the_true_class_only():
    head = CosFaceHead(dim=4, classes=3, margin=0.3, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    embeddings = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    logits = head(embeddings, torch.tensor([0, 1]))
    expected = torch.tensor([[10 * (1 - 0.3), 0.0, 0.0], [0.0, 10 * (0 - 0.3), 0.0]])
    torch.testing.assert_close(logits, expected)


def test_fitted_recogniser_loads_as_the_dsr_recogniser(tmp_path):
    write_coloured_identities(tmp_path / "faces")
    out = tmp_path / "rec.pt"
    result = fit(FitRecognizerArgs(out=str(out), name=TINY, root=str(tmp_path / "faces"), epochs=4, batch_size=8,
                                   lr=3e-3, device="cpu"))
    assert result["final_loss"] < result["first_epoch_loss"]
    net = EdgeFaceNet(TINY)
    net.load_state_dict(torch.load(out, weights_only=True))  # strict: EdgeFace's own key names
    embedder = EdgeFaceEmbedder(TINY, checkpoint=str(out), pretrained=False)
    faces = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(embedder(faces), net.eval()((faces - 0.5) / 0.5))


def test_bad_arguments_name_their_key(tmp_path, capsys):
    with pytest.raises(ConfigError, match="name.*Valid: edgeface"):
        fit(FitRecognizerArgs(out=str(tmp_path / "x.pt"), name="edgeface_huge"))
    assert main([f"out={tmp_path / 'x.pt'}", "margin=1.5"]) == 2
    assert "margin" in capsys.readouterr().err


def test_the_recogniser_trains_on_the_dsr_runs_train_split_only(tmp_path):
    """probe_fraction / val_fraction / seed reproduce the DSR run's split (data.split_seed pinned),
    so a study with more probes per identity never tests on a face the recogniser was fitted to."""
    write_coloured_identities(tmp_path, images=8)
    args = FitRecognizerArgs(out="unused", root=str(tmp_path), probe_fraction=0.4, val_fraction=0.2, seed=3)
    fitted = face_data(args)
    dsr = FaceIdentityDataModule(root=str(tmp_path), probe_fraction=0.4, val_fraction=0.2, seed=11, split_seed=3,
                                 num_workers=0, augment=None)
    dsr.setup()
    assert len(fitted.datasets["probe"]) == 3 * 3  # round(0.4 * 8) per identity
    for part in ("train", "val", "gallery", "probe"):
        assert torch.equal(fitted.datasets[part].images, dsr.datasets[part].images)
