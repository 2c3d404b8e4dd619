"""Image-quality metrics (SSIM, PSNR, MSE): one definition shared by the trainer, the CLI and the pages."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from core.quantizer import CodebookStats, codebook_stats  # noqa: F401  (re-exported: one import for callers)


def _as_batch(images) -> tf.Tensor:
    images = tf.convert_to_tensor(np.asarray(images, np.float32))
    if images.shape.rank == 2:
        images = images[None, ..., None]
    elif images.shape.rank == 3:
        images = images[..., None]
    return images


def ssim(originals, reconstructions) -> np.ndarray:
    """Per-image SSIM (windowed, 11x11 Gaussian, `tf.image.ssim`, max_val=1 on [0, 1] images)."""
    a, b = _as_batch(originals), _as_batch(tf.clip_by_value(_as_batch(reconstructions), 0.0, 1.0))
    return tf.image.ssim(a, b, max_val=1.0).numpy()


def psnr(originals, reconstructions) -> np.ndarray:
    """Per-image PSNR in dB (max_val=1); capped at 100 dB for identical images."""
    a, b = _as_batch(originals), _as_batch(tf.clip_by_value(_as_batch(reconstructions), 0.0, 1.0))
    return np.minimum(tf.image.psnr(a, b, max_val=1.0).numpy(), 100.0)


def mse(originals, reconstructions) -> np.ndarray:
    """Per-image mean squared error on [0, 1] images."""
    a, b = _as_batch(originals), _as_batch(tf.clip_by_value(_as_batch(reconstructions), 0.0, 1.0))
    return tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3]).numpy()
