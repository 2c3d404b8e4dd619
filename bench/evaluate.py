"""Benchmark: how fast core.evaluate scores reconstructions and judges samples, and the demo's sample-quality figures.

    python bench/evaluate.py --checkpoint checkpoints/demo --data ../shared/oasis_proxy

1. In process: scoring 320 train slices of 256x256 (reconstruct + SSIM/PSNR/MSE), slices/s after
   a warm-up batch, and the 256 validate slices training's validation scores each epoch.
2. The whole `python -m core.evaluate --split train --limit 320` command, start-up included.
3. The whole `python -m core.evaluate samples --n 256` command, and its figures.
4. `--epochs N` (default 3) of the benchmark recipe (`python -m core.train vqvae --crop-size 128
   --batch-size 16 --lr 2e-3`, its default validation slices): each epoch's time and the share of it
   validation took, read from metrics.jsonl (the epoch record's time minus the epoch's last step's).
   The first epoch also traces the scoring pass; later epochs show the steady share.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import data, scoring  # noqa: E402
from core.bundles import load_bundle  # noqa: E402
from core.training.vqvae_task import validation_count  # noqa: E402


def timed_command(*args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "core.evaluate", *args], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return time.perf_counter() - started, json.loads(result.stdout.strip().splitlines()[-1])


RECIPE = ["--crop-size", "128", "--batch-size", "16", "--lr", "2e-3", "--log-every", "20"]


def validation_share(data_path: str, epochs: int) -> None:
    """Train the recipe for `epochs` and print each epoch's time and validation's share of it."""
    import tempfile

    run_dir = Path(tempfile.mkdtemp(prefix="bench-validation-")) / "run"
    subprocess.run([sys.executable, "-m", "core.train", "vqvae", "--data", data_path, "--run-dir", str(run_dir),
                    "--epochs", str(epochs), *RECIPE], cwd=REPO, check=True, capture_output=True)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    count = json.loads((run_dir / "config.json").read_text())["data_settings"]["val_limit"]
    count = count or validation_count(len(data.find_slices(data_path, "train")))
    last_step, epoch_start, shares = None, 0.0, []
    for record in records:
        if record["kind"] == "step":
            last_step = record
            continue
        epoch_s = record["elapsed_s"] - epoch_start
        validation_s = record["elapsed_s"] - last_step["elapsed_s"]
        shares.append(validation_s / epoch_s)
        print(f"recipe epoch {record['epoch']}: {epoch_s:.1f} s, of which validation {validation_s:.1f} s "
              f"({validation_s / epoch_s:.1%}; val_ssim {record['val_ssim']:.4f})")
        epoch_start = record["elapsed_s"]
    print(f"validation slices per epoch: {count}; share after the first "
          f"epoch: {', '.join(f'{s:.1%}' for s in shares[1:])}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "demo"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the recipe timed for validation's share")
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
    default = data.evenly_spaced(list(validate), validation_count(len(data.find_slices(args.data, "train"))))
    for images in (validate, np.stack(default)):
        started = time.perf_counter()
        scoring.evaluate_images(vqvae, images)
        print(f"training's validation ({len(images)} validate slices, evaluate_images): "
              f"{time.perf_counter() - started:.2f} s")
    seconds, result = timed_command("--checkpoint", args.checkpoint, "--data", args.data, "--split", "train",
                                    "--limit", "320")
    print(f"python -m core.evaluate --split train --limit 320: {seconds:.2f} s whole command; "
          f"ssim {result['ssim']:.4f}, psnr {result['psnr']:.2f}")
    validation_share(args.data, args.epochs)
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
