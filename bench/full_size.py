"""Benchmark: everything at the real OASIS size (9,664 / 1,120 / 544 slices): one VQ-VAE epoch, the prior's code cache and epoch, evaluation, the Codebook and Curves pages — time and peak memory of each.

    python bench/full_size.py [--proxy ../shared/oasis_proxy] [--root DIR] [--prior-steps 100]

Builds the OASIS layout outside the repository (--root, default a temporary folder) from the
proxy's slices, hard-linked under new case numbers (32 slices per case, whole cases per split):
train from the proxy's 40 train cases, validate and test from its 8 validate cases. Each step runs
in its own process, so its peak RSS (from wait4) is that step's alone. Prints one JSON object.

- vqvae_epoch: `core.train vqvae` at the benchmark recipe (128 crops, batch 16), one epoch of 604
  steps; training time is the elapsed time at the epoch's last step line, validation follows it.
- prior: `core.train prior --vqvae checkpoints/demo` for --prior-steps steps of its epoch: the code
  cache's time (until the first step) and size on disk, seconds per step, and the whole epoch
  (604 steps) extrapolated from them: a full epoch takes about 10 minutes on this CPU.
- evaluate_test: `core.evaluate --split test` on the 544 test slices.
- codebook_page: the Codebook page (AppTest) encoding the 544 test slices, the first time and
  cached, and that app process's peak RSS.
- curves_page: the Curves page (AppTest) with a 30-epoch run of 604 steps per epoch (a step line
  every 10 steps, an epoch line each epoch): first render (with the app's imports), a rerun, and the
  process's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
SIZES = {"train": 9664, "validate": 1120, "test": 544}
SLICES_PER_CASE = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default=str(REPO_ROOT.parent / "shared" / "oasis_proxy"))
    parser.add_argument("--root", default=None, help="where the OASIS-sized layout is built (default: a temp dir)")
    parser.add_argument("--prior-steps", type=int, default=100)
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these steps (vqvae_epoch prior evaluate_test codebook_page curves_page)")
    return parser.parse_args(argv)


def build_layout(proxy: Path, root: Path) -> Path:
    """OASIS-sized keras_png_slices_data under root, hard links (or copies) of the proxy's slices."""
    import shutil

    from core import data

    source = data.find_data_root(proxy)
    target = root / "keras_png_slices_data"
    sources = {"train": data.case_stacks(data.list_slices(source, "train")),
               "validate": data.case_stacks(data.list_slices(source, "validate")),
               "test": data.case_stacks(data.list_slices(source, "validate"))}
    case_number = 1
    for split, count in SIZES.items():
        folder = target / data.split_folder_name(split)
        folder.mkdir(parents=True, exist_ok=True)
        stacks = [s for s in sources[split] if len(s) == SLICES_PER_CASE]
        for case in range(count // SLICES_PER_CASE):
            for level, path in enumerate(stacks[case % len(stacks)]):
                link = folder / f"case_{case_number:04d}_slice_{level}.nii.png"
                if not link.exists():
                    try:
                        os.link(path, link)
                    except OSError:
                        shutil.copyfile(path, link)
            case_number += 1
    return root


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in GB, stdout+stderr tail) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(command[:5])} ... failed:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024 ** 2, output[-3000:]


def vqvae_epoch(root: Path, work: Path) -> dict:
    from core import runs

    run_dir = work / "vqvae"
    seconds, rss, _ = run_measured([sys.executable, "-m", "core.train", "vqvae", "--data", str(root),
                                    "--run-dir", str(run_dir), "--crop-size", "128", "--batch-size", "16",
                                    "--epochs", "1", "--log-every", "50", "--val-limit", "256"])
    records = runs.read_metrics(run_dir)[0]
    steps = [r for r in records if r["kind"] == "step"]
    epoch = next(r for r in records if r["kind"] == "epoch")
    training = steps[-1]["elapsed_s"]
    return {"steps": steps[-1]["step"], "training_s": round(training, 1),
            "slices_per_s": round(steps[-1]["step"] * 16 / training, 1),
            "validation_and_checkpoint_s": round(epoch["elapsed_s"] - training, 1),
            "process_s": round(seconds, 1), "peak_rss_gb": round(rss, 2), "val_ssim": round(epoch["val_ssim"], 4)}


def prior(root: Path, work: Path, steps: int) -> dict:
    from core import runs

    run_dir = work / "prior"
    seconds, rss, _ = run_measured([sys.executable, "-m", "core.train", "prior", "--vqvae",
                                    str(REPO_ROOT / "checkpoints" / "demo"), "--data", str(root),
                                    "--run-dir", str(run_dir), "--epochs", "1", "--steps-per-epoch", str(steps),
                                    "--log-every", "10"])
    records = runs.read_metrics(run_dir)[0]
    step_lines = [r for r in records if r["kind"] == "step"]
    first, last = step_lines[0], step_lines[-1]
    per_step = (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])
    cache_mb = sum((run_dir / name).stat().st_size for name in ("codes_train.npy", "codes_validate.npy")) / 1e6
    log = (run_dir / "train.log").read_text()
    full_epoch_steps = SIZES["train"] // 16
    return {"steps_run": last["step"], "seconds_per_step": round(per_step, 3),
            "epoch_steps": full_epoch_steps, "epoch_s_extrapolated": round(per_step * full_epoch_steps, 0),
            "code_cache_mb": round(cache_mb, 1),
            # The trainer's clock starts when training does: the rest is start-up and the code cache.
            "startup_and_code_cache_s": round(seconds - records[-1]["elapsed_s"], 1),
            "process_s": round(seconds, 1), "peak_rss_gb": round(rss, 2), "log_lines": len(log.splitlines())}


