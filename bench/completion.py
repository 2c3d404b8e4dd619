"""Benchmark: whole brains completed from one real slice — how the generated slices join it, the stack's coherence and anatomy, realism per slice, speed.

    python bench/completion.py [--checkpoint checkpoints/demo] [--data ../shared/oasis_proxy]
                               [--levels 8 16 24] [--seed 0] [--temperature 0.9] [--candidates 8]
                               [--skip-speed]

For each level z of --levels, every whole validation case (8 in the proxy) gets one brain completed
from its real slice z (`core.jobs.complete_volumes`, the dashboard's guidance). Prints one JSON object:
- join_ssim: SSIM of the generated slice z - 1 (top of the stack chosen below) and z + 1 (drawn up from
  it) with the real slice z, beside the same figure between the case's own real slices, and between
  slices z -/+ 1 and z of whole brains generated from the base up (as many, same seed).
- bits_per_code_of_the_real_slice: under the whole-brain prior, given the slice chosen below it, and
  given its own case's real slice below (what a perfect join would cost).
- adjacent_ssim: mean SSIM of neighbouring slices over the whole completed volumes, beside real and
  generated whole brains; below / above: the neighbours under and over the real slice only.
- area_profile_r: Pearson r of the completed volumes' brain area per level against the validation
  mean profile (the whole-brain issue's anatomy target: >= 0.95).
- fd per slice: the completed volumes' generated slices and as many slices of generated whole brains,
  each against the validate split on the reference network's features.
- seconds (unless --skip-speed): one brain completed from level 16 and one whole brain, the same sitting,
  after a warm-up each, median of 2.
--candidates K draws K stacks below the real slice per brain and keeps the one it fits best (default:
the dashboard's, core.jobs.COMPLETION_CANDIDATES).
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
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 16, 24])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--candidates", type=int, default=None,
                        help="stacks drawn below the real slice per brain (default: core.jobs.COMPLETION_CANDIDATES)")
    parser.add_argument("--skip-speed", action="store_true")
    return parser.parse_args(argv)


def pair_ssim(first, second) -> np.ndarray:
    from core import metrics

    return metrics.ssim(np.asarray(first, np.float32)[..., None], np.asarray(second, np.float32)[..., None])


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from core import data, jobs, sample_quality, surprise, volumes
    from core.bundles import load_bundle
    from core.models.prior import num_levels

    bundle = load_bundle(args.checkpoint)
    volume_prior = bundle.require_volume_prior()
    guided = dict(slice_prior=bundle.prior, guidance=jobs.default_guidance(bundle.prior),
                  temperature=args.temperature)
    candidates = jobs.COMPLETION_CANDIDATES if args.candidates is None else args.candidates
    size, depth = bundle.image_size, num_levels(volume_prior)
    grid = (bundle.vqvae.config.code_grid,) * 2
    root = data.find_data_root(args.data)
    stacks = [s for s in data.case_stacks(data.list_slices(root, "validate")) if len(s) == depth]
    real = np.stack([data.load_images(stack, size)[..., 0] for stack in stacks])  # (cases, Z, H, W)
    cases = len(real)

    started = time.perf_counter()
    whole = jobs.generate_volumes(bundle.vqvae, volume_prior, cases, seed=args.seed, **guided)
    whole_s = time.perf_counter() - started
    reference = sample_quality.load_reference()
    validate, _ = sample_quality.real_slices(args.data, "validate", 10**6, size)
    baseline, _ = sample_quality.real_slices(args.data, "train", cases * (depth - 1), size, seed=args.seed)
    whole_fd = sample_quality.compare_sets(reference, whole[:, 1:].reshape(-1, size, size), validate, baseline)
    report = {"checkpoint": str(bundle.path), "cases": cases, "temperature": args.temperature,
              "candidates": candidates,
              "guidance": guided["guidance"], "whole_brains_s": round(whole_s, 1),
              "adjacent_ssim": {"real": round(volumes.adjacent_ssim(real), 4),
                                "whole_brains": round(volumes.adjacent_ssim(whole), 4)},
              "fd_whole_brains": {"fd": whole_fd["fd"], "real_train_baseline": whole_fd["fd_real"],
                                  "slices": cases * (depth - 1)},
              "levels": {}}
    real_profile = volumes.area_profile(real)
    # The real slice on its own case's slice below: what a perfect stack below would cost it.
    codes = bundle.vqvae.encode_to_indices(real.reshape(-1, size, size)[..., None]).reshape(cases, depth, -1)
    real_bits = {level: surprise.code_bits(volume_prior, codes[:, level].reshape(cases, *grid), [level] * cases,
                                           codes[:, level - 1].reshape(cases, *grid)).mean(axis=(1, 2))
                 for level in args.levels if level}
    for level in args.levels:
        started = time.perf_counter()
        done = jobs.complete_volumes(bundle.vqvae, volume_prior, real[:, level], level, seed=args.seed,
                                     candidates=candidates, **guided)
        seconds, completed = time.perf_counter() - started, done.volumes
        generated = completed[:, [z for z in range(depth) if z != level]].reshape(-1, size, size)
        figures = sample_quality.compare_sets(reference, generated, validate, baseline)
        join, sides = {}, {}
        if level:
            join["below"] = {"completed": pair_ssim(completed[:, level - 1], real[:, level]),
                             "real": pair_ssim(real[:, level - 1], real[:, level]),
                             "whole_brains": pair_ssim(whole[:, level - 1], whole[:, level])}
            sides["below"] = volumes.adjacent_ssim(completed[:, :level + 1])
        if level < depth - 1:
            join["above"] = {"completed": pair_ssim(completed[:, level + 1], real[:, level]),
                             "real": pair_ssim(real[:, level + 1], real[:, level]),
                             "whole_brains": pair_ssim(whole[:, level + 1], whole[:, level])}
            sides["above"] = volumes.adjacent_ssim(completed[:, level:])
        report["levels"][str(level)] = {
            "seconds": round(seconds, 1),
            "join_ssim": {side: {k: round(float(np.mean(v)), 4) for k, v in pair.items()} for side, pair in join.items()},
            "adjacent_ssim": {"completed": round(volumes.adjacent_ssim(completed), 4),
                              **{side: round(value, 4) for side, value in sides.items()}},
            "area_profile_r": round(float(np.corrcoef(volumes.area_profile(completed), real_profile)[0, 1]), 4),
            "bits_per_code_of_the_real_slice": {
                "on_the_slice_chosen_below": round(float(np.mean(done.below_bits)), 3) if level else None,
                "on_its_own_real_slice_below": round(float(np.mean(real_bits[level])), 3) if level else None},
            "fd": figures["fd"]}
        print(json.dumps({level: report["levels"][str(level)]}), file=sys.stderr, flush=True)

    if not args.skip_speed:
        runs = {"complete_from_16": lambda: jobs.complete_volumes(bundle.vqvae, volume_prior, real[:1, 16], 16,
                                                                  seed=1, candidates=candidates, **guided),
                "whole_brain": lambda: jobs.generate_volumes(bundle.vqvae, volume_prior, 1, seed=1, **guided)}
        for job in runs.values():
            job()  # traces the graphs for this batch size
        times = {name: [] for name in runs}
        for _ in range(2):
            for name, job in runs.items():
                started = time.perf_counter()
                job()
                times[name].append(time.perf_counter() - started)
        report["seconds"] = {name: round(float(np.median(t)), 2) for name, t in times.items()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
