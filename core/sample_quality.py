"""Samples against real slices, as the field judges them: Frechet and kernel distances on reference features, MS-SSIM diversity, brain area by level.

FD: Heusel et al. 2017 (FID) on our own reference network's features (core/models/reference.py),
as Pinaya et al. 2022 do on Med3D/RadImageNet ones. KID: Binkowski et al. 2018, the unbiased
MMD^2 with the cubic polynomial kernel. MS-SSIM: Wang et al. 2003, over random pairs of one set;
a set as diverse as real slices scores what real pairs score (a collapsed set scores near 1).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from core import data, metrics
from core.paths import REPO_ROOT

REFERENCE_CHECKPOINT = REPO_ROOT / "checkpoints" / "reference"
REFERENCE_FILE = "reference.keras"
BRAIN_THRESHOLD = 0.1  # a pixel above this is brain (the background of OASIS slices is 0)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales
LEVEL_BAND = 8  # levels per band of the per-level FD: 256 samples give ~64 a band, enough for a covariance


# --- distances on features -----------------------------------------------------------------------
def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _feature_sets(features_a, features_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"Expected two (N, D) feature sets with N >= 2 and one D. "
                         f"Received: shapes {a.shape} and {b.shape}")
    return a, b


def frechet_distance(features_a, features_b) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^1/2) of two (N, D) feature sets (N >= 2 each)."""
    a, b = _feature_sets(features_a, features_b)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr (C_a C_b)^1/2 = Tr (C_a^1/2 C_b C_a^1/2)^1/2: a symmetric matrix, so eigh is exact and stable.
    root_a = _psd_sqrt(cov_a)
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)))
    distance = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return float(max(distance, 0.0))


def kernel_distance(features_a, features_b) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3 (KID) of two (N, D) feature sets (N >= 2 each)."""
    a, b = _feature_sets(features_a, features_b)
    dim = a.shape[1]
    k_aa, k_bb, k_ab = ((x @ y.T / dim + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))  # the diagonal k(x, x) biases MMD upwards
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


# --- MS-SSIM ---------------------------------------------------------------------------------------
def ms_ssim_scales(side: int) -> int:
    """How many of the five scales fit: the coarsest must still hold one 11x11 window."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2 ** scales >= metrics.SSIM_WINDOW:
        scales += 1
    return scales


@tf.function(reduce_retracing=True)
def _ms_ssim(a, b, weights: tuple[float, ...]):
    values = []
    scales = len(weights)  # a Python tuple: one trace per number of scales
    for scale in range(scales):
        luminance, contrast_structure = metrics.ssim_components(a, b)
        if scale == scales - 1:
            values.append(tf.reduce_mean(luminance * contrast_structure, axis=[1, 2, 3]))
        else:
            values.append(tf.reduce_mean(contrast_structure, axis=[1, 2, 3]))
            a, b = tf.nn.avg_pool2d(a, 2, 2, "VALID"), tf.nn.avg_pool2d(b, 2, 2, "VALID")
    stacked = tf.nn.relu(tf.stack(values, axis=-1))  # negative contrast at a scale counts as 0
    return tf.reduce_prod(stacked ** tf.constant(weights, tf.float32), axis=-1)


def ms_ssim(images_a, images_b) -> np.ndarray:
    """Per-pair MS-SSIM of (N, H, W[, 1]) images in [0, 1]: SSIM's contrast-structure at each scale, luminance at the coarsest.

    Five scales as Wang et al. (and tf.image.ssim_multiscale) for slices of 176 pixels or more;
    smaller slices use the scales that fit, their weights rescaled to sum to one.
    """
    a, b = metrics.as_image_pair(images_a, images_b)
    metrics.check_size(a)
    weights = np.asarray(MS_SSIM_WEIGHTS[:ms_ssim_scales(min(a.shape[1], a.shape[2]))], np.float32)
    return _ms_ssim(a, b, tuple(float(w) for w in weights / weights.sum())).numpy()


def mean_pair_ms_ssim(images, pairs: int = 256, seed: int = 0, batch_size: int = 64) -> float:
    """Mean MS-SSIM over `pairs` random pairs of two different slices of one set: its (lack of) diversity."""
    images = np.asarray(images, np.float32)
    if len(images) < 2:
        raise ValueError(f"Expected at least 2 slices to pair. Received: {len(images)}")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(images), pairs)
    second = (first + rng.integers(1, len(images), pairs)) % len(images)  # never the same slice
    scores = [ms_ssim(images[i], images[j]) for i, j in zip(data.chunked(first, batch_size),
                                                             data.chunked(second, batch_size))]
    return float(np.mean(np.concatenate(scores)))


# --- brain area --------------------------------------------------------------------------------------
def brain_area(images) -> np.ndarray:
    """(N,) fraction of each slice's pixels above BRAIN_THRESHOLD."""
    images = np.asarray(images, np.float32)
    return (images.reshape(len(images), -1) > BRAIN_THRESHOLD).mean(axis=1)


