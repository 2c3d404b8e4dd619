"""The inspection controls in real chromium: window/level, linked zoom, wipe and flicker, the surprise map, the run table."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_browser import assert_no_traceback, go_to, upload_slice

pytestmark = pytest.mark.e2e

FIRST_PLOT = "document.querySelector('.js-plotly-plot')"


def caption_text(page) -> str:
    return " ".join(page.get_by_test_id("stCaptionContainer").all_inner_texts())


def test_viewer_window_level_linked_zoom_wipe_and_flicker(page, e2e_paths, tmp_path):
    go_to(page, "Reconstruct")
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
        upload_slice(tmp_path, e2e_paths["uses_demo"]))
    page.wait_for_function(f"{FIRST_PLOT} && {FIRST_PLOT}._fullData && {FIRST_PLOT}._fullData.length == 4")
    assert "window" in caption_text(page)

    # Zoom the original: every panel shows the same region (shared axes), as plotly drew it.
    page.evaluate(f"Plotly.relayout({FIRST_PLOT}, {{'xaxis.range': [2, 12], 'yaxis.range': [12, 2]}})")
    ranges = page.evaluate(f"[1, 2, 3, 4].map(i => {FIRST_PLOT}._fullLayout['xaxis' + (i > 1 ? i : '')].range)")
    assert all(r == pytest.approx([2, 12], abs=0.1) for r in ranges), ranges  # aspect lock nudges

    page.get_by_text("full range", exact=True).click()
    page.wait_for_function("document.body.innerText.includes('window 0.00-1.00')")
    page.get_by_text("manual", exact=True).click()
    page.get_by_text("Window (black, white)").wait_for()

    page.get_by_text("wipe", exact=True).click()
    page.get_by_text("Wipe: original left, reconstruction right").wait_for()
    page.wait_for_function(f"{FIRST_PLOT} && {FIRST_PLOT}._fullData.length == 1")
    page.get_by_text("flicker", exact=True).click()
    page.get_by_text("Show the reconstruction (flip back and forth)").click()
    page.wait_for_function(f"{FIRST_PLOT} && {FIRST_PLOT}.layout.annotations[0].text == 'reconstruction'")
    assert_no_traceback(page)


def test_surprise_map_on_the_reconstruct_page(page, e2e_paths, tmp_path):
    go_to(page, "Reconstruct")
    page.get_by_text("test split", exact=True).click()
    page.get_by_text("Surprise map: bits of each code under the prior").click()
    page.get_by_text("more surprising than").wait_for(timeout=120_000)
    page.wait_for_function("Array.from(document.querySelectorAll('.js-plotly-plot'))"
                           ".some(p => p._fullData && p._fullData.some(t => t.type == 'heatmap'))")
    page.get_by_text("Hot spot (boxed)").wait_for()
    # The hot spot's box is drawn on the surprise map.
    page.wait_for_function("Array.from(document.querySelectorAll('.js-plotly-plot'))"
                           ".some(p => p._fullData && p._fullData.some(t => t.type == 'heatmap')"
                           " && p.layout.shapes && p.layout.shapes.length == 1)")
    assert_no_traceback(page)


def write_run(root: Path, name: str, lr: float, ssim: float, epochs: int = 2) -> None:
    from core import atomic, runs

    run_dir = root / name
    runs.create_run(run_dir, {"kind": "vqvae", "model": {"num_embeddings": 64}, "train": {"lr": lr}})
    runs.append_metrics(run_dir, [{"kind": "epoch", "step": e, "epoch": e, "val_ssim": ssim + e / 100,
                                   "elapsed_s": 10.0 * e} for e in range(1, epochs + 1)])
    (run_dir / "samples").mkdir(exist_ok=True)  # create_run makes it
    for e in range(1, epochs + 1):
        Image.fromarray(np.full((8, 16), 60 * e, np.uint8)).save(run_dir / "samples" / f"epoch_{e:03d}.png")
    atomic.write_json(run_dir / "status.json", {"state": "finished", "step": epochs, "epoch": epochs,
                                                "elapsed_s": 60.0})


def chosen_runs(page) -> list[str]:
    """The runs the Curves page says it draws (its caption under the run table)."""
    text = page.get_by_test_id("stCaptionContainer").filter(has_text="Drawn:").inner_text()
    drawn = text.split("Drawn:", 1)[1].strip().rstrip(".")
    return [] if drawn == "none" else sorted(name.strip() for name in drawn.split(","))


def wait_drawn(page, names: set[str], timeout_s: float = 10) -> bool:
    """Whether the Curves page comes to draw exactly `names` within `timeout_s`."""
    deadline = time.time() + timeout_s
    while set(chosen_runs(page)) != names and time.time() < deadline:
        page.wait_for_timeout(200)
    return set(chosen_runs(page)) == names


def test_run_table_rows_pick_the_curves_and_the_epoch_images(page, e2e_paths):
    root = e2e_paths["runs"]
    for name, lr, ssim in [("table-a", 1e-3, 0.6), ("table-b", 3e-4, 0.7)]:
        if not (root / name).exists():
            write_run(root, name, lr, ssim)
            time.sleep(0.05)  # table-b newer for certain: listed first, and the first chosen
    go_to(page, "Curves")
    grid = page.get_by_test_id("stDataFrame")
    grid.wait_for()
    page.wait_for_timeout(1000)
    # Glide's grid is a canvas: its rows are reached by position (35 px header, 35 px rows; the
    # selection checkboxes sit in the first, narrow column). Row order is the listing's, newest first.
    names = json.loads(page.evaluate("JSON.stringify(Array.from(document.querySelectorAll("
                                     "'[data-testid=stDataFrame] table tbody tr')).map(r => r.innerText))")
                       or "[]")
    box = grid.bounding_box()
    row_box = lambda row: (box["x"] + 20, box["y"] + 35 + 35 * row + 17)
    assert chosen_runs(page) == ["table-b"], names  # the newest run, its row ticked
    page.mouse.click(*row_box(1))  # tick table-a too
    assert wait_drawn(page, {"table-a", "table-b"}), (chosen_runs(page), names)
    # The curves drawn are the chosen runs': the charts' legends name both.
    page.wait_for_function("Array.from(document.querySelectorAll('[data-testid=stVegaLiteChart]'))"
                           ".some(c => c.textContent.includes('table-a') && c.textContent.includes('table-b'))")
    page.get_by_text("Reconstructions per epoch").wait_for()
    page.wait_for_function("document.querySelectorAll('[data-testid=stImage]').length >= 2")
    # Each click is one tick or untick, whatever the 2 s refresh is doing: the page's state never
    # undoes one (a second chooser once overwrote the table's choice with its own stale value).
    expected = {"table-a", "table-b"}
    for click in range(12):
        page.wait_for_timeout(200 + click * 377 % 2000)
        row = click % 2
        expected ^= {("table-b", "table-a")[row]}
        page.mouse.click(*row_box(row))
        if not wait_drawn(page, expected):
            pytest.fail(f"click {click + 1} (row {row}) was undone or lost: drawn {chosen_runs(page)}, "
                        f"ticked {sorted(expected)}")
    assert_no_traceback(page)
