"""Benchmark: clicks on another page made while the Curves page follows a live run — how many land (headless chromium).

    python bench/page_switch.py [--clicks 40]

Starts `streamlit run` on a temporary runs folder and the browser test's tiny training run (its
32x32 synthetic brains, 64 train slices, batch 2: an epoch about every second on 2 cores), opens the
Curves page, then `--clicks` times: waits a varying 0.5-3 s (so the clicks fall at every moment of
the page's 2 s refresh), clicks Train in the sidebar, and counts the click as lost when the Train
page's title is not shown 10 s later (then clicks again to go on). Prints the clicks lost and the
epochs the run finished meanwhile. Not a timing: a count, the same way each time.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))


def start_run(runs_root: Path, data_folder: Path) -> Path:
    from core import launcher
    from core.models.vqvae import VQVAEConfig
    from core.training.loop import TrainConfig
    from core.training.vqvae_task import VQVAEData

    job = launcher.TrainJob("switch-run", VQVAEConfig(image_size=32, num_embeddings=16, embedding_dim=4),
                            TrainConfig(epochs=500, batch_size=2, steps_per_epoch=None, device="cpu"),
                            VQVAEData(data=str(data_folder)))
    return launcher.start(runs_root, job, gpus=0)


def finished_epochs(run_dir: Path) -> int:
    from core import runs

    return int(runs.read_status(run_dir).get("epoch") or 0)


def count_lost_clicks(url: str, run_dir: Path, clicks: int) -> tuple[int, int, int]:
    """(clicks lost, epochs finished when the clicks began, epochs finished when they ended)."""
    from app import CHROMIUM, CHROMIUM_ARGS, open_app_page
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    chart = "document.querySelector('[data-testid=stVegaLiteChart] .mark-line path')"
    nav = lambda page, title: page.get_by_test_id("stSidebarNavLink").filter(has_text=title).click()
    lost = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = open_app_page(browser, url)
        deadline = time.time() + 180
        while finished_epochs(run_dir) < 2 and time.time() < deadline:  # epochs finishing, as in the test
            time.sleep(1)
        epochs_before = finished_epochs(run_dir)
        for attempt in range(clicks):
            nav(page, "Curves")
            page.get_by_role("heading", name="Curves").wait_for()
            page.wait_for_function(chart)
            page.wait_for_timeout(500 + attempt * 377 % 2500)
            nav(page, "Train")
            try:
                page.get_by_role("heading", name="Train", exact=True).wait_for(timeout=10_000)
            except PlaywrightTimeout:
                lost += 1
                nav(page, "Train")
                page.get_by_role("heading", name="Train", exact=True).wait_for()
        browser.close()
    return lost, epochs_before, finished_epochs(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=40)
    args = parser.parse_args()
    from app import start_app
    from conftest import make_training_data  # the browser test's data: its run, epoch for epoch

    from core import runs

    with tempfile.TemporaryDirectory() as tmp:
        runs_root, data_folder = Path(tmp) / "runs", make_training_data(Path(tmp) / "data")
        run_dir = start_run(runs_root, data_folder)
        process, url = start_app({"BRAINVQ_RUNS": str(runs_root), "BRAINVQ_DATA_ROOTS": str(data_folder),
                                  "TF_CPP_MIN_LOG_LEVEL": "2"})
        try:
            lost, before, after = count_lost_clicks(url, run_dir, args.clicks)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
            runs.request_stop(run_dir)
            deadline = time.time() + 30
            while runs.read_status(run_dir).get("state") == "running" and time.time() < deadline:
                time.sleep(0.5)
            runs.kill(run_dir)
    print(f"# bench/page_switch.py: {os.cpu_count()} CPU cores; a run finishing an epoch about every second")
    print(f"clicks on Train from the Curves page while the run trains: {lost} of {args.clicks} lost "
          f"(the run went from epoch {before} to {after} meanwhile)")


if __name__ == "__main__":
    main()