def evaluate_test(root: Path) -> dict:
    seconds, rss, output = run_measured([sys.executable, "-m", "core.evaluate", "--checkpoint",
                                         str(REPO_ROOT / "checkpoints" / "demo"), "--data", str(root),
                                         "--split", "test"])
    report = json.loads(output.strip().splitlines()[-1])
    return {"slices": report["n_images"], "process_s": round(seconds, 1), "peak_rss_gb": round(rss, 2),
            "ssim": report["ssim"]}


PAGE_SCRIPT = """
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
from streamlit.testing.v1 import AppTest
page, what = sys.argv[1], sys.argv[2]
at = AppTest.from_file({app!r}, default_timeout=600)
times = []
started = time.perf_counter()
at.switch_page(page).run()
times.append(time.perf_counter() - started)
if what == "codebook":
    limit = next(n for n in at.number_input if n.label == "Slices (evenly spaced)")
    started = time.perf_counter()
    limit.set_value(544).run()
    times.append(time.perf_counter() - started)
    started = time.perf_counter()
    at.run()  # a rerun: the encoded split comes from the cache
    times.append(time.perf_counter() - started)
else:
    started = time.perf_counter()
    at.run()  # the page again, with every module imported: the page's own time
    times.append(time.perf_counter() - started)
assert not at.exception, [e.value for e in at.exception]
errors = [e.value for e in at.error]
print(json.dumps({{"times": times, "errors": errors,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}}))
"""


def page(page_path: str, what: str, env: dict, work: Path) -> dict:
    script = work / "page_bench.py"
    script.write_text(PAGE_SCRIPT.format(repo=str(REPO_ROOT), app=str(REPO_ROOT / "app.py")))
    _, _, output = run_measured([sys.executable, str(script), page_path, what], env)
    return json.loads(output.strip().splitlines()[-1])


def codebook_page(root: Path, work: Path) -> dict:
    result = page("pages/codebook.py", "codebook", {"BRAINVQ_DATA": str(root), "BRAINVQ_RUNS": str(work / "no-runs")},
                  work)
    first_open, encode, cached = result["times"]
    return {"slices": 544, "first_s": round(encode, 2), "cached_s": round(cached, 2),
            "page_open_64_slices_s": round(first_open, 2), "app_peak_rss_gb": round(result["peak_rss_gb"], 2),
            "errors": result["errors"]}


def curves_page(work: Path) -> dict:
    from core import runs

    runs_root = work / "curves-runs"
    run_dir = runs.create_run(runs_root / "oasis-30-epochs", {"kind": "vqvae", "train": {"epochs": 30}, "model": {},
                                                               "data_settings": {}})
    steps_per_epoch, records = SIZES["train"] // 16, []
    for step in range(1, 30 * steps_per_epoch + 1):
        epoch = (step - 1) // steps_per_epoch + 1
        if step % 10 == 0:
            records.append({"kind": "step", "step": step, "epoch": epoch, "wall_time": 1.0e9 + step,
                            "elapsed_s": step * 0.1, "loss": 1.0 / step ** 0.3, "reconstruction_loss": 0.5 / step ** 0.3,
                            "vq_loss": 0.01, "perplexity": 30.0, "codes_used": 200.0})
        if step % steps_per_epoch == 0:
            records.append({"kind": "epoch", "step": step, "epoch": epoch, "wall_time": 1.0e9 + step,
                            "elapsed_s": step * 0.1, "val_ssim": 0.9 + epoch / 1000, "val_psnr": 30.0,
                            "val_mse": 0.001, "val_perplexity": 30.0, "val_codes_used": 200.0})
    runs.append_metrics(run_dir, records)
    runs.write_status(run_dir, state="finished", kind="vqvae", step=30 * steps_per_epoch, epoch=30, epochs=30,
                      steps_per_epoch=steps_per_epoch, elapsed_s=1000.0)
    result = page("pages/curves.py", "curves", {"BRAINVQ_RUNS": str(runs_root)}, work)
    return {"metric_lines": len(records), "metrics_mb": round((run_dir / "metrics.jsonl").stat().st_size / 1e6, 2),
            "first_render_s": round(result["times"][0], 2), "rerun_s": round(result["times"][1], 2),
            "app_peak_rss_gb": round(result["peak_rss_gb"], 2),
            "errors": result["errors"]}


def main(argv=None) -> None:
    args = parse_args(argv)
    chosen = set(args.only or ("vqvae_epoch", "prior", "evaluate_test", "codebook_page", "curves_page"))
    with tempfile.TemporaryDirectory() as temp:
        root = Path(args.root) if args.root else Path(temp) / "oasis"
        work = Path(temp) / "work"
        work.mkdir()
        started = time.perf_counter()
        build_layout(Path(args.proxy), root)
        report = {"layout": {"root": str(root), "slices": SIZES, "build_s": round(time.perf_counter() - started, 1)},
                  "cpu_cores": os.cpu_count(), "load_average_before": os.getloadavg()}
        if "vqvae_epoch" in chosen:
            report["vqvae_epoch"] = vqvae_epoch(root, work)
        if "prior" in chosen:
            report["prior"] = prior(root, work, args.prior_steps)
        if "evaluate_test" in chosen:
            report["evaluate_test"] = evaluate_test(root)
        if "codebook_page" in chosen:
            report["codebook_page"] = codebook_page(root, work)
        if "curves_page" in chosen:
            report["curves_page"] = curves_page(work)
        report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
