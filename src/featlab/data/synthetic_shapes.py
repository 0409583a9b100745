"""A labelled image set the project generates itself: ten classes of shapes and textures.

kNN evaluation needs labels, and no labelled set can be downloaded here; so the embedded default
draws one deterministically (image ``i`` depends only on ``(seed, i)``). Colour, pose, scale and
background are random, so the class is carried by shape or texture alone, which is what a
self-supervised backbone should pick up and a random one only partly does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import polygon as fill_polygon

from featlab.errors import require

SHAPE_CLASSES = ("disk", "square", "triangle", "star", "ring", "cross", "hexagon", "stripes", "checker", "dots")
SUPERSAMPLE = 2  # render at 2x and average: anti-aliased edges, like a photo of the shape


def _distinct_colours(rng: np.random.Generator, min_distance: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Foreground/background colours far enough apart that the shape is visible."""
    while True:
        fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if np.linalg.norm(fg - bg) >= min_distance:
            return fg, bg


def _background(rng: np.random.Generator, size: int, colour: np.ndarray) -> np.ndarray:
    """Solid colour or a linear gradient towards a second colour, at a random angle."""
    image = np.broadcast_to(colour, (size, size, 3)).copy()
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
        other = np.clip(colour + rng.uniform(-0.3, 0.3, 3), 0, 1)
        image = image * (1 - ramp[..., None]) + other * ramp[..., None]
    return image


def _polygon_mask(size: int, vertices: np.ndarray) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.float64)
    rr, cc = fill_polygon(vertices[:, 1], vertices[:, 0], shape=(size, size))
    mask[rr, cc] = 1.0
    return mask


def _regular_vertices(n: int, radius: float, center: np.ndarray, angle: float, inner: float | None = None) -> np.ndarray:
    """Corners of a regular n-gon, or of an n-pointed star when ``inner`` (radius ratio) is given."""
    count = 2 * n if inner else n
    theta = angle + np.arange(count) * 2 * np.pi / count
    radii = np.full(count, radius)
    if inner:
        radii[1::2] *= inner
    return center + np.stack([radii * np.cos(theta), radii * np.sin(theta)], 1)


def _shape_mask(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Binary mask (at the supersampled size) of one object shape at a random pose."""
    radius = rng.uniform(0.22, 0.4) * size
    center = rng.uniform(radius, size - radius, 2)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dist = np.hypot(xx - center[0], yy - center[1])
    if name == "disk":
        return (dist <= radius).astype(np.float64)
    if name == "ring":
        return ((dist <= radius) & (dist >= radius * rng.uniform(0.5, 0.7))).astype(np.float64)
    if name == "cross":
        arm = radius * rng.uniform(0.28, 0.4)
        u = np.cos(angle) * (xx - center[0]) + np.sin(angle) * (yy - center[1])
        v = -np.sin(angle) * (xx - center[0]) + np.cos(angle) * (yy - center[1])
        inside = (np.abs(u) <= radius) & (np.abs(v) <= radius)
        return (inside & ((np.abs(u) <= arm) | (np.abs(v) <= arm))).astype(np.float64)
    sides = {"square": (4, None), "triangle": (3, None), "hexagon": (6, None), "star": (5, 0.45)}[name]
    return _polygon_mask(size, _regular_vertices(sides[0], radius, center, angle, sides[1]))


def _texture_mask(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Full-image two-colour textures at a random period and orientation."""
    period = rng.uniform(0.12, 0.25) * size
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    u = np.cos(angle) * xx + np.sin(angle) * yy + rng.uniform(0, period)
    v = -np.sin(angle) * xx + np.cos(angle) * yy + rng.uniform(0, period)
    if name == "stripes":
        return ((u / period) % 1.0 < 0.5).astype(np.float64)
    if name == "checker":
        return (((u // period) + (v // period)) % 2 == 0).astype(np.float64)
    # dots: a lattice of disks
    du, dv = (u % period) - period / 2, (v % period) - period / 2
    return (np.hypot(du, dv) <= period * rng.uniform(0.2, 0.32)).astype(np.float64)


def render(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image of class ``label``."""
    big = size * SUPERSAMPLE
    name = SHAPE_CLASSES[label]
    fg, bg = _distinct_colours(rng)
    image = _background(rng, big, bg)
    mask = _texture_mask(name, big, rng) if name in ("stripes", "checker", "dots") else _shape_mask(name, big, rng)
    image = image * (1 - mask[..., None]) + fg * mask[..., None]
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean((1, 3))
    image = image + rng.normal(0, rng.uniform(0.0, 0.06), image.shape)   # sensor-like noise
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def make_shapes(n_per_class: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(N, size, size, 3)`` uint8 images and ``(N,)`` int labels, classes interleaved."""
    require(isinstance(n_per_class, int) and n_per_class >= 1, "data.synthetic.n_per_class",
            f"must be an integer >= 1, got {n_per_class!r}")
    require(isinstance(size, int) and size >= 8, "data.synthetic.size", f"must be an integer >= 8, got {size!r}")
    count = n_per_class * len(SHAPE_CLASSES)
    labels = np.arange(count) % len(SHAPE_CLASSES)
    images = np.stack([render(int(labels[i]), size, np.random.default_rng((seed, i))) for i in range(count)])
    return images, labels


def write_shapes_folder(root: str | Path, n_per_class: int, size: int = 64, seed: int = 0) -> Path:
    """Materialise the set as ``root/<class>/<index>.png``: the labelled-folder layout kNN eval reads."""
    root = Path(root)
    images, labels = make_shapes(n_per_class, size, seed)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / SHAPE_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return root
