"""Benchmark: the Reconstruct viewer in headless chromium — window/level change and zoom, until the panels are redrawn.

    python bench/viewer.py [--repeats 5]

Against `streamlit run` with checkpoints/demo and one 256x256 test slice uploaded (warm). Window:
switching between "full range" and "auto", from the click until the caption shows the new window
and plotly has drawn the new pictures (a rerun: the reconstruction is cached). Zoom: a plotly
relayout of the first panel's axes until every panel has followed (in the browser, no rerun).
Target: both <= 0.5 s.
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

FIRST_PLOT = "document.querySelector('.js-plotly-plot')"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from app import CHROMIUM, CHROMIUM_ARGS, TEST_SLICES, line, start_app
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_app({"BRAINVQ_RUNS": str(Path(tmp) / "runs"), "TF_CPP_MIN_LOG_LEVEL": "2"})
        print(f"# bench/viewer.py: checkpoints/demo, one test slice; {os.cpu_count()} CPU cores; "
              f"warm-up then median of {args.repeats}")
        windows, zooms = [], []
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(f"{url}/reconstruct")
                page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(sorted(TEST_SLICES.glob("*.png"))[0])
                page.wait_for_function(f"{FIRST_PLOT} && {FIRST_PLOT}._fullData && {FIRST_PLOT}._fullData.length == 4")
                page.wait_for_timeout(1000)
                for r in range(args.repeats + 1):
                    mode, shown = ("full range", "window 0.00-1.00") if r % 2 == 0 else ("auto (0.1-99.9 %)", None)
                    source = page.evaluate(f"{FIRST_PLOT}._fullData[0].source")
                    started = time.perf_counter()
                    page.get_by_text(mode, exact=True).click()
                    if shown:
                        page.wait_for_function(f"document.body.innerText.includes({shown!r})".replace("'", '"'))
                    page.wait_for_function(f"(s => {FIRST_PLOT} && {FIRST_PLOT}._fullData[0].source !== s)", arg=source)
                    window = time.perf_counter() - started
                    page.wait_for_timeout(500)
                    low = 10 + 5 * r
                    started = time.perf_counter()
                    page.evaluate(f"Plotly.relayout({FIRST_PLOT}, {{'xaxis.range': [{low}, {low + 100}], "
                                  f"'yaxis.range': [{low + 100}, {low}]}})")
                    page.wait_for_function(f"Math.abs({FIRST_PLOT}._fullLayout.xaxis4.range[0] - {low}) < 2")
                    zoom = time.perf_counter() - started
                    if r:
                        windows.append(window)
                        zooms.append(zoom)
                browser.close()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
        print(line("window/level change -> 4 panels redrawn", windows, 0.5))
        print(line("zoom the first panel -> all 4 panels follow", zooms, 0.5))


if __name__ == "__main__":
    main()
