"""The run directory: the one contract between the trainer process and everything that watches it.

    run_dir/
      config.json        {"kind": "vqvae"|"prior", "model": {...}, "train": {...}}
      status.json        state (running/finished/failed/stopped), pid, pid_start, heartbeat, epoch,
                         step, error, warning
      metrics.jsonl      one JSON object per logged step and per epoch; append-only
      checkpoints/       step_NNNNNNN_<ms>/ bundles; last.json, previous.json (the last before it)
                         and best.json point at them
      samples/           epoch_NNN.png
      tb/                TensorBoard event files
      train.log          the trainer's own output
      launcher.json      written by the dashboard when it starts (or resumes) the trainer
      console.log        what the started process printed (its `error:` line when it failed)
      STOP               present: the trainer stops after its current step

Which folders are ours: a folder with config.json is a run (ours). A folder without one is ours only
while it is empty, or holds nothing but what the dashboard's launcher writes before the trainer
starts (launcher.json, console.log: `LAUNCHER_FILES`); create_run also accepts the files a
task prepares after that check (`PREPARED_FILES`: the prior's code cache). Anything else is a
user's folder: training into it is refused, so nothing of theirs is ever overwritten or deleted;
pruning removes only checkpoint folders named as ours (`step_NNNNNNN_<ms>`).

Which process is ours: a pid alone is not enough (pids are reused). status.json and launcher.json
record the pid with its start time (/proc/<pid>/stat field 22); a live pid with another start time
is some other process, never reported as our trainer and never signalled. A "running" status whose
heartbeat is older than HEARTBEAT_STALE_S reads as failed (the trainer refreshes it every
HEARTBEAT_EVERY_S from a background thread, so a slow step is never mistaken for a dead run).
A run whose config.json or status.json cannot be read or has the wrong shape is listed as "broken"
with the reason; it never stops the others from being listed.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core import atomic
from core.paths import REPO_ROOT, expand_user

STATES = ("running", "finished", "failed", "stopped", "broken")
HEARTBEAT_STALE_S = 120.0
HEARTBEAT_EVERY_S = 10.0  # how often a live trainer refreshes its heartbeat: well under stale
LAUNCHER_FILE = "launcher.json"  # core.launcher's record of the process it started into a folder
LAUNCHER_FILES = frozenset({LAUNCHER_FILE, "console.log"})  # a reserved folder's own files
# What a task prepares in the folder after refuse_existing passed and before create_run: the
# prior's code cache. Only create_run accepts them, never the check made before any work.
PREPARED_FILES = frozenset({"codes_train.npy", "codes_validate.npy"})
CHECKPOINT_POINTERS = ("last", "previous", "best")
_CHECKPOINT_FOLDER = re.compile(r"^(step_\d{7}_\d+|\.step_\d{7}_\d+\.tmp)$")
_status_lock = threading.Lock()  # the trainer's heartbeat thread and its loop both write status


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists already, missing, corrupt)."""


def error_line(error: BaseException) -> str:
    """An error's first line, less TensorFlow's "{{function_node ...}}" prefix: status.json's error and a
    command's `error:` line are one line (an OpError's text goes on with a Python traceback)."""
    text = getattr(error, "message", None) or str(error)  # an OpError's str() adds its node
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def read_json(path: str | Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


# --- creation and config --------------------------------------------------------------------
def foreign_files(run_dir: str | Path, prepared: frozenset = frozenset()) -> list[str]:
    """What in a folder without a run is not ours: all but LAUNCHER_FILES (and `prepared`), sorted."""
    run_dir = Path(run_dir)
    return sorted(p.name for p in run_dir.iterdir() if p.name not in LAUNCHER_FILES | prepared) \
        if run_dir.is_dir() else []


def refuse_existing(run_dir: str | Path, prepared: frozenset = frozenset()) -> None:
    """RunError unless `run_dir` is new, empty, or a folder the launcher reserved for this run.

    A run is never overwritten, and a user's own folder is never trained into. `prepared`: more
    names allowed (create_run's, for files the task wrote after this check passed).
    """
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        raise RunError(f"{run_dir} already holds a run. Use --resume to continue it, or choose "
                       f"a new --run-dir.")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"Expected a new or empty folder for --run-dir. Received: {run_dir}, "
                       f"which is a file.")
    others = foreign_files(run_dir, prepared)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise RunError(f"Expected a new or empty folder for --run-dir. Received: {run_dir}, which "
                       f"holds files that are not a run of ours ({shown}); nothing was changed. "
                       f"Choose a new --run-dir.")


def discard_prepared(run_dir: str | Path) -> None:
    """A new run that failed before create_run: remove what its task prepared (refuse_existing found
    none of it there, so it is this run's own), so that the folder takes the next start again."""
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        return  # a run now: a failed one keeps its files
    for name in PREPARED_FILES:
        (run_dir / name).unlink(missing_ok=True)


