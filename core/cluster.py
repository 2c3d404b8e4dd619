"""A multi-worker job: the TF_CONFIG each worker reads, which worker is the chief, and N workers started here.

`tf.distribute.MultiWorkerMirroredStrategy` runs one process per worker; each finds the cluster
and its own place in it in the `TF_CONFIG` environment variable:

    {"cluster": {"worker": ["host-a:12345", "host-b:12345"]}, "task": {"type": "worker", "index": 0}}

Worker 0 is the chief (TensorFlow's convention when the cluster names no "chief" task): it alone
writes the run directory. On one machine `start_local` makes the TF_CONFIGs on free localhost
ports and runs the workers as one job; on several machines each gets its own (README).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

# After one worker ends badly, how long the others get to notice before they are stopped: the
# chief must have time to see the lost peer and write "failed" in the run's status.
GRACE_S = 90.0


def tf_config() -> dict | None:
    """This process's TF_CONFIG, checked; None when it has none (a single-worker run)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task_type, index = task["type"], task["index"]
    except (ValueError, KeyError, TypeError):
        raise ValueError('TF_CONFIG is not usable: expected {"cluster": {"worker": ["host:port", ...]}, '
                         '"task": {"type": "worker", "index": 0}}') from None
    tasks = config["cluster"].get(task_type) if isinstance(config["cluster"], dict) else None
    if not isinstance(workers, list) or not workers or not isinstance(index, int) \
            or not isinstance(tasks, list) or not 0 <= index < len(tasks):
        raise ValueError(f"TF_CONFIG's task {task_type!r} index {index!r} is not in its cluster.")
    return config


def is_chief() -> bool:
    """Whether this process writes the run: the "chief" task, else worker 0, else the only process."""
    config = tf_config()
    if config is None:
        return True
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def worker_count() -> int:
    """How many processes the job has (1 without TF_CONFIG)."""
    config = tf_config()
    if config is None:
        return 1
    return sum(len(config["cluster"].get(kind, [])) for kind in ("chief", "worker"))


def local_tf_configs(ports: list[int]) -> list[dict]:
    """One TF_CONFIG per worker of a job on this machine, worker i on ports[i]."""
    workers = [f"localhost:{port}" for port in ports]
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            for index in range(len(ports))]


def free_ports(count: int) -> list[int]:
    """Ports free on localhost now (held open together, so no two are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _relay(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, b""):
        out.write(prefix + line.decode(errors="replace"))
        out.flush()


def start_local(argv: list[str], workers: int, module: str = "core.train", grace_s: float = GRACE_S,
                out=None) -> tuple[int, str | None]:
    """Run `python -m module *argv` as `workers` processes of one job on this machine; wait for all.

    Each worker's output is relayed with a "[worker i] " prefix. When one worker ends badly the
    others get `grace_s` to notice, then are stopped, so a lost worker never leaves the job hanging.
    Returns the job's exit code (0 when every worker finished well) and, when it failed, a sentence
    saying which worker ended how.
    """
    out = out or sys.stderr
    configs = local_tf_configs(free_ports(workers))
    processes, relays = [], []
    for index, config in enumerate(configs):
        env = {**os.environ, "TF_CONFIG": json.dumps(config)}
        process = subprocess.Popen([sys.executable, "-m", module, *argv], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        processes.append(process)
        relay = threading.Thread(target=_relay, args=(process.stdout, f"[worker {index}] ", out), daemon=True)
        relay.start()
        relays.append(relay)
    failure, deadline = None, None
    try:
        while [p.poll() for p in processes].count(None):  # polls every one: each sets its returncode
            if failure is None:
                bad = next((i for i, p in enumerate(processes) if p.returncode not in (None, 0)), None)
                if bad is not None:
                    failure = f"worker {bad} of {workers} {_describe(processes[bad].returncode)}"
                    deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline:
                break  # the rest are stopped below
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for relay in relays:
            relay.join(timeout=5)
    if failure is None:
        bad = next((i for i, p in enumerate(processes) if p.returncode != 0), None)
        if bad is None:
            return 0, None
        failure = f"worker {bad} of {workers} {_describe(processes[bad].returncode)}"
    return 1, failure
