"""Benchmark: the memory whole-brain generation takes, in its two parts (sampling the codes, decoding them).

    python bench/volume_memory.py [--checkpoint checkpoints/demo] [--n 8] [--seed 1]

Prints one JSON object: the process's peak resident memory (ru_maxrss, MB) after loading the bundle
and sampling one two-slice stack of --n (which builds everything at that batch size); after
sampling --n whole stacks' codes as the dashboard does (guided, core.jobs.VOLUME_GUIDANCE); and
after decoding them (core.jobs.generate_volumes is those two calls). Each rise is what that part
takes at its peak beyond what came before: the slices in flight with their noise and state, then
the decoder's activations. Seconds of each part too, one run (times here move with the machine's
load; bench/volumes.py times speed).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "checkpoints" / "demo"))
    parser.add_argument("--n", type=int, default=8, help="stacks generated side by side")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from core import jobs
    from core.bundles import load_bundle
    from core.models import sampler

    bundle = load_bundle(args.checkpoint)
    volume_prior, slice_prior = bundle.require_volume_prior(), bundle.require_prior()
    guide = (slice_prior, jobs.VOLUME_GUIDANCE)
    sampler.sample_volumes(volume_prior, args.n, num_slices=2, seed=args.seed, guide=guide)
    warm = peak_rss_mb()
    started = time.perf_counter()
    stacks = sampler.sample_volumes(volume_prior, args.n, seed=args.seed, temperature=jobs.VOLUME_TEMPERATURE,
                                    guide=guide)
    sampled, sampling_s = peak_rss_mb(), time.perf_counter() - started
    started = time.perf_counter()
    bundle.vqvae.decode_indices(stacks.reshape(-1, *stacks.shape[2:]))
    decoded, decoding_s = peak_rss_mb(), time.perf_counter() - started
    print(json.dumps({"n": args.n, "peak_rss_mb": {"warm": round(warm), "sampled": round(sampled),
                                                   "decoded": round(decoded)},
                      "rise_mb": {"sampling": round(sampled - warm), "decoding": round(decoded - sampled)},
                      "seconds": {"sampling": round(sampling_s, 1), "decoding": round(decoding_s, 1)}}))

if __name__ == "__main__":
    main()
