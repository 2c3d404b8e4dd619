"""core.sample_quality: FD, KID and MS-SSIM against references, and that they rank real slices above collapsed, blurred and noisy ones."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from oasis_fixtures import brain_slice
from core import sample_quality as sq


def features(seed: int, n: int = 200, dim: int = 8, shift: float = 0.0) -> np.ndarray:
    mixing = np.random.default_rng(dim).normal(0, 0.5, (dim, dim))  # one distribution per (dim, shift)
    return np.random.default_rng(seed).normal(shift, 1.0, (n, dim)) @ mixing + shift


def test_frechet_distance_equals_its_definition_with_scipy_sqrtm():
    a, b = features(0), features(1, shift=0.3)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b)
                - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b).real))
    assert sq.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert sq.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kernel_distance_equals_the_unbiased_mmd_written_out():
    a, b = features(2, n=12, dim=3), features(3, n=9, dim=3, shift=0.5)

    def k(x, y):
        return (x @ y / 3 + 1) ** 3
    within_a = np.mean([k(a[i], a[j]) for i in range(12) for j in range(12) if i != j])
    within_b = np.mean([k(b[i], b[j]) for i in range(9) for j in range(9) if i != j])
    across = np.mean([k(x, y) for x in a for y in b])
    assert sq.kernel_distance(a, b) == pytest.approx(within_a + within_b - 2 * across, rel=1e-9)


def test_kernel_distance_is_unbiased_near_zero_for_one_distribution():
    same = [sq.kernel_distance(features(seed), features(seed + 100)) for seed in range(5)]
    shifted = sq.kernel_distance(features(0), features(100, shift=1.0))
    assert abs(np.mean(same)) < 0.05 * shifted


@pytest.mark.parametrize("metric", [sq.frechet_distance, sq.kernel_distance])
def test_distances_need_two_feature_sets_of_one_width(metric):
    with pytest.raises(ValueError, match="Expected two"):
        metric(features(0)[:1], features(1))
    with pytest.raises(ValueError, match="Expected two"):
        metric(features(0, dim=3), features(1, dim=4))


def test_ms_ssim_equals_tf_image_ssim_multiscale_at_full_size():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (2, 256, 256, 1)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    np.testing.assert_allclose(sq.ms_ssim(a, b), tf.image.ssim_multiscale(a, b, 1.0).numpy(), rtol=0, atol=1e-4)


def test_ms_ssim_uses_the_scales_that_fit():
    assert [sq.ms_ssim_scales(side) for side in (11, 22, 32, 64, 176, 256)] == [1, 2, 2, 3, 5, 5]
    x = slices(range(2), 32)
    np.testing.assert_allclose(sq.ms_ssim(x, x), [1.0, 1.0], atol=1e-5)


def slices(seeds, size: int = 64) -> np.ndarray:
    return np.stack([brain_slice(seed, size) for seed in seeds]).astype(np.float32) / 255.0


def test_a_collapsed_set_scores_ms_ssim_one_and_real_slices_less():
    real = slices(range(16), 32)
    collapsed = np.repeat(real[:1], 16, axis=0)
    assert sq.mean_pair_ms_ssim(collapsed, 32) == pytest.approx(1.0, abs=1e-5)
    assert sq.mean_pair_ms_ssim(real, 32) < 0.95


def test_brain_area_is_the_fraction_above_the_threshold():
    image = np.zeros((1, 4, 4), np.float32)
    image[0, :2] = 0.5
    image[0, 2, 0] = sq.BRAIN_THRESHOLD  # not above: background
    np.testing.assert_allclose(sq.brain_area(image), [0.5])


@pytest.fixture(scope="module")
def reference():
    return sq.load_reference()  # the shipped network


def test_real_slices_are_close_and_broken_sets_are_far(reference):
    # Sanity of the metric itself on the shipped network: real-vs-real is small and stable across
    # seeds; a collapsed set, blurred slices and noise each score far worse.
    real = slices(range(64))
    other_reals = [slices(range(start, start + 64)) for start in (100, 200, 300)]
    fd_real = [sq.frechet_distance(reference.features(x), reference.features(real)) for x in other_reals]
    collapsed = np.repeat(slices([500]), 64, axis=0)
    blurred = tf.nn.avg_pool2d(slices(range(600, 664))[..., None], 9, 1, "SAME").numpy()[..., 0]
    noise = np.random.default_rng(0).uniform(0, 1, real.shape).astype(np.float32)
    broken = {name: sq.frechet_distance(reference.features(x), reference.features(real))
              for name, x in (("collapsed", collapsed), ("blurred", blurred), ("noise", noise))}
    assert max(fd_real) < 2 * min(fd_real), fd_real  # stable across seeds
    for name, distance in broken.items():
        assert distance > 2 * max(fd_real), (name, distance, fd_real)
    kid_real = sq.kernel_distance(reference.features(other_reals[0]), reference.features(real))
    assert sq.kernel_distance(reference.features(noise), reference.features(real)) > 10 * abs(kid_real)


def test_compare_sets_reports_every_figure_and_levels(reference):
    real, baseline, samples = slices(range(24), 32), slices(range(30, 54), 32), slices(range(60, 84), 32)
    levels = np.arange(24) % 4
    report = sq.compare_sets(reference, samples, real, baseline, sample_levels=levels, real_levels=levels,
                             baseline_levels=levels)
    assert set(report["area_by_level"]) == {"0", "1", "2", "3"}
    assert report["area_by_level"]["0"]["real"] == pytest.approx(float(sq.brain_area(real[levels == 0]).mean()),
                                                                 abs=1e-4)
    assert list(report["fd_by_level_band"]) == ["0-7"]
    assert report["fd"] >= 0 and report["fd_real"] >= 0 and 0 < report["ms_ssim_samples"] < 1


def test_a_missing_reference_network_is_a_checkpoint_error(tmp_path):
    from core.bundles import CheckpointError
    with pytest.raises(CheckpointError, match="make_reference_network"):
        sq.load_reference(tmp_path)
