"""core.launcher: atomic run reservation, one job at a time, job validation, pid identity, and starting the VQ-VAE -> prior chain."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from core import atomic, launcher, runs
from core.data import DataError
from core.models.vqvae import VQVAEConfig
from core.training.loop import TrainConfig
from core.training.vqvae_task import VQVAEData


def request(name, data, prior_epochs=None, crop_size=None, **model) -> launcher.TrainJob:
    train = TrainConfig(epochs=2, batch_size=4, steps_per_epoch=2, device="cpu")
    return launcher.TrainJob(name, VQVAEConfig(**{**dict(image_size=32, downsample_factor=4, num_embeddings=16,
                                                        embedding_dim=4), **model}),
                             train, VQVAEData(data=str(data), crop_size=crop_size),
                             train.replace(epochs=prior_epochs) if prior_epochs else None)


def wait_until_done(run_dir, timeout_s=240) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = runs.read_status(run_dir).get("state")
        if state in ("finished", "failed", "stopped") and (run_dir / "config.json").exists():
            return state
        time.sleep(0.5)
    return "timeout"


def test_reserving_a_run_dir_is_atomic_and_names_are_checked(tmp_path):
    assert launcher.reserve_run_dir(tmp_path, "run-1").is_dir()
    with pytest.raises(runs.RunError, match="exists already"):
        launcher.reserve_run_dir(tmp_path, "run-1")
    for bad in ("", "../escape", "a/b", ".hidden", "x" * 81):
        with pytest.raises(runs.RunError, match="not usable"):
            launcher.reserve_run_dir(tmp_path, bad)


def test_validation_refuses_bad_sizes_and_non_oasis_folders(tmp_path, oasis_tree):
    request("ok", oasis_tree).validate()
    with pytest.raises(ValueError, match="divisible"):  # the config refuses it as the form builds it
        request("a", oasis_tree, image_size=36, downsample_factor=8)
    with pytest.raises(ValueError, match="crop size"):
        request("a", oasis_tree, crop_size=12, downsample_factor=8).validate()
    with pytest.raises(ValueError, match="not usable"):
        request("../a", oasis_tree).validate()
    with pytest.raises(DataError, match="not an OASIS"):
        request("a", tmp_path).validate()
    with pytest.raises(DataError, match="does not exist"):
        request("a", tmp_path / "missing").validate()


def test_busy_while_a_run_is_running_or_a_launcher_lives(tmp_path):
    assert launcher.busy_reason(tmp_path, 0) is None
    run = runs.create_run(tmp_path / "r", {"kind": "vqvae", "train": {"epochs": 1}})
    runs.write_status(run, state="running", pid=os.getpid())
    assert "one job at a time" in launcher.busy_reason(tmp_path, 1)
    assert "GPU" in launcher.busy_reason(tmp_path, 1) and "CPU" in launcher.busy_reason(tmp_path, 0)
    runs.write_status(run, state="finished")
    assert launcher.busy_reason(tmp_path, 0) is None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "queued").mkdir()
        atomic.write_json(tmp_path / "queued" / launcher.LAUNCHER_FILE,
                          {"pid": sleeper.pid, "pid_start": runs.process_start(sleeper.pid)})
        assert "queued" in launcher.busy_reason(tmp_path, 0)
        assert [p.name for p in launcher.pending_runs(tmp_path)] == ["queued"]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert launcher.busy_reason(tmp_path, 0) is None
    assert not launcher.pending_runs(tmp_path)[0].alive


def test_a_stopped_run_whose_process_is_still_exiting_says_so(tmp_path):
    run = runs.create_run(tmp_path / "r", {"kind": "vqvae", "train": {"epochs": 1}})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        atomic.write_json(run / launcher.LAUNCHER_FILE,
                          {"pid": sleeper.pid, "pid_start": runs.process_start(sleeper.pid)})
        runs.write_status(run, state="running", pid=sleeper.pid)
        assert not launcher.still_exiting(run)  # running, not exiting
        runs.write_status(run, state="stopped")  # the trainer's last word; it has yet to exit
        assert launcher.still_exiting(run)
        assert "still exiting" in launcher.busy_reason(tmp_path, 0)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not launcher.still_exiting(run) and launcher.busy_reason(tmp_path, 0) is None


def test_a_launcher_whose_pid_was_reused_is_not_busy(tmp_path):
    # The launched process died long ago; its pid now names another process (the test itself).
    (tmp_path / "old").mkdir()
    for record in ({"pid": os.getpid()}, {"pid": os.getpid(),
                                          "pid_start": runs.process_start(os.getpid()) + 1}):
        atomic.write_json(tmp_path / "old" / launcher.LAUNCHER_FILE, record)
        assert launcher.busy_reason(tmp_path, 0) is None
        assert not launcher.pending_runs(tmp_path)[0].alive


def test_the_launcher_record_names_the_process_by_pid_and_start_time(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "new").mkdir()
        launcher._write_launcher(tmp_path / "new", sleeper.pid, ["sleep"])
        record = json.loads((tmp_path / "new" / launcher.LAUNCHER_FILE).read_text())
        assert (record["pid"], record["pid_start"]) == (sleeper.pid, runs.process_start(sleeper.pid))
        assert "starting" in launcher.busy_reason(tmp_path, 0)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_resume_that_dies_before_writing_status_says_why(tmp_path):
    run = runs.create_run(tmp_path / "r", {"kind": "vqvae", "model": {}, "data_settings": {},
                                           "train": {"epochs": 1, "batch_size": 0}})
    runs.save_checkpoint(run, 1, lambda folder: None, {"last": {}})
    runs.write_status(run, state="failed", error="killed")
    (run / "console.log").write_text("error: an older launch's failure\n")
    assert launcher.launch_failure(run) is None  # no launch recorded
    launcher.resume(tmp_path, run, gpus=0)
    deadline = time.time() + 120
    while launcher.launch_failure(run) is None and time.time() < deadline:
        time.sleep(0.5)
    reason = launcher.launch_failure(run)
    assert reason and "batch_size" in reason and "older" not in reason, (run / "console.log").read_text()


def test_a_launch_whose_trainer_wrote_status_is_no_failure(tmp_path):
    run = runs.create_run(tmp_path / "r", {"kind": "vqvae", "train": {"epochs": 1}})
    (run / "console.log").write_text("error: something\n")
    atomic.write_json(run / launcher.LAUNCHER_FILE, {"pid": dead_pid(), "pid_start": 1,
                                                     "started": time.time() - 10})
    assert launcher.launch_failure(run) == "something"
    runs.write_status(run, state="failed", error="NonFiniteLoss: loss became nan")
    assert launcher.launch_failure(run) is None  # the trainer ran: its status says why


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_start_refuses_when_busy_and_reserves_nothing(tmp_path, oasis_tree):
    run = runs.create_run(tmp_path / "busy", {"kind": "vqvae", "train": {"epochs": 1}})
    runs.write_status(run, state="running", pid=os.getpid())
    with pytest.raises(runs.RunError, match="one job at a time"):
        launcher.start(tmp_path, request("new", oasis_tree), gpus=0)
    assert not (tmp_path / "new").exists()


def test_resume_refuses_a_finished_run(tmp_path):
    run = runs.create_run(tmp_path / "done", {"kind": "vqvae", "train": {"epochs": 1}})
    runs.write_status(run, state="finished")
    with pytest.raises(runs.RunError, match="only a stopped or failed run"):
        launcher.resume(tmp_path, run, gpus=0)


def test_the_chain_trains_the_prior_after_the_vqvae(tmp_path, oasis_tree):
    first = launcher.start(tmp_path, request("chain", oasis_tree, prior_epochs=1), gpus=0)
    prior = tmp_path / "chain-prior"
    assert first.is_dir() and prior.is_dir()
    with pytest.raises(runs.RunError, match="one job at a time"):  # queued counts as busy
        launcher.start(tmp_path, request("other", oasis_tree), gpus=0)
    assert wait_until_done(first) == "finished", (first / "console.log").read_text()[-2000:]
    assert wait_until_done(prior) == "finished", (prior / "console.log").read_text()[-2000:]
    assert json.loads((prior / "config.json").read_text())["kind"] == "prior"
    deadline = time.time() + 30
    while launcher.busy_reason(tmp_path, 0) and time.time() < deadline:
        time.sleep(0.5)
    assert launcher.busy_reason(tmp_path, 0) is None


def test_a_job_starts_the_trainer_with_flags_that_rebuild_its_configs(oasis_tree):
    from core.train import build_parser
    from core.training import vqvae_task

    job = request("flags", oasis_tree, crop_size=16, num_embeddings=32)
    args = build_parser().parse_args(["vqvae", "--run-dir", "x", *job.vqvae_argv()])
    model, data_settings = vqvae_task.new_settings(args)
    assert model == job.model and data_settings.crop_size == 16
    assert data_settings.data == str(oasis_tree.resolve())


def test_a_whole_brain_choice_reaches_the_chained_prior_as_its_flag(oasis_tree):
    from core.models.prior import PriorConfig
    from core.settings import given
    from core.train import build_parser

    job = request("vol", oasis_tree, prior_epochs=3)
    whole_brain = launcher.TrainJob(job.name, job.model, job.train, job.data, job.prior_train,
                                    {"previous_slice": True})
    for chained, expected in ((job, {}), (whole_brain, {"previous_slice": True})):
        args = build_parser().parse_args(["prior", "--vqvae", "v", "--run-dir", "x", *chained.prior_argv()])
        assert given(PriorConfig, args) == expected
        assert args.epochs == 3


def test_the_prior_run_name_is_made_in_one_place():
    assert launcher.prior_run_name("vq-1") == "vq-1-prior"
