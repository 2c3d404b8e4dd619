"""Benchmark: one training process against --workers N on this machine: throughput of the job and per worker, and the losses side by side.

    python bench/multiworker.py [--data ../shared/oasis_proxy] [--workers 2] [--steps 40]

Trains the VQ-VAE benchmark recipe (128x128 crops, batch 16: the global batch in both runs) for
--steps steps, once as one process and once as --workers processes on localhost ports
(`python -m core.train --workers N`), and prints one JSON object: training slices/s of each job
(from the step lines' elapsed time between the first logged step and the last, so start-up and
validation are left out), slices/s per worker, and the largest relative difference between the
two runs' step losses. On a 2-core CPU the workers share the same cores, so the pair cannot be
faster: the figure is the price of the collectives (an all-reduce of every gradient each step).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    return parser.parse_args(argv)


def train(run_dir: Path, args, workers: int) -> None:
    command = [sys.executable, "-m", "core.train", "vqvae", "--data", args.data, "--run-dir", str(run_dir),
               "--crop-size", "128", "--batch-size", str(args.batch_size), "--epochs", "1",
               "--steps-per-epoch", str(args.steps), "--log-every", "5", "--val-limit", "8"]
    if workers > 1:
        command += ["--workers", str(workers)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode != 0:
        raise SystemExit(f"error: training with {workers} worker(s) failed:\n{result.stderr[-2000:]}")


def throughput(run_dir: Path, batch_size: int) -> tuple[float, dict[int, float]]:
    from core import runs

    steps = [r for r in runs.read_metrics(run_dir)[0] if r["kind"] == "step"]
    first, last = steps[0], steps[-1]
    rate = (last["step"] - first["step"]) * batch_size / (last["elapsed_s"] - first["elapsed_s"])
    return rate, {r["step"]: r["loss"] for r in steps}


def main(argv=None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        one, many = Path(folder) / "one", Path(folder) / "many"
        train(one, args, 1)
        train(many, args, args.workers)
        rate_one, losses_one = throughput(one, args.batch_size)
        rate_many, losses_many = throughput(many, args.batch_size)
    difference = max(abs(losses_many[s] - losses_one[s]) / abs(losses_one[s]) for s in losses_one)
    print(json.dumps({
        "steps": args.steps, "global_batch": args.batch_size, "workers": args.workers, "cpu_cores": os.cpu_count(),
        "one_process_slices_per_s": round(rate_one, 1),
        "job_slices_per_s": round(rate_many, 1),
        "per_worker_slices_per_s": round(rate_many / args.workers, 1),
        "job_over_one_process": round(rate_many / rate_one, 3),
        "max_relative_loss_difference": float(f"{difference:.2g}")}, indent=1))


if __name__ == "__main__":
    main()
