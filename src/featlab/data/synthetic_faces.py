"""A deterministic synthetic face-identity data set: the DSR task's embedded default.

No identity-labelled face data can be installed offline, yet ``python train.py
experiment=dsr_identity`` must run on a fresh machine. Each identity is a fixed draw of facial
geometry and colour (face shape, jaw, skin, hair style and colour, eye spacing/size/iris colour,
brows, nose, mouth, beard, glasses); each image shows that identity under a random pose (roll,
yaw, scale, shift), lighting, expression (smile, open mouth, eye openness, brow raise) and
background. Identities share the same palettes and ranges, so they are separable but not by one
colour alone. Everything is numpy drawing on a pixel grid with anti-aliased edges: 240 faces at
112x112 take about a second. Identity parameters are left/right symmetric, so a mirror image is
the same person, as the augmentation assumes.

The images are written as ``root/<identity>/<n>.png``, the layout of real face sets, so the
embedded default goes through exactly the code path real data takes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 125], [198, 134, 96], [141, 85, 54], [92, 58, 38]])
HAIR = np.array([[20, 16, 14], [60, 40, 28], [110, 72, 40], [200, 160, 90], [160, 70, 35], [150, 150, 150]])
IRIS = np.array([[70, 45, 25], [40, 90, 150], [70, 120, 70], [110, 110, 120]])
LIPS = np.array([[180, 90, 90], [150, 70, 70], [200, 110, 110], [120, 60, 60]])
DONE_MARKER = "complete.json"


def _mix(palette: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour between two neighbouring palette entries, so colours vary continuously."""
    i = rng.integers(0, len(palette) - 1)
    t = rng.random()
    return (1 - t) * palette[i] + t * palette[i + 1]


@dataclass(frozen=True)
class Identity:
    """The fixed parameters of one synthetic person (units: half the image size)."""

    face_w: float
    face_h: float
    jaw: float
    skin: np.ndarray
    hair: np.ndarray
    hairline: float
    hair_volume: float
    side_hair: float
    eye_dx: float
    eye_y: float
    eye_size: float
    iris: np.ndarray
    brow_thick: float
    brow_slant: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lips: np.ndarray
    beard: float
    glasses: bool


def draw_identity(rng: np.random.Generator) -> Identity:
    return Identity(
        face_w=rng.uniform(0.50, 0.66), face_h=rng.uniform(0.68, 0.84), jaw=rng.uniform(0.0, 0.3),
        skin=_mix(SKIN, rng), hair=_mix(HAIR, rng), hairline=rng.uniform(-0.6, -0.32),
        hair_volume=rng.uniform(0.02, 0.16), side_hair=rng.uniform(0.0, 0.55),
        eye_dx=rng.uniform(0.16, 0.27), eye_y=rng.uniform(-0.14, -0.02), eye_size=rng.uniform(0.05, 0.085),
        iris=_mix(IRIS, rng), brow_thick=rng.uniform(0.014, 0.04), brow_slant=rng.uniform(-0.35, 0.35),
        nose_len=rng.uniform(0.12, 0.26), nose_w=rng.uniform(0.05, 0.11), mouth_y=rng.uniform(0.28, 0.42),
        mouth_w=rng.uniform(0.11, 0.22), lips=_mix(LIPS, rng),
        beard=float(rng.uniform(0.5, 0.9)) if rng.random() < 0.25 else 0.0, glasses=bool(rng.random() < 0.2),
    )


