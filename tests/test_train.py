"""`python -m core.train vqvae`: real training subprocesses on a tiny model and 32x32 slices.

Each run is a few steps of a 16-code model; the whole file takes about two minutes on two cores.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from oasis_fixtures import REPO_ROOT, make_oasis_tree
from core import runs
from core.models.vqvae import VQVAE, VQVAEConfig

TINY = ["--image-size", "32", "--code-grid", "8", "--codebook-size", "16", "--code-dim", "4",
        "--hidden-channels", "16", "--residual-blocks", "1", "--batch-size", "4"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
TIMEOUT_S = 240
STEP_KEYS = ("loss", "reconstruction_loss", "vq_loss", "perplexity", "codes_used")
# TensorFlow's C++ (absl) logging writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says.
_NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable the following)")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "core.train", "vqvae", *args]


def train(*args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def start(*args: str, log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(command(*args), cwd=REPO_ROOT, env=ENV, stdout=log,
                                stderr=subprocess.STDOUT)


def final_state(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["state"]


_INFO_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ")


def python_messages(stderr: str) -> list[str]:
    """stderr without TensorFlow's native log lines and the trainer's INFO progress lines."""
    return [line for line in stderr.splitlines()
            if line.strip() and not _NATIVE_LOG.match(line) and not _INFO_LOG.match(line)]


def step_lines(run_dir: Path) -> list[dict]:
    return [r for r in runs.read_metrics(run_dir)[0] if r["kind"] == "step"]


def epoch_lines(run_dir: Path) -> list[dict]:
    return [r for r in runs.read_metrics(run_dir)[0] if r["kind"] == "epoch"]


def optimizer_iterations(bundle: Path) -> int:
    with np.load(bundle / "optimizer.npz") as saved:
        iterations = saved["arr_0"]  # Keras saves the iteration counter first
    assert iterations.shape == () and np.issubdtype(iterations.dtype, np.integer)
    return int(iterations)


def assert_finite_losses(run_dir: Path):
    lines = step_lines(run_dir)
    assert lines
    for line in lines:
        assert all(math.isfinite(line[key]) for key in STEP_KEYS), line


def assert_complete_history(run_dir: Path, epochs: int, steps_per_epoch: int):
    """Every step logged once and in order, every epoch once, and a finished run pointing at it."""
    total = epochs * steps_per_epoch
    assert [r["step"] for r in step_lines(run_dir)] == list(range(1, total + 1))
    assert [(r["epoch"], r["step"]) for r in epoch_lines(run_dir)] == [
        (e, e * steps_per_epoch) for e in range(1, epochs + 1)]
    status = runs.read_status(run_dir)
    assert (status["state"], status["step"], status["epoch"]) == ("finished", total, epochs)
    last = runs.checkpoint_pointer(run_dir, "last")
    assert last["step"] == total
    return last["path"]


def load_bundle_model(bundle: Path) -> VQVAE:
    model = keras.saving.load_model(bundle / "vqvae.keras")
    assert isinstance(model, VQVAE)
    saved = json.loads((bundle / "config.json").read_text())
    assert saved["kind"] == "vqvae" and VQVAEConfig.from_dict(saved["vqvae"]) == model.config
    return model


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- one real run, looked at from every side ----------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(oasis_tree, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("train") / "run"
    result = train("--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY,
                   "--epochs", "1", "--steps-per-epoch", "2", "--log-every", "1")
    assert final_state(result) == "finished"
    return run_dir


def test_run_writes_config_and_finished_status(finished_run, oasis_tree):
    config = runs.read_config(finished_run)
    assert config["kind"] == "vqvae"
    model = VQVAEConfig.from_dict(config["model"])
    assert (model.image_size, model.code_grid, model.num_embeddings, model.embedding_dim,
            model.hidden_channels, model.num_residual_blocks) == (32, 8, 16, 4, 16, 1)
    assert (config["train"]["epochs"], config["train"]["steps_per_epoch"],
            config["train"]["batch_size"]) == (1, 2, 4)
    assert Path(config["data_settings"]["data"]) == oasis_tree.resolve()
    status = runs.read_status(finished_run)
    assert (status["state"], status["step"], status["epoch"], status["epochs"]) == ("finished", 2, 1, 1)


def test_run_writes_step_and_epoch_metrics(finished_run):
    steps = step_lines(finished_run)
    assert [(r["step"], r["epoch"]) for r in steps] == [(1, 1), (2, 1)]
    assert_finite_losses(finished_run)
    for record in steps:
        assert 1.0 <= record["perplexity"] <= 16.0 and 1 <= record["codes_used"] <= 16
    (epoch,) = epoch_lines(finished_run)
    assert (epoch["epoch"], epoch["step"]) == (1, 2)
    assert -1.0 <= epoch["val_ssim"] <= 1.0
    assert 0.0 < epoch["val_psnr"] <= 100.0
    assert 1.0 <= epoch["val_perplexity"] <= 16.0
    assert 1 <= epoch["val_codes_used"] <= 16
    assert epoch["train_loss"] == pytest.approx(np.mean([r["loss"] for r in steps]))


def test_run_checkpoints_load_with_keras(finished_run, oasis_tree):
    last = runs.checkpoint_pointer(finished_run, "last")
    best = runs.checkpoint_pointer(finished_run, "best")
    assert last["step"] == best["step"] == 2
    assert best["val_ssim"] == epoch_lines(finished_run)[0]["val_ssim"]
    for pointer in (last, best):
        model = load_bundle_model(pointer["path"])
        assert model.config == VQVAEConfig.from_dict(runs.read_config(finished_run)["model"])
        images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 1)).astype(np.float32)
        assert model.reconstruct(images).shape == (2, 32, 32, 1)
    assert optimizer_iterations(last["path"]) == 2
    assert runs.resolve_checkpoint(finished_run) == best["path"]


def test_run_writes_samples_tensorboard_and_log(finished_run):
    with Image.open(finished_run / "samples" / "epoch_001.png") as sample:
        sample.load()
        # Two rows (originals, reconstructions) of the 8 validation slices.
        assert (sample.mode, sample.size) == ("L", (8 * 32, 2 * 32))
    events = list((finished_run / "tb").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    log = (finished_run / "train.log").read_text()
    assert "epoch 1/1" in log


def test_existing_run_without_resume_is_refused_untouched(finished_run, oasis_tree):
    before = snapshot(finished_run)
    result = train("--data", str(oasis_tree), "--run-dir", str(finished_run), *TINY,
                   "--epochs", "1", "--steps-per-epoch", "2")
    assert result.returncode == 2
    assert python_messages(result.stderr) == [
        f"error: {finished_run} already holds a run. Use --resume to continue it, or choose a new "
        f"--run-dir."]
    assert snapshot(finished_run) == before


def test_a_users_folder_is_refused_and_left_untouched(oasis_tree, tmp_path):
    # A folder of the user's own (no config.json): never trained into, nothing deleted or rewritten.
    folder = tmp_path / "mine"
    (folder / "checkpoints" / "step_0000001_1").mkdir(parents=True)
    (folder / "checkpoints" / "step_0000001_1" / "vqvae.keras").write_text("their model")
    (folder / "samples").mkdir()
    (folder / "samples" / "epoch_001.png").write_text("their picture")
    (folder / "metrics.jsonl").write_text('{"step": 5}\n{"step": 6}\n')
    before = snapshot(folder)
    result = train("--data", str(oasis_tree), "--run-dir", str(folder), *TINY, "--epochs", "1",
                   "--steps-per-epoch", "2")
    assert result.returncode == 2
    messages = python_messages(result.stderr)
    assert len(messages) == 1 and messages[0].startswith("error: Expected a new or empty folder")
    assert snapshot(folder) == before


# --- kill -9, STOP and resume -------------------------------------------------------------------
def kill_when(args, log_path: Path, ready, what: str) -> None:
    """Start a training run, SIGKILL it once `ready()` holds, and make sure it is gone."""
    process = start(*args, log_path=log_path)
    try:
        wait_for(ready, process, what)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigkill_mid_run_then_resume_finishes_with_a_clean_history(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY, "--epochs", "6",
            "--steps-per-epoch", "3", "--log-every", "1", "--checkpoint-every-s", "0"]
    def past_a_checkpoint() -> bool:
        last = runs.checkpoint_pointer(run_dir, "last")
        logged = [r["step"] for r in step_lines(run_dir)] if run_dir.exists() else []
        return bool(last and logged and last["step"] >= 2 and max(logged) >= 5)

    kill_when(args, tmp_path / "first.log", past_a_checkpoint, "steps past a checkpoint")
    killed_at = runs.checkpoint_pointer(run_dir, "last")["step"]
    assert killed_at < 18
    assert runs.read_status(run_dir)["state"] == "failed"  # "running" with a dead pid
    result = train("--run-dir", str(run_dir), "--resume", "--checkpoint-every-s", "0")
    assert final_state(result) == "finished"
    bundle = assert_complete_history(run_dir, epochs=6, steps_per_epoch=3)
    load_bundle_model(bundle)
    assert optimizer_iterations(bundle) == 18
    assert f"Resuming {run_dir} from step {killed_at}" in (run_dir / "train.log").read_text()
    assert not list((run_dir / "checkpoints").glob(".step_*"))  # a kill's half-written folder is gone


@pytest.mark.parametrize("damaged", ["vqvae.keras", "optimizer.npz"])
def test_sigkill_then_a_truncated_last_checkpoint_resumes_from_the_previous(oasis_tree, tmp_path,
                                                                            damaged):
    run_dir = tmp_path / "run"
    args = ["--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY, "--epochs", "4",
            "--steps-per-epoch", "3", "--log-every", "1", "--checkpoint-every-s", "0"]
    def two_checkpoints() -> bool:
        return bool(runs.checkpoint_pointer(run_dir, "previous")
                    and runs.checkpoint_pointer(run_dir, "last")["step"] >= 3)

    kill_when(args, tmp_path / "first.log", two_checkpoints, "two checkpoints")
    last, previous = (runs.checkpoint_pointer(run_dir, p) for p in ("last", "previous"))
    assert previous["step"] < last["step"]
    victim = last["path"] / damaged
    victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])  # a disk error
    result = train("--run-dir", str(run_dir), "--resume", "--checkpoint-every-s", "0")
    assert final_state(result) == "finished"
    bundle = assert_complete_history(run_dir, epochs=4, steps_per_epoch=3)
    assert optimizer_iterations(bundle) == 12
    load_bundle_model(bundle)
    log = (run_dir / "train.log").read_text()
    assert f"Training restarts from step {previous['step']}" in log
    assert f"Resuming {run_dir} from step {previous['step']}" in log


def test_stop_file_stops_with_a_checkpoint_and_resume_keeps_the_optimizer(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY, "--epochs", "4",
            "--steps-per-epoch", "3", "--log-every", "1"]
    process = start(*args, log_path=tmp_path / "first.log")
    try:
        wait_for(lambda: run_dir.exists() and len(step_lines(run_dir)) >= 2, process, "step 2")
        runs.request_stop(run_dir)
        assert process.wait(timeout=TIMEOUT_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert '"state": "stopped"' in (tmp_path / "first.log").read_text()
    status = runs.read_status(run_dir)
    stopped_at = status["step"]
    assert status["state"] == "stopped" and 2 <= stopped_at < 12
    last = runs.checkpoint_pointer(run_dir, "last")
    assert last["step"] == stopped_at
    assert optimizer_iterations(last["path"]) == stopped_at
    result = train("--run-dir", str(run_dir), "--resume")
    assert final_state(result) == "finished"
    bundle = assert_complete_history(run_dir, epochs=4, steps_per_epoch=3)
    # The optimizer's step count went on from the checkpoint instead of starting again at 0.
    assert optimizer_iterations(bundle) == 12
    load_bundle_model(bundle)


# --- errors the user can cause ------------------------------------------------------------------
def _empty_train_split(root: Path) -> Path:
    make_oasis_tree(root, {"validate": 4})
    (root / "keras_png_slices_data" / "keras_png_slices_train").mkdir()
    return root / "keras_png_slices_data" / "keras_png_slices_train"


def _truncated_slice(root: Path) -> Path:
    make_oasis_tree(root, {"train": 4, "validate": 4})
    victim = root / "keras_png_slices_data" / "keras_png_slices_train" / "case_001_slice_1.nii.png"
    victim.write_bytes(victim.read_bytes()[:60])
    return victim


def _missing_folder(root: Path) -> Path:
    return root / "does_not_exist"


@pytest.mark.parametrize("make_problem, data_arg, expected", [
    (_empty_train_split, "root", "No PNG slices in {path}"),
    (_truncated_slice, "root", "{path} is not a readable PNG"),
    (_missing_folder, "path", "Data folder {path} does not exist"),
], ids=["empty-train-split", "truncated-png", "missing-folder"])
def test_data_errors_exit_2_with_one_line(tmp_path, make_problem, data_arg, expected):
    root = tmp_path / "data"
    path = make_problem(root)
    run_dir = tmp_path / "run"
    result = train("--data", str(root if data_arg == "root" else path), "--run-dir", str(run_dir),
                   *TINY, "--epochs", "1")
    assert result.returncode == 2
    messages = python_messages(result.stderr)
    assert "Traceback" not in result.stderr
    assert len(messages) == 1 and messages[0].startswith("error: "), result.stderr[-2000:]
    assert expected.format(path=path) in messages[0]
    assert not (run_dir / "config.json").exists()  # no half-made run left behind


# --- devices and precision ----------------------------------------------------------------------
# Runs core.train.main in a fresh process; optionally splits the CPU into logical devices first,
# and reports the global dtype policy the run left behind (the one its model was built under).
RUNNER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    import keras
    import tensorflow as tf
    logical = int(os.environ.get("LOGICAL_CPUS", "1"))
    if logical > 1:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * logical)
    from core import train
    code = train.main(sys.argv[1:])
    print("dtype policy:", keras.config.dtype_policy().name, file=sys.stderr)
    sys.exit(code)
""")


