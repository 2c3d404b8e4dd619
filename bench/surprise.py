"""Benchmark: surprise maps on checkpoints/demo — seconds per slice, and how well bits find synthetic lesions.

    python bench/surprise.py [--checkpoint checkpoints/demo] [--data ../shared/oasis_proxy] [--n 128] [--seeds 0 1 2 3 4]

Speed: one 256x256 slice at a time (encode + one teacher-forced prior pass), warm, median of
repeats (target <= 0.3 s). Detection, for each lesion seed: `--n` evenly spaced validate slices,
each copied with one synthetic lesion (a bright or a dark disc of radius 4-12 px, soft-edged,
blended inside the brain); AUROC of slice bits and of the hot spot (core.surprise: bits above
expected, largest 4x4 mean), lesion copies against the same slices without (target >= 0.9), on
all lesions, on visible ones (the disc differs from the tissue around it by >= VISIBLE) and by
contrast quartile; the paired rate (lesion copy scores more bits than its own clean slice); how
often the map's top decile of codes covers the lesion: some code whose 4x4 patch overlaps the disc
is among the 10% most surprising codes of the slice (target >= 80%); and how often the hot spot's
box lands on the lesion. Each under the slice prior alone and, when the checkpoint has one, under
the whole-brain prior given the (clean) slice below from the validate split.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def add_lesion(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image with one soft disc blended in, the disc's mask); the centre lies well inside the brain."""
    from scipy import ndimage

    brain = ndimage.binary_fill_holes(image > 0.08)
    radius = float(rng.uniform(4, 12))
    inside = np.argwhere(ndimage.distance_transform_edt(brain) > radius + 3)
    if not len(inside):
        inside = np.argwhere(brain)
    cy, cx = inside[rng.integers(len(inside))]
    y, x = np.mgrid[:image.shape[0], :image.shape[1]]
    distance = np.hypot(y - cy, x - cx)
    alpha = np.clip(radius + 1.0 - distance, 0.0, 1.0)  # one-pixel soft edge
    value = rng.uniform(0.85, 1.0) if rng.uniform() < 0.5 else rng.uniform(0.0, 0.12)
    return (image * (1 - alpha) + value * alpha).astype(np.float32), distance <= radius


VISIBLE = 0.2  # |mean of the disc - mean of a 4 px ring around it|: below it a disc barely differs from its tissue


def lesion_contrast(clean: np.ndarray, lesioned: np.ndarray, mask: np.ndarray) -> float:
    """Mean intensity inside the disc after blending minus the clean tissue's in a 4 px ring around it."""
    from scipy import ndimage

    ring = ndimage.binary_dilation(mask, iterations=4) & ~mask
    return float(lesioned[mask].mean() - clean[ring].mean())


def box_overlaps(corner, side: int, mask: np.ndarray, factor: int) -> bool:
    """Whether the side x side block of codes at `corner` (row, column) covers some lesion pixel."""
    row, column = (int(c) * factor for c in corner)
    return bool(mask[row:row + side * factor, column:column + side * factor].any())


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(positive > negative) over all pairs, ties counted half (Mann-Whitney U / (n1 n2))."""
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + 0.5 * ties)


def covered(bits: np.ndarray, mask: np.ndarray, factor: int) -> bool:
    """Some code whose factor x factor patch overlaps the lesion is in the slice's top decile of bits."""
    grid = bits.shape[0]
    patches = mask.reshape(grid, factor, grid, factor).any(axis=(1, 3))
    top = bits >= np.quantile(bits, 0.9)
    return bool((top & patches).any())


def coverage_by_chance(mask: np.ndarray, factor: int, grid: int) -> float:
    """P(some lesion code is in the top decile) were the decile drawn at random: 1 - C(n-m, k) / C(n, k)."""
    m = int(mask.reshape(grid, factor, grid, factor).any(axis=(1, 3)).sum())
    n, k = grid * grid, int(np.ceil(0.1 * grid * grid))
    miss = np.prod([(n - m - i) / (n - i) for i in range(k)]) if n - m >= k else 0.0
    return float(1.0 - miss)


def share_in_top_decile(bits: np.ndarray, mask: np.ndarray, factor: int) -> float:
    """The fraction of the lesion's codes that are in the slice's top decile of bits."""
    grid = bits.shape[0]
    patches = mask.reshape(grid, factor, grid, factor).any(axis=(1, 3))
    return float((bits[patches] >= np.quantile(bits, 0.9)).mean())


