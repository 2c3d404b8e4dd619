"""Starting training from the dashboard: validate, refuse while a job runs, reserve the run folder, launch detached.

Launching is shaped so that a double click, a second tab or a reload never starts a run twice:
the run directory is reserved with `os.mkdir` (atomic: exactly one caller wins) before any process
starts, and a job that is already running or starting makes every new launch refuse.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core import atomic, data, runs, settings
from core.models.prior import PriorConfig
from core.models.vqvae import VQVAEConfig
from core.training.loop import TrainConfig
from core.training.vqvae_task import VQVAEData

# {"pid", "pid_start", "started", "command", "console_offset"}: written by whoever started the run
LAUNCHER_FILE = runs.LAUNCHER_FILE
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


@dataclass(frozen=True)
class PendingRun:
    """A reserved run directory whose trainer has not written config.json (yet, or ever)."""

    path: Path
    alive: bool  # its launcher process still runs: starting, or queued behind a VQ-VAE
    console_tail: str  # the last lines the launcher printed (the reason, when it died)

    @property
    def name(self) -> str:
        return self.path.name


def check_run_name(name: str) -> str:
    if not _RUN_NAME.match(name or ""):
        raise runs.RunError(f"Run name {name!r} is not usable: use 1-80 letters, digits, '.', '_' "
                            f"or '-', starting with a letter or digit.")
    return name


def reserve_run_dir(root: str | Path, name: str) -> Path:
    """Create RUNS_ROOT/name atomically; RunError when it exists (a double click, another tab)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / check_run_name(name)
    try:
        os.mkdir(path)
    except FileExistsError:
        raise runs.RunError(f"A run named {name!r} exists already in {root}. Choose another "
                            f"name (or resume that run from the run list).") from None
    return path


def pending_runs(root: str | Path) -> list[PendingRun]:
    """Reserved run directories that have no config.json, newest first."""
    found = []
    for path in runs.folders(root):
        if (path / "config.json").exists():
            continue
        launcher = runs.read_json(path / LAUNCHER_FILE, {})
        if not launcher or not isinstance(launcher, dict):
            continue  # not made by a launcher: not ours to report
        alive = _launcher_alive(launcher)
        tail = runs.console_text(path, 0).strip().splitlines()[-6:]
        found.append(PendingRun(path, alive, "\n".join(tail)))
    found.sort(key=lambda p: p.path.stat().st_mtime, reverse=True)
    return found


def _write_launcher(run_dir: Path, pid: int, command: list[str], console_offset: int = 0,
                    started: float | None = None) -> None:
    """Record the launched process by pid and start time: a reused pid is never taken for it."""
    atomic.write_json(run_dir / LAUNCHER_FILE, {
        "pid": pid, "pid_start": runs.process_start(pid),
        "started": time.time() if started is None else started,
        "command": command, "console_offset": console_offset})


def _launcher_alive(launcher: dict) -> bool:
    return runs.is_process(launcher.get("pid"), launcher.get("pid_start"))


