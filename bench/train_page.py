"""Benchmark: a VQ-VAE run started from the Train page with its defaults against bench/train_vqvae.py's recipe, time to validation SSIM >= 0.95.

    python bench/train_page.py --data ../shared/oasis_proxy [--threshold 0.95] [--max-epochs 8] [--repeats 1]

The page run is started the way a user starts one: Streamlit's AppTest opens the Train page,
fills in only the run name (the data folder is the page's default, BRAINVQ_DATA) and presses
Start; `core.launcher` then runs `python -m core.train` detached. The recipe run is
`python -m core.train vqvae ... --epochs 20` with bench/train_vqvae.py's flags. Each run is stopped
(STOP file, as the page's Stop button does) at the first epoch whose validation SSIM reaches the
threshold; the figure is that epoch's `elapsed_s` in metrics.jsonl (training and validation
time since the run began, start-up excluded). The two alternate, page first, `--repeats` times.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def wait_for(run_dir: Path, threshold: float, max_epochs: int, timeout_s: float = 1800) -> dict | None:
    """Follow a run's epoch lines; stop it at the first epoch reaching `threshold` (or max_epochs)."""
    from core import runs

    deadline, reached = time.time() + timeout_s, None
    while time.time() < deadline:
        records, _ = runs.read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else ([], 0)
        epochs = [r for r in records if r.get("kind") == "epoch"]
        reached = next((e for e in epochs if e["val_ssim"] >= threshold), None)
        if reached or len(epochs) >= max_epochs:
            break
        if runs.read_status(run_dir).get("state") in ("failed", "finished", "stopped"):
            break
        time.sleep(1.0)
    runs.request_stop(run_dir)
    while runs.read_status(run_dir).get("state") == "running" and time.time() < deadline:
        time.sleep(1.0)
    return reached


def page_run(runs_root: Path, name: str) -> Path:
    """Start a run from the Train page with every default but its name; returns its folder."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("pages/train.py").run()
    next(t for t in at.text_input if t.label == "Run name").set_value(name)
    next(b for b in at.button if b.label == "Start").click().run()
    if at.exception or at.error or not any(f"Started {name}" in s.value for s in at.success):
        raise SystemExit(f"error: the Train page did not start the run: {[e.value for e in at.error]}")
    return runs_root / name


def recipe_run(runs_root: Path, name: str, data: str) -> Path:
    from train_vqvae import TRAIN_FLAGS

    run_dir = runs_root / name
    subprocess.Popen([sys.executable, "-m", "core.train", "vqvae", "--data", data, "--run-dir", str(run_dir),
                      "--epochs", "20", *TRAIN_FLAGS], cwd=REPO,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "status.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    return run_dir


def differing_settings(first: Path, second: Path) -> dict:
    """{setting: (first, second)} of the two runs' config.json entries that differ (core.curves' rule)."""
    from core import curves

    flat = {"first": curves.run_settings(first), "second": curves.run_settings(second)}
    return {name: (flat["first"].get(name), flat["second"].get(name)) for name in curves.differing_settings(flat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    runs_root = Path(tempfile.mkdtemp(prefix="bench-train-page-"))
    os.environ.update(BRAINVQ_RUNS=str(runs_root), BRAINVQ_DATA=str(Path(args.data).resolve()))

    results = {"page": [], "recipe": []}
    for repeat in range(args.repeats):
        for kind in ("page", "recipe"):
            name = f"{kind}-{repeat}"
            run_dir = page_run(runs_root, name) if kind == "page" else recipe_run(runs_root, name, args.data)
            reached = wait_for(run_dir, args.threshold, args.max_epochs)
            results[kind].append(reached)
            when = (f"{reached['elapsed_s']:.0f} s (epoch {reached['epoch']}, SSIM {reached['val_ssim']:.4f})"
                    if reached else f"not reached in {args.max_epochs} epochs")
            print(f"{kind} run {repeat}: time to validation SSIM >= {args.threshold}: {when}", flush=True)
    print("settings that differ (page, recipe):", differing_settings(runs_root / "page-0", runs_root / "recipe-0"))
    page = [r["elapsed_s"] for r in results["page"] if r]
    recipe = [r["elapsed_s"] for r in results["recipe"] if r]
    if page and recipe:
        ratio = (sum(page) / len(page)) / (sum(recipe) / len(recipe))
        print(f"page / recipe time to SSIM >= {args.threshold}: {ratio:.2f} (target <= 1.20)")


if __name__ == "__main__":
    main()
