"""Image-quality metrics (SSIM, PSNR, MSE): one definition shared by training, evaluation and the pages."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

# The SSIM of Wang et al. 2004 as tf.image.ssim computes it: an 11x11 Gaussian window (sigma 1.5),
# "valid" filtering (no padding), K1 0.01, K2 0.03 on images with max_val 1.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PSNR_CAP = 100.0  # dB for identical images: a finite number that means "perfect"


def _as_batch(images) -> tf.Tensor:
    images = tf.convert_to_tensor(np.asarray(images, np.float32))
    if images.shape.rank == 2:
        images = images[None, ..., None]
    elif images.shape.rank == 3:
        images = images[..., None]
    return images


def as_image_pair(originals, reconstructions) -> tuple[tf.Tensor, tf.Tensor]:
    """Both as (N, H, W, 1) float32; the reconstructions clipped to [0, 1] (as a person sees them)."""
    return _as_batch(originals), tf.clip_by_value(_as_batch(reconstructions), 0.0, 1.0)


def image_scores(originals, reconstructions) -> dict[str, np.ndarray]:
    """Per-image SSIM, PSNR (dB) and MSE of [0, 1] images, converted and clipped once."""
    a, b = as_image_pair(originals, reconstructions)
    return {name: value.numpy() for name, value in scores_graph(a, b).items()}


def ssim(originals, reconstructions) -> np.ndarray:
    """Per-image SSIM (windowed, 11x11 Gaussian, as `tf.image.ssim`, max_val=1 on [0, 1] images)."""
    a, b = as_image_pair(originals, reconstructions)
    check_size(a)
    return _ssim_graph(a, b).numpy()


def psnr(originals, reconstructions) -> np.ndarray:
    """Per-image PSNR in dB (max_val=1); capped at 100 dB for identical images."""
    return _psnr(*as_image_pair(originals, reconstructions)).numpy()


def mse(originals, reconstructions) -> np.ndarray:
    """Per-image mean squared error on [0, 1] images."""
    return _mse(*as_image_pair(originals, reconstructions)).numpy()


def _gaussian_taps() -> tf.Tensor:
    offsets = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
    taps = np.exp(-offsets ** 2 / (2 * SSIM_SIGMA ** 2))
    return tf.constant(taps / taps.sum(), tf.float32)


def _band(size) -> tf.Tensor:
    """(size, size - 10) matrix whose column j holds the Gaussian taps in rows j .. j + 10."""
    taps = _gaussian_taps()
    offset = tf.range(size)[:, None] - tf.range(size - SSIM_WINDOW + 1)[None, :]
    inside = (offset >= 0) & (offset < SSIM_WINDOW)
    return tf.where(inside, tf.gather(taps, tf.clip_by_value(offset, 0, SSIM_WINDOW - 1)), 0.0)


def _blur(x: tf.Tensor) -> tf.Tensor:
    """Valid 11x11 Gaussian filtering of (N, H, W, 1) as two 1-D passes (columns, then rows).

    Each pass is a matmul with a banded matrix of the taps: on CPU about 5x faster than the
    same pass as a one-channel conv2d (bench/evaluate.py), and equal to it within float rounding.
    """
    images = x[..., 0]
    shape = tf.shape(images)
    images = tf.matmul(images, _band(shape[2]))  # (N, H, W - 10)
    images = tf.matmul(_band(shape[1]), images, transpose_a=True)  # (N, H - 10, W - 10)
    return images[..., None]


def ssim_components(a: tf.Tensor, b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Luminance and contrast-structure terms of SSIM at every valid 11x11 window: each (N, H-10, W-10, 1)."""
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    # All five local moments in one pass: the images stacked on the batch axis.
    n = tf.shape(a)[0]
    moments = _blur(tf.concat([a, b, a * a, b * b, a * b], axis=0))
    mu_a, mu_b, aa, bb, ab = (moments[i * n:(i + 1) * n] for i in range(5))
    mu_ab, mu_aa, mu_bb = mu_a * mu_b, mu_a * mu_a, mu_b * mu_b
    luminance = (2 * mu_ab + c1) / (mu_aa + mu_bb + c1)
    contrast_structure = (2 * (ab - mu_ab) + c2) / ((aa - mu_aa) + (bb - mu_bb) + c2)
    return luminance, contrast_structure


def ssim_map(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """SSIM at every valid window position of (N, H, W, 1) images in [0, 1]: (N, H-10, W-10, 1)."""
    luminance, contrast_structure = ssim_components(a, b)
    return luminance * contrast_structure


def local_ssim(originals, reconstructions) -> np.ndarray:
    """SSIM map of each image pair before averaging: (N, H-10, W-10), pixel (i, j) is the 11x11 window
    whose top-left corner is (i, j); its mean is `ssim`."""
    a, b = as_image_pair(originals, reconstructions)
    check_size(a)
    return _ssim_map_graph(a, b).numpy()[..., 0]


@tf.function(reduce_retracing=True)
def _ssim_map_graph(a, b):
    return ssim_map(a, b)


def check_size(a) -> None:
    """SSIM needs images at least as large as its window: a ValueError, not a TensorFlow error, when not."""
    if a.shape[1] is not None and (a.shape[1] < SSIM_WINDOW or a.shape[2] < SSIM_WINDOW):
        raise ValueError(f"Expected images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels for SSIM. "
                         f"Received: shape={tuple(a.shape)}")


@tf.function(reduce_retracing=True)
def _ssim_graph(a, b):
    return tf.reduce_mean(ssim_map(a, b), axis=[1, 2, 3])


def _psnr(a, b):
    return tf.minimum(tf.image.psnr(a, b, max_val=1.0), PSNR_CAP)


def _mse(a, b):
    return tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])


@tf.function(reduce_retracing=True)
def _scores(a, b):
    return {"ssim": tf.reduce_mean(ssim_map(a, b), axis=[1, 2, 3]), "psnr": _psnr(a, b), "mse": _mse(a, b)}


def scores_graph(a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
    """Per-image SSIM, PSNR and MSE of (N, H, W, 1) tensors in [0, 1], in one compiled graph."""
    check_size(a)
    return _scores(a, b)
