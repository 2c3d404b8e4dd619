"""core/cluster.py and `python -m core.train --workers N`: TF_CONFIG, the chief, and real two-worker jobs on localhost.

The job tests run two worker processes of a tiny model for a few steps (about a minute in all on
two cores): losses as one process gives, one run directory, a killed worker survived by --resume.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from core import cluster, runs
from test_train import (ENV, REPO_ROOT, TIMEOUT_S, TINY, assert_complete_history, epoch_lines, final_state,
                        load_bundle_model, python_messages, step_lines, train, wait_for)


def with_tf_config(monkeypatch, config) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps(config) if isinstance(config, dict) else config)


# --- TF_CONFIG -------------------------------------------------------------------------------------
def test_without_tf_config_this_process_is_the_only_worker_and_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster.tf_config() is None
    assert cluster.is_chief() and cluster.worker_count() == 1


def test_worker_zero_is_the_chief_unless_the_cluster_names_one(monkeypatch):
    configs = cluster.local_tf_configs([1111, 2222, 3333])
    assert [c["cluster"]["worker"] for c in configs] == [["localhost:1111", "localhost:2222", "localhost:3333"]] * 3
    chiefs = []
    for config in configs:
        with_tf_config(monkeypatch, config)
        chiefs.append(cluster.is_chief())
        assert cluster.worker_count() == 3
    assert chiefs == [True, False, False]
    named = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}
    with_tf_config(monkeypatch, named)
    assert not cluster.is_chief() and cluster.worker_count() == 3
    with_tf_config(monkeypatch, {**named, "task": {"type": "chief", "index": 0}})
    assert cluster.is_chief()


@pytest.mark.parametrize("text", ["{not json", '{"cluster": {}}', '{"cluster": {"worker": []}, "task": {}}',
                                  '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
                                  '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}'])
def test_a_broken_tf_config_is_a_clear_error(monkeypatch, text):
    with_tf_config(monkeypatch, text)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        cluster.tf_config()


def test_free_ports_are_distinct():
    ports = cluster.free_ports(4)
    assert len(set(ports)) == 4 and all(0 < p < 65536 for p in ports)


# --- start_local, with stand-in workers -------------------------------------------------------------
STAND_IN = """
import json, os, signal, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
print("hello from", index, sys.argv[1:], flush=True)
if sys.argv[1] == "die" and index == 1:
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "die":
    time.sleep(600)  # a chief that never notices: start_local must stop it
"""


@pytest.fixture()
def stand_in(tmp_path, monkeypatch):
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "stand_in"


def test_start_local_runs_every_worker_with_its_own_tf_config(stand_in):
    out = io.StringIO()
    assert cluster.start_local(["ok", "--flag"], 3, module=stand_in, out=out) == (0, None)
    lines = sorted(out.getvalue().splitlines())
    assert lines == [f"[worker {i}] hello from {i} ['ok', '--flag']" for i in range(3)]


def test_a_killed_worker_stops_the_job_and_is_named(stand_in):
    out = io.StringIO()
    code, failure = cluster.start_local(["die"], 2, module=stand_in, grace_s=1.0, out=out)
    assert code == 1 and failure == "worker 1 of 2 was killed by SIGKILL"
    assert "[worker 0] hello from 0" in out.getvalue()  # the chief ran, and was stopped after the grace


# --- real two-worker jobs ------------------------------------------------------------------------
def run_files(run_dir) -> set[str]:
    """The run directory's files, with checkpoint folders named by step only (their names carry a time)."""
    names = set()
    for path in run_dir.rglob("*"):
        parts = list(path.relative_to(run_dir).parts)
        if parts[0] == "checkpoints" and len(parts) > 1 and parts[1].startswith("step_"):
            parts[1] = parts[1].rsplit("_", 1)[0]
        if parts[0] == "tb":
            parts = ["tb"]  # event file names carry the host and pid
        names.add("/".join(parts))
    return names


