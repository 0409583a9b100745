"""MOVi-A-like 3D scenes rendered with pybullet on the CPU, with exact instance masks (optional).

MOVi-A (Kubric) shows 3-10 CLEVR objects (cube, sphere, cylinder; small or large; rubber or
metal; eight CLEVR colours) on a grey floor, seen by a camera jittered around a fixed pose that
looks at the origin. This generator builds the same kind of still scene in pybullet and renders it
with TinyRenderer (pure CPU, no GPU or display), reading the masks from pybullet's segmentation
buffer, which stores the body id of the surface seen at every pixel: masks are exact, not derived
from colour. Objects are placed resting on the floor without overlapping; objects that end up
fully hidden are dropped from the ids, so ids 1..n are the visible objects.

pybullet is an optional extra (``pip install 'featlab[render3d]'``) and is imported only when a
scene is rendered, so the rest of the suite never needs it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from featlab.errors import ConfigError, require

# CLEVR's palette, as used by MOVi-A (RGB 0-255).
CLEVR_COLOURS = {
    "gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
    "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51),
}
SHAPES = ("cube", "sphere", "cylinder")
SIZES = {"small": 0.35, "large": 0.7}  # half-extent / radius in scene units, as in CLEVR
CAMERA_EYE = (7.5, -6.5, 5.3)  # MOVi-A's nominal camera position; jittered per scene
FIELD_OF_VIEW_DEG = math.degrees(0.85755605)  # MOVi's camera field of view

_CLIENT: dict[str, Any] = {}


def import_pybullet():
    """pybullet, or a one-line error that names the extra to install."""
    try:
        import pybullet
    except ImportError:
        raise ConfigError("data.source", "source 'render3d' needs pybullet: pip install 'featlab[render3d]' "
                                         "(or use data.source=embedded)") from None
    return pybullet


def _client(pb) -> int:
    """One DIRECT (headless) physics client per process, so DataLoader workers each get their own."""
    pid = os.getpid()
    if _CLIENT.get("pid") != pid:
        _CLIENT.update(pid=pid, id=pb.connect(pb.DIRECT))
    return _CLIENT["id"]


def _place_objects(rng: np.random.Generator, count: int, extent: float = 3.0, tries: int = 200) -> list[dict]:
    """Random CLEVR objects on the floor whose footprints do not overlap."""
    objects: list[dict] = []
    for _ in range(count):
        for _ in range(tries):
            size_name = ("small", "large")[rng.integers(2)]
            half = SIZES[size_name]
            xy = rng.uniform(-extent, extent, size=2)
            footprint = half * math.sqrt(2)
            if all(np.linalg.norm(xy - o["xy"]) > footprint + o["footprint"] + 0.1 for o in objects):
                colour_name = list(CLEVR_COLOURS)[rng.integers(len(CLEVR_COLOURS))]
                objects.append(dict(
                    shape=SHAPES[rng.integers(len(SHAPES))], size=size_name, half=half, xy=xy,
                    footprint=footprint, yaw=rng.uniform(0, 2 * math.pi), colour=colour_name,
                    metal=bool(rng.integers(2)),
                ))
                break
    return objects


def _add_object(pb, cid: int, obj: dict) -> int:
    rgba = [c / 255 for c in CLEVR_COLOURS[obj["colour"]]] + [1.0]
    half = obj["half"]
    if obj["shape"] == "cube":
        visual = pb.createVisualShape(pb.GEOM_BOX, halfExtents=[half] * 3, rgbaColor=rgba, physicsClientId=cid)
    elif obj["shape"] == "sphere":
        visual = pb.createVisualShape(pb.GEOM_SPHERE, radius=half, rgbaColor=rgba, physicsClientId=cid)
    else:
        visual = pb.createVisualShape(pb.GEOM_CYLINDER, radius=half, length=2 * half, rgbaColor=rgba,
                                      physicsClientId=cid)
    orientation = pb.getQuaternionFromEuler([0, 0, obj["yaw"]])
    body = pb.createMultiBody(baseMass=0, baseVisualShapeIndex=visual,
                              basePosition=[obj["xy"][0], obj["xy"][1], half], baseOrientation=orientation,
                              physicsClientId=cid)
    specular = [0.9, 0.9, 0.9] if obj["metal"] else [0.05, 0.05, 0.05]
    pb.changeVisualShape(body, -1, specularColor=specular, physicsClientId=cid)
    return body


def render_scene3d(seed: int, size: int = 128, min_objects: int = 3, max_objects: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) uint8 mask (0 = floor/sky) of the 3D scene for ``seed``."""
    require(1 <= min_objects <= max_objects <= 254, "data.min_objects",
            f"need 1 <= data.min_objects <= data.max_objects <= 254, got {min_objects} and {max_objects}")
    pb = import_pybullet()
    cid = _client(pb)
    pb.resetSimulation(physicsClientId=cid)
    rng = np.random.default_rng(seed)

    floor = pb.createVisualShape(pb.GEOM_BOX, halfExtents=[30, 30, 0.01], rgbaColor=[0.55, 0.55, 0.55, 1],
                                 physicsClientId=cid)
    pb.createMultiBody(baseMass=0, baseVisualShapeIndex=floor, basePosition=[0, 0, -0.01], physicsClientId=cid)
    objects = _place_objects(rng, int(rng.integers(min_objects, max_objects + 1)))
    bodies = [_add_object(pb, cid, obj) for obj in objects]

    eye = np.asarray(CAMERA_EYE) + rng.uniform(-0.5, 0.5, size=3)
    view = pb.computeViewMatrix(cameraEyePosition=eye.tolist(), cameraTargetPosition=[0, 0, 0],
                                cameraUpVector=[0, 0, 1], physicsClientId=cid)
    projection = pb.computeProjectionMatrixFOV(fov=FIELD_OF_VIEW_DEG, aspect=1.0, nearVal=0.1, farVal=100.0,
                                               physicsClientId=cid)
    light = (rng.uniform(-1, 1), rng.uniform(-1, 1), 2.0)
    _, _, rgba, _, seg = pb.getCameraImage(size, size, viewMatrix=view, projectionMatrix=projection,
                                           renderer=pb.ER_TINY_RENDERER, lightDirection=light, shadow=1,
                                           physicsClientId=cid)
    image = np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[..., :3].copy()
    seg = np.asarray(seg).reshape(size, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    next_id = 1
    for body in bodies:  # visible objects get consecutive ids in placement order
        hit = seg == body
        if hit.any():
            mask[hit] = next_id
            next_id += 1
    return image, mask
