"""core.training.loop: the loop with a tiny fake task (no model): metrics, checkpoints, STOP, crash and resume."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import tensorflow as tf

from core import runs
from core.training import loop
from core.training.loop import TrainConfig


class Crash(Exception):
    """Stands in for a kill at one exact point of the loop."""


class FakeTask:
    """Trains nothing; remembers which batches its (checkpointed) lineage has seen."""

    kind = "fake"
    selection_metric = "val_score"
    selection_mode = "max"

    def __init__(self, run_dir: Path, steps: int = 3, stop_at: int | None = None,
                 crash_validating_epoch: int | None = None, batches: int | None = None,
                 loss_at: dict[int, float] | None = None, validation: dict | None = None,
                 step_seconds: float = 0.0):
        self.run_dir, self.steps, self.stop_at = run_dir, steps, stop_at
        self.loss_at = loss_at or {}  # trained-batch count -> the loss that step returns
        self.validation, self.step_seconds = validation, step_seconds
        self.crash_validating_epoch, self.batches = crash_validating_epoch, batches or steps + 1
        self.seen: list[int] = []  # batch ids trained, restored with the checkpoint

    def steps_per_epoch(self) -> int:
        return self.steps

    def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
        return tf.data.Dataset.range(epoch * 100, epoch * 100 + self.batches)

    def train_step(self, batch) -> dict:
        self.seen.append(int(batch))
        if len(self.seen) == self.stop_at:
            (self.run_dir / "STOP").touch()
        time.sleep(self.step_seconds)
        return {"loss": tf.constant(self.loss_at.get(len(self.seen), 1.0 / len(self.seen)))}

    def validate(self) -> dict:
        epoch = len(self.seen) // self.steps
        if epoch == self.crash_validating_epoch:
            raise Crash(f"killed while validating epoch {epoch}")
        if self.validation is not None:
            return dict(self.validation)
        return {"val_score": float(epoch % 2)}  # epochs 1, 3, ... are best

    def write_samples(self, path: Path) -> None:
        path.write_text("samples")

    def write_bundle(self, folder: Path) -> None:
        (folder / "model.json").write_text(json.dumps({"seen": self.seen}))

    def save_state(self, folder: Path) -> None:
        (folder / "state.json").write_text(json.dumps({"trained": len(self.seen)}))

    def restore(self, folder: Path) -> None:
        seen = json.loads((folder / "model.json").read_text())["seen"]
        json.loads((folder / "state.json").read_text())  # the optimizer's part must load too
        self.seen = seen


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 1, "log_every": 1,
                          "checkpoint_every_s": 1e9, **overrides})


def expected_batches(epochs: int, steps: int = 3) -> list[int]:
    return [epoch * 100 + i for epoch in range(epochs) for i in range(steps)]


def new_run(tmp_path) -> Path:
    return runs.create_run(tmp_path / "run", {"kind": "fake"})


def assert_complete_history(run_dir: Path, epochs: int, steps: int = 3):
    records = runs.read_metrics(run_dir)[0]
    step_lines = [r["step"] for r in records if r["kind"] == "step"]
    epoch_lines = [(r["epoch"], r["step"]) for r in records if r["kind"] == "epoch"]
    assert step_lines == list(range(1, epochs * steps + 1))
    assert epoch_lines == [(e, e * steps) for e in range(1, epochs + 1)]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        f"epoch_{e:03d}.png" for e in range(1, epochs + 1)]
    last = runs.checkpoint_pointer(run_dir, "last")
    assert last["step"] == epochs * steps
    seen = json.loads((last["path"] / "model.json").read_text())["seen"]
    assert seen == expected_batches(epochs, steps)  # each batch once, in order


def test_fit_runs_every_epoch_and_points_best(tmp_path):
    run = new_run(tmp_path)
    task = FakeTask(run)
    assert loop.fit(run, task, config()) == "finished"
    assert_complete_history(run, 3)
    status = runs.read_status(run)
    assert (status["state"], status["step"], status["epoch"], status["epochs"]) == ("finished", 9, 3, 3)
    best = runs.checkpoint_pointer(run, "best")
    assert (best["step"], best["val_score"]) == (3, 1.0)  # epoch 3 ties epoch 1: the first stays best
    assert not (run / ".lock").read_text()


def test_log_every_writes_every_nth_step_and_each_epoch_end(tmp_path):
    run = new_run(tmp_path)
    loop.fit(run, FakeTask(run, steps=3), config(epochs=2, log_every=2))
    steps = [r["step"] for r in runs.read_metrics(run)[0] if r["kind"] == "step"]
    assert steps == [2, 3, 4, 6]


def test_crash_right_after_the_last_step_of_an_epoch_is_resumed_with_its_epoch_record(tmp_path):
    run = new_run(tmp_path)
    with pytest.raises(Crash):
        loop.fit(run, FakeTask(run, crash_validating_epoch=2), config(checkpoint_every_s=0.0))
    assert runs.read_status(run)["state"] == "failed"
    assert loop.fit(run, FakeTask(run), config(), resume=True) == "finished"
    assert_complete_history(run, 3)


def test_crash_mid_run_then_resume_redoes_only_unsaved_steps(tmp_path):
    run = new_run(tmp_path)
    with pytest.raises(Crash):
        loop.fit(run, FakeTask(run, crash_validating_epoch=3), config(checkpoint_every_s=1e9))
    # Steps 7..9 were logged but never checkpointed: resume drops their lines and redoes them.
    assert runs.checkpoint_pointer(run, "last")["step"] == 6
    loop.fit(run, FakeTask(run), config(), resume=True)
    assert_complete_history(run, 3)


@pytest.mark.parametrize("stop_at", [2, 3, 6])
def test_stop_file_stops_with_a_checkpoint_and_resume_continues(tmp_path, stop_at):
    run = new_run(tmp_path)
    assert loop.fit(run, FakeTask(run, stop_at=stop_at), config()) == "stopped"
    status = runs.read_status(run)
    assert (status["state"], status["step"]) == ("stopped", stop_at)
    assert runs.checkpoint_pointer(run, "last")["step"] == stop_at
    assert loop.fit(run, FakeTask(run), config(), resume=True) == "finished"
    assert not (run / "STOP").exists()
    assert_complete_history(run, 3)


@pytest.mark.parametrize("damaged", ["model.json", "state.json"])
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tmp_path, damaged):
    run = new_run(tmp_path)
    with pytest.raises(Crash):
        loop.fit(run, FakeTask(run, crash_validating_epoch=3), config())
    last = runs.checkpoint_pointer(run, "last")
    assert last["step"] == 6 and runs.checkpoint_pointer(run, "previous")["step"] == 3
    text = (last["path"] / damaged).read_text()
    (last["path"] / damaged).write_text(text[:len(text) // 2])  # truncated by a disk error
    assert loop.fit(run, FakeTask(run), config(), resume=True) == "finished"
    assert_complete_history(run, 3)  # steps 4..6 redone from step 3, each once in the metrics
    assert "Training restarts from step 3" in runs.read_status(run)["warning"]


def test_resume_fails_plainly_when_no_checkpoint_loads(tmp_path):
    run = new_run(tmp_path)
    loop.fit(run, FakeTask(run), config(epochs=1))
    for candidate in runs.resume_candidates(run):
        (candidate["path"] / "model.json").write_text("{")
    with pytest.raises(runs.RunError, match="No checkpoint of .* loads"):
        loop.fit(run, FakeTask(run), config(epochs=2), resume=True)


def test_a_best_checkpoint_that_will_not_load_is_dropped_on_resume(tmp_path):
    run = new_run(tmp_path)
    loop.fit(run, FakeTask(run), config(epochs=1, checkpoint_every_s=0.0))
    damaged = runs.checkpoint_pointer(run, "best")["path"]
    assert runs.checkpoint_pointer(run, "last")["path"] == damaged  # epoch 1 is last and best
    (damaged / "model.json").write_text("")
    assert loop.fit(run, FakeTask(run), config(epochs=2), resume=True) == "finished"
    assert "restarts from step 2" in runs.read_status(run)["warning"]
    best = runs.checkpoint_pointer(run, "best")
    assert best["step"] == 3 and best["path"] != damaged  # epoch 1 redone, and best again
    assert_complete_history(run, 2)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path, bad):
    run = new_run(tmp_path)
    with pytest.raises(loop.NonFiniteLoss, match="the last good checkpoint is step 3"):
        loop.fit(run, FakeTask(run, loss_at={5: bad}), config())
    status = runs.read_status(run)
    assert status["state"] == "failed"
    assert f"loss became {bad} at step 5; the last good checkpoint is step 3." in status["error"]
    assert runs.checkpoint_pointer(run, "last")["step"] == 3  # no checkpoint of NaN weights
    assert all(math.isfinite(r["loss"]) for r in runs.read_metrics(run)[0] if "loss" in r)
    assert loop.fit(run, FakeTask(run), config(), resume=True) == "finished"
    assert_complete_history(run, 3)


def test_a_non_finite_loss_before_any_checkpoint_says_there_is_none(tmp_path):
    run = new_run(tmp_path)
    with pytest.raises(loop.NonFiniteLoss, match="none"):
        loop.fit(run, FakeTask(run, loss_at={1: math.nan}), config())
    assert runs.checkpoint_pointer(run, "last") is None


def test_a_nan_validation_is_never_best(tmp_path):
    run = new_run(tmp_path)
    loop.fit(run, FakeTask(run, validation={"val_score": math.nan}), config(epochs=2))
    assert runs.checkpoint_pointer(run, "best") is None
    assert runs.checkpoint_pointer(run, "last")["step"] == 6


def test_an_empty_validation_finishes_the_run(tmp_path):
    run = new_run(tmp_path)
    assert loop.fit(run, FakeTask(run, validation={}), config(epochs=2)) == "finished"
    assert_complete_history(run, 2)
    assert runs.checkpoint_pointer(run, "best") is None


def test_the_heartbeat_beats_during_a_slow_step(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_EVERY_S", 0.05)
    run = new_run(tmp_path)
    beats = []
    original = runs.write_status

    def recording(run_dir, **fields):
        status = original(run_dir, **fields)
        if not fields:
            beats.append(status["heartbeat"])
        return status

    monkeypatch.setattr(runs, "write_status", recording)
    loop.fit(run, FakeTask(run, step_seconds=0.3), config(epochs=1, log_every=100))
    assert len(beats) >= 5  # ~0.9 s of steps with no status of the loop's own but the epoch's
    assert runs.read_status(run)["state"] == "finished"


def test_resume_with_more_epochs_continues(tmp_path):
    run = new_run(tmp_path)
    loop.fit(run, FakeTask(run), config(epochs=1))
    assert loop.fit(run, FakeTask(run), config(epochs=2), resume=True) == "finished"
    assert_complete_history(run, 2)


def test_data_running_out_fails_the_run(tmp_path):
    run = new_run(tmp_path)
    with pytest.raises(RuntimeError, match="ran out after step 2"):
        loop.fit(run, FakeTask(run, steps=3, batches=2), config())
    assert "ran out" in runs.read_status(run)["error"]


class OutOfMemoryTask(FakeTask):
    """Runs out of memory at its second step, as TensorFlow says it: an OpError, or a MemoryError inside."""

    def __init__(self, run_dir: Path, error: BaseException):
        super().__init__(run_dir)
        self.error = error

    def train_step(self, batch) -> dict:
        if len(self.seen) == 1:
            raise self.error
        return super().train_step(batch)


@pytest.mark.parametrize("error", [
    tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[64,64,4096,4096]\n"
                                     "\t [[{{node conv2d}}]]\nHint: If you want to see a list of allocated tensors"),
    tf.errors.ResourceExhaustedError(None, None, "{{function_node __wrapped__IteratorGetNext}} MemoryError: \n"
                                     "Traceback (most recent call last):\n  File \"data.py\", line 1\nMemoryError"),
    MemoryError(),
])
def test_running_out_of_memory_fails_the_run_with_one_line_that_says_what_to_change(tmp_path, error):
    run = new_run(tmp_path)
    with pytest.raises(loop.OutOfMemory) as raised:
        loop.fit(run, OutOfMemoryTask(run, error), config(batch_size=64))
    message = runs.read_status(run)["error"]
    assert message == str(raised.value) and "\n" not in message and "Traceback" not in message
    assert message.startswith("out of memory at step 1 with batches of 64 slices")
    assert "--batch-size" in message and "--image-size" in message
    assert runs.read_status(run)["state"] == "failed"


def test_an_unknown_error_is_kept_as_its_first_line_in_the_status(tmp_path):
    run = new_run(tmp_path)
    with pytest.raises(tf.errors.InternalError):
        loop.fit(run, OutOfMemoryTask(run, tf.errors.InternalError(None, None, "it broke\nTraceback (most...")),
                 config())
    assert runs.read_status(run)["error"] == "InternalError: it broke"


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path):
    run = new_run(tmp_path)
    lock = loop._RunLock(run)
    try:
        with pytest.raises(runs.RunError, match="another process"):
            loop.fit(run, FakeTask(run), config())
    finally:
        lock.release()
    assert loop.fit(run, FakeTask(run), config(epochs=1)) == "finished"


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("batch_size", 0), ("log_every", 0), ("learning_rate", 0.0),
    ("strategy", "horovod"), ("device", "tpu"),
])
def test_invalid_train_config_raises_value_error(field, value):
    with pytest.raises(ValueError, match=field if field not in ("strategy", "device") else value):
        TrainConfig(**{field: value})


def test_train_config_round_trip():
    train = TrainConfig(epochs=4, steps_per_epoch=7, mixed_precision=True, strategy="mirrored")
    assert TrainConfig.from_dict(json.loads(json.dumps(train.to_dict()))) == train
    with pytest.raises(ValueError, match="removed_flag"):  # one rule for every config: name the unknown key
        TrainConfig.from_dict({**train.to_dict(), "removed_flag": 1})
