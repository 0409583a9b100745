"""Convert MOVi (Kubric) exports into the scene-folder layout of :mod:`featlab.data.scenes`.

MOVi-A..E are 24-frame videos (256x256, and 128x128 variants) with per-frame instance
segmentations (0 = background, objects 1..n). Two export forms are read:

1. **NumPy per video** (``SRC/*.npz``): arrays ``video`` ``(T, H, W, 3)`` uint8 and
   ``segmentations`` ``(T, H, W, 1)`` integer, exactly the TFDS feature names and shapes. Write
   them from TFDS once (needs ``tensorflow-datasets`` and access to the public bucket)::

       import numpy as np, tensorflow_datasets as tfds
       ds = tfds.load("movi_a/128x128", data_dir="gs://kubric-public/tfds", split="train")
       for i, ex in enumerate(tfds.as_numpy(ds)):
           np.savez_compressed(f"movi_a_train/{i:05d}.npz", video=ex["video"],
                               segmentations=ex["segmentations"])

2. **Kubric worker output** (one folder per scene, or SRC itself): ``rgba_00000.png`` and
   ``segmentation_00000.png`` per frame, the segmentation a palette PNG whose indices are the
   instance ids (what ``kubric.write_image_dict`` writes).

Output: ``DST/images/<scene>_<frame>.png`` and ``DST/masks/<scene>_<frame>.png`` (8-bit ids;
``.npy`` if an id exceeds 255). Convert each split into its own folder (``DST/train``,
``DST/val``, ``DST/test``) to keep the official splits; ``data=scenes_folder data.root=DST`` reads it.

    python -m featlab.tools.movi_convert movi_a_train/ scenes/movi_a/train --every 8
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from featlab.cli import exit_on_user_error
from featlab.data.scenes import load_mask
from featlab.errors import ConfigError, require

log = logging.getLogger(__name__)

VIDEO_KEY, SEGMENTATION_KEY = "video", "segmentations"


def select_frames(num_frames: int, frames: Sequence[int] | None, every: int) -> list[int]:
    """Explicit frame indices (checked against the video length) or every ``every``-th frame."""
    if frames:
        bad = [f for f in frames if not 0 <= f < num_frames]
        require(not bad, "--frames", f"frame(s) {bad} outside a {num_frames}-frame video")
        return list(frames)
    require(every >= 1, "--every", f"must be >= 1, got {every}")
    return list(range(0, num_frames, every))


def npz_videos(src: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(scene name, video (T,H,W,3), segmentations (T,H,W)) for every ``*.npz`` in ``src``."""
    for path in sorted(src.glob("*.npz")):
        with np.load(path) as data:
            missing = [k for k in (VIDEO_KEY, SEGMENTATION_KEY) if k not in data]
            require(not missing, "src", f"'{path.name}' lacks {missing}; MOVi exports need arrays "
                                        f"'{VIDEO_KEY}' (T,H,W,3) and '{SEGMENTATION_KEY}' (T,H,W,1)")
            video, seg = data[VIDEO_KEY], data[SEGMENTATION_KEY]
        seg = seg[..., 0] if seg.ndim == 4 else seg
        require(video.ndim == 4 and video.shape[-1] in (3, 4), "src",
                f"'{path.name}': video must be (T,H,W,3), got {video.shape}")
        require(seg.shape == video.shape[:3], "src",
                f"'{path.name}': segmentations {seg.shape} do not match video frames {video.shape[:3]}")
        yield path.stem, video[..., :3], seg


def kubric_scenes(src: Path) -> Iterator[tuple[str, list[Path], list[Path]]]:
    """(scene name, rgba frames, segmentation frames) for SRC or each sub-folder of it."""
    folders = [src] if any(src.glob("rgba_*.png")) else sorted(p for p in src.iterdir() if p.is_dir())
    for folder in folders:
        rgba = sorted(folder.glob("rgba_*.png"))
        if not rgba:
            continue
        seg = [folder / p.name.replace("rgba_", "segmentation_") for p in rgba]
        missing = [p.name for p in seg if not p.exists()]
        require(not missing, "src", f"'{folder}' has no {missing[0] if missing else ''} for its rgba frames")
        yield folder.name, rgba, seg


def write_pair(dst: Path, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    """One image/mask pair in the scene-folder layout."""
    require(image.shape[:2] == mask.shape, "src", f"{name}: mask {mask.shape} differs from image {image.shape[:2]}")
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(dst / "images" / f"{name}.png")
    if int(mask.max(initial=0)) <= 255:
        Image.fromarray(mask.astype(np.uint8), mode="L").save(dst / "masks" / f"{name}.png")
    else:
        np.save(dst / "masks" / f"{name}.npy", mask.astype(np.int32))


def convert(src: str | Path, dst: str | Path, frames: Sequence[int] | None = None, every: int = 8,
            limit: int | None = None) -> int:
    """Convert every video/scene under ``src`` into ``dst``; returns the number of pairs written."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    require(src.is_dir(), "src", f"'{src}' is not a folder of MOVi exports (*.npz or Kubric scene folders)")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    written, scenes = 0, 0
    if any(src.glob("*.npz")):
        for scene, video, seg in npz_videos(src):
            if limit is not None and scenes >= limit:
                break
            for f in select_frames(len(video), frames, every):
                write_pair(dst, f"{scene}_{f:02d}", video[f], seg[f].astype(np.int64))
                written += 1
            scenes += 1
    else:
        for scene, rgba, seg in kubric_scenes(src):
            if limit is not None and scenes >= limit:
                break
            for f in select_frames(len(rgba), frames, every):
                image = np.asarray(Image.open(rgba[f]).convert("RGB"))
                write_pair(dst, f"{scene}_{f:02d}", image, load_mask(seg[f]))
                written += 1
            scenes += 1
    if written == 0:
        raise ConfigError("src", f"found no MOVi videos in '{src}' (expected *.npz with '{VIDEO_KEY}'/"
                                 f"'{SEGMENTATION_KEY}', or folders of rgba_*.png + segmentation_*.png)")
    log.info("wrote %d image/mask pairs from %d scenes to %s", written, scenes, dst)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="folder of *.npz videos or of Kubric scene folders")
    parser.add_argument("dst", help="output scene folder (images/ and masks/ are created)")
    parser.add_argument("--frames", type=int, nargs="*", help="frame indices to keep (default: --every)")
    parser.add_argument("--every", type=int, default=8, help="keep every N-th frame (default 8: 3 per video)")
    parser.add_argument("--limit", type=int, default=None, help="convert at most this many videos")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    count = exit_on_user_error(lambda: convert(args.src, args.dst, args.frames, args.every, args.limit))
    print(f"{count} pairs written to {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
