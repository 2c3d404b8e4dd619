"""The training loop shared by the VQ-VAE and the prior: steps, metrics, checkpoints, STOP and resume."""
from __future__ import annotations

import fcntl
import itertools
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf

from core import cluster, data, devices, runs
from core.settings import Config, setting

log = logging.getLogger("brainvq.train")


@dataclass(frozen=True)
class TrainConfig(Config):
    """How to train (not what): saved in the run's config.json beside the model config."""

    epochs: int = setting(30, help="epochs in all (on --resume: more epochs continue the run)", flag="--epochs",
                          label="Epochs", minimum=1, maximum=100000)
    batch_size: int = setting(16, help="slices per step", flag="--batch-size", label="Batch size",
                              minimum=1, maximum=4096)
    learning_rate: float = setting(2e-3, help="Adam's learning rate", flag="--lr", aliases=("--learning-rate",),
                                   label="Learning rate", above=0.0, maximum=10.0)
    lr_schedule: str = setting("cosine", help="cosine decays the rate to 1% of --lr over all epochs",
                               flag="--lr-schedule", choices=("cosine", "constant"))
    seed: int = setting(0, help="initial weights, data order and crops", flag="--seed", minimum=0, maximum=2**31 - 1)
    steps_per_epoch: int | None = setting(None, help="cap the steps of one epoch", flag="--steps-per-epoch",
                                          label="Steps per epoch", minimum=1,
                                          none_means="one pass over the train split")
    log_every: int = setting(10, help="steps between metric lines", flag="--log-every", minimum=1)
    checkpoint_every_s: float = setting(120.0, help="also checkpoint this often within an epoch (kill -9 safety)",
                                        flag="--checkpoint-every-s", minimum=0.0)
    mixed_precision: bool = setting(False, help="float16 on GPU (bfloat16 on CPU) with float32 weights",
                                    flag="--mixed-precision", label="Mixed precision")
    xla: bool = setting(False, help="compile the train step with XLA", flag="--xla")
    strategy: str = setting("default", help="'mirrored': data-parallel over all visible GPUs; 'multiworker': "
                            "over the processes TF_CONFIG names (see --workers)", flag="--strategy",
                            choices=("default", "mirrored", "multiworker"))
    device: str = setting("auto", help="auto: the GPU when TensorFlow sees one, else the CPU", flag="--device",
                          label="Device", choices=("auto", "cpu", "gpu"))


# What a resumed run may be given anew: more epochs, another machine's device, how often it
# checkpoints and logs. Everything else decides what is learned, or how the saved optimizer
# state is laid out (mixed precision adds the loss scale's variables), so it stays as started.
RESUMABLE = ("epochs", "device", "checkpoint_every_s", "log_every")


def make_optimizer(train: TrainConfig, steps_per_epoch: int):
    """Adam with the run's schedule; the step count lives in the optimizer, so resume continues it."""
    import keras
    rate = train.learning_rate
    if train.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, train.epochs * steps_per_epoch, alpha=0.01)
    optimizer = keras.optimizers.Adam(rate)
    return keras.optimizers.LossScaleOptimizer(optimizer) if train.mixed_precision else optimizer


class Task(Protocol):
    """What the loop needs from a model kind (the VQ-VAE and the prior each provide one)."""

    kind: str
    selection_metric: str  # the validation metric that picks the best checkpoint
    selection_mode: str  # "max" or "min"

    def steps_per_epoch(self) -> int: ...
    def epoch_dataset(self, epoch: int) -> tf.data.Dataset: ...
    def train_step(self, batch) -> dict: ...
    def validate(self) -> dict: ...
    def write_samples(self, path: Path) -> None: ...
    def write_bundle(self, folder: Path) -> None: ...
    def save_state(self, folder: Path) -> None: ...
    def restore(self, folder: Path) -> None: ...


