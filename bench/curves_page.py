"""Benchmark: the Curves page with 50 runs on disk — first render, table sort, row selection (AppTest and headless chromium).

    python bench/curves_page.py [--runs 50] [--repeats 3]

Makes `--runs` run folders (config.json, status.json, a small metrics.jsonl, two epoch pictures;
two of them broken) in a temporary runs folder. AppTest: the page script's first run, and the
rerun a row selection causes (the table's callback writes the chosen runs, then the page runs
again: timed here by writing 3 runs to the state the callback writes, the same rerun; AppTest cannot tick a row). Chromium against
`streamlit run`: navigation to the Curves page, from a Train page fully drawn, until the table and a
chart are drawn (and, for comparison, the same click made while the Train page is still drawing); a click on
a column header until the grid has redrawn sorted (sorting happens in the browser, no rerun);
a click on a row's checkbox until the chosen runs show it and a chart's legend names it. Targets: first render <= 2 s, sort and
selection <= 1 s.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))


def make_runs(root: Path, count: int) -> None:
    """`count` finished vqvae/prior runs with differing settings; the last two broken."""
    from core import atomic, runs

    rng = np.random.default_rng(0)
    for i in range(count):
        run_dir = root / f"run-{i:02d}"
        if i >= count - 2:
            run_dir.mkdir(parents=True)
            (run_dir / "config.json").write_text("{broken")
            continue
        kind = "prior" if i % 5 == 4 else "vqvae"
        runs.create_run(run_dir, {"kind": kind, "model": {"num_embeddings": int(rng.choice([128, 256, 512]))},
                                  "train": {"lr": float(rng.choice([1e-3, 3e-4])), "epochs": 10, "batch_size": 16}})
        records = []
        for epoch in range(1, 11):
            records += [{"kind": "step", "step": epoch * 10 - 5, "epoch": epoch, "loss": float(rng.uniform()),
                         "codes_used": int(rng.integers(50, 256)), "elapsed_s": 6.0 * epoch}]
            records.append({"kind": "epoch", "step": epoch * 10, "epoch": epoch, "elapsed_s": 6.0 * epoch,
                            **({"val_bits_per_code": float(rng.uniform(2, 4))} if kind == "prior"
                               else {"val_ssim": float(rng.uniform(0.6, 0.95))})})
        runs.append_metrics(run_dir, records)
        for epoch in (9, 10):
            Image.fromarray(rng.integers(0, 255, (64, 128), dtype=np.uint8)).save(
                run_dir / "samples" / f"epoch_{epoch:03d}.png")
        atomic.write_json(run_dir / "status.json", {"state": "finished", "step": 100, "epoch": 10,
                                                    "steps_per_epoch": 10, "elapsed_s": 60.0 + i})


def apptest_timings(runs_root: Path, repeats: int) -> tuple[list[float], list[float]]:
    from streamlit.testing.v1 import AppTest

    firsts, selections = [], []
    names = sorted(p.name for p in runs_root.iterdir())
    for r in range(repeats + 1):
        at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=60)
        at.switch_page("pages/curves.py")
        started = time.perf_counter()
        at.run()
        first = time.perf_counter() - started
        assert not at.exception, at.exception
        at.session_state["runs_chosen"] = names[r:r + 3]
        started = time.perf_counter()
        at.run()
        selection = time.perf_counter() - started
        assert not at.exception and len(at.dataframe[0].value) == len(names)
        if r:  # the first round warms imports and caches
            firsts.append(first)
            selections.append(selection)
    return firsts, selections


def chromium_timings(runs_root: Path, repeats: int) -> tuple[list[float], ...]:
    from app import CHROMIUM, CHROMIUM_ARGS, start_app
    from playwright.sync_api import sync_playwright

    process, url = start_app({"BRAINVQ_RUNS": str(runs_root), "TF_CPP_MIN_LOG_LEVEL": "2"})
    tables, firsts, sorts, selections, agains, hurrieds = [], [], [], [], [], []
    chart = "document.querySelectorAll('[data-testid=stVegaLiteChart] .mark-line path').length > 0"
    drawn_with = ("name => Array.from(document.querySelectorAll('[data-testid=stVegaLiteChart]'))"
                  ".some(c => c.querySelector('.mark-line path') && c.textContent.includes(name))")
    # The Train page has a run table and a loss chart too: wait for the Curves page's own table (its
    # wall-time column) so that none of the Train page's elements, still on screen, can end the wait.
    curves_table = ("Array.from(document.querySelectorAll('[data-testid=stDataFrame] table thead th'))"
                    ".some(c => c.innerText.startsWith('wall time'))")
    # The Train page drawn: its run table holds rows and the browser has fetched nothing for 0.7 s.
    train_drawn = """() => { const fetched = performance.getEntriesByType('resource').length, now = performance.now();
        const rows = Array.from(document.querySelectorAll('[data-testid=stDataFrame] table tbody tr:first-child td'))
            .some(c => c.innerText.startsWith('run-'));
        if (!rows || window.fetchedBefore !== fetched) { window.fetchedBefore = fetched; window.quietSince = now; return false; }
        return now - window.quietSince > 700; }"""
    first_run = ("Array.from(document.querySelectorAll('[data-testid=stDataFrame] table tbody tr:first-child td'))"
                 ".map(c => c.innerText).find(t => t.startsWith('run-'))")

    def train_tab(browser, drawn: bool):
        """A new tab on the Train page: drawn (see train_drawn), or 1 s after its script ended, when the
        browser is often still fetching the Train page's own components (their chunks)."""
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_role("heading", name="Train").wait_for()
        page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')")
        if drawn:
            page.wait_for_function(train_drawn, polling=100)
        else:
            page.wait_for_timeout(1000)
        return page

    def open_curves(page) -> tuple[float, float]:
        """Click Curves: seconds until the grid holds its rows, and until a chart is drawn too."""
        started = time.perf_counter()
        page.get_by_test_id("stSidebarNavLink").filter(has_text="Curves").click()
        page.get_by_role("heading", name="Curves").wait_for()
        page.wait_for_function(curves_table)
        page.wait_for_function(first_run)
        table = time.perf_counter() - started
        page.wait_for_function(chart)
        return table, time.perf_counter() - started

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for r in range(repeats + 1):
                page = train_tab(browser, drawn=False)
                _, hurried = open_curves(page)
                page.close()
                # The first visit proper: only the Curves page is timed.
                page = train_tab(browser, drawn=True)
                table, first = open_curves(page)
                page.wait_for_timeout(500)
                box = page.get_by_test_id("stDataFrame").bounding_box()
                before = page.evaluate(first_run)
                started = time.perf_counter()
                page.mouse.click(box["x"] + 80, box["y"] + 17)  # the "run" column's header
                page.wait_for_function(f"{first_run} !== {before!r}".replace("'", '"'))
                sort = time.perf_counter() - started
                page.wait_for_timeout(300)
                chosen = page.evaluate(first_run)
                started = time.perf_counter()
                page.mouse.click(box["x"] + 20, box["y"] + 35 + 17)  # the first row's checkbox
                page.get_by_test_id("stCaptionContainer").filter(has_text="Drawn:").filter(
                    has_text=chosen.strip()).wait_for()  # the page names the runs drawn
                page.wait_for_function(drawn_with, arg=chosen.strip())  # its curve is drawn (the legend names it)
                selection = time.perf_counter() - started
                page.get_by_test_id("stSidebarNavLink").filter(has_text="Train").click()
                page.get_by_role("heading", name="Train").wait_for()
                page.wait_for_timeout(1000)
                _, again = open_curves(page)
                page.close()
                if r:
                    tables.append(table)
                    firsts.append(first)
                    sorts.append(sort)
                    selections.append(selection)
                    agains.append(again)
                    hurrieds.append(hurried)
            browser.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    return tables, firsts, sorts, selections, agains, hurrieds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from app import line

    with tempfile.TemporaryDirectory() as tmp:
        runs_root = Path(tmp) / "runs"
        make_runs(runs_root, args.runs)
        os.environ["BRAINVQ_RUNS"] = str(runs_root)
        print(f"# bench/curves_page.py: {args.runs} runs (2 broken); {os.cpu_count()} CPU cores; "
              f"warm-up then median of {args.repeats}")
        firsts, selections = apptest_timings(runs_root, args.repeats)
        print(line("AppTest: Curves page first run (script time)", firsts, 2.0))
        print(line("AppTest: rerun after choosing 3 runs (what a row selection reruns)", selections, 1.0))
        tables, firsts, sorts, selections, agains, hurrieds = chromium_timings(runs_root, args.repeats)
        print(line("chromium, first visit in a new tab: click Curves -> table with its rows drawn", tables, 2.0))
        print(line("chromium, first visit in a new tab: click Curves -> table and a chart drawn", firsts, 2.0))
        print(line("chromium, the same, but clicked 1 s after the Train page's script ended (still drawing)",
                   hurrieds, 2.0))
        print(line("chromium, back from Train: click Curves -> table and a chart drawn", agains, 2.0))
        print(line("chromium: click a column header -> grid redrawn sorted", sorts, 1.0))
        print(line("chromium: tick a row -> run chosen and curves drawn", selections, 1.0))


if __name__ == "__main__":
    main()
