"""The run directory: the one contract between the trainer process and everything that watches it.

    run_dir/
      config.json        {"kind": "vqvae"|"prior", "model": {...}, "train": {...}}
      status.json        state (running/finished/failed/stopped), pid, heartbeat, epoch, step, error
      metrics.jsonl      one JSON object per logged step and per epoch; append-only
      checkpoints/       step_NNNNNNN_<ms>/ bundles; last.json and best.json point at them
      samples/           epoch_NNN.png
      tb/                TensorBoard event files
      train.log          the trainer's own output
      STOP               present: the trainer stops after its current step
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core import atomic
from core.paths import REPO_ROOT

STATES = ("running", "finished", "failed", "stopped")
HEARTBEAT_STALE_S = 120.0


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists already, missing, corrupt)."""


def read_json(path: str | Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


# --- creation and config --------------------------------------------------------------------
def refuse_existing(run_dir: str | Path) -> None:
    """RunError when `run_dir` already holds a run: nothing is ever overwritten."""
    if (Path(run_dir) / "config.json").exists():
        raise RunError(f"{run_dir} already holds a run. Use --resume to continue it, or choose "
                       f"a new --run-dir.")


def create_run(run_dir: str | Path, config: dict) -> Path:
    """Make a new run directory; an existing run is never overwritten."""
    run_dir = Path(run_dir)
    refuse_existing(run_dir)
    for sub in ("checkpoints", "samples", "tb"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    atomic.write_json(run_dir / "config.json", config)
    return run_dir


def read_config(run_dir: str | Path) -> dict:
    config = read_json(Path(run_dir) / "config.json")
    if not isinstance(config, dict):
        raise RunError(f"{run_dir} is not a run directory (no readable config.json).")
    return config


# --- status -----------------------------------------------------------------------------------
def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own finished child not yet reaped) is not alive
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return True


def write_status(run_dir: str | Path, **fields) -> dict:
    path = Path(run_dir) / "status.json"
    status = read_json(path, {}) or {}
    status.update(fields, heartbeat=time.time())
    atomic.write_json(path, status)
    return status


def read_status(run_dir: str | Path) -> dict:
    """status.json as written, with `state` corrected when the process died without a word."""
    status = read_json(Path(run_dir) / "status.json", {}) or {}
    status.setdefault("state", "failed" if (Path(run_dir) / "config.json").exists() else "missing")
    if status["state"] == "running" and not pid_alive(status.get("pid")):
        status["state"] = "failed"
        status["error"] = ("The training process ended without finishing (killed or crashed). "
                           "Resume continues from its last checkpoint.")
    return status


# --- metrics ----------------------------------------------------------------------------------
def append_metrics(run_dir: str | Path, records: list[dict]) -> None:
    """Append whole lines and flush them to disk, so a kill loses no written line."""
    if not records:
        return
    text = "".join(json.dumps(record) + "\n" for record in records)
    with open(Path(run_dir) / "metrics.jsonl", "a") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def read_metrics(run_dir: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete lines from byte `offset` on, and the offset to continue from.

    A half-written last line (a writer caught mid-line) is left for the next read.
    """
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a crash on a filesystem without ordered appends
    return records, offset + end


def truncate_metrics(run_dir: str | Path, last_step: int) -> int:
    """Keep only records up to `last_step` (the checkpoint a resumed run restarts from)."""
    path = Path(run_dir) / "metrics.jsonl"
    records, _ = read_metrics(run_dir)
    kept = [r for r in records if r.get("step", 0) <= last_step]
    with atomic.replacing(path) as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


# --- checkpoints ------------------------------------------------------------------------------
def save_checkpoint(run_dir: str | Path, step: int, write, pointers: dict[str, dict]) -> Path:
    """Write a checkpoint folder with `write(folder)`, then point `last`/`best` at it atomically.

    A kill at any moment leaves the previous pointers and their folders intact.
    """
    checkpoints = Path(run_dir) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time() * 1000)
    while any((checkpoints / n).exists() for n in (f"step_{step:07d}_{stamp}", f".step_{step:07d}_{stamp}.tmp")):
        stamp += 1  # the same step saved twice within one millisecond
    name = f"step_{step:07d}_{stamp}"
    tmp = checkpoints / f".{name}.tmp"
    tmp.mkdir()
    write(tmp)
    os.replace(tmp, checkpoints / name)
    for pointer, info in pointers.items():
        atomic.write_json(checkpoints / f"{pointer}.json", {**info, "dir": name, "step": step})
    _prune_checkpoints(checkpoints)
    return checkpoints / name


def _prune_checkpoints(checkpoints: Path) -> None:
    keep = {(read_json(checkpoints / f"{p}.json", {}) or {}).get("dir") for p in ("last", "best")}
    for folder in checkpoints.iterdir():
        if folder.is_dir() and folder.name.startswith(("step_", ".step_")) and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def checkpoint_pointer(run_dir: str | Path, which: str = "last") -> dict | None:
    """The pointer record (dir, step, epoch, metrics) with `path` added, or None."""
    checkpoints = Path(run_dir) / "checkpoints"
    info = read_json(checkpoints / f"{which}.json")
    if not isinstance(info, dict) or not (checkpoints / str(info.get("dir"))).is_dir():
        return None
    return {**info, "path": checkpoints / info["dir"]}


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its best checkpoint, else its last) or a bundle folder -> the bundle folder."""
    path = Path(path).expanduser()
    if (path / "config.json").exists() and any(path.glob("*.keras")):
        return path
    if (path / "checkpoints").is_dir():
        for which in ("best", "last"):
            pointer = checkpoint_pointer(path, which)
            if pointer:
                return pointer["path"]
        raise RunError(f"Run {path} has no checkpoint yet: it has not finished its first epoch.")
    raise RunError(f"{path} is neither a checkpoint bundle (config.json + *.keras) nor a run "
                   f"directory (checkpoints/).")


# --- listing, launching and stopping (used by the dashboard) ----------------------------------
@dataclass(frozen=True)
class RunSummary:
    path: Path
    kind: str
    state: str
    epoch: int
    epochs: int
    step: int
    total_steps: int
    elapsed_s: float
    error: str | None
    has_checkpoint: bool

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def progress(self) -> float:
        return min(self.step / self.total_steps, 1.0) if self.total_steps else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.state != "running" or not self.step or not self.total_steps:
            return None
        return self.elapsed_s / self.step * (self.total_steps - self.step)


def summarize_run(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    status = read_status(run_dir)
    epochs = int(status.get("epochs") or config.get("train", {}).get("epochs", 0))
    return RunSummary(
        path=run_dir, kind=config.get("kind", "?"), state=status["state"],
        epoch=int(status.get("epoch", 0)), epochs=epochs, step=int(status.get("step", 0)),
        total_steps=int(status.get("steps_per_epoch", 0)) * epochs,
        elapsed_s=float(status.get("elapsed_s", 0.0)), error=status.get("error"),
        has_checkpoint=checkpoint_pointer(run_dir, "last") is not None)


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run directory directly under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / "config.json").is_file()]
    runs.sort(key=lambda p: (p / "config.json").stat().st_mtime, reverse=True)
    return [summarize_run(p) for p in runs]


def launch(args: list[str], run_dir: str | Path, module: str = "core.train") -> int:
    """Start `python -m MODULE ARGS` (the trainer, or the VQ-VAE-then-prior pipeline) detached.

    The trainer logs to train.log itself; console.log catches what Python prints on a crash.

    The process gets its own session, so closing the dashboard never kills a training run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "console.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return process.pid


def request_stop(run_dir: str | Path) -> None:
    """Ask the trainer to stop after its current step, with a checkpoint (state `stopped`)."""
    (Path(run_dir) / "STOP").touch()


def kill(run_dir: str | Path) -> bool:
    """Kill a trainer that does not answer STOP; the last checkpoint stays resumable."""
    pid = read_status(run_dir).get("pid")
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        return True
    return False