def launch_failure(run_dir: Path) -> str | None:
    """Why the last launch into `run_dir` (a resume) died before the trainer wrote a word, or None.

    That is: the launched process is gone and status.json has not changed since the launch. The
    reason is the process's last `error:` line in console.log (else its last line).
    """
    launcher = runs.read_json(run_dir / LAUNCHER_FILE, {})
    if not isinstance(launcher, dict) or not isinstance(launcher.get("started"), (int, float)):
        return None
    status = runs.read_json(run_dir / "status.json", {})
    heartbeat = status.get("heartbeat") if isinstance(status, dict) else None
    if _launcher_alive(launcher) or (isinstance(heartbeat, (int, float))
                                     and heartbeat >= launcher["started"]):
        return None
    lines = [line.strip() for line in
             runs.console_text(run_dir, launcher.get("console_offset")).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    reason = (errors or lines or ["the process ended without a message"])[-1]
    return reason.removeprefix("error:").strip()[:300]


def prior_run_name(vqvae_run_name: str) -> str:
    """The run a VQ-VAE's prior trains into, beside it: the one place this name is made."""
    return f"{vqvae_run_name}-prior"


@dataclass(frozen=True)
class TrainJob:
    """What the Train form starts, as the configs themselves: a VQ-VAE run, and optionally its prior after it."""

    name: str
    model: VQVAEConfig
    train: TrainConfig
    data: VQVAEData
    prior_train: TrainConfig | None = None  # None: no prior; else how the prior trains once the VQ-VAE finished
    prior_model: dict | None = None  # PriorConfig fields the form set (say previous_slice: a whole-brain prior)

    def vqvae_argv(self) -> list[str]:
        """`core.train vqvae` flags derived from the configs (the CLI parses them back into the same configs)."""
        data_settings = self.data.replace(data=str(Path(self.data.data).resolve()))
        return [*settings.to_argv(data_settings), *settings.to_argv(self.model), *settings.to_argv(self.train)]

    def prior_argv(self) -> list[str]:
        """`core.train prior` flags of the chained prior (its --vqvae and --run-dir are added by the chain)."""
        return [*settings.to_argv(self.prior_train), *settings.values_to_argv(PriorConfig, self.prior_model or {})]

    def validate(self) -> None:
        """Raise before anything starts: a bad name, a crop that does not fit, not an OASIS folder."""
        check_run_name(self.name)
        self.data.check_fits(self.model)
        root = data.find_data_root(self.data.data)
        data.scan_split(root, "train")
        data.scan_split(root, "validate")


def busy_reason(root: str | Path, gpus: int) -> str | None:
    """Why a new job must not start now (one running, starting or queued), or None when it may."""
    device = "the GPU" if gpus else "the CPU (2 cores are too few for two trainings)"
    for summary in runs.list_runs(root):
        if summary.state == "running":
            return (f"Run {summary.name} is training on {device}; one job at a time. Stop it, or "
                    f"wait until it finishes, then start again.")
    root = Path(root)
    for launcher in sorted(root.glob(f"*/{LAUNCHER_FILE}")) if root.is_dir() else []:
        record = runs.read_json(launcher, {})
        if isinstance(record, dict) and _launcher_alive(record):
            if _status_says_ended(launcher.parent):
                return (f"Run {launcher.parent.name} has stopped and its process is still exiting; "
                        f"start again in a moment.")
            return (f"Run {launcher.parent.name} is starting (or queued after its VQ-VAE); one "
                    f"job at a time. Wait until it finishes, then start again.")
    return None


def still_exiting(run_dir: Path) -> bool:
    """The run's status says it ended, but the process last launched into it still runs: it is
    closing down after its last checkpoint, and a new job would be refused until it is gone."""
    record = runs.read_json(Path(run_dir) / LAUNCHER_FILE, {})
    return isinstance(record, dict) and _launcher_alive(record) and _status_says_ended(run_dir)


def _status_says_ended(run_dir: Path) -> bool:
    status = runs.read_json(Path(run_dir) / "status.json", {})
    return isinstance(status, dict) and status.get("state") in ("stopped", "failed", "finished")


@contextmanager
def _launching(root: Path, gpus: int):
    """Hold RUNS_ROOT/.launch.lock while checking and launching: two tabs never both pass."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".launch.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        reason = busy_reason(root, gpus)
        if reason:
            raise runs.RunError(reason)
        yield


def start(root: str | Path, job: TrainJob, gpus: int) -> Path:
    """Validate, refuse when busy, reserve the run folder(s), then launch detached.

    With `prior_train` one `python -m core.pipeline` process runs the VQ-VAE, then the prior
    when (and only when) the VQ-VAE finished: the chain lives outside the app, so closing the
    browser or restarting the dashboard does not lose the second half.
    """
    root = Path(root)
    job.validate()
    with _launching(root, gpus):
        return _start_locked(root, job)


def _start_locked(root: Path, job: TrainJob) -> Path:
    run_dir = reserve_run_dir(root, job.name)
    if job.prior_train is None:
        args = ["vqvae", "--run-dir", str(run_dir), *job.vqvae_argv()]
        _write_launcher(run_dir, runs.launch(args, run_dir), args)
        return run_dir
    try:
        prior_dir = reserve_run_dir(root, prior_run_name(job.name))
    except runs.RunError:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    vqvae = ["--run-dir", str(run_dir), *job.vqvae_argv()]
    prior = ["--run-dir", str(prior_dir), *job.prior_argv()]
    args = ["--vqvae-args", json.dumps(vqvae), "--prior-args", json.dumps(prior)]
    pid = runs.launch(args, run_dir, module="core.pipeline")  # outlives the dashboard
    for folder in (run_dir, prior_dir):
        _write_launcher(folder, pid, ["-m", "core.pipeline", *args])
    return run_dir


def start_prior(root: str | Path, vqvae_run: Path, train: TrainConfig, gpus: int) -> Path:
    """Train a prior on a finished VQ-VAE run's codes, into the run named by prior_run_name."""
    root = Path(root)
    if runs.read_status(vqvae_run).get("state") != "finished":
        raise runs.RunError(f"Run {vqvae_run.name} has not finished; train its prior afterwards.")
    with _launching(root, gpus):
        run_dir = reserve_run_dir(root, prior_run_name(vqvae_run.name))
        args = ["prior", "--vqvae", str(vqvae_run), "--run-dir", str(run_dir), *settings.to_argv(train)]
        _write_launcher(run_dir, runs.launch(args, run_dir), args)
    return run_dir


def resume(root: str | Path, run_dir: Path, gpus: int) -> int:
    """Continue a stopped or failed run from its last checkpoint, detached."""
    summary = runs.summarize_run(run_dir)
    if summary.state not in ("stopped", "failed") or not summary.has_checkpoint:
        raise runs.RunError(f"Run {run_dir.name} is {summary.state}"
                            f"{'' if summary.has_checkpoint else ' with no checkpoint'}; only a "
                            f"stopped or failed run with a checkpoint resumes.")
    with _launching(Path(root), gpus):
        args = [summary.kind, "--run-dir", str(run_dir), "--resume"]
        console = run_dir / "console.log"
        offset = console.stat().st_size if console.exists() else 0  # earlier launches' lines
        started = time.time()  # before the trainer can write its first status
        pid = runs.launch(args, run_dir)
        _write_launcher(run_dir, pid, args, offset, started)
    return pid