def detection(scored_clean, scored_lesion, clean, lesioned, masks, factor: int, label: str) -> float:
    """Print the detection figures of one prior on one lesion set; returns the hot spot's AUROC."""
    before, after = scored_clean, scored_lesion
    hits = [covered(bits, mask, factor) for bits, mask in zip(after.bits, masks)]
    print(f"  [{label}] AUROC of slice bits, lesion vs clean (pooled, {len(masks)} + {len(masks)}): "
          f"{auroc(after.total_bits, before.total_bits):.3f}; paired: lesion copy has more bits than its own "
          f"clean slice in {np.mean(after.total_bits > before.total_bits):.1%}, median extra bits "
          f"{np.median(after.total_bits - before.total_bits):.1f}")
    spot = auroc(after.hot_spot_bits, before.hot_spot_bits)
    print(f"  [{label}] AUROC of the hot spot (largest {after.hot_spot_side}x{after.hot_spot_side}-code mean of bits "
          f"above expected, pooled): {spot:.3f}; of max code bits: {auroc(after.max_bits, before.max_bits):.3f}")
    contrast = np.array([lesion_contrast(clean_image, lesion_image, mask)
                         for clean_image, lesion_image, mask in zip(clean, lesioned, masks)])
    visible = np.abs(contrast) >= VISIBLE
    print(f"  [{label}] visible lesions (|contrast| >= {VISIBLE}): {visible.sum()} of {len(visible)}; hot spot "
          f"AUROC on them {auroc(after.hot_spot_bits[visible], before.hot_spot_bits[visible]):.3f}")
    quartiles = []
    for band in np.array_split(np.argsort(np.abs(contrast)), 4):
        quartiles.append(f"{np.abs(contrast[band]).min():.2f}-{np.abs(contrast[band]).max():.2f}: "
                         f"{auroc(after.hot_spot_bits[band], before.hot_spot_bits):.3f}")
    print(f"  [{label}] hot spot AUROC by |contrast| quartile (against all clean slices): " + ", ".join(quartiles))
    on_lesion = [box_overlaps(corner, after.hot_spot_side, mask, factor)
                 for corner, mask in zip(after.hot_spot_corner, masks)]
    grid = before.bits.shape[1]
    print(f"  [{label}] hot spot's box on the lesion: {np.mean(on_lesion):.1%} ({np.mean(np.array(on_lesion)[visible]):.1%} "
          f"of visible); top decile of bits covers the lesion: {np.mean(hits):.1%} (a random decile: "
          f"{np.mean([coverage_by_chance(m, factor, grid) for m in masks]):.1%}); share of the lesion's codes in "
          f"it: median {np.median([share_in_top_decile(b, m, factor) for b, m in zip(after.bits, masks)]):.1%}")
    return spot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "checkpoints" / "demo"))
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="lesion sets")
    args = parser.parse_args()

    from core import data, surprise
    from core.bundles import load_bundle

    bundle = load_bundle(args.checkpoint)
    vqvae, prior, whole_brain = bundle.vqvae, bundle.prior, bundle.volume_prior
    size = vqvae.config.image_size
    every = data.find_slices(args.data, "validate")
    images = data.load_images(every, size)[..., 0]
    below_index = data.slice_below(every)
    # A lesion needs brain to sit in: slices with almost none (the lowest levels) are left out.
    has_brain = [i for i, image in enumerate(images) if (image > 0.08).sum() > 2000]
    chosen = data.evenly_spaced(has_brain, args.n)
    names, clean = [every[i].name for i in chosen], images[chosen]
    below = [images[below_index[i]] if below_index[i] >= 0 else None for i in chosen]  # clean, from the split
    print(f"{len(chosen)} of {len(every)} validate slices ({len(has_brain)} with > 2000 brain pixels)")

    scorers = {"slice prior": lambda x, idx: surprise.image_surprise(vqvae, prior, x, [names[i] for i in idx])}
    if whole_brain is not None:
        scorers["whole-brain prior, given the slice below"] = lambda x, idx: surprise.image_surprise(
            vqvae, whole_brain, x, [names[i] for i in idx], [below[i] for i in idx])
    for label, score in scorers.items():
        score(clean[:1], [0])  # start-up: tracing, first calls
        times = []
        for i in range(args.repeats):
            started = time.perf_counter()
            score(clean[i % len(clean)][None], [i % len(clean)])
            times.append(time.perf_counter() - started)
        print(f"[{label}] one slice, level from its name: median {statistics.median(times):.3f} s "
              f"(min {min(times):.3f}, max {max(times):.3f}, {args.repeats} repeats)")
    started = time.perf_counter()
    unnamed = surprise.image_surprise(vqvae, prior, clean[:1], ["upload.png"])
    print(f"[slice prior] one slice without a level in its name (levels marginalised: {unnamed.levels[0] is None}): "
          f"{time.perf_counter() - started:.3f} s")

    everything = list(range(len(clean)))
    spots = {label: [] for label in scorers}
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        lesioned, masks = zip(*(add_lesion(image, rng) for image in clean))
        lesioned = np.stack(lesioned)
        print(f"lesion seed {seed}:")
        for label, score in scorers.items():
            started = time.perf_counter()
            before, after = score(clean, everything), score(lesioned, everything)
            seconds = time.perf_counter() - started
            factor = size // before.bits.shape[1]
            spots[label].append(detection(before, after, clean, lesioned, masks, factor, label))
            print(f"  [{label}] {2 * len(names)} slices scored in {seconds:.1f} s")
    for label, values in spots.items():
        print(f"[{label}] hot spot AUROC over seeds {args.seeds}: " + ", ".join(f"{v:.3f}" for v in values)
              + f"; mean {np.mean(values):.3f}, min {np.min(values):.3f}")


if __name__ == "__main__":
    main()