def create_run(run_dir: str | Path, config: dict) -> Path:
    """Make a new run directory; an existing run or a user's folder is never written into.

    Call refuse_existing before any work touches the folder; this checks again as it writes.
    """
    run_dir = Path(run_dir)
    refuse_existing(run_dir, PREPARED_FILES)
    for sub in ("checkpoints", "samples", "tb"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    atomic.write_json(run_dir / "config.json", config)
    return run_dir


def read_config(run_dir: str | Path) -> dict:
    """config.json of a run; RunError when it is missing, not JSON or not shaped like a run's."""
    config = read_json(Path(run_dir) / "config.json")
    if not isinstance(config, dict):
        raise RunError(f"{run_dir} is not a run directory (no readable config.json).")
    if not isinstance(config.get("kind"), str):
        raise RunError(f"Expected a run's config.json with a \"kind\". Received: "
                       f"{str(config)[:80]} in {run_dir}.")
    for part, default in (("model", {}), ("train", None)):  # a bundle's config.json has no "train"
        if not isinstance(config.get(part, default), dict):
            raise RunError(f"Expected \"{part}\" in {run_dir}/config.json to be an object. "
                           f"Received: {config.get(part)!r:.80}.")
    return config


# --- status -----------------------------------------------------------------------------------
def pid_alive(pid) -> bool:
    """A process with this pid exists (whoever it is: see `is_process`)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
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


def process_start(pid) -> int | None:
    """The start time of process `pid` (clock ticks after boot, /proc/<pid>/stat field 22), or None."""
    if not pid_alive(pid):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) may hold spaces and parentheses: count fields after its last ')'.
    return int(stat[stat.rindex(")") + 2:].split()[19])


def is_process(pid, start) -> bool:
    """`pid` names a live process that started at `start`: the very process that was recorded."""
    return isinstance(start, int) and pid_alive(pid) and process_start(pid) == start


def write_status(run_dir: str | Path, **fields) -> dict:
    """Merge `fields` into status.json (a `pid` gets its `pid_start`), with a new heartbeat."""
    path = Path(run_dir) / "status.json"
    if "pid" in fields and "pid_start" not in fields:
        fields["pid_start"] = process_start(fields["pid"])
    with _status_lock:
        status = read_json(path, {})
        status = status if isinstance(status, dict) else {}
        status.update(fields, heartbeat=time.time())
        atomic.write_json(path, status)
    return status


def read_status(run_dir: str | Path) -> dict:
    """status.json as written, with `state` corrected when the process died without a word.

    "running" reads as "failed" when the recorded process is gone, is another process with a
    reused pid, or has not refreshed its heartbeat for HEARTBEAT_STALE_S; an unreadable or
    misshapen status.json reads as "broken", with the reason in `error`.
    """
    path = Path(run_dir) / "status.json"
    status = read_json(path, "unreadable") if path.exists() else {}
    if not isinstance(status, dict) or not isinstance(status.get("state", "failed"), str):
        return {"state": "broken", "error": f"{path} is not a readable status (expected a JSON "
                                            f"object with a text \"state\")."}
    status.setdefault("state", "failed" if (Path(run_dir) / "config.json").exists() else "missing")
    if status["state"] == "running":
        heartbeat = status.get("heartbeat")
        if not is_process(status.get("pid"), status.get("pid_start")):
            status["state"] = "failed"
            status["error"] = ("The training process ended without finishing (killed or crashed). "
                               "Resume continues from its last checkpoint.")
        elif not isinstance(heartbeat, (int, float)) or time.time() - heartbeat > HEARTBEAT_STALE_S:
            status["state"] = "failed"
            status["error"] = (f"The training process has not written a heartbeat for over "
                               f"{HEARTBEAT_STALE_S:.0f} s: it hangs. Kill it, then resume.")
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
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash on a filesystem without ordered appends
        if isinstance(record, dict):  # a bare 5 or [1] is no record of ours: every reader expects objects
            records.append(record)
    return records, offset + end


def truncate_metrics(run_dir: str | Path, last_step: int) -> int:
    """Keep only records up to `last_step` (the checkpoint a resumed run restarts from)."""
    path = Path(run_dir) / "metrics.jsonl"
    records, _ = read_metrics(run_dir)
    kept = [r for r in records if not isinstance(r.get("step", 0), (int, float))
            or r.get("step", 0) <= last_step]
    with atomic.replacing(path) as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)


# --- checkpoints ------------------------------------------------------------------------------
def save_checkpoint(run_dir: str | Path, step: int, write, pointers: dict[str, dict]) -> Path:
    """Write a checkpoint folder with `write(folder)`, then point `last`/`best` at it atomically.

    A kill at any moment leaves the previous pointers and their folders intact. The `last`
    being replaced becomes `previous`, so one damaged checkpoint (a disk error, a truncated
    file) never leaves a run without one to resume from.
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
    old_last = read_json(checkpoints / "last.json")
    if "last" in pointers and isinstance(old_last, dict) and old_last.get("dir") != name:
        atomic.write_json(checkpoints / "previous.json", old_last)
    for pointer, info in pointers.items():
        atomic.write_json(checkpoints / f"{pointer}.json", {**info, "dir": name, "step": step})
    _prune_checkpoints(checkpoints)
    return checkpoints / name


def _prune_checkpoints(checkpoints: Path) -> None:
    """Remove our checkpoint folders that no pointer names; nothing else is ever touched."""
    keep = set()
    for pointer in CHECKPOINT_POINTERS:
        info = read_json(checkpoints / f"{pointer}.json")
        if isinstance(info, dict):
            keep.add(info.get("dir"))
    for folder in checkpoints.iterdir():
        if folder.is_dir() and _CHECKPOINT_FOLDER.match(folder.name) and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def resume_candidates(run_dir: str | Path) -> list[dict]:
    """The run's checkpoints (last, previous, best), newest step first, each folder once."""
    found = {}
    for which in CHECKPOINT_POINTERS:
        pointer = checkpoint_pointer(run_dir, which)
        if pointer and isinstance(pointer.get("step"), int):
            found.setdefault(pointer["dir"], {**pointer, "pointer": which})
    return sorted(found.values(), key=lambda p: p["step"], reverse=True)


def checkpoint_pointer(run_dir: str | Path, which: str = "last") -> dict | None:
    """The pointer record (dir, step, epoch, metrics) with `path` added, or None."""
    checkpoints = Path(run_dir) / "checkpoints"
    info = read_json(checkpoints / f"{which}.json")
    if (not isinstance(info, dict) or not _CHECKPOINT_FOLDER.match(str(info.get("dir")))
            or not (checkpoints / info["dir"]).is_dir()):
        return None
    return {**info, "path": checkpoints / info["dir"]}


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its best checkpoint, else its last) or a bundle folder -> the bundle folder."""
    try:
        path = expand_user(path)
    except ValueError as error:
        raise RunError(str(error)) from error
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
    """The run's summary; state "broken" (with why in `error`) when its files cannot be read."""
    run_dir = Path(run_dir)
    try:
        config = read_config(run_dir)
        status = read_status(run_dir)
        if status["state"] == "broken":
            raise RunError(status["error"])
        epochs = _count(status.get("epochs") or config.get("train", {}).get("epochs", 0), "epochs")
        return RunSummary(
            path=run_dir, kind=config["kind"], state=status["state"],
            epoch=_count(status.get("epoch", 0), "epoch"), epochs=epochs,
            step=_count(status.get("step", 0), "step"),
            total_steps=_count(status.get("steps_per_epoch", 0), "steps_per_epoch") * epochs,
            elapsed_s=float(_count(status.get("elapsed_s", 0.0), "elapsed_s", float)),
            error=None if status.get("error") is None else str(status["error"]),
            has_checkpoint=checkpoint_pointer(run_dir, "last") is not None)
    except (RunError, OSError) as error:
        return RunSummary(path=run_dir, kind="?", state="broken", epoch=0, epochs=0, step=0,
                          total_steps=0, elapsed_s=0.0, error=f"Broken run: {error}",
                          has_checkpoint=False)


