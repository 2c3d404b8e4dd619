"""Pictures out of arrays: 8-bit PNG bytes, zips of PNGs, mosaics, and the diverging colours of a difference map."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def diverging_rgb(difference: np.ndarray, limit: float = 1.0) -> np.ndarray:
    """(H, W) signed values -> (H, W, 3) uint8: blue below 0, white at 0, red above (fixed scale)."""
    t = np.clip(np.asarray(difference, np.float32) / limit, -1.0, 1.0)[..., None]
    white, red, blue = np.ones(3), np.array([0.70, 0.09, 0.17]), np.array([0.13, 0.40, 0.67])
    rgb = np.where(t >= 0, white + t * (red - white), white + (-t) * (blue - white))
    return (rgb * 255).round().astype(np.uint8)


def mosaic(images, columns: int) -> np.ndarray:
    """(N, H, W) or (N, H, W, 1) images -> one (rows*H, columns*W) picture, blank where a row is short."""
    images = np.asarray(images, np.float32)
    if images.ndim == 4:
        images = images[..., 0]
    n, height, width = images.shape
    rows = -(-n // columns)
    picture = np.zeros((rows * height, columns * width), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        picture[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    return picture


def to_uint8(image) -> np.ndarray:
    """Values in [0, 1] (clipped) -> uint8 0..255, rounded: how every picture and volume is stored."""
    return (np.clip(np.asarray(image, np.float32), 0, 1) * 255).round().astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W) in [0, 1] -> 8-bit greyscale PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image), "L").save(buffer, "PNG")
    return buffer.getvalue()


def gif_bytes(frames, seconds_per_frame: float = 0.15) -> bytes:
    """(N, H, W) in [0, 1] -> an 8-bit greyscale GIF that plays the frames in a loop."""
    pictures = [Image.fromarray(to_uint8(frame), "L") for frame in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, "GIF", save_all=True, append_images=pictures[1:], loop=0,
                     duration=int(seconds_per_frame * 1000))
    return buffer.getvalue()


def zip_of_pngs(images, names: list[str]) -> bytes:
    """(N, H, W) images -> one zip of PNGs named `names` (".png" added when missing)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for image, name in zip(images, names):
            stem = Path(name.replace("/", "_")).name
            archive.writestr(stem if stem.endswith(".png") else f"{stem}.png", png_bytes(image))
    return buffer.getvalue()