class KerasTask:
    """Plumbing shared by tasks that train one Keras model with one optimizer under a strategy.

    A subclass sets `model_file`, defines `_replica_step(batch) -> dict` and calls
    `_build(make_model)` once `self.train`, `self.strategy` and `steps_per_epoch()` work.
    """

    model_file: str

    def _build(self, make_model) -> None:
        import keras
        keras.utils.set_random_seed(self.train.seed)  # the same --seed starts from the same weights
        with self.strategy.scope():
            self.model = make_model()
            self.optimizer = make_optimizer(self.train, self.steps_per_epoch())
            # Slots made now, in the strategy's scope: never as a side effect inside a traced step
            # (under MirroredStrategy that fails on the first step).
            self.optimizer.build(self.model.trainable_variables)
        self._compiled_step = tf.function(self._replica_step, jit_compile=self.train.xla,
                                          reduce_retracing=True)

    def _distribute(self, make_dataset):
        """One epoch's batches from `make_dataset(batch_size, shard)`, laid out for the strategy.

        Across workers each input pipeline reads only its `shard` = (index, count), its run of
        each global batch (`data.shard_batches`), so a step sees the same slices as a
        single-process step would: a run's loss does not depend on how many workers share it.
        """
        if self.train.strategy == "multiworker":
            return self.strategy.distribute_datasets_from_function(
                lambda context: make_dataset(context.get_per_replica_batch_size(self.batch_size),
                                             (context.input_pipeline_id, context.num_input_pipelines)))
        dataset = make_dataset(self.batch_size, None)
        if self.train.strategy == "mirrored":
            return self.strategy.experimental_distribute_dataset(dataset)
        return dataset

    def train_step(self, batch) -> dict:
        if self.train.strategy == "default":
            return self._compiled_step(batch)
        per_replica = self.strategy.run(self._compiled_step, args=(batch,))
        return {k: self.strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

    def save_state(self, folder: Path) -> None:
        save_optimizer(self.optimizer, folder / "optimizer.npz")

    def model_settings(self) -> Config:
        """The config of the model this task trains, as a checkpoint's config.json holds it."""
        raise NotImplementedError

    def check_same_model(self, run_dir: Path) -> None:
        """Refuse to resume a run whose config.json describes another model than its checkpoints hold (edited
        by hand): some weights would load (a convolution does not know the image size), and the run would
        go on as it was not started. The newest checkpoint whose config reads speaks for all: a run has one
        model."""
        settings, key = self.model_settings().to_dict(), Path(self.model_file).stem
        for candidate in runs.resume_candidates(run_dir):
            held = runs.read_json(candidate["path"] / "config.json")
            if not isinstance(held, dict) or not isinstance(held.get(key), dict):
                continue  # a damaged checkpoint: resuming skips it too
            differ = [name for name in settings if name in held[key] and held[key][name] != settings[name]]
            if differ:
                name = differ[0]
                raise runs.RunError(f"The run's config.json says {name} = {settings[name]!r}, but its checkpoint "
                                    f"{candidate['dir']} holds a model with {name} = {held[key][name]!r}: the run "
                                    "cannot resume as it was started. Put config.json's \"model\" back as it was.")
            return

    def restore(self, folder: Path) -> None:
        self.model.load_weights(folder / self.model_file)
        restore_optimizer(self.optimizer, self.model.trainable_variables, folder / "optimizer.npz")


def setup_devices(train: TrainConfig) -> tf.distribute.Strategy:
    """Pick the device(s) before any tensor exists; GPUs grow memory so the dashboard can share."""
    gpus = tf.config.list_physical_devices("GPU")
    if train.device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        gpus = []
    if train.device == "gpu" and not gpus:
        raise runs.RunError("--device gpu was asked for, but TensorFlow sees no GPU here.")
    devices.share_gpu_memory()
    if train.mixed_precision:
        import keras
        # float16 with loss scaling on GPUs; CPUs have no fast float16, bfloat16 is their half type.
        keras.mixed_precision.set_dtype_policy("mixed_float16" if gpus else "mixed_bfloat16")
    if train.strategy == "multiworker":
        # Connects to the other workers TF_CONFIG names and waits for them; it must come before
        # anything starts TensorFlow's runtime (even listing logical devices does).
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if train.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif train.strategy == "default":
        return tf.distribute.get_strategy()
    if train.batch_size % strategy.num_replicas_in_sync:
        raise runs.RunError(f"--batch-size {train.batch_size} does not split evenly over "
                            f"{strategy.num_replicas_in_sync} replicas.")
    return strategy


class _RunLock:
    """An exclusive lock on the run directory: a second trainer of the same run refuses to start."""

    def __init__(self, run_dir: Path):
        self.handle = open(run_dir / ".lock", "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise runs.RunError(f"{run_dir} is being trained by another process already.") from None

    def release(self):
        self.handle.close()


class NonFiniteLoss(ValueError):
    """A training metric became NaN or infinite: the weights are no longer worth checkpointing (a user
    error: a smaller --lr or commitment cost is the fix, so the CLI prints one line)."""


class _Heartbeat:
    """Refresh status.json's heartbeat every runs.HEARTBEAT_EVERY_S while the loop works.

    A step or a validation may take longer than runs.HEARTBEAT_STALE_S on a slow machine; the
    heartbeat comes from this thread, so a slow but live run never reads as dead.
    """

    def __init__(self, run_dir: Path):
        self.run_dir, self.done = run_dir, threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self.thread.start()

    def _beat(self):
        while not self.done.wait(runs.HEARTBEAT_EVERY_S):
            try:
                runs.write_status(self.run_dir)  # merges: only the heartbeat changes
            except OSError:
                pass  # a full disk must not kill training; the next beat tries again

    def stop(self):
        self.done.set()
        self.thread.join()


def _restore_newest_loadable(run_dir: Path, task: Task) -> tuple[dict | None, str | None]:
    """Restore the newest checkpoint that loads; the pointer used and a warning when one failed."""
    failures = []
    for candidate in runs.resume_candidates(run_dir):
        try:
            task.restore(candidate["path"])
        except Exception as error:  # a damaged file raises whatever its reader raises
            failures.append(f"{candidate['pointer']} checkpoint (step {candidate['step']}) will "
                            f"not load ({type(error).__name__}: {str(error)[:120]})")
            continue
        warning = None
        if failures:
            warning = (f"The {'; the '.join(failures)}. Training restarts from step "
                       f"{candidate['step']} (the {candidate['pointer']} checkpoint).")
            log.warning(warning)
        return candidate, warning
    if failures:
        raise runs.RunError(f"No checkpoint of {run_dir} loads: {'; '.join(failures)}.")
    return None, None


def _better(value, best, mode) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def fit(run_dir: str | Path, task: Task, train: TrainConfig, resume: bool = False) -> str:
    """Train `task` into `run_dir` until its epochs are done or STOP appears; returns the state.

    In a multi-worker job every worker runs this loop in step; only the chief writes the run
    directory (and validates: the others would only compute the same figures again).
    """
    run_dir = Path(run_dir)
    if not cluster.is_chief():
        return _fit(run_dir, task, train, resume, chief=False)
    lock = _RunLock(run_dir)
    try:
        return _fit(run_dir, task, train, resume, chief=True)
    finally:
        lock.release()


def _all_stop(task: Task, train: TrainConfig, chief_stops: bool) -> bool:
    """The chief's STOP decision, made every worker's: the job's steps must stay in lockstep."""
    if train.strategy != "multiworker":
        return chief_stops
    strategy = task.strategy
    votes = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(1.0 if chief_stops else 0.0))
    return float(strategy.reduce("SUM", votes, axis=None)) > 0


def _fit(run_dir: Path, task: Task, train: TrainConfig, resume: bool, chief: bool) -> str:
    steps_per_epoch = task.steps_per_epoch()
    step, elapsed_before, best, warning = 0, 0.0, None, None
    last, warning = _restore_newest_loadable(run_dir, task) if resume else (None, None)
    # Logged once the run is set to start, not at device set-up: a mistake found in between is one error line.
    log.info("Devices: %s", [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "CPU")])
    stop_file = run_dir / "STOP"
    if chief:
        stop_file.unlink(missing_ok=True)  # a STOP left from an earlier stop must not end this run
    if last:
        step, elapsed_before = int(last["step"]), float(last.get("elapsed_s", 0.0))
        log.info("Resuming %s from step %d (epoch %d).", run_dir, step, step // steps_per_epoch)
    if not chief:
        return _follow(task, train, step, steps_per_epoch)
    if last:
        best_pointer = runs.checkpoint_pointer(run_dir, "best")
        if best_pointer and (not isinstance(best_pointer.get("step"), int)
                             or best_pointer["step"] > step):
            # The best was newer than the checkpoint that loaded: it is one that did not.
            (run_dir / "checkpoints" / "best.json").unlink()
            best_pointer = None
        best = best_pointer.get(task.selection_metric) if best_pointer else None
    dropped = runs.truncate_metrics(run_dir, step)
    if dropped:
        log.info("Dropped %d metric lines written after the last checkpoint; they are redone.", dropped)
    started = time.monotonic()
    writer = tf.summary.create_file_writer(str(run_dir / "tb"))

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - started

    def status(state: str, **extra):
        runs.write_status(run_dir, state=state, pid=os.getpid(), kind=task.kind, step=step,
                          epoch=step // steps_per_epoch, epochs=train.epochs,
                          steps_per_epoch=steps_per_epoch, elapsed_s=elapsed(),
                          workers=cluster.worker_count(), **extra)

    def checkpoint(pointers: dict):
        def write(folder: Path):
            task.write_bundle(folder)
            task.save_state(folder)
        info = {"epoch": step // steps_per_epoch, "elapsed_s": elapsed()}
        runs.save_checkpoint(run_dir, step, write,
                             {name: {**info, **extra} for name, extra in pointers.items()})

    status("running", error=None, warning=warning)
    heartbeat = _Heartbeat(run_dir)
    try:
        last_checkpoint = time.monotonic()
        while step < train.epochs * steps_per_epoch:
            epoch = step // steps_per_epoch
            skip = step - epoch * steps_per_epoch  # resume mid-epoch: the same order, minus done steps
            totals: dict[str, float] = {}
            for batch in _epoch_batches(task.epoch_dataset(epoch), skip, steps_per_epoch - skip):
                values = _step(task, batch)
                step += 1
                _check_finite(values, step, runs.checkpoint_pointer(run_dir, "last"))
                for key, value in values.items():
                    totals[key] = totals.get(key, 0.0) + value
                if step % train.log_every == 0 or step % steps_per_epoch == 0:
                    _log_step(run_dir, writer, step, epoch, elapsed(), values)
                    status("running")
                if step % steps_per_epoch == 0:
                    # The epoch's end checkpoints this step, after its record: a checkpoint here
                    # would let a kill or STOP skip that epoch's validation on resume.
                    break
                if _all_stop(task, train, stop_file.exists()):
                    checkpoint({"last": {}})
                    status("stopped")
                    log.info("STOP found: stopped at step %d with a checkpoint.", step)
                    return "stopped"
                if time.monotonic() - last_checkpoint > train.checkpoint_every_s:
                    checkpoint({"last": {}})
                    last_checkpoint = time.monotonic()
            _check_epoch_ended(step, steps_per_epoch)
            done = steps_per_epoch - skip
            validation = task.validate()
            record = {"kind": "epoch", "step": step, "epoch": epoch + 1, "wall_time": time.time(),
                      "elapsed_s": elapsed(),
                      **({f"train_{k}": v / done for k, v in totals.items()} if done else {}),
                      **validation}
            runs.append_metrics(run_dir, [record])
            with writer.as_default(step=step):
                for key, value in validation.items():
                    tf.summary.scalar(key, value)
            task.write_samples(run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")
            pointers = {"last": validation}
            if _better(validation.get(task.selection_metric), best, task.selection_mode):
                best = validation[task.selection_metric]
                pointers["best"] = validation
            checkpoint(pointers)
            last_checkpoint = time.monotonic()
            status("running")
            log.info("epoch %d/%d: %s", epoch + 1, train.epochs,
                     ", ".join(f"{k}={v:.4f}" for k, v in validation.items()))
            if step < train.epochs * steps_per_epoch and _all_stop(task, train, stop_file.exists()):
                status("stopped")
                log.info("STOP found: stopped at step %d with a checkpoint.", step)
                return "stopped"
        status("finished")
        return "finished"
    except BaseException as error:
        heartbeat.stop()
        # A lost worker, or a slice spoilt since the scan: said in a user's words, without a traceback.
        known = (_lost_worker(error, train, run_dir, task.kind, step) or data.raised_inside_pipeline(error)
                 or out_of_memory(error, train.batch_size, step))
        status("failed", error=str(known) if known else f"{type(error).__name__}: {runs.error_line(error)}")
        if known:
            raise known from error
        raise
    finally:
        heartbeat.stop()
        writer.close()


def _follow(task: Task, train: TrainConfig, step: int, steps_per_epoch: int) -> str:
    """A worker that is not the chief: the same steps and STOP decisions, and nothing written."""
    while step < train.epochs * steps_per_epoch:
        epoch = step // steps_per_epoch
        skip = step - epoch * steps_per_epoch
        for batch in _epoch_batches(task.epoch_dataset(epoch), skip, steps_per_epoch - skip):
            values = _step(task, batch)
            step += 1
            _check_finite(values, step, None)
            if step % steps_per_epoch == 0:
                break
            if _all_stop(task, train, False):
                return "stopped"
        _check_epoch_ended(step, steps_per_epoch)
        if step < train.epochs * steps_per_epoch and _all_stop(task, train, False):
            return "stopped"
    return "finished"


def _step(task: Task, batch) -> dict[str, float]:
    return {k: float(v) for k, v in task.train_step(batch).items()}


def _check_finite(values: dict[str, float], step: int, good: dict | None) -> None:
    bad = next((k for k, v in values.items() if not math.isfinite(v)), None)
    if bad:
        raise NonFiniteLoss(f"{bad} became {values[bad]} at step {step}; the last good checkpoint is "
                            + (f"step {good['step']}." if good else "none (none was saved yet)."))


def _check_epoch_ended(step: int, steps_per_epoch: int) -> None:
    if step % steps_per_epoch:
        raise RuntimeError(f"The training data ran out after step {step}; expected "
                           f"{steps_per_epoch} steps per epoch.")


class WorkerLost(runs.RunError):
    """Another worker of a multi-worker job died or stopped answering: the job cannot go on."""


def _lost_worker(error: BaseException, train: TrainConfig, run_dir: Path, kind: str, step: int):
    """A WorkerLost saying which worker was lost and how to go on, when `error` means that; else None."""
    if train.strategy != "multiworker" or not isinstance(error, tf.errors.OpError):
        return None
    tasks = sorted(set(re.findall(r"/job:worker/(?:replica:\d+/)?task:(\d+)\b", str(error))) - {"0"})
    who = f"worker {', '.join(tasks)}" if tasks else "a worker"
    good = runs.checkpoint_pointer(run_dir, "last")
    last = f"step {good['step']}" if good else "none"
    return WorkerLost(
        f"{who} of this multi-worker job stopped answering ({type(error).__name__}), so the job stopped at "
        f"step {step}; its last checkpoint is {last}. "
        f"Start every worker again with --resume (on one machine: python -m core.train {kind} --run-dir "
        f"{run_dir} --resume --workers N).")


class OutOfMemory(runs.RunError):
    """A step needed more memory than the device has: smaller batches or slices are the user's fix."""


def out_of_memory(error: BaseException, batch_size: int | None, step: int | None) -> OutOfMemory | None:
    """An OutOfMemory saying what to change, when `error` is the device or the host running out (at `step`;
    None: before the first, loading the validation slices); else None.

    TensorFlow says it as a ResourceExhaustedError ("OOM when allocating tensor ..."), or hands on a
    MemoryError of the input pipeline's Python inside another OpError, with its traceback."""
    inside = isinstance(error, tf.errors.OpError) and re.search(r"\bMemoryError\b", error.message or "")
    if not (isinstance(error, (MemoryError, tf.errors.ResourceExhaustedError)) or inside):
        return None
    when = "before the first step" if step is None else f"at step {step}"
    batches = f" with batches of {batch_size} slices" if batch_size else ""
    return OutOfMemory(
        f"out of memory {when}{batches}: start a new run with a smaller --batch-size (Batch size on the Train "
        "page), or for a VQ-VAE a smaller --image-size or a --crop-size.")


def _epoch_batches(dataset, skip: int, count: int):
    """Batches `skip` .. `skip + count` of one epoch's dataset."""
    if isinstance(dataset, tf.data.Dataset):
        return dataset.skip(skip).take(count)
    # A tf.distribute dataset has no skip/take: step over the batches a resumed run has done.
    return itertools.islice(iter(dataset), skip, skip + count)


def _log_step(run_dir, writer, step, epoch, elapsed_s, values):
    runs.append_metrics(run_dir, [{"kind": "step", "step": step, "epoch": epoch + 1,
                                   "wall_time": time.time(), "elapsed_s": elapsed_s, **values}])
    with writer.as_default(step=step):
        for key, value in values.items():
            tf.summary.scalar(f"train/{key}", value)
    writer.flush()


def save_optimizer(optimizer, path: Path) -> None:
    np.savez(path, *[np.asarray(v.numpy()) for v in optimizer.variables])


def restore_optimizer(optimizer, variables, path: Path) -> None:
    """Rebuild the optimizer's slots for `variables`, then load their saved values."""
    if not optimizer.built:
        optimizer.build(variables)
    with np.load(path) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise runs.RunError(f"{path} holds {len(values)} optimizer variables; this model needs "
                            f"{len(optimizer.variables)}. Was the run's config changed?")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