def run_main(tmp_path: Path, *args: str, logical_cpus: int = 1) -> subprocess.CompletedProcess:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(repo=str(REPO_ROOT)))
    return subprocess.run([sys.executable, str(script), "vqvae", *args], cwd=REPO_ROOT,
                          env={**ENV, "LOGICAL_CPUS": str(logical_cpus)}, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def test_mirrored_strategy_on_two_logical_cpus(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    result = run_main(tmp_path, "--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY,
                      "--epochs", "1", "--steps-per-epoch", "2", "--log-every", "1",
                      "--strategy", "mirrored", logical_cpus=2)
    assert final_state(result) == "finished"
    assert re.search(r"MirroredStrategy with devices \([^)]*CPU:0[^)]*CPU:1", result.stderr), \
        "both logical CPUs must be replicas"
    assert runs.read_config(run_dir)["train"]["strategy"] == "mirrored"
    assert_finite_losses(run_dir)
    load_bundle_model(assert_complete_history(run_dir, epochs=1, steps_per_epoch=2))


def test_mixed_precision_on_cpu_uses_bfloat16(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    result = run_main(tmp_path, "--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY,
                      "--epochs", "1", "--steps-per-epoch", "2", "--log-every", "1",
                      "--mixed-precision")
    assert final_state(result) == "finished"
    assert "dtype policy: mixed_bfloat16" in result.stderr
    assert runs.read_config(run_dir)["train"]["mixed_precision"] is True
    assert_finite_losses(run_dir)
    # The checkpoint loads (as float32 weights) and gives finite reconstructions.
    model = load_bundle_model(assert_complete_history(run_dir, epochs=1, steps_per_epoch=2))
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 1)).astype(np.float32)
    assert np.all(np.isfinite(model.reconstruct(images)))


def test_xla_compiled_step_runs(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    result = train("--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY, "--epochs", "1",
                   "--steps-per-epoch", "2", "--log-every", "1", "--xla")
    assert final_state(result) == "finished"
    assert runs.read_config(run_dir)["train"]["xla"] is True
    assert_finite_losses(run_dir)
    assert_complete_history(run_dir, epochs=1, steps_per_epoch=2)


def test_a_mixed_precision_run_resumes_as_it_was_started(oasis_tree, tmp_path):
    # Before: --resume took mixed_precision from the command line (False), so the saved optimizer
    # (with the loss scale's variables) no longer fitted: "optimizer.npz holds 29 ... needs 25".
    run_dir = tmp_path / "run"
    first = run_main(tmp_path, "--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY, "--epochs", "1",
                     "--steps-per-epoch", "2", "--log-every", "1", "--mixed-precision",
                     "--checkpoint-every-s", "7")
    assert final_state(first) == "finished"
    again = run_main(tmp_path, "--run-dir", str(run_dir), "--resume", "--epochs", "2")
    assert final_state(again) == "finished"
    assert "dtype policy: mixed_bfloat16" in again.stderr
    saved = runs.read_config(run_dir)["train"]
    assert saved["mixed_precision"] is True and saved["epochs"] == 2
    assert saved["checkpoint_every_s"] == 7.0  # not reset to the default on resume
    assert_complete_history(run_dir, epochs=2, steps_per_epoch=2)


def test_resume_refuses_a_flag_that_would_change_what_is_learned(finished_run, tmp_path):
    run_dir, before = finished_run, (finished_run / "config.json").read_text()
    for flag in (["--lr", "0.1"], ["--mixed-precision"], ["--codebook-size", "32"], ["--crop-size", "16"]):
        result = train("--run-dir", str(run_dir), "--resume", *flag)
        assert result.returncode == 2, flag
        assert python_messages(result.stderr) == [python_messages(result.stderr)[0]]
        assert python_messages(result.stderr)[0].startswith(f"error: {flag[0]} cannot change on --resume")
    assert (run_dir / "config.json").read_text() == before


@pytest.mark.parametrize("edit", ["drop image_size", "change hidden_channels"])
def test_resume_of_a_config_whose_model_was_edited_is_one_error_line_and_nothing_changes(finished_run, tmp_path, edit):
    """Weights of a 32x32 model load into a 256x256 one (convolutions do not know the image size): an edited
    config.json must not resume as another run than the one started."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    if edit == "drop image_size":  # a missing key takes its default, 256, on reading
        del config["model"]["image_size"]
        expected = "image_size = 256, but its checkpoint"
    else:
        config["model"]["hidden_channels"] = 32
        expected = "hidden_channels = 32, but its checkpoint"
    (run_dir / "config.json").write_text(json.dumps(config))
    before = snapshot(run_dir)
    result = train("--run-dir", str(run_dir), "--resume", "--epochs", "2")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.splitlines()[0]] and result.stdout == ""
    assert result.stderr.startswith("error: The run's config.json says " + expected)
    assert "cannot resume as it was started" in result.stderr
    after = snapshot(run_dir)
    after.pop(".lock", None)
    before.pop(".lock", None)
    assert after == before


@pytest.mark.parametrize("kind, part", [("vqvae", "data_settings"), ("vqvae", "model"), ("prior", "data_settings"),
                                        ("prior", "train")])
def test_resume_of_a_config_without_a_part_is_one_error_line_and_nothing_changes(tmp_path, capsys, kind, part):
    """A config.json edited by hand or damaged: it cannot say how the run was started."""
    from core import train as train_cli

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"kind": kind, "model": {}, "train": {"epochs": 1}, "data_settings": {"data": str(tmp_path)}}
    config.pop(part)
    (run_dir / "config.json").write_text(json.dumps(config))
    assert train_cli.main([kind, "--run-dir", str(run_dir), "--resume"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f'"{part}"' in errors[0] and "Traceback" not in capsys.readouterr().err
    assert json.loads((run_dir / "config.json").read_text()) == config
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


@pytest.mark.parametrize("flags", [["--lr", "nan"], ["--commitment-cost", "nan"], ["--commitment-cost", "1e300"],
                                   ["--epochs", "0"],
                                   ["--code-grid", "0"], ["--crop-size", "7"], ["--crop-size", "0"],
                                   ["--crop-size", "40"], ["--val-limit", "0"], ["--batch-size", "0"],
                                   ["--code-grid", "5"], ["--downsample-factor", "4", "--code-grid", "8"],
                                   ["--hidden-channels", "8"], ["--data", " "], ["--run-dir", ""]])
def test_bad_settings_are_one_error_line_before_any_folder_is_made(oasis_tree, tmp_path, flags):
    run_dir = tmp_path / "run"
    tiny = [t for t in TINY if t not in ("--code-grid", "8")] if "--code-grid" in flags else TINY
    result = train("--data", str(oasis_tree), "--run-dir", str(run_dir), *tiny, *flags, timeout=120)
    assert result.returncode == 2
    messages = python_messages(result.stderr)
    assert len(messages) == 1 and messages[0].startswith("error:"), messages
    assert not run_dir.exists()


@pytest.mark.parametrize("where, expected", [
    ("pipeline", "error: out of memory at step 0 with batches of 4 slices"),
    ("everywhere", "error: out of memory before the first step with batches of 4 slices"),
])
def test_out_of_memory_is_one_error_line(oasis_tree, tmp_path, monkeypatch, capsys, where, expected):
    """Slices too large for memory (a huge --image-size). Inside the input pipeline (tf.data's threads),
    TensorFlow hands the MemoryError on in an OpError that holds a Python traceback: the command printed
    all of it after `error:`; loading the validation slices before the first step, it was a traceback."""
    import threading

    from core import data
    from core import train as train_cli

    fit_to_size = data.fit_to_size

    def too_large(image, size):
        if where == "everywhere" or threading.current_thread() is not threading.main_thread():
            raise MemoryError()
        return fit_to_size(image, size)

    monkeypatch.setattr(data, "fit_to_size", too_large)
    run_dir = tmp_path / "run"
    code = train_cli.main(["vqvae", "--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY,
                           "--epochs", "1", "--steps-per-epoch", "1"])
    assert code == 2
    messages = python_messages(capsys.readouterr().err)
    assert len(messages) == 1 and messages[0].startswith(expected), messages
    if where == "pipeline":  # the run had begun: its status says the same
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "failed" and status["error"] == messages[0][len("error: "):]
    else:
        assert not run_dir.exists()


def test_a_loss_that_becomes_infinite_is_one_error_line_and_a_failed_run(oasis_tree, tmp_path, monkeypatch, capsys):
    """A NonFiniteLoss is the user's to fix (a smaller --lr), not a traceback."""
    from core import train as train_cli

    def blow_up(run_dir, task, train_config, resume=False):
        raise train_cli.loop.NonFiniteLoss("loss became inf at step 1; the last good checkpoint is none (none was saved yet).")

    monkeypatch.setattr(train_cli.loop, "fit", blow_up)  # the loop itself raises it: tests/test_loop.py
    code = train_cli.main(["vqvae", "--data", str(oasis_tree), "--run-dir", str(tmp_path / "run"), *TINY,
                           "--epochs", "1", "--steps-per-epoch", "1"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: loss became inf at step 1; the last good checkpoint is none (none was saved yet).")
