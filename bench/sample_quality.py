"""Benchmark: do sampled brains match real ones? Brain-area and intensity histograms vs the validation slices.

    python bench/sample_quality.py --checkpoint checkpoints/demo --data ../shared/oasis_proxy

Draws 64 samples (seeds 0..3, 16 each, temperature 1), decodes them and compares, against the
validation split: the histogram of brain area per slice (fraction of pixels above 0.1) and the
histogram of intensities inside the brain. Histogram intersection (sum of bin-wise minima of two
normalised histograms) is 1 for identical distributions. Saves a grid of samples as PNG.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from core import data, workflows  # noqa: E402
from core.checkpoints import load_bundle  # noqa: E402

BRAIN_THRESHOLD = 0.1


def intersection(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    ha = np.histogram(a, bins)[0].astype(float)
    hb = np.histogram(b, bins)[0].astype(float)
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def describe(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice brain area fraction, and all in-brain intensities."""
    brain = images > BRAIN_THRESHOLD
    return brain.mean(axis=(1, 2)), images[brain]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "demo"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--grid-out", default=str(REPO / "docs" / "samples_grid.png"))
    args = parser.parse_args()
    bundle = load_bundle(args.checkpoint)
    started = time.perf_counter()
    samples = np.concatenate([
        workflows.generate_brains(bundle.vqvae, bundle.prior, 16, seed=seed, temperature=args.temperature).images
        for seed in range(args.n // 16)])
    seconds = time.perf_counter() - started
    root = data.find_data_root(args.data)
    real = data.load_images(data.scan_split(root, "validate").paths, bundle.image_size)[..., 0]
    real_area, real_intensity = describe(real)
    sample_area, sample_intensity = describe(samples)
    area_bins = np.linspace(0, 1, 21)
    intensity_bins = np.linspace(BRAIN_THRESHOLD, 1, 19)
    print(f"checkpoint: {bundle.path}; {len(samples)} samples at temperature {args.temperature} "
          f"({seconds:.1f} s) vs {len(real)} validation slices")
    print(f"brain area per slice (fraction > {BRAIN_THRESHOLD}): samples mean {sample_area.mean():.3f} "
          f"sd {sample_area.std():.3f}; validation mean {real_area.mean():.3f} sd {real_area.std():.3f}")
    coarse_bins = np.linspace(0, 1, 11)
    print(f"histogram intersection, brain area (20 bins): {intersection(sample_area, real_area, area_bins):.3f}"
          f"; (10 bins): {intersection(sample_area, real_area, coarse_bins):.3f}")
    print(f"histogram intersection, in-brain intensity (18 bins): "
          f"{intersection(sample_intensity, real_intensity, intensity_bins):.3f}")
    # The ceiling of these figures for 64 slices: real train slices (other cases) in place of samples.
    train_paths = data.scan_split(root, "train").paths
    picks = np.random.default_rng(0).choice(len(train_paths), len(samples), replace=False)
    baseline = data.load_images([train_paths[i] for i in picks], bundle.image_size)[..., 0]
    baseline_area, baseline_intensity = describe(baseline)
    print(f"baseline, {len(baseline)} random real train slices in place of samples: brain area "
          f"{intersection(baseline_area, real_area, area_bins):.3f} (20 bins), "
          f"{intersection(baseline_area, real_area, coarse_bins):.3f} (10 bins); in-brain intensity "
          f"{intersection(baseline_intensity, real_intensity, intensity_bins):.3f}")
    Path(args.grid_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.grid_out).write_bytes(workflows.png_bytes(workflows.mosaic(samples[:16], columns=8)))
    print(f"grid of 16 samples: {args.grid_out}")


if __name__ == "__main__":
    main()