def test_two_workers_train_as_one_process_does_into_one_run_directory(oasis_tree, tmp_path):
    flags = [*TINY, "--epochs", "2", "--steps-per-epoch", "3", "--log-every", "1"]
    one, two = tmp_path / "one" / "run", tmp_path / "two" / "run"
    one.parent.mkdir(), two.parent.mkdir()
    assert final_state(train("--data", str(oasis_tree), "--run-dir", str(one), *flags)) == "finished"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = subprocess.run([sys.executable, "-m", "core.train", "vqvae", "--data", str(oasis_tree),
                             "--run-dir", str(two), *flags, "--workers", "2"],
                            cwd=workdir, env={**ENV, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    finished = [line for line in result.stderr.splitlines() if '"state": "finished"' in line]
    assert sorted(line.split("]")[0] for line in finished) == ["[worker 0", "[worker 1"]
    assert runs.read_config(two)["train"]["strategy"] == "multiworker"
    assert runs.read_status(two)["workers"] == 2

    # The same losses: each worker reads its run of every global batch, so a step sees the same
    # slices, crops and code restarts as one process. They differ only by the order float32 sums
    # are added in (measured: at most 7e-7 relative over 6 steps); a wrong batch or restart
    # layout differs by 1e-3 at the first step.
    single, double = step_lines(one), step_lines(two)
    assert [r["step"] for r in double] == [r["step"] for r in single] == list(range(1, 7))
    for key in ("loss", "reconstruction_loss", "vq_loss"):
        np.testing.assert_allclose([r[key] for r in double], [r[key] for r in single], rtol=1e-5, err_msg=key)
    assert [r["codes_used"] for r in double] == [r["codes_used"] for r in single]
    np.testing.assert_allclose([r["val_ssim"] for r in epoch_lines(two)],
                               [r["val_ssim"] for r in epoch_lines(one)], rtol=1e-4)

    # One run directory, written by the chief alone, holding what a one-process run holds.
    assert run_files(two) == run_files(one)
    assert sorted(p.name for p in two.parent.iterdir()) == ["run"]
    assert list(workdir.iterdir()) == []
    load_bundle_model(assert_complete_history(two, epochs=2, steps_per_epoch=3))


def worker_pids(launcher_pid: int) -> dict[int, int]:
    """{worker index: pid} of the workers a `--workers` launcher started, from their TF_CONFIG."""
    found = {}
    children = open(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read().split()
    for pid in map(int, children):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"TF_CONFIG="):
                found[json.loads(item[len(b"TF_CONFIG="):])["task"]["index"]] = pid
    return found


def test_a_killed_worker_fails_the_job_clearly_and_resume_restarts_every_worker(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "core.train", "vqvae", "--data", str(oasis_tree), "--run-dir", str(run_dir),
            *TINY, "--epochs", "8", "--steps-per-epoch", "3", "--log-every", "1", "--checkpoint-every-s", "0",
            "--workers", "2"]
    log_path = tmp_path / "job.log"
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(args, cwd=REPO_ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        def past_a_checkpoint() -> bool:
            last = runs.checkpoint_pointer(run_dir, "last")
            return bool(last and last["step"] >= 4)
        wait_for(past_a_checkpoint, launcher, "a checkpoint past the first epoch")
        workers = worker_pids(launcher.pid)
        assert sorted(workers) == [0, 1]
        os.kill(workers[1], signal.SIGKILL)
        assert launcher.wait(timeout=TIMEOUT_S) == 1
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    last_line = log_path.read_text().strip().splitlines()[-1]
    assert last_line.startswith("error: worker 1 of 2 was killed by SIGKILL; the job stopped."), last_line
    assert f"--run-dir {run_dir} --resume --workers 2" in last_line
    status = runs.read_status(run_dir)
    assert status["state"] == "failed"
    assert status["error"].startswith("worker 1 of this multi-worker job stopped answering"), status["error"]
    stopped_at = runs.checkpoint_pointer(run_dir, "last")["step"]
    assert 4 <= stopped_at < 24

    resumed = subprocess.run([sys.executable, "-m", "core.train", "vqvae", "--run-dir", str(run_dir), "--resume",
                              "--workers", "2"], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Every step and epoch once, in order: none lost, none written twice.
    load_bundle_model(assert_complete_history(run_dir, epochs=8, steps_per_epoch=3))
    assert f"Resuming {run_dir} from step {stopped_at}" in (run_dir / "train.log").read_text()


def test_stop_on_the_chief_stops_every_worker_at_the_same_step(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "core.train", "vqvae", "--data", str(oasis_tree), "--run-dir", str(run_dir),
            *TINY, "--epochs", "200", "--steps-per-epoch", "3", "--log-every", "1", "--workers", "2"]
    log_path = tmp_path / "job.log"
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(args, cwd=REPO_ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(step_lines(run_dir)) >= 5 if (run_dir / "metrics.jsonl").exists() else False,
                 launcher, "five steps")
        (run_dir / "STOP").touch()
        assert launcher.wait(timeout=TIMEOUT_S) == 0  # both workers ended well, neither hung
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    stopped = [line for line in log_path.read_text().splitlines() if '"state": "stopped"' in line]
    assert sorted(line.split("]")[0] for line in stopped) == ["[worker 0", "[worker 1"]
    status = runs.read_status(run_dir)
    assert status["state"] == "stopped" and status["step"] < 600
    assert runs.checkpoint_pointer(run_dir, "last")["step"] == status["step"]  # a checkpoint where it stopped


def test_workers_refuse_a_strategy_other_than_multiworker(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    result = train("--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY, "--workers", "2",
                   "--strategy", "mirrored")
    assert result.returncode == 2
    assert python_messages(result.stderr) == [
        "error: --workers runs one multi-worker job: give --strategy multiworker (or none), not mirrored."]
    assert not run_dir.exists()


def test_resuming_a_one_process_run_on_several_workers_is_refused(oasis_tree, tmp_path):
    run_dir = tmp_path / "run"
    assert final_state(train("--data", str(oasis_tree), "--run-dir", str(run_dir), *TINY, "--epochs", "1",
                             "--steps-per-epoch", "1")) == "finished"
    result = train("--run-dir", str(run_dir), "--resume", "--epochs", "2", "--workers", "2")
    assert result.returncode == 2
    assert python_messages(result.stderr) == [
        "error: This run trains with --strategy default; several workers need a run started with "
        "--strategy multiworker."]