def _count(value, name: str, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) \
            or not math.isfinite(value) or value < 0:  # json reads Infinity and NaN
        raise RunError(f"Expected {name} to be a number >= 0 in status.json or config.json. "
                       f"Received: {value!r:.40}.")
    return value


def folders(root: str | Path) -> list[Path]:
    """The folders directly under `root` (none when it does not exist)."""
    root = Path(root)
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run directory directly under `root`, newest first; broken ones listed as broken."""
    found = []
    for path in folders(root):
        try:
            found.append((path, (path / "config.json").stat().st_mtime))
        except OSError:
            continue  # not a run (or removed while listing)
    found.sort(key=lambda item: item[1], reverse=True)
    return [summarize_run(path) for path, _ in found]


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


def console_text(run_dir: str | Path, offset=0) -> str:
    """console.log (what `launch` caught) from byte `offset` on ("" when there is none)."""
    try:
        with open(Path(run_dir) / "console.log", "rb") as handle:
            handle.seek(offset if isinstance(offset, int) and offset >= 0 else 0)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def request_stop(run_dir: str | Path) -> None:
    """Ask the trainer to stop after its current step, with a checkpoint (state `stopped`)."""
    (Path(run_dir) / "STOP").touch()


def kill(run_dir: str | Path) -> bool:
    """Kill a trainer that does not answer STOP; the last checkpoint stays resumable.

    Only the very process status.json recorded (pid and start time) is signalled, never a
    process that reused its pid.
    """
    status = read_json(Path(run_dir) / "status.json", {})
    status = status if isinstance(status, dict) else {}
    if status.get("state") == "running" and is_process(status.get("pid"), status.get("pid_start")):
        os.kill(status["pid"], signal.SIGKILL)
        return True
    return False
