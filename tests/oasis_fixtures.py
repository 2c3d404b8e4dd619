"""Small OASIS-layout data for tests: PNG writer, brain-like slices, and a tree writer (no ../shared needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent

OASIS_SPLIT_SIZES = {"train": 16, "validate": 8, "test": 8}
OASIS_IMAGE_SIZE = 32


def write_png(path, array) -> Path:
    """Write a uint8 (H, W) / (H, W, 3) or uint16 (H, W) array as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.dtype != np.uint16:
        array = array.astype(np.uint8)
    Image.fromarray(np.ascontiguousarray(array)).save(path)  # uint16 -> mode I;16 (16-bit PNG)
    return path


def brain_slice(seed: int, size: int = OASIS_IMAGE_SIZE) -> np.ndarray:
    """A (size, size) uint8 'brain': a bright ellipse with darker blobs inside, on black."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1) * 2.0 - 1.0
    ry, rx = rng.uniform(0.6, 0.85), rng.uniform(0.5, 0.75)
    image = np.where((x / rx) ** 2 + (y / ry) ** 2 < 1.0, 170.0, 0.0)
    for _ in range(3):
        cy, cx, r = rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3), rng.uniform(0.1, 0.25)
        image = np.where((x - cx) ** 2 + (y - cy) ** 2 < r ** 2, rng.uniform(60, 255), image)
    image += rng.normal(0.0, 4.0, image.shape) * (image > 0)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def make_oasis_tree(root, sizes: dict[str, int] | None = None, image_size: int = OASIS_IMAGE_SIZE) -> Path:
    """Write `root/keras_png_slices_data/...` with slices per split and a decoy seg folder; returns root."""
    root = Path(root)
    data_root = root / "keras_png_slices_data"
    seed = 0
    for split, count in (sizes or OASIS_SPLIT_SIZES).items():
        for i in range(count):
            case, slice_ = divmod(i, 4)
            write_png(data_root / f"keras_png_slices_{split}" / f"case_{case + 1:03d}_slice_{slice_}.nii.png",
                      brain_slice(seed, image_size))
            seed += 1
    # Segmentation labels (0/85/170/255): the loader must never read these.
    labels = np.array([0, 85, 170, 255], np.uint8)
    for i in range(4):
        seg = labels[(np.arange(image_size)[:, None] // (image_size // 4) + i) % 4]
        write_png(data_root / "keras_png_slices_seg_train" / f"seg_{i:03d}_slice_{i}.nii.png",
                  np.broadcast_to(seg, (image_size, image_size)))
    return root
