"""core.training.loop: the loop with a tiny fake task (no model): metrics, checkpoints, STOP, crash and resume."""
from __future__ import annotations

import json
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
                 crash_validating_epoch: int | None = None, batches: int | None = None):
        self.run_dir, self.steps, self.stop_at = run_dir, steps, stop_at
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
        return {"loss": tf.constant(1.0 / len(self.seen))}

    def validate(self) -> dict:
        epoch = len(self.seen) // self.steps
        if epoch == self.crash_validating_epoch:
            raise Crash(f"killed while validating epoch {epoch}")
        return {"val_score": float(epoch % 2)}  # epochs 1, 3, ... are best

    def write_samples(self, path: Path) -> None:
        path.write_text("samples")

    def write_bundle(self, folder: Path) -> None:
        (folder / "model.json").write_text(json.dumps({"seen": self.seen}))

    def save_state(self, folder: Path) -> None:
        (folder / "state.json").write_text(json.dumps({"trained": len(self.seen)}))

    def restore(self, folder: Path) -> None:
        self.seen = json.loads((folder / "model.json").read_text())["seen"]


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
    assert TrainConfig.from_dict({**train.to_dict(), "removed_flag": 1}) == train
