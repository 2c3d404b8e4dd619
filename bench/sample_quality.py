"""Benchmark: do sampled brains match real ones? Brain-area and intensity histograms vs the validation slices.

    python bench/sample_quality.py --checkpoint checkpoints/demo --data ../shared/oasis_proxy

Draws sets of 64 samples (set k: seeds 4k..4k+3, 16 each, temperature 1), decodes them and
compares, against the validation split: the histogram of brain area per slice (fraction of pixels
above 0.1) and the histogram of intensities inside the brain. Histogram intersection (sum of
bin-wise minima of two normalised histograms) is 1 for identical distributions. Real train slices
in place of the samples (random ones, and whole cases) show what a set of 64 can score at best.
Saves a grid of samples as PNG.
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

from core import data, images, jobs  # noqa: E402
from core.bundles import load_bundle  # noqa: E402
from core.models.prior import num_levels  # noqa: E402

BRAIN_THRESHOLD = 0.1
AREA_BINS = np.linspace(0, 1, 21)
COARSE_BINS = np.linspace(0, 1, 11)
INTENSITY_BINS = np.linspace(BRAIN_THRESHOLD, 1, 19)


def intersection(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    ha = np.histogram(a, bins)[0].astype(float)
    hb = np.histogram(b, bins)[0].astype(float)
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def describe(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice brain area fraction, and all in-brain intensities."""
    brain = images > BRAIN_THRESHOLD
    return brain.mean(axis=(1, 2)), images[brain]


def scores(images: np.ndarray, real_area: np.ndarray, real_intensity: np.ndarray) -> tuple[float, float, float]:
    """Brain-area intersection on 20 and 10 bins, in-brain intensity intersection on 18 bins."""
    area, intensity = describe(images)
    return (intersection(area, real_area, AREA_BINS), intersection(area, real_area, COARSE_BINS),
            intersection(intensity, real_intensity, INTENSITY_BINS))


def line(label: str, values: list[tuple[float, float, float]]) -> str:
    table = np.array(values)
    mean, low = table.mean(axis=0), table.min(axis=0)
    return (f"{label}: brain area {mean[0]:.3f} (20 bins; lowest {low[0]:.3f}), {mean[1]:.3f} (10 bins); "
            f"in-brain intensity {mean[2]:.3f} (lowest {low[2]:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "demo"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--n", type=int, default=64, help="samples per set (the issue's 64)")
    parser.add_argument("--sets", type=int, default=4, help="independent sets of --n samples")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--grid-out", default=str(REPO / "docs" / "samples_grid.png"))
    args = parser.parse_args()
    bundle = load_bundle(args.checkpoint)
    root = data.find_data_root(args.data)
    real = data.load_images(data.scan_split(root, "validate").paths, bundle.image_size)[..., 0]
    real_area, real_intensity = describe(real)
    print(f"checkpoint: {bundle.path}; {args.sets} sets of {args.n} samples at temperature "
          f"{args.temperature} vs {len(real)} validation slices")

    sample_sets, sample_levels, started = [], [], time.perf_counter()
    for index in range(args.sets):  # set k: seeds k*n/16 ..., 16 brains a seed
        seeds = range(index * args.n // 16, (index + 1) * args.n // 16)
        batches = [jobs.generate_brains(bundle.vqvae, bundle.prior, 16, seed=seed, temperature=args.temperature)
                   for seed in seeds]
        sample_sets.append(np.concatenate([b.images for b in batches]))
        if batches[0].levels is not None:
            sample_levels.append(np.concatenate([b.levels for b in batches]))
    seconds = time.perf_counter() - started
    first_area = describe(sample_sets[0])[0]
    print(f"sampled {args.sets * args.n} in {seconds:.1f} s")
    print(f"brain area per slice (fraction > {BRAIN_THRESHOLD}): first set mean {first_area.mean():.3f} "
          f"sd {first_area.std():.3f}; validation mean {real_area.mean():.3f} sd {real_area.std():.3f}")
    real_levels = data.slice_levels(data.scan_split(root, "validate").paths)
    if sample_levels and real_levels is not None:  # does each level come out the right size?
        all_area, all_levels = describe(np.concatenate(sample_sets))[0], np.concatenate(sample_levels)
        bands = np.array_split(np.arange(num_levels(bundle.prior)), 8)
        print("brain area by slice level, samples / validation: " + "; ".join(
            f"{band[0]}-{band[-1]}: {all_area[np.isin(all_levels, band)].mean():.3f} / "
            f"{real_area[np.isin(real_levels, band)].mean():.3f}" for band in bands))
    first = scores(sample_sets[0], real_area, real_intensity)
    print(f"histogram intersection, first set of {args.n} samples (seeds 0..{args.n // 16 - 1}): brain area "
          f"{first[0]:.3f} (20 bins), {first[1]:.3f} (10 bins); in-brain intensity {first[2]:.3f} (18 bins)")
    print(line(f"samples, mean of {args.sets} sets of {args.n}",
               [scores(images, real_area, real_intensity) for images in sample_sets]))

    # What real data scores on the same test: the ceiling of a set of n slices, by how they are picked.
    train_paths = data.scan_split(root, "train").paths
    cases = sorted({p.name.split("_slice_")[0] for p in train_paths})
    per_case = len(train_paths) // len(cases)
    rng = np.random.default_rng(0)
    random_sets, case_sets = [], []
    for _ in range(args.sets):
        picks = rng.choice(len(train_paths), args.n, replace=False)
        random_sets.append(data.load_images([train_paths[i] for i in picks], bundle.image_size)[..., 0])
        chosen = set(rng.choice(cases, max(1, args.n // per_case), replace=False))
        whole = [p for p in train_paths if p.name.split("_slice_")[0] in chosen][:args.n]
        case_sets.append(data.load_images(whole, bundle.image_size)[..., 0])
    train_area = np.concatenate([describe(data.load_images(train_paths[i:i + 256], bundle.image_size)[..., 0])[0]
                                 for i in range(0, len(train_paths), 256)])
    print(f"brain area of all {len(train_paths)} train slices (what the prior learns): mean {train_area.mean():.3f} "
          f"sd {train_area.std():.3f}")
    print(line(f"real train slices, {args.sets} sets of {args.n} picked at random",
               [scores(images, real_area, real_intensity) for images in random_sets]))
    print(line(f"real train slices, {args.sets} sets of {args.n // per_case} whole cases",
               [scores(images, real_area, real_intensity) for images in case_sets]))
    # Pooled: the sets together, where a histogram of 20 bins has enough slices to resolve 0.9.
    pooled = [(f"{len(sample_sets) * args.n} samples", sample_sets),
              (f"{len(random_sets) * args.n} random real train slices", random_sets),
              (f"{sum(map(len, case_sets))} real train slices of whole cases", case_sets)]
    print("pooled vs validation: " + "; ".join(
        f"{label}: brain area {area:.3f} (20 bins), {coarse:.3f} (10 bins), intensity {intensity:.3f}"
        for label, sets in pooled
        for area, coarse, intensity in [scores(np.concatenate(sets), real_area, real_intensity)]))
    Path(args.grid_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.grid_out).write_bytes(images.png_bytes(images.mosaic(sample_sets[0][:16], columns=8)))
    print(f"grid of 16 samples: {args.grid_out}")


if __name__ == "__main__":
    main()