class Canvas:
    """An RGB float image with alpha-blended, anti-aliased shapes in face-centred coordinates."""

    def __init__(self, size: int, background: np.ndarray) -> None:
        self.size = size
        self.image = background.astype(np.float32)
        self.aa = 2.0 / size  # a one-pixel soft edge, in coordinate units
        lin = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        self.gx, self.gy = np.meshgrid(lin, lin)
        self.x, self.y = self.gx, self.gy

    def set_pose(self, roll: float, scale: float, dx: float, dy: float) -> None:
        """Map pixel coordinates into the face frame (inverse of rotate-scale-shift)."""
        c, s = np.cos(roll), np.sin(roll)
        px, py = (self.gx - dx) / scale, (self.gy - dy) / scale
        self.x, self.y = c * px + s * py, -s * px + c * py

    def edge(self, signed_inside: np.ndarray) -> np.ndarray:
        """Coverage from a signed distance (positive inside)."""
        return np.clip(signed_inside / self.aa + 0.5, 0.0, 1.0)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        r = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        return self.edge((1.0 - r) * min(rx, ry))

    def segment(self, x0: float, y0: float, x1: float, y1: float, width: float) -> np.ndarray:
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((self.x - x0) * vx + (self.y - y0) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
        dist = np.hypot(self.x - (x0 + t * vx), self.y - (y0 + t * vy))
        return self.edge(width / 2 - dist)

    def paint(self, mask: np.ndarray, color: np.ndarray | float, opacity: float = 1.0) -> None:
        alpha = (mask * opacity)[..., None]
        self.image = self.image * (1 - alpha) + np.asarray(color, dtype=np.float32) * alpha


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random colour with a gradient and soft blobs: clutter unrelated to identity."""
    lin = np.linspace(-1, 1, size, dtype=np.float32)
    gx, gy = np.meshgrid(lin, lin)
    base = rng.uniform(30, 225, size=3)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * gx + np.sin(direction) * gy)[..., None] * rng.uniform(10, 50, size=3)
    blobs = np.zeros((size, size, 1), dtype=np.float32)
    for _ in range(3):
        cx, cy, r = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.2, 0.6)
        blobs += rng.uniform(-40, 40) * np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * r * r))[..., None]
    return np.clip(base + ramp + blobs, 0, 255)


def render(person: Identity, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """One image of ``person`` under random pose, lighting, expression and background (uint8 HxWx3)."""
    canvas = Canvas(size, background(size, rng))
    canvas.set_pose(roll=np.deg2rad(rng.uniform(-8, 8)), scale=rng.uniform(0.9, 1.06),
                    dx=rng.uniform(-0.05, 0.05), dy=rng.uniform(-0.04, 0.06))
    yaw = rng.uniform(-0.22, 0.22)
    smile, mouth_open = rng.uniform(-0.4, 1.0), max(0.0, rng.uniform(-0.2, 0.5))
    eye_open, brow_raise = rng.uniform(0.55, 1.0), rng.uniform(-0.02, 0.05)
    p = person
    x, y = canvas.x, canvas.y

    # Hair behind the head and the neck, then the face with a tapering jaw.
    canvas.paint(canvas.ellipse(0, -0.08, p.face_w + p.hair_volume, p.face_h * (0.75 + p.side_hair * 0.5)), p.hair)
    canvas.paint(canvas.ellipse(0, p.face_h * 0.95, p.face_w * 0.55, 0.35), p.skin * 0.8)
    taper = 1.0 - p.jaw * np.clip(y / p.face_h, 0.0, 1.0) ** 2
    r = np.sqrt((x / (p.face_w * taper)) ** 2 + (y / p.face_h) ** 2)
    face = canvas.edge((1.0 - r) * p.face_w)
    canvas.paint(face, p.skin)
    top = canvas.ellipse(0, -0.05, p.face_w + p.hair_volume, p.face_h + p.hair_volume) * canvas.edge(
        p.hairline + 0.05 * np.cos(x * 6) - y)
    canvas.paint(top, p.hair)
    if p.beard:
        canvas.paint(face * canvas.edge(y - (p.mouth_y - 0.06)), p.hair, opacity=p.beard)

    # Inner features move with yaw; the far side shrinks a little.
    shift = yaw * p.face_w * 0.6
    spread = 1.0 - abs(yaw) * 0.3
    for side in (-1, 1):
        ex = shift + side * p.eye_dx * spread
        size_k = 1.0 + side * yaw * 0.4
        rx, ry = p.eye_size * 1.4 * size_k, p.eye_size * 0.75 * eye_open * size_k
        white = canvas.ellipse(ex, p.eye_y, rx, max(ry, 0.01))
        canvas.paint(white, np.array([240.0, 240.0, 235.0]))
        canvas.paint(white * canvas.ellipse(ex + yaw * 0.03, p.eye_y, p.eye_size * 0.6, p.eye_size * 0.6), p.iris)
        canvas.paint(white * canvas.ellipse(ex + yaw * 0.03, p.eye_y, p.eye_size * 0.25, p.eye_size * 0.25), 15.0)
        by = p.eye_y - p.eye_size * 1.3 - brow_raise
        inner, outer = ex - side * p.eye_size * 1.2, ex + side * p.eye_size * 1.5
        canvas.paint(canvas.segment(inner, by + p.brow_slant * 0.04, outer, by - p.brow_slant * 0.04,
                                    p.brow_thick), p.hair * 0.9)
        if p.glasses:
            ring = canvas.ellipse(ex, p.eye_y, p.eye_size * 2.2, p.eye_size * 1.8)
            inner_ring = canvas.ellipse(ex, p.eye_y, p.eye_size * 2.2 - 0.02, p.eye_size * 1.8 - 0.02)
            canvas.paint(np.clip(ring - inner_ring, 0, 1), 25.0)
    if p.glasses:
        canvas.paint(canvas.segment(shift - p.eye_dx * spread + p.eye_size * 2.2, p.eye_y,
                                    shift + p.eye_dx * spread - p.eye_size * 2.2, p.eye_y, 0.015), 25.0)

    nose_top, nose_tip = p.eye_y + 0.04, p.eye_y + 0.04 + p.nose_len
    canvas.paint(canvas.segment(shift * 1.2, nose_top, shift * 1.3, nose_tip, p.nose_w * 0.5), p.skin * 0.85)
    for side in (-1, 1):
        canvas.paint(canvas.ellipse(shift * 1.3 + side * p.nose_w * 0.45, nose_tip, p.nose_w * 0.22, 0.018),
                     p.skin * 0.45)

    mx, my = shift, p.mouth_y
    curve = my + smile * 0.06 * (1 - ((x - mx) / p.mouth_w) ** 2)
    within = canvas.edge(p.mouth_w - np.abs(x - mx))
    lip = 0.018 + 0.05 * mouth_open
    canvas.paint(within * canvas.edge(lip - np.abs(y - curve)), p.lips)
    if mouth_open > 0.05:
        canvas.paint(within * canvas.edge(lip * 0.6 - np.abs(y - curve)), np.array([60.0, 20.0, 25.0]))

    # Lighting: a directional ramp over the head, plus overall exposure and sensor noise.
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.0, 0.4)
    head = np.clip(canvas.ellipse(0, -0.05, p.face_w + p.hair_volume, p.face_h + p.hair_volume) + face, 0, 1)
    shade = 1.0 + strength * (np.cos(angle) * x + np.sin(angle) * y) * head
    image = canvas.image * shade[..., None] * rng.uniform(0.8, 1.15)
    image = image + rng.normal(0, 2.0, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


@dataclass(frozen=True)
class SyntheticFaceSpec:
    """What determines the generated set; its hash names the cache folder."""

    identities: int = 20
    images_per_identity: int = 12
    size: int = 112
    seed: int = 0

    def digest(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True) + "v1"
        return hashlib.sha1(text.encode()).hexdigest()[:10]


def generate(spec: SyntheticFaceSpec, root: str | Path) -> Path:
    """Write ``root/id_<three digits>/<two digits>.png`` for every identity and image (deterministic in ``spec``)."""
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    people = [draw_identity(rng) for _ in range(spec.identities)]
    for i, person in enumerate(people):
        folder = root / f"id_{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        image_rng = np.random.default_rng([spec.seed, i])
        for j in range(spec.images_per_identity):
            Image.fromarray(render(person, image_rng, spec.size)).save(folder / f"{j:02d}.png", compress_level=1)
    (root / DONE_MARKER).write_text(json.dumps(spec.__dict__))
    return root


def default_cache_dir() -> Path:
    return Path(os.environ.get("FEATLAB_CACHE", Path(tempfile.gettempdir()) / "featlab_cache"))


def synthetic_face_root(spec: SyntheticFaceSpec, cache_dir: str | Path | None = None) -> Path:
    """The cached folder for ``spec``, generated on first use.

    Generation goes to a private temporary folder that is renamed into place, so parallel jobs of
    a sweep never see a half-written set; the loser of a race simply uses the winner's folder.
    """
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    root = base / f"synthetic_faces_{spec.digest()}"
    if (root / DONE_MARKER).exists():
        return root
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic_faces_", dir=base))
    generate(spec, staging)
    try:
        staging.rename(root)
    except OSError:  # another job finished first
        shutil.rmtree(staging, ignore_errors=True)
        if not (root / DONE_MARKER).exists():
            raise
    return root