def area_by_level(images, levels, real_images, real_levels) -> dict[str, dict]:
    """Mean brain area per slice level, samples beside real slices, for the levels both sets hold."""
    area, real_area = brain_area(images), brain_area(real_images)
    return {str(level): {"samples": round(float(area[levels == level].mean()), 4),
                         "real": round(float(real_area[real_levels == level].mean()), 4)}
            for level in sorted(set(np.asarray(levels).tolist()) & set(np.asarray(real_levels).tolist()))}


def _fd_by_level_band(features, levels, real_features, real_levels) -> dict[str, float]:
    bands = {}
    for start in range(0, int(max(levels.max(), real_levels.max())) + 1, LEVEL_BAND):
        mine = features[(levels >= start) & (levels < start + LEVEL_BAND)]
        real = real_features[(real_levels >= start) & (real_levels < start + LEVEL_BAND)]
        if len(mine) >= 2 and len(real) >= 2:
            bands[f"{start}-{start + LEVEL_BAND - 1}"] = round(frechet_distance(mine, real), 4)
    return bands


# --- the report ------------------------------------------------------------------------------------
def load_reference(folder: str | Path | None = None):
    """The reference network in `folder` (default: the shipped one); a CheckpointError, one line, when it will not load."""
    from core.bundles import CheckpointError, load_model

    folder = Path(REFERENCE_CHECKPOINT if folder is None else folder)
    path = folder / REFERENCE_FILE if folder.is_dir() or not folder.suffix else folder
    if not path.is_file():
        raise CheckpointError(f"Expected the reference network at {path}. Rebuild it with "
                              f"`python scripts/make_reference_network.py`.")
    return load_model(path, "the reference network")


def compare_sets(reference, samples, real, baseline, *, sample_levels=None, real_levels=None,
                 baseline_levels=None, seed: int = 0) -> dict:
    """Figures for samples vs real slices, each beside the same figure for real `baseline` slices.

    All three are (N, H, W[, 1]) in [0, 1]; `baseline` must not overlap `real` (train vs validate).
    Levels, when given, add area_by_level and fd_by_level_band.
    """
    samples, real, baseline = (np.asarray(x, np.float32) for x in (samples, real, baseline))
    f_samples, f_real, f_baseline = (reference.features(x) for x in (samples, real, baseline))
    pairs = max(len(samples), 2)
    report = {"fd": round(frechet_distance(f_samples, f_real), 4),
              "fd_real": round(frechet_distance(f_baseline, f_real), 4),
              "kid": round(kernel_distance(f_samples, f_real), 5),
              "kid_real": round(kernel_distance(f_baseline, f_real), 5),
              "ms_ssim_samples": round(mean_pair_ms_ssim(samples, pairs, seed), 4),
              "ms_ssim_real": round(mean_pair_ms_ssim(real, pairs, seed), 4),
              "area_samples": round(float(brain_area(samples).mean()), 4),
              "area_real": round(float(brain_area(real).mean()), 4)}
    if sample_levels is not None and real_levels is not None:
        report["area_by_level"] = area_by_level(samples, sample_levels, real, real_levels)
        report["fd_by_level_band"] = _fd_by_level_band(f_samples, sample_levels, f_real, real_levels)
        if baseline_levels is not None:
            report["fd_real_by_level_band"] = _fd_by_level_band(f_baseline, baseline_levels, f_real,
                                                                real_levels)
    return report


def real_slices(data_path, split: str, n: int, image_size: int, seed: int = 0):
    """n slices of a split (all when it holds fewer) drawn at random with `seed`, and their levels (or None)."""
    paths = data.find_slices(data_path, split)
    if len(paths) < 2:
        raise data.DataError(f"Expected at least 2 slices in the {split} split of {data_path}. "
                             f"Received: {len(paths)}")
    if n < len(paths):
        picks = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
        paths = [paths[i] for i in picks]
    return data.load_images(paths, image_size)[..., 0], data.slice_levels(paths)


def sample_quality(vqvae, prior, reference, data_path, *, split: str = "validate", n: int = 256,
                   seed: int = 0, progress=None) -> dict:
    """Generate n brains (levels drawn as in training) and compare them with the split; train slices are the baseline.

    `progress(fraction, text)` is told how far it has got. The ONE report of core.evaluate samples
    and the Sample page's Quality panel.
    """
    from core import jobs

    if n < 2:
        raise ValueError(f"Expected n >= 2 samples (distances need a covariance). Received: n={n}")
    tell = progress or (lambda fraction, text: None)
    started = time.perf_counter()
    size = vqvae.config.image_size
    tell(0.0, f"reading {n} {split} and {n} train slices")
    real, real_levels = real_slices(data_path, split, n, size, seed)
    baseline, baseline_levels = real_slices(data_path, "train", n, size, seed + 1)
    tell(0.1, f"generating {n} brains")
    sampling_progress = (lambda row, rows: tell(0.1 + 0.7 * row / rows, f"generating {n} brains")) \
        if progress else None
    brains = jobs.generate_brains(vqvae, prior, n, seed=seed, progress=sampling_progress)
    tell(0.8, "measuring")
    report = compare_sets(reference, brains.images, real, baseline, sample_levels=brains.levels,
                          real_levels=real_levels, baseline_levels=baseline_levels, seed=seed)
    tell(1.0, "done")
    return {**report, "n": n, "n_real": len(real), "split": split,
            "seconds": round(time.perf_counter() - started, 2)}
