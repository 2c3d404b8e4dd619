"""Benchmark: fast cached PixelCNN sampling versus the naive full-pass-per-position reference."""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-embeddings", type=int, default=256, help="K, codebook size")
    parser.add_argument("--grid", type=int, default=64, help="code grid side (64 -> 256x256 images)")
    parser.add_argument("--num-layers", type=int, default=None, help="override PriorConfig.num_layers")
    parser.add_argument("--filters", type=int, default=None, help="override PriorConfig.filters")
    parser.add_argument("--n", type=int, default=16, help="samples per batch")
    parser.add_argument("--naive-rows", type=int, default=2, help="full rows timed with the naive sampler")
    parser.add_argument("--repeats", type=int, default=3, help="timed fast runs (median reported)")
    parser.add_argument("--checkpoint", default=None, help="path to a trained prior.keras")
    parser.add_argument("--bundle", default="checkpoints/demo",
                        help="checkpoint bundle (prior + VQ-VAE): also times decoding, end to end; "
                             "'none' for a randomly initialised prior of --grid/--num-embeddings")
    parser.add_argument("--xla", choices=("auto", "on", "off"), default="auto",
                        help="fast path compiled with XLA (auto: only on GPU)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from core.models import sampler
    from core.models.prior import PriorConfig, build_prior, num_levels

    sampler.USE_XLA = {"auto": None, "on": True, "off": False}[args.xla]
    vqvae = None
    if args.bundle != "none" and not args.checkpoint:
        from core.bundles import load_bundle
        bundle = load_bundle(args.bundle)
        prior, vqvae, source = bundle.prior, bundle.vqvae, f"bundle {bundle.path}"
    elif args.checkpoint:
        prior = keras.models.load_model(args.checkpoint)
        source = args.checkpoint
    else:
        keras.utils.set_random_seed(args.seed)
        overrides = {k: v for k, v in (("num_layers", args.num_layers), ("filters", args.filters)) if v is not None}
        config = PriorConfig(num_embeddings=args.num_embeddings, grid_height=args.grid, grid_width=args.grid,
                             **overrides)
        prior = build_prior(config)
        source = f"random init, {config}"
    _, height, width = prior.inputs[0].shape
    positions = height * width
    print(f"prior: {source}; {prior.count_params():,} params")
    print(f"device: {tf.config.list_logical_devices()[-1].device_type}, xla={args.xla}, "
          f"cpu threads={os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other processes share these cores)")

    start = time.perf_counter()
    sampler.sample_codes(prior, args.n, seed=args.seed, method="fast")
    print(f"fast warm-up (includes tracing/compilation), n={args.n} {height}x{width}: "
          f"{time.perf_counter() - start:.2f} s")

    times, cpu_times = [], []
    for repeat in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        sampler.sample_codes(prior, args.n, seed=args.seed + 1 + repeat, method="fast")
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    fast = statistics.median(times)
    print(f"fast codes, n={args.n} {height}x{width}: median {fast:.2f} s wall of {args.repeats} "
          f"({', '.join(f'{t:.2f}' for t in times)}; process CPU median {statistics.median(cpu_times):.2f} s); "
          f"{fast / positions * 1e3:.3f} ms per position")

    if vqvae is not None:
        from core.jobs import generate_brains
        generate_brains(vqvae, prior, args.n, seed=args.seed)  # warm the decoder
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            images = generate_brains(vqvae, prior, args.n, seed=args.seed + 1 + repeat).images
            times.append(time.perf_counter() - start)
        print(f"end to end, {args.n} new {images.shape[1]}x{images.shape[2]} brains (codes sampled and "
              f"decoded): median {statistics.median(times):.2f} s of {args.repeats} "
              f"({', '.join(f'{t:.2f}' for t in times)})")

    if num_levels(prior):
        # Completion: the level is drawn from p(level | kept rows), one teacher-forced pass per level.
        keep_rows = height // 2
        brain = np.repeat(sampler.sample_codes(prior, 1, seed=args.seed), 4, axis=0)
        keep_half = sampler.keep_rows_mask(height, width, keep_rows)
        sampler.draw_levels(prior, 4, seed=args.seed, init_codes=brain, keep_mask=keep_half)  # warm-up
        start = time.perf_counter()
        levels = sampler.draw_levels(prior, 4, seed=args.seed, init_codes=brain, keep_mask=keep_half)
        posterior_s = time.perf_counter() - start
        start = time.perf_counter()
        sampler.sample_codes(prior, 4, seed=args.seed, init_codes=brain, keep_mask=keep_half, levels=levels)
        print(f"completion, 4 of one brain keeping {keep_rows} of {height} rows: level posterior over "
              f"{num_levels(prior)} levels {posterior_s:.2f} s, then sampling {time.perf_counter() - start:.2f} s")

    # Naive: the same sampler on the first rows only (the rest kept), then scaled to the grid.
    rows = min(args.naive_rows, height)
    keep = np.ones((height, width), bool)
    keep[:rows] = False
    init = np.zeros((args.n, height, width), np.int32)
    warm = np.ones((height, width), bool)
    warm[0, 0] = False  # warm-up: one position, traces the forward pass
    sampler.sample_codes(prior, args.n, method="naive", init_codes=init, keep_mask=warm)
    start = time.perf_counter()
    sampler.sample_codes(prior, args.n, seed=args.seed, method="naive", init_codes=init, keep_mask=keep)
    naive_rows_s = time.perf_counter() - start
    naive = naive_rows_s / (rows * width) * positions
    print(f"naive codes, n={args.n}: {naive_rows_s:.2f} s for {rows} rows ({rows * width} positions), "
          f"extrapolated to {height}x{width}: {naive:.0f} s")
    print(f"speed-up fast vs naive (extrapolated from {rows} naive rows): {naive / fast:.0f}x")


if __name__ == "__main__":
    main()
