"""Image-quality metrics (SSIM, PSNR, MSE): one definition shared by training, evaluation and the pages."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def _as_batch(images) -> tf.Tensor:
    images = tf.convert_to_tensor(np.asarray(images, np.float32))
    if images.shape.rank == 2:
        images = images[None, ..., None]
    elif images.shape.rank == 3:
        images = images[..., None]
    return images


def _pair(originals, reconstructions) -> tuple[tf.Tensor, tf.Tensor]:
    """Both as (N, H, W, 1) float32; the reconstructions clipped to [0, 1] (as a person sees them)."""
    return _as_batch(originals), tf.clip_by_value(_as_batch(reconstructions), 0.0, 1.0)


def image_scores(originals, reconstructions) -> dict[str, np.ndarray]:
    """Per-image SSIM, PSNR (dB) and MSE of [0, 1] images, converted and clipped once."""
    a, b = _pair(originals, reconstructions)
    return {"ssim": _ssim(a, b), "psnr": _psnr(a, b), "mse": _mse(a, b)}


def ssim(originals, reconstructions) -> np.ndarray:
    """Per-image SSIM (windowed, 11x11 Gaussian, `tf.image.ssim`, max_val=1 on [0, 1] images)."""
    return _ssim(*_pair(originals, reconstructions))


def psnr(originals, reconstructions) -> np.ndarray:
    """Per-image PSNR in dB (max_val=1); capped at 100 dB for identical images."""
    return _psnr(*_pair(originals, reconstructions))


def mse(originals, reconstructions) -> np.ndarray:
    """Per-image mean squared error on [0, 1] images."""
    return _mse(*_pair(originals, reconstructions))


def _ssim(a, b) -> np.ndarray:
    return tf.image.ssim(a, b, max_val=1.0).numpy()


def _psnr(a, b) -> np.ndarray:
    return np.minimum(tf.image.psnr(a, b, max_val=1.0).numpy(), 100.0)


def _mse(a, b) -> np.ndarray:
    return tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3]).numpy()
