"""core.metrics: SSIM, PSNR and MSE on [0, 1] images."""
from __future__ import annotations

import numpy as np
import pytest

from oasis_fixtures import brain_slice
from core import metrics


def slices(count: int = 3) -> np.ndarray:
    return np.stack([brain_slice(seed) for seed in range(count)])[..., None].astype(np.float32) / 255.0


def test_identical_images_score_perfectly():
    x = slices()
    np.testing.assert_allclose(metrics.ssim(x, x), np.ones(3), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(metrics.psnr(x, x), np.full(3, 100.0))  # capped, not inf
    np.testing.assert_array_equal(metrics.mse(x, x), np.zeros(3))


def test_mse_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)
    b = rng.uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)
    expected = ((a - b) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(metrics.mse(a, b), expected, rtol=1e-5)


def test_psnr_matches_its_definition():
    a = slices(2)
    b = np.clip(a + 0.05, 0, 1)
    expected = 10 * np.log10(1.0 / ((a - b) ** 2).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(metrics.psnr(a, b), expected, rtol=1e-4)


def test_reconstructions_are_clipped_to_the_image_range():
    a = np.zeros((1, 16, 16, 1), np.float32)
    overshoot = np.full_like(a, -0.5)  # clipped to 0: identical to `a`
    assert metrics.mse(a, overshoot)[0] == 0.0
    assert metrics.psnr(a, overshoot)[0] == 100.0


def test_ssim_decreases_with_noise():
    x = slices(2)
    rng = np.random.default_rng(1)
    scores = [metrics.ssim(x, np.clip(x + rng.normal(0, sigma, x.shape), 0, 1)).mean()
              for sigma in (0.0, 0.02, 0.1, 0.3)]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert all(later < earlier for earlier, later in zip(scores, scores[1:])), scores
    psnrs = [metrics.psnr(x, np.clip(x + sigma, 0, 1)).mean() for sigma in (0.01, 0.05, 0.2)]
    assert psnrs[0] > psnrs[1] > psnrs[2]


@pytest.mark.parametrize("shape, count", [((32, 32), 1), ((3, 32, 32), 3), ((3, 32, 32, 1), 3)])
def test_accepts_single_images_and_batches(shape, count):
    x = np.full(shape, 0.5, np.float32)
    y = np.full(shape, 0.25, np.float32)
    for metric in (metrics.ssim, metrics.psnr, metrics.mse):
        assert metric(x, y).shape == (count,)
    np.testing.assert_allclose(metrics.mse(x, y), np.full(count, 0.0625), rtol=1e-6)


@pytest.mark.parametrize("shape", [(3, 32, 32, 1), (2, 37, 53, 1), (2, 64, 64, 1), (1, 11, 11, 1),
                                   (1, 256, 256, 1)])
def test_ssim_equals_tf_image_ssim_on_random_images(shape):
    # The separable graph-mode SSIM must be the same function as tf.image.ssim, at any size.
    import tensorflow as tf
    rng = np.random.default_rng(sum(shape))
    a = rng.uniform(0, 1, shape).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, shape), 0, 1).astype(np.float32)
    expected = tf.image.ssim(a, b, max_val=1.0).numpy()
    np.testing.assert_allclose(metrics.ssim(a, b), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [32, 45, 96])
def test_ssim_equals_tf_image_ssim_on_brain_like_slices(size):
    import tensorflow as tf
    from oasis_fixtures import brain_slice
    a = np.stack([brain_slice(seed, size) for seed in range(3)])[..., None].astype(np.float32) / 255.0
    b = np.clip(a + np.random.default_rng(size).normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    np.testing.assert_allclose(metrics.ssim(a, b), tf.image.ssim(a, b, max_val=1.0).numpy(), rtol=0, atol=1e-5)
    scores = metrics.image_scores(a, b)
    np.testing.assert_allclose(scores["ssim"], metrics.ssim(a, b), rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores["psnr"], metrics.psnr(a, b), rtol=1e-6)
    np.testing.assert_allclose(scores["mse"], metrics.mse(a, b), rtol=1e-6)


def test_ssim_of_images_smaller_than_the_window_is_a_clear_error():
    x = np.zeros((1, 10, 10, 1), np.float32)
    with pytest.raises(ValueError, match="Expected images of at least 11x11"):
        metrics.ssim(x, x)


def test_local_ssim_is_the_map_that_ssim_averages():
    rng = np.random.default_rng(4)
    a = rng.uniform(size=(2, 24, 20)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    b[1, :8, :8] = 0.0  # damage one corner: the map must be lowest there
    maps = metrics.local_ssim(a, b)
    assert maps.shape == (2, 14, 10)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), metrics.ssim(a, b), rtol=1e-5)
    assert maps[1, 0, 0] < maps[1, -1, -1]
    np.testing.assert_allclose(metrics.local_ssim(a, a), 1.0, atol=1e-5)
