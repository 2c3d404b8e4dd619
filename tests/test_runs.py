"""core.runs: the run directory contract (config, status, metrics, checkpoints, listing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from core import atomic, runs
from core.runs import RunError

CONFIG = {"kind": "vqvae", "model": {"image_size": 32}, "train": {"epochs": 3}}


@pytest.fixture
def run(tmp_path):
    return runs.create_run(tmp_path / "run", CONFIG)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: the pid names no process now
    return process.pid


def write_bundle(folder, marker="model"):
    (folder / "vqvae.keras").write_text(marker)
    atomic.write_json(folder / "config.json", {"kind": "vqvae"})


# --- creation and config -----------------------------------------------------------------------
def test_create_run_makes_the_layout(run):
    assert runs.read_config(run) == CONFIG
    assert all((run / sub).is_dir() for sub in ("checkpoints", "samples", "tb"))


def test_create_run_refuses_an_existing_run(run):
    before = (run / "config.json").read_text()
    with pytest.raises(RunError, match="already holds a run"):
        runs.create_run(run, {"kind": "prior"})
    assert (run / "config.json").read_text() == before


def test_create_run_refuses_a_users_folder_and_changes_nothing(tmp_path):
    # A folder of the user's (no config.json) is not trained into: nothing of theirs is touched.
    folder = tmp_path / "mine"
    (folder / "checkpoints" / "step_0000001_1").mkdir(parents=True)
    (folder / "samples").mkdir()
    (folder / "samples" / "epoch_001.png").write_text("their picture")
    (folder / "metrics.jsonl").write_text('{"step": 5}\n')
    before = sorted((p, p.read_bytes() if p.is_file() else None) for p in folder.rglob("*"))
    with pytest.raises(RunError, match="Expected a new or empty folder.*not a run of ours"):
        runs.create_run(folder, CONFIG)
    assert sorted((p, p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")) == before
    (tmp_path / "a_file").write_text("")
    with pytest.raises(RunError, match="which is a file"):
        runs.refuse_existing(tmp_path / "a_file")


def test_create_run_accepts_an_empty_or_launcher_reserved_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert runs.read_config(runs.create_run(tmp_path / "empty", CONFIG)) == CONFIG
    reserved = tmp_path / "reserved"
    reserved.mkdir()
    (reserved / "launcher.json").write_text('{"pid": 1}')
    (reserved / "console.log").write_text("starting\n")
    assert runs.read_config(runs.create_run(reserved, CONFIG)) == CONFIG
    assert (reserved / "console.log").read_text() == "starting\n"


def test_only_create_run_accepts_files_the_task_prepared_after_the_check(tmp_path):
    folder = tmp_path / "prior"
    folder.mkdir()
    (folder / "codes_train.npy").write_bytes(b"cache")
    with pytest.raises(RunError, match="codes_train.npy"):
        runs.refuse_existing(folder)  # before any work: not ours
    assert runs.read_config(runs.create_run(folder, CONFIG)) == CONFIG


@pytest.mark.parametrize("text", ['["a list"]', '{"model": {}}', '{"kind": 3}',
                                  '{"kind": "vqvae", "train": [1]}',
                                  '{"kind": "vqvae", "vqvae": {}}'])  # a bundle's, not a run's
def test_read_config_of_a_misshapen_config_is_a_run_error(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RunError, match="Expected|not a run directory"):
        runs.read_config(tmp_path)


def test_read_config_of_a_non_run_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        runs.read_config(tmp_path)
    (tmp_path / "config.json").write_text("{half")
    with pytest.raises(RunError):
        runs.read_config(tmp_path)


def test_read_json_gives_the_default_for_a_missing_or_torn_file(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"x": 2})
    assert runs.read_json(tmp_path / "a.json") == {"x": 2}
    assert runs.read_json(tmp_path / "missing.json", "default") == "default"
    (tmp_path / "torn.json").write_text('{"x": ')
    assert runs.read_json(tmp_path / "torn.json", "default") == "default"


# --- status -------------------------------------------------------------------------------------
def test_write_and_read_status(run):
    runs.write_status(run, state="running", pid=os.getpid(), step=3)
    status = runs.write_status(run, step=4)  # fields merge into what is there
    assert status["state"] == "running" and status["step"] == 4
    read = runs.read_status(run)
    assert (read["state"], read["step"], read["pid"]) == ("running", 4, os.getpid())
    assert time.time() - read["heartbeat"] < 60


def test_running_status_with_dead_pid_reads_as_failed(run):
    runs.write_status(run, state="running", pid=dead_pid())
    status = runs.read_status(run)
    assert status["state"] == "failed" and "ended without finishing" in status["error"]
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # the file is untouched


def test_running_status_of_a_zombie_child_reads_as_failed(run):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 30
        while "zombie" not in open(f"/proc/{process.pid}/status").read().lower():
            assert time.time() < deadline
            time.sleep(0.05)
        runs.write_status(run, state="running", pid=process.pid)
        assert runs.read_status(run)["state"] == "failed"
    finally:
        process.wait()


def test_a_reused_pid_is_not_our_trainer_and_is_never_signalled(run):
    # The trainer died; its pid now names another live process (here: a sleep of the test's).
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        runs.process_start(sleeper.pid)  # the sleeper is live and has a start time
        atomic.write_json(run / "status.json", {
            "state": "running", "pid": sleeper.pid, "pid_start": runs.process_start(sleeper.pid) - 1,
            "heartbeat": time.time()})
        status = runs.read_status(run)
        assert status["state"] == "failed" and "ended without finishing" in status["error"]
        assert runs.kill(run) is False
        atomic.write_json(run / "status.json", {"state": "running", "pid": os.getpid(),
                                                "heartbeat": time.time()})  # no start time recorded
        assert runs.read_status(run)["state"] == "failed"
        assert runs.kill(run) is False
        assert sleeper.poll() is None  # never signalled
    finally:
        sleeper.kill()
        sleeper.wait()


def test_process_start_is_field_22_of_proc_stat():
    stat = open(f"/proc/{os.getpid()}/stat").read()
    assert runs.process_start(os.getpid()) == int(stat.rsplit(")", 1)[1].split()[19])
    assert runs.process_start(dead_pid()) is None
    assert runs.is_process(os.getpid(), runs.process_start(os.getpid()))
    assert not runs.is_process(os.getpid(), None)


def test_a_running_status_with_a_stale_heartbeat_reads_as_failed(run, monkeypatch):
    runs.write_status(run, state="running", pid=os.getpid())
    assert runs.read_status(run)["state"] == "running"
    later = time.time() + runs.HEARTBEAT_STALE_S + 1
    monkeypatch.setattr(runs.time, "time", lambda: later)
    status = runs.read_status(run)
    assert status["state"] == "failed" and "heartbeat" in status["error"]


@pytest.mark.parametrize("state", ["finished", "stopped", "failed"])
def test_final_states_are_kept_whatever_the_pid(run, state):
    runs.write_status(run, state=state, pid=dead_pid())
    assert runs.read_status(run)["state"] == state


def test_status_of_a_run_without_status_file(run, tmp_path):
    assert runs.read_status(run)["state"] == "failed"  # a config but no status: it never started
    assert runs.read_status(tmp_path / "nothing")["state"] == "missing"


def test_request_stop_and_kill(run):
    runs.request_stop(run)
    assert (run / "STOP").exists()
    runs.write_status(run, state="running", pid=dead_pid())
    assert runs.kill(run) is False
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runs.write_status(run, state="running", pid=sleeper.pid)
        assert runs.kill(run) is True
        assert sleeper.wait(timeout=30) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


@pytest.mark.parametrize("text", ["{half", '["running"]', '{"state": 5}'])
def test_an_unreadable_status_reads_as_broken(run, text):
    (run / "status.json").write_text(text)
    status = runs.read_status(run)
    assert status["state"] == "broken" and "status.json" in status["error"]
    assert runs.kill(run) is False


# --- metrics ------------------------------------------------------------------------------------
def test_append_and_read_metrics_incrementally(run):
    assert runs.read_metrics(run) == ([], 0)
    runs.append_metrics(run, [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}])
    records, offset = runs.read_metrics(run)
    assert [r["step"] for r in records] == [1, 2]
    assert offset == (run / "metrics.jsonl").stat().st_size
    assert runs.read_metrics(run, offset) == ([], offset)
    runs.append_metrics(run, [{"step": 3, "loss": 0.3}])
    runs.append_metrics(run, [])
    records, offset2 = runs.read_metrics(run, offset)
    assert records == [{"step": 3, "loss": 0.3}] and offset2 > offset


def test_half_written_line_is_skipped_then_read_when_complete(run):
    runs.append_metrics(run, [{"step": 1}])
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "lo')
    records, offset = runs.read_metrics(run)
    assert records == [{"step": 1}]
    assert runs.read_metrics(run, offset) == ([], offset)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('ss": 0.1}\n')
    records, offset = runs.read_metrics(run, offset)
    assert records == [{"step": 2, "loss": 0.1}]
    assert offset == (run / "metrics.jsonl").stat().st_size


def test_torn_line_in_the_middle_is_skipped(run):
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"ste\n{"step": 2}\n')
    assert [r["step"] for r in runs.read_metrics(run)[0]] == [1, 2]


def test_truncate_metrics_keeps_lines_up_to_the_checkpoint(run):
    runs.append_metrics(run, [{"kind": "step", "step": s} for s in range(1, 6)]
                        + [{"kind": "epoch", "step": 3}, {"note": "no step"}])
    assert runs.truncate_metrics(run, 3) == 2  # steps 4 and 5
    kept = runs.read_metrics(run)[0]
    assert [r.get("step") for r in kept] == [1, 2, 3, 3, None]
    assert runs.truncate_metrics(run, 3) == 0
    assert runs.truncate_metrics(run, 0) == 4
    assert runs.read_metrics(run)[0] == [{"note": "no step"}]


def test_truncate_metrics_without_a_file(run):
    assert runs.truncate_metrics(run, 10) == 0
    assert runs.read_metrics(run) == ([], 0)


# --- checkpoints --------------------------------------------------------------------------------
def test_save_checkpoint_points_last_and_best(run):
    folder = runs.save_checkpoint(run, 4, write_bundle, {"last": {"epoch": 1}, "best": {"val_ssim": 0.5}})
    assert folder.is_dir() and folder.parent == run / "checkpoints" and folder.name.startswith("step_0000004")
    last = runs.checkpoint_pointer(run, "last")
    best = runs.checkpoint_pointer(run, "best")
    assert (last["path"], last["step"], last["epoch"]) == (folder, 4, 1)
    assert (best["path"], best["val_ssim"]) == (folder, 0.5)
    assert runs.checkpoint_pointer(run, "nothing") is None


def test_failed_write_leaves_the_previous_checkpoint_intact(run):
    first = runs.save_checkpoint(run, 2, write_bundle, {"last": {}, "best": {}})
    pointers = {p: (run / "checkpoints" / f"{p}.json").read_text() for p in ("last", "best")}

    def broken_write(folder):
        (folder / "vqvae.keras").write_text("half a mod")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        runs.save_checkpoint(run, 3, broken_write, {"last": {}, "best": {}})
    for pointer, text in pointers.items():
        assert (run / "checkpoints" / f"{pointer}.json").read_text() == text
        assert runs.checkpoint_pointer(run, pointer)["path"] == first
    assert (first / "vqvae.keras").read_text() == "model"
    completed = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert completed == [first]  # the half-written folder was never published
    # The next good save clears what the failed one left behind; the first stays as "previous".
    second = runs.save_checkpoint(run, 4, write_bundle, {"last": {}, "best": {}})
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == [
        first.name, second.name]
    assert runs.checkpoint_pointer(run, "previous")["path"] == first


def test_pruning_keeps_last_previous_and_best(run):
    best = runs.save_checkpoint(run, 1, write_bundle, {"last": {}, "best": {"val_ssim": 0.9}})
    runs.save_checkpoint(run, 2, write_bundle, {"last": {}})
    previous = runs.save_checkpoint(run, 3, write_bundle, {"last": {}})
    last = runs.save_checkpoint(run, 4, write_bundle, {"last": {}})
    folders = sorted(p for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert folders == [best, previous, last]
    assert runs.checkpoint_pointer(run, "best")["path"] == best
    assert runs.checkpoint_pointer(run, "previous")["path"] == previous
    assert runs.checkpoint_pointer(run, "last")["path"] == last
    assert [c["step"] for c in runs.resume_candidates(run)] == [4, 3, 1]


def test_pruning_touches_only_our_checkpoint_folders(run):
    mine = run / "checkpoints" / "my_model"
    mine.mkdir()
    (mine / "weights.keras").write_text("the user's")
    (run / "checkpoints" / "step_notes").mkdir()
    runs.save_checkpoint(run, 1, write_bundle, {"last": {}})
    runs.save_checkpoint(run, 2, write_bundle, {"last": {}})
    runs.save_checkpoint(run, 3, write_bundle, {"last": {}})
    assert (mine / "weights.keras").read_text() == "the user's"
    assert (run / "checkpoints" / "step_notes").is_dir()


def test_saving_the_same_step_twice_in_one_millisecond(run, monkeypatch):
    # An epoch-end checkpoint right after a timed one saves the same step again; a fast disk
    # does both within one clock tick.
    monkeypatch.setattr(runs.time, "time", lambda: 1_700_000_000.0)
    first = runs.save_checkpoint(run, 5, write_bundle, {"last": {}, "best": {}})
    second = runs.save_checkpoint(run, 5, lambda f: write_bundle(f, "again"), {"last": {}})
    assert second != first
    assert (runs.checkpoint_pointer(run, "last")["path"] / "vqvae.keras").read_text() == "again"
    assert runs.checkpoint_pointer(run, "best")["path"] == first


def test_resolve_checkpoint_of_run_dir_prefers_best(run):
    best = runs.save_checkpoint(run, 1, write_bundle, {"last": {}, "best": {}})
    last = runs.save_checkpoint(run, 2, write_bundle, {"last": {}})
    assert runs.resolve_checkpoint(run) == best
    (run / "checkpoints" / "best.json").unlink()
    assert runs.resolve_checkpoint(run) == last
    assert runs.resolve_checkpoint(last) == last  # a bundle folder is itself
    assert runs.resolve_checkpoint(str(last)) == last


def test_resolve_checkpoint_errors(run, tmp_path):
    with pytest.raises(RunError, match="no checkpoint yet"):
        runs.resolve_checkpoint(run)
    with pytest.raises(RunError, match="neither"):
        runs.resolve_checkpoint(tmp_path / "elsewhere")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "config.json").write_text("{}")  # config but no *.keras: not a bundle
    with pytest.raises(RunError, match="neither"):
        runs.resolve_checkpoint(lone)


def test_pointer_to_a_missing_folder_is_no_checkpoint(run):
    folder = runs.save_checkpoint(run, 1, write_bundle, {"last": {}})
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    assert runs.checkpoint_pointer(run, "last") is None
    with pytest.raises(RunError):
        runs.resolve_checkpoint(run)


# --- listing ------------------------------------------------------------------------------------
def test_summarize_run(run):
    runs.write_status(run, state="running", pid=os.getpid(), epoch=1, step=5, epochs=3,
                      steps_per_epoch=4, elapsed_s=10.0)
    runs.save_checkpoint(run, 4, write_bundle, {"last": {}})
    summary = runs.summarize_run(run)
    assert (summary.name, summary.kind, summary.state, summary.epoch, summary.epochs) == (
        "run", "vqvae", "running", 1, 3)
    assert (summary.step, summary.total_steps, summary.has_checkpoint) == (5, 12, True)
    assert summary.progress == pytest.approx(5 / 12)
    assert summary.eta_s == pytest.approx(10.0 / 5 * 7)
    runs.write_status(run, state="finished")
    assert runs.summarize_run(run).eta_s is None


def test_summary_of_a_fresh_run_uses_the_config(run):
    summary = runs.summarize_run(run)
    assert (summary.state, summary.epochs, summary.step, summary.progress, summary.has_checkpoint) == (
        "failed", 3, 0, 0.0, False)


@pytest.mark.parametrize("file, text, why", [
    ("config.json", "{half", "no readable config.json"),
    ("config.json", '{"kind": "vqvae", "train": "thirty"}', '"train"'),
    ("status.json", "[]", "status.json"),
    ("status.json", '{"state": "finished", "step": "many"}', "step"),
    ("status.json", '{"state": "finished", "epochs": -3}', "epochs"),
    ("status.json", '{"state": "finished", "elapsed_s": Infinity}', "elapsed_s"),  # Python's json reads it
    ("status.json", '{"state": "finished", "elapsed_s": NaN}', "elapsed_s"),
])
def test_a_broken_run_is_listed_as_broken_beside_the_good_ones(tmp_path, file, text, why):
    good = runs.create_run(tmp_path / "good", CONFIG)
    runs.write_status(good, state="finished", step=3)
    bad = runs.create_run(tmp_path / "bad", CONFIG)
    (bad / file).write_text(text)
    listed = {s.name: s for s in runs.list_runs(tmp_path)}
    assert listed["good"].state == "finished"
    assert (listed["bad"].state, listed["bad"].has_checkpoint) == ("broken", False)
    assert "Broken run" in listed["bad"].error and why in listed["bad"].error


def test_list_runs_newest_first(tmp_path):
    old = runs.create_run(tmp_path / "old", CONFIG)
    new = runs.create_run(tmp_path / "new", {**CONFIG, "kind": "prior"})
    os.utime(old / "config.json", (time.time() - 100, time.time() - 100))
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "stray.txt").write_text("")
    listed = runs.list_runs(tmp_path)
    assert [s.path for s in listed] == [new, old]
    assert [s.kind for s in listed] == ["prior", "vqvae"]
    assert runs.list_runs(tmp_path / "missing") == []


def test_metric_lines_that_are_json_but_not_objects_are_skipped_by_readers_and_resume(tmp_path):
    """A line `5` broke resume (truncate_metrics) and the Curves and Train pages (AttributeError)."""
    run_dir = runs.create_run(tmp_path / "r", CONFIG)
    runs.append_metrics(run_dir, [{"kind": "step", "step": 1, "loss": 0.5}])
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('5\n[1, 2]\n"text"\nnull\n')
    runs.append_metrics(run_dir, [{"kind": "step", "step": 2, "loss": 0.4}])
    records, _ = runs.read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2]
    assert runs.truncate_metrics(run_dir, 1) == 1
    assert [r["step"] for r in runs.read_metrics(run_dir)[0]] == [1]
