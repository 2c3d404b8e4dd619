"""Benchmark: how fast core.evaluate scores reconstructions and judges samples, and the demo's sample-quality figures.

    python bench/evaluate.py --checkpoint checkpoints/demo --data ../shared/oasis_proxy

1. In process: scoring 320 train slices of 256x256 (reconstruct + SSIM/PSNR/MSE), slices/s after
   a warm-up batch, and the 256 validate slices training's validation scores each epoch.
2. The whole `python -m core.evaluate --split train --limit 320` command, start-up included.
3. The whole `python -m core.evaluate samples --n 256` command, and its figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import data, scoring  # noqa: E402
from core.bundles import load_bundle  # noqa: E402


def timed_command(*args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "core.evaluate", *args], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return time.perf_counter() - started, json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "demo"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    vqvae = load_bundle(args.checkpoint).vqvae
    train = data.load_images(data.find_slices(args.data, "train")[:320], vqvae.config.image_size)
    validate = data.load_images(data.find_slices(args.data, "validate"), vqvae.config.image_size)
    scoring.score_slices(vqvae, train[:32])  # warm-up: traces the compiled pass
    started = time.perf_counter()
    scoring.score_slices(vqvae, train)
    seconds = time.perf_counter() - started
    print(f"scoring {len(train)} slices of {train.shape[1]}x{train.shape[2]}: {seconds:.2f} s, "
          f"{len(train) / seconds:.0f} slices/s (after warm-up)")
    started = time.perf_counter()
    scoring.evaluate_images(vqvae, validate)
    print(f"training's validation ({len(validate)} validate slices, evaluate_images): "
          f"{time.perf_counter() - started:.2f} s")
    seconds, result = timed_command("--checkpoint", args.checkpoint, "--data", args.data, "--split", "train",
                                    "--limit", "320")
    print(f"python -m core.evaluate --split train --limit 320: {seconds:.2f} s whole command; "
          f"ssim {result['ssim']:.4f}, psnr {result['psnr']:.2f}")
    seconds, result = timed_command("samples", "--checkpoint", args.checkpoint, "--data", args.data,
                                    "--split", "validate", "--n", str(args.n), "--seed", "0")
    print(f"python -m core.evaluate samples --n {args.n}: {seconds:.2f} s whole command")
    print(json.dumps(result))
    # kid_real is an unbiased estimate of 0 and may be negative: compare kid with it, not as a ratio.
    print(f"fd / fd_real = {result['fd'] / result['fd_real']:.2f}; kid {result['kid']:.3f} vs kid_real "
          f"{result['kid_real']:.3f}; |ms_ssim_samples - ms_ssim_real| = "
          f"{abs(result['ms_ssim_samples'] - result['ms_ssim_real']):.4f}")


if __name__ == "__main__":
    main()
