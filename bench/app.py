"""Benchmark: the dashboard as a person uses it, in headless chromium against a real `streamlit run` (warm, median of 3).

    python bench/app.py [--checkpoint DIR] [--repeats 3]

Figures: upload of a 256x256 slice to its reconstruction on screen (target <= 1 s); Generate 16
brains to the gallery on screen (<= 6 s); switching pages (<= 1.5 s); the streamlit process's RSS
with the checkpoint loaded (<= 2 GB). Uses checkpoints/demo when it exists; otherwise an untrained
bundle of the default (demo-sized) configuration, which costs the same to run.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO = REPO_ROOT / "checkpoints" / "demo"
TEST_SLICES = REPO_ROOT / "demo_data" / "keras_png_slices_data" / "keras_png_slices_test"
SWITCH_MARKERS = {"Train": "Runs", "Curves": "No runs yet", "Reconstruct": "Slices from",
                  "Codebook": "Perplexity", "Sample": "New brains"}


def demo_sized_bundle(folder: Path) -> Path:
    """vqvae.keras + prior.keras of the default configs (256x256 -> 64x64 codes, K=256), untrained."""
    from core.bundles import save_bundle
    from core.models.prior import PriorConfig, build_prior
    from core.models.vqvae import VQVAEConfig, build_vqvae

    vqvae = VQVAEConfig()
    prior = PriorConfig(vqvae.num_embeddings, vqvae.code_grid, vqvae.code_grid)
    return save_bundle(folder, build_vqvae(vqvae), build_prior(prior), prior_config=prior)


def start_app(env: dict) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port)], cwd=REPO_ROOT, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise TimeoutError("streamlit did not become healthy")


def open_app_page(browser, url: str):
    """A new tab on the app, once its first page (Train) shows its title."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(url)
    page.get_by_role("heading", name="Train").wait_for()
    return page


def images_on_screen(page, count: int) -> None:
    page.wait_for_function(
        "n => [...document.querySelectorAll('[data-testid=\"stMain\"] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= n", arg=count)


def go_to(page, title: str) -> float:
    started = time.perf_counter()
    page.get_by_test_id("stSidebarNavLink").filter(has_text=title).click()
    page.get_by_role("heading", name=title, exact=True).wait_for()
    page.get_by_text(SWITCH_MARKERS[title]).first.wait_for()
    return time.perf_counter() - started


def time_upload(page, url: str, slice_path: Path) -> float:
    page.goto(f"{url}/reconstruct")  # a fresh session: one slice, nothing remembered on screen
    uploader = page.get_by_test_id("stFileUploaderDropzoneInput")
    uploader.wait_for(state="attached")
    started = time.perf_counter()
    uploader.set_input_files(slice_path)
    page.get_by_text("reconstruction · SSIM").wait_for()
    # original | reconstruction | difference | SSIM map: image panels of one plotly figure
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot image').length >= 3")
    return time.perf_counter() - started


def time_generate(page, seed: int) -> float:
    # The New brains row's seed: the Whole brain and Complete sections have their own.
    seed_box = page.get_by_test_id("stHorizontalBlock").filter(has=page.get_by_label("How many")).get_by_label("Seed")
    seed_box.fill(str(seed))
    seed_box.press("Enter")
    page.wait_for_timeout(300)  # let the rerun from the seed change settle before timing
    started = time.perf_counter()
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text(f"brain_seed{seed}_15").wait_for(timeout=300_000)
    images_on_screen(page, 17)  # 16 brains + the slice of "complete a brain"
    return time.perf_counter() - started


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def line(label: str, values: list[float], target: float, unit: str = "s") -> str:
    median = statistics.median(values)
    runs = ", ".join(f"{v:.2f}" for v in values)
    verdict = "ok" if median <= target else "OVER TARGET"
    return f"{label}: median {median:.2f} {unit} (runs {runs}; target <= {target:g} {unit}) {verdict}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Dashboard timings in headless chromium.")
    parser.add_argument("--checkpoint", default=None, help="bundle folder (default: checkpoints/demo)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: install chromium to run this benchmark.")
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            bundle, note = Path(args.checkpoint), f"checkpoint {args.checkpoint}"
        elif (DEMO / "vqvae.keras").exists() and (DEMO / "prior.keras").exists():
            bundle, note = DEMO, "checkpoints/demo"
        else:
            bundle = demo_sized_bundle(Path(tmp) / "demo-sized")
            note = "untrained demo-sized bundle (checkpoints/demo not shipped yet)"
        env = {"BRAINVQ_RUNS": str(Path(tmp) / "runs"), "TF_CPP_MIN_LOG_LEVEL": "2"}
        if bundle != DEMO:
            env["BRAINVQ_CHECKPOINT"] = str(bundle)
        process, url = start_app(env)
        slices = sorted(TEST_SLICES.glob("*.png"))[:args.repeats + 1]
        print(f"# bench/app.py: {note}; {os.cpu_count()} CPU cores; warm-up run then median of "
              f"{args.repeats}")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = open_app_page(browser, url)

                uploads = [time_upload(page, url, path) for path in slices]
                print(line("upload 256x256 slice -> reconstruction on screen", uploads[1:], 1.0))

                go_to(page, "Sample")
                generates = [time_generate(page, seed) for seed in range(args.repeats + 1)]
                print(line("Generate 16 brains -> gallery on screen", generates[1:], 6.0))

                order = ["Train", "Curves", "Reconstruct", "Codebook", "Sample"]
                for title in order:  # warm-up: every page once (loads, encodes the split)
                    go_to(page, title)
                switches = [go_to(page, title) for _ in range(args.repeats) for title in order]
                print(line("switch page (all five pages, each 3x)", switches, 1.5)
                      + f"; slowest {max(switches):.2f} s")
                print(line("streamlit process RSS with the checkpoint loaded",
                           [rss_mb(process.pid) / 1024], 2.0, "GB"))
                browser.close()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
