"""Benchmark: kill -9 tiny VQ-VAE runs at random moments, resume them, and count the clean finishes.

    python bench/kill_resume.py --data ../shared/oasis_proxy [--trials 10] [--seed 0]

Each trial runs `python -m core.train vqvae` (exactly what a user runs) on 32x32 slices with a
checkpoint after every step, SIGKILLs it once it has logged a random step (1 .. last - 1), and on
every second trial also truncates a file of the last checkpoint (vqvae.keras or optimizer.npz:
a disk error). Then `--resume` must finish with every step and epoch logged once, in order, and
the optimizer's step count equal to the run's steps. Prints one line per trial and the total.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from core import runs  # noqa: E402

EPOCHS, STEPS = 3, 8
TINY = ["--image-size", "32", "--code-grid", "8", "--codebook-size", "16", "--code-dim", "4",
        "--hidden-channels", "16", "--residual-blocks", "1", "--batch-size", "4", "--val-limit", "8",
        "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS), "--log-every", "1",
        "--checkpoint-every-s", "0"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "core.train", "vqvae", *args]


def killed_run(run_dir: Path, data: str, rng: random.Random, after: str = "last") -> int:
    """Start a run, SIGKILL it mid-run once its `after` checkpoint exists; the last step saved."""
    target = rng.randint(1, EPOCHS * STEPS - 1)
    process = subprocess.Popen(command("--data", data, "--run-dir", str(run_dir), *TINY), cwd=REPO,
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (runs.checkpoint_pointer(run_dir, after) and logged(run_dir) >= target):
            if process.poll() is not None:
                raise RuntimeError(f"training ended (exit {process.returncode}) before the kill")
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        if process.wait() != -signal.SIGKILL:
            raise RuntimeError("the run had ended before the kill")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return runs.checkpoint_pointer(run_dir, "last")["step"]


def logged(run_dir: Path) -> int:
    return max((r["step"] for r in runs.read_metrics(run_dir)[0] if r.get("kind") == "step"),
               default=0)


def truncate(run_dir: Path, name: str) -> None:
    victim = runs.checkpoint_pointer(run_dir, "last")["path"] / name
    victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])


def clean_finish(run_dir: Path) -> str | None:
    """None when the resumed run's history is complete; else what is wrong."""
    records = runs.read_metrics(run_dir)[0]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    epochs = [(r["epoch"], r["step"]) for r in records if r["kind"] == "epoch"]
    if steps != list(range(1, EPOCHS * STEPS + 1)):
        return f"step lines {steps}"
    if epochs != [(e, e * STEPS) for e in range(1, EPOCHS + 1)]:
        return f"epoch lines {epochs}"
    status = runs.read_status(run_dir)
    if (status["state"], status["step"]) != ("finished", EPOCHS * STEPS):
        return f"status {status['state']} at step {status.get('step')}"
    with np.load(runs.checkpoint_pointer(run_dir, "last")["path"] / "optimizer.npz") as saved:
        if int(saved["arr_0"]) != EPOCHS * STEPS:
            return f"optimizer iterations {int(saved['arr_0'])}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="OASIS folder (e.g. ../shared/oasis_proxy)")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng, clean = random.Random(args.seed), 0
    print(f"# bench/kill_resume.py: {args.trials} trials, {EPOCHS} epochs x {STEPS} steps, "
          f"checkpoint every step, seed {args.seed}")
    with tempfile.TemporaryDirectory() as scratch:
        for trial in range(args.trials):
            run_dir = Path(scratch) / f"run{trial}"
            damaged = ("vqvae.keras", "optimizer.npz")[trial // 2 % 2] if trial % 2 else None
            # A damaged last checkpoint needs an older one to fall back to: kill after two.
            killed_at = killed_run(run_dir, args.data, rng, "previous" if damaged else "last")
            if damaged:
                truncate(run_dir, damaged)
            result = subprocess.run(command("--run-dir", str(run_dir), "--resume"), cwd=REPO,
                                    env=ENV, capture_output=True, text=True)
            problem = (f"resume exit {result.returncode}: {result.stderr.strip()[-300:]}"
                       if result.returncode else clean_finish(run_dir))
            warning = (runs.read_json(run_dir / "status.json", {}) or {}).get("warning") or ""
            clean += problem is None
            print(f"trial {trial}: killed at checkpoint step {killed_at}"
                  f"{f', truncated {damaged}' if damaged else ''}; "
                  f"{'clean finish' if problem is None else 'NOT CLEAN: ' + problem}"
                  f"{'; ' + warning.split('. ')[-1] if damaged else ''}")
    print(f"clean resumes: {clean}/{args.trials}")
    return 0 if clean == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
