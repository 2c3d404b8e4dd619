"""End-to-end fixtures: a real `streamlit run app.py` on a free port and headless Debian chromium driven by Playwright."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO = REPO_ROOT / "checkpoints" / "demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not healthy after {timeout_s} s")


def start_streamlit(env_overrides: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` headless on a free port; returns the process and its URL."""
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env_overrides}
    for key in [k for k, v in env.items() if v is None]:
        env.pop(key)
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--client.showErrorDetails", "full"],  # an uncaught exception must show, to fail the test
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"{log_path.read_text(errors='replace')[-3000:]}") from None
    return process, url


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def stop_training_runs(runs_root: Path) -> None:
    """Training runs are detached from the app on purpose: end the ones a test started."""
    from core import runs

    for summary in runs.list_runs(runs_root):
        if summary.state == "running":
            runs.request_stop(summary.path)
    deadline = time.time() + 30
    while time.time() < deadline and any(s.state == "running" for s in runs.list_runs(runs_root)):
        time.sleep(0.5)
    for summary in runs.list_runs(runs_root):
        runs.kill(summary.path)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: the e2e tests drive Debian's chromium (Playwright's "
                    f"own browser download is not used); install chromium to run them.")
    return CHROMIUM


def make_training_data(root: Path, sizes=(("train", 64), ("validate", 8), ("test", 8))) -> Path:
    """A small OASIS-layout tree of 32x32 synthetic brains (enough train slices for a live curve)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32] / 31 * 2 - 1
    for split, count in sizes:
        folder = root / "keras_png_slices_data" / f"keras_png_slices_{split}"
        folder.mkdir(parents=True)
        for i in range(count):
            ry, rx = rng.uniform(0.6, 0.9), rng.uniform(0.5, 0.8)
            image = np.where((x / rx) ** 2 + (y / ry) ** 2 < 1, rng.uniform(120, 220), 0.0)
            cy, cx, r = rng.uniform(-0.3, 0.3, 3)
            image = np.where((x - cx) ** 2 + (y - cy) ** 2 < (0.1 + abs(r)) ** 2, 60.0, image)
            Image.fromarray(image.astype(np.uint8)).save(
                folder / f"case_{i // 4 + 1:03d}_slice_{i % 4}.nii.png")
    return root


@pytest.fixture(scope="session")
def e2e_paths(tmp_path_factory):
    """Where the app under test keeps runs, and which checkpoint and data it uses."""
    from helpers_bundle import make_tiny_bundle

    root = tmp_path_factory.mktemp("e2e")
    oasis_tree = make_training_data(root / "data")
    uses_demo = (DEMO / "vqvae.keras").exists() and (DEMO / "prior.keras").exists()
    bundle = DEMO if uses_demo else make_tiny_bundle(root / "tiny-bundle", with_volume_prior=True)
    return {"runs": root / "runs", "bundle": bundle, "uses_demo": uses_demo,
            "train_data": oasis_tree, "log": root / "streamlit.log"}


@pytest.fixture(scope="session")
def app_url(chromium_path, e2e_paths):
    env = {"BRAINVQ_RUNS": str(e2e_paths["runs"]),
           "BRAINVQ_CHECKPOINT": None if e2e_paths["uses_demo"] else str(e2e_paths["bundle"]),
           "BRAINVQ_DATA": None if e2e_paths["uses_demo"] else str(e2e_paths["train_data"]),
           "BRAINVQ_DATA_ROOTS": str(e2e_paths["train_data"])}  # the Train test types this folder
    process, url = start_streamlit(env, e2e_paths["log"])
    yield url
    stop_training_runs(e2e_paths["runs"])
    stop_process(process)


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    page.get_by_role("heading", name="Train").wait_for()
    yield page
    context.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: drives a real `streamlit run` in headless chromium")


def pytest_collection_modifyitems(items):
    for item in items:
        if "e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def screenshots_dir(tmp_path_factory) -> Path:
    """Where the browser tests save their screenshots: $BRAINVQ_SCREENSHOTS (scripts/screenshots.sh sets
    docs/screenshots), else a temporary folder, so a plain test run leaves the tree as it found it."""
    chosen = os.environ.get("BRAINVQ_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder

