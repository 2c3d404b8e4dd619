"""Training curves from metrics.jsonl: follow a growing file, pick a metric against an axis, smooth it as TensorBoard does."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core import runs


def smooth_ema(values, weight: float) -> np.ndarray:
    """TensorBoard-style EMA smoothing with bias correction; NaNs (missing values) are carried."""
    values = np.asarray(values, np.float64)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"Expected a smoothing weight in [0, 1). Received: weight={weight}")
    smoothed, average, steps = np.empty_like(values), 0.0, 0
    for i, value in enumerate(values):
        if np.isfinite(value):
            average, steps = weight * average + (1 - weight) * value, steps + 1
        smoothed[i] = average / (1 - weight ** steps) if steps else np.nan
    return smoothed


def follow_metrics(run_dir: str | Path, cursor: dict) -> list[dict]:
    """All metric records of a run, reading only what was appended since the last call.

    `cursor` is the caller's memory (offset, records, file identity); a rewritten file (a resume
    truncates it) is read again from the start.
    """
    path = Path(run_dir) / "metrics.jsonl"
    try:
        identity = path.stat().st_ino
        size = path.stat().st_size
    except OSError:
        return []
    if cursor.get("identity") != identity or size < cursor.get("offset", 0):
        cursor.update(identity=identity, offset=0, records=[])
    new, cursor["offset"] = runs.read_metrics(run_dir, cursor["offset"])
    cursor["records"] = cursor["records"] + new
    return cursor["records"]


X_AXES = {"step": "step", "epoch": "epoch", "wall time (min)": "elapsed_s"}


def curve(records: list[dict], kind: str, metric: str, x_axis: str,
          smoothing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One metric of one record kind ("step" or "epoch") against an x axis: x, raw, EMA-smoothed."""
    rows = [r for r in records if r.get("kind") == kind and isinstance(r.get(metric), (int, float))]
    key = X_AXES[x_axis]
    x = np.array([r.get(key, np.nan) for r in rows], np.float64)
    if key == "elapsed_s":
        x = x / 60.0
    elif key == "epoch" and kind == "step":  # a step sits at a fraction of its epoch
        steps_per_epoch = min((r["step"] for r in records if r.get("kind") == "epoch"), default=0)
        if steps_per_epoch:
            x = np.array([r["step"] for r in rows], np.float64) / steps_per_epoch
    raw = np.array([r[metric] for r in rows], np.float64)
    return x, raw, smooth_ema(raw, smoothing)


def metric_names(records: list[dict], kind: str) -> list[str]:
    """The numeric metrics that records of `kind` carry, in first-seen order."""
    skip = {"kind", "step", "epoch", "wall_time", "elapsed_s"}
    names: dict[str, None] = {}
    for record in records:
        if record.get("kind") == kind:
            names.update({k: None for k, v in record.items()
                          if k not in skip and isinstance(v, (int, float))})
    return list(names)


def sample_images(run_dir: str | Path) -> list[Path]:
    """A run's per-epoch reconstruction pictures (samples/epoch_NNN.png), in epoch order."""
    return sorted((Path(run_dir) / "samples").glob("epoch_*.png"))
