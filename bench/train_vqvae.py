"""Benchmark: train the VQ-VAE with fixed settings and print time-to-quality, throughput, memory, codebook health.

    python bench/train_vqvae.py --data ../shared/oasis_proxy [--epochs 20] [--run-dir runs/bench-vqvae]

Runs `python -m core.train vqvae` as a child process (exactly what a user runs), then reads its
metrics.jsonl. Throughput is also measured at full 256x256 (no crops) in a second short run.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN_FLAGS = ["--crop-size", "128", "--batch-size", "16", "--lr", "2e-3", "--log-every", "20"]


def train(run_dir: Path, data: str, extra: list[str]) -> tuple[float, int]:
    """Run one training child; returns (wall seconds, peak RSS of all children so far in KiB)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core.train", "vqvae", "--data", data,
                    "--run-dir", str(run_dir), *extra], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def read(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def throughput(steps: list[dict], batch: int) -> float:
    """Images per second between logged steps of the same epoch (validation time excluded)."""
    images, seconds = 0, 0.0
    for previous, current in zip(steps, steps[1:]):
        if previous["epoch"] == current["epoch"]:
            images += (current["step"] - previous["step"]) * batch
            seconds += current["elapsed_s"] - previous["elapsed_s"]
    return images / seconds if seconds else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--run-dir", default=None, help="keep the run here (default: a temp dir)")
    parser.add_argument("--full-size-steps", type=int, default=40)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-vqvae-"))
    run_dir = Path(args.run_dir) if args.run_dir else scratch / "run"

    wall, peak_kib = train(run_dir, args.data, ["--epochs", str(args.epochs), *TRAIN_FLAGS])
    epochs, steps = read(run_dir, "epoch"), read(run_dir, "step")
    print(f"command: python -m core.train vqvae --data {args.data} --epochs {args.epochs} "
          + " ".join(TRAIN_FLAGS))
    print(f"wall time, whole run: {wall:.0f} s ({args.epochs} epochs)")
    for threshold in (0.90, 0.95, 0.97):
        first = next((e for e in epochs if e["val_ssim"] >= threshold), None)
        when = f"{first['elapsed_s']:.0f} s (epoch {first['epoch']})" if first else "not reached"
        print(f"time to validation SSIM >= {threshold:.2f}: {when}")
    best = max(epochs, key=lambda e: e["val_ssim"])
    last = epochs[-1]
    print(f"best validation SSIM: {best['val_ssim']:.4f} (epoch {best['epoch']}), "
          f"PSNR {best['val_psnr']:.2f} dB")
    print(f"final validation: SSIM {last['val_ssim']:.4f}, codes used {last['val_codes_used']}"
          f"/256 ({last['val_codes_used'] / 256:.1%}), perplexity {last['val_perplexity']:.1f}")
    print(f"final train batch: codes used {steps[-1]['codes_used']:.0f}, "
          f"perplexity {steps[-1]['perplexity']:.1f}")
    print(f"training throughput, 128x128 crops: {throughput(steps, 16):.1f} images/s")
    print(f"peak RSS of the trainer: {peak_kib / 1024:.0f} MiB")

    full = scratch / "full-size"
    train(full, args.data, ["--epochs", "1", "--steps-per-epoch", str(args.full_size_steps),
                            "--batch-size", "16", "--log-every", "5", "--val-limit", "16"])
    print(f"training throughput, 256x256 slices: {throughput(read(full, 'step')[1:], 16):.1f} images/s "
          f"(steps 5-{args.full_size_steps}, first 5 excluded as warm-up)")


if __name__ == "__main__":
    main()
