"""Benchmark: whole-brain volumes — coherence, anatomy along the stack, realism per slice and speed, beside real volumes and independent slices.

    python bench/volumes.py [--checkpoint checkpoints/demo] [--data ../shared/oasis_proxy] [--n 4] [--seed 0]
                            [--temperature 1.0] [--guidance G] [--skip-speed]

Prints one JSON object:
- adjacent_ssim: mean SSIM between neighbouring axial slices, for the real validation volumes
  (every case of the split), for --n generated volumes, and for the "before": independent slices of
  the slice prior, one per level, stacked base to vertex. Target: generated within +-0.03 of real.
- area_profile_r: Pearson r of the generated (and the independent) brain-area-per-level profile
  against the validation mean profile. Target >= 0.95.
- fd / kid per slice: every generated slice against the validate split on the reference network's
  features, beside the slice prior's samples (the same number, levels as in training), real
  train slices of --n whole cases (does coming from few brains cost anything?) and random real
  train slices (the baseline). Target: volume slices no worse than the slice prior's. Also the
  drift check: slices generated one step from the real slice below (of those whole train cases),
  and fd by level band of the stacks' slices and of the one-step slices. Band by band beside them:
  the slice prior's slices at exactly the stacks' levels (the "before" set) and the real train slices.
- seconds: 16 single slices, one 32-slice volume, --n volumes batched, timed in this sitting after a
  warm-up each; the ratios are the targets' (<= 20x and <= 40x the 16-slice time).
Volumes are generated with --guidance (the slice prior's weight in each slice's logits; default the
dashboard's, core.jobs.VOLUME_GUIDANCE; 0 = the whole-brain prior alone); the one-step drift check
uses the whole-brain prior alone.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "checkpoints" / "demo"))
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--n", type=int, default=4, help="generated volumes (and batch of the batched timing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0, help="for the volumes and both kinds of slices")
    parser.add_argument("--guidance", type=float, default=None, help="default: core.jobs.VOLUME_GUIDANCE")
    parser.add_argument("--skip-speed", action="store_true")
    return parser.parse_args(argv)


def timed(job) -> tuple[float, object]:
    started = time.perf_counter()
    result = job()
    return time.perf_counter() - started, result


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from core import data, jobs, sample_quality, volumes
    from core.bundles import load_bundle
    from core.models.prior import num_levels

    bundle = load_bundle(args.checkpoint)
    volume_prior, slice_prior = bundle.require_volume_prior(), bundle.require_prior()
    args.guidance = jobs.VOLUME_GUIDANCE if args.guidance is None else args.guidance
    guided = dict(slice_prior=slice_prior, guidance=args.guidance)
    size, depth = bundle.image_size, num_levels(volume_prior)
    root = data.find_data_root(args.data)

    stacks = [s for s in data.case_stacks(data.list_slices(root, "validate")) if len(s) == depth]
    real = np.stack([data.load_images(stack, size)[..., 0] for stack in stacks])  # (cases, Z, H, W)

    generation_s, generated = timed(lambda: jobs.generate_volumes(bundle.vqvae, volume_prior, args.n, seed=args.seed,
                                                                  temperature=args.temperature, **guided))
    # The "before": the slice prior's independent slices, n per level, stacked by level.
    independent_levels = np.tile(np.arange(depth), args.n)
    independent = _slices_at(bundle, slice_prior, independent_levels, args.seed, args.temperature)
    independent = independent.reshape(args.n, depth, size, size)

    real_profile = volumes.area_profile(real)
    report = {
        "checkpoint": str(bundle.path), "n": args.n, "temperature": args.temperature, "guidance": args.guidance,
        "real_cases": len(real),
        "slices_per_volume": depth,
        "adjacent_ssim": {"real": round(volumes.adjacent_ssim(real), 4),
                          "generated": round(volumes.adjacent_ssim(generated), 4),
                          "independent_slices": round(volumes.adjacent_ssim(independent), 4)},
        "area_profile_r": {"generated": round(float(np.corrcoef(volumes.area_profile(generated), real_profile)[0, 1]), 4),
                           "independent_slices": round(float(np.corrcoef(volumes.area_profile(independent),
                                                                         real_profile)[0, 1]), 4)},
        "area_profile": {"real": np.round(real_profile, 3).tolist(),
                         "generated": np.round(volumes.area_profile(generated), 3).tolist()},
    }

    reference = sample_quality.load_reference()
    count = args.n * depth
    validate, validate_levels = sample_quality.real_slices(args.data, "validate", 10**6, size)
    baseline, baseline_levels = sample_quality.real_slices(args.data, "train", count, size, seed=args.seed)
    slice_samples = jobs.generate_brains(bundle.vqvae, slice_prior, count, seed=args.seed + 1,
                                         temperature=args.temperature)
    as_slices = generated.reshape(-1, size, size)
    stack_levels = np.tile(np.arange(depth), args.n)  # as_slices runs base to vertex, volume after volume
    volume_figures = sample_quality.compare_sets(reference, as_slices, validate, baseline, sample_levels=stack_levels,
                                                 real_levels=validate_levels, baseline_levels=baseline_levels)
    # The slice prior at exactly the stacks' levels (the "before" set): where along the stack the
    # stacks' slices lose realism against the slice prior's, band by band.
    at_levels_figures = sample_quality.compare_sets(reference, independent.reshape(-1, size, size), validate,
                                                    baseline, sample_levels=independent_levels,
                                                    real_levels=validate_levels)
    slice_figures = sample_quality.compare_sets(reference, slice_samples.images, validate, baseline)
    # Are slices of a few whole brains judged worse just for coming from few brains? Real train
    # slices of n whole cases against as many random train slices, on the same scale.
    train_stacks = [s for s in data.case_stacks(data.list_slices(root, "train")) if len(s) == depth]
    picks = np.random.default_rng(args.seed).choice(len(train_stacks), min(args.n, len(train_stacks)), replace=False)
    whole_cases = data.load_images([path for i in picks for path in train_stacks[i]], size)[..., 0]
    cases_figures = sample_quality.compare_sets(reference, whole_cases, validate, baseline)
    # Drift: each slice generated from the real slice below (of those train cases) instead of a
    # generated one. Far better figures here than for whole stacks mean errors compound up the stack.
    one_step = _one_step_slices(bundle, volume_prior, whole_cases, depth, args.seed, args.temperature)
    one_step_figures = sample_quality.compare_sets(reference, one_step, validate, baseline,
                                                   sample_levels=np.tile(np.arange(depth), len(one_step) // depth),
                                                   real_levels=validate_levels)
    report["realism_per_slice"] = {
        "slices": count,
        "volume_slices": {k: volume_figures[k] for k in ("fd", "kid", "area_samples")},
        "slice_prior_samples": {k: slice_figures[k] for k in ("fd", "kid", "area_samples")},
        "real_train_slices_of_whole_cases": {k: cases_figures[k] for k in ("fd", "kid")},
        "one_step_from_real_slices_below": {k: one_step_figures[k] for k in ("fd", "kid", "fd_by_level_band")},
        "volume_slices_fd_by_level_band": volume_figures["fd_by_level_band"],
        "slice_prior_at_stack_levels": {k: at_levels_figures[k] for k in ("fd", "kid", "fd_by_level_band")},
        "real_train_fd_by_level_band": volume_figures["fd_real_by_level_band"],
        "real_train_baseline": {"fd": volume_figures["fd_real"], "kid": volume_figures["kid_real"],
                                "area": volume_figures["area_real"]}}

    if not args.skip_speed:
        report["seconds"] = speed(jobs, bundle, slice_prior, volume_prior, args, guided)
    report["first_generation_s"] = round(generation_s, 2)
    print(json.dumps(report, indent=1))


def _slices_at(bundle, prior, levels, seed, temperature):
    from core.models.sampler import sample_codes

    codes = sample_codes(prior, len(levels), seed=seed, levels=levels, temperature=temperature)
    return np.clip(bundle.vqvae.decode_indices(codes), 0, 1)[..., 0]


def _one_step_slices(bundle, volume_prior, cases, depth, seed, temperature):
    """Slice z of each case generated at level z given the case's real slice z - 1 (the start token at 0)."""
    from core.models.prior import start_token
    from core.models.sampler import sample_codes

    size, grid = cases.shape[-1], bundle.vqvae.config.code_grid
    codes = bundle.vqvae.encode_to_indices(cases[..., None]).reshape(len(cases) // depth, depth, grid, grid)
    below = np.concatenate([np.full_like(codes[:, :1], start_token(volume_prior)), codes[:, :-1]], axis=1)
    generated = np.stack([sample_codes(volume_prior, len(codes), seed=seed, temperature=temperature, levels=z,
                                       previous=below[:, z], stream=z) for z in range(depth)], axis=1)
    decoded = bundle.vqvae.decode_indices(generated.reshape(-1, *generated.shape[2:]))
    return np.clip(decoded, 0, 1)[..., 0].reshape(-1, size, size)


def speed(jobs, bundle, slice_prior, volume_prior, args, guided) -> dict:
    """Median of 2 timed runs each, after one warm-up each, interleaved so that load hits all alike."""
    runs = {"slices_16": lambda: jobs.generate_brains(bundle.vqvae, slice_prior, 16, seed=1),
            "volume_1": lambda: jobs.generate_volumes(bundle.vqvae, volume_prior, 1, seed=1, **guided),
            f"volumes_{args.n}": lambda: jobs.generate_volumes(bundle.vqvae, volume_prior, args.n, seed=1, **guided)}
    if args.guidance:  # what the guide costs
        runs["volume_1_unguided"] = lambda: jobs.generate_volumes(bundle.vqvae, volume_prior, 1, seed=1, guidance=0.0)
    for job in runs.values():
        job()  # traces the graphs for this batch size
    times = {name: [] for name in runs}
    for _ in range(2):
        for name, job in runs.items():
            times[name].append(timed(job)[0])
    seconds = {name: round(float(np.median(t)), 2) for name, t in times.items()}
    seconds["volume_1_over_slices_16"] = round(seconds["volume_1"] / seconds["slices_16"], 2)
    seconds[f"volumes_{args.n}_over_slices_16"] = round(seconds[f"volumes_{args.n}"] / seconds["slices_16"], 2)
    return seconds


if __name__ == "__main__":
    main()
