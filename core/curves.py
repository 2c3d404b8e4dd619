"""Training curves from metrics.jsonl: follow a growing file, pick a metric against an axis, smooth it as TensorBoard does.

Also the run-comparison table: one row per run with its figures and the settings that differ.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from core import runs

LARGEST_READING = 1e18  # beyond it a figure is no training's (and int64, a table's column, ends near 9.2e18)


def number(value) -> float | None:
    """A metric value as a float, NaN and inf kept (a diverged step: the chart leaves it out, smoothing
    carries the gap); None when it is no number at all (a string, a bool, 10**400) — a line written by
    hand or damaged."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def reading(value) -> float | None:
    """A figure for the run table: a finite number of a size a table column holds, else None."""
    value = number(value)
    return value if value is not None and math.isfinite(value) and abs(value) <= LARGEST_READING else None


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
    """One metric of one record kind ("step" or "epoch") against an x axis: x, raw, EMA-smoothed.

    Values that are no numbers are left out; an x that is not one is NaN (not drawn)."""
    rows = [r for r in records if r.get("kind") == kind and number(r.get(metric)) is not None]
    key = X_AXES[x_axis]

    def axis(name):
        values = (number(r.get(name)) for r in rows)
        return np.array([np.nan if v is None else v for v in values], np.float64)

    x = axis(key)
    if key == "elapsed_s":
        x = x / 60.0
    elif key == "epoch" and kind == "step":  # a step sits at a fraction of its epoch
        epoch_steps = [reading(r.get("step")) for r in records if r.get("kind") == "epoch"]  # finite, > 0
        steps_per_epoch = min((s for s in epoch_steps if s), default=0)
        if steps_per_epoch:
            x = axis("step") / steps_per_epoch
    raw = np.array([number(r[metric]) for r in rows], np.float64)
    return x, raw, smooth_ema(raw, smoothing)


def metric_names(records: list[dict], kind: str) -> list[str]:
    """The numeric metrics that records of `kind` carry, in first-seen order."""
    skip = {"kind", "step", "epoch", "wall_time", "elapsed_s"}
    names: dict[str, None] = {}
    for record in records:
        if record.get("kind") == kind:
            names.update({k: None for k, v in record.items() if k not in skip and number(v) is not None})
    return list(names)


def sample_images(run_dir: str | Path) -> list[Path]:
    """A run's per-epoch reconstruction pictures (samples/epoch_NNN.png), in epoch order."""
    return sorted((Path(run_dir) / "samples").glob("epoch_*.png"))


def sample_epochs(run_dir: str | Path) -> dict[int, Path]:
    """{epoch: picture} of a run's per-epoch reconstructions (names not epoch_<number>.png, and what is not
    a file, are skipped)."""
    found = {}
    for path in sample_images(run_dir):
        number = path.stem.split("_", 1)[1]
        if number.isascii() and number.isdigit() and path.is_file():
            found[int(number)] = path
    return found


def load_picture(path: str | Path) -> np.ndarray | None:
    """A per-epoch picture's pixels, or None when the file cannot be read as an image."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def picture_at(pictures: dict[int, Path], epoch: int) -> tuple[int, Path] | None:
    """The picture of `epoch`, else of the latest epoch before it (a run that stopped earlier); None if none."""
    earlier = [e for e in pictures if e <= epoch]
    return (max(earlier), pictures[max(earlier)]) if earlier else None


def flatten_settings(config: dict, prefix: str = "") -> dict:
    """A run's nested config.json -> {"model.num_embeddings": 256, "train.lr": 0.001, ...}."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_settings(value, f"{name}."))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2 ** 63:
            flat[name] = str(value)  # a table column of int64 cannot hold it
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return flat


def differing_settings(settings: dict[str, dict]) -> list[str]:
    """The setting names whose values are not the same in every run (a missing one counts as different)."""
    names = list(dict.fromkeys(name for flat in settings.values() for name in flat))
    missing = object()
    return [name for name in names
            if len({repr(flat.get(name, missing)) for flat in settings.values()}) > 1]


_SUMMARY_CACHE: dict = {}  # (path, size, mtime_ns) -> figures: the table re-reads only runs that changed


def run_figures(run_dir: str | Path) -> dict:
    """Best and final validation SSIM, final bits per code (priors), codes used, from metrics.jsonl.

    Missing figures are None: a run that has not finished an epoch, or a broken one, still has a row.
    """
    path = Path(run_dir) / "metrics.jsonl"
    try:
        stat = path.stat()
    except OSError:
        return {"best val_ssim": None, "final val_ssim": None, "bits per code": None, "codes used": None}
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SUMMARY_CACHE:
        records, _ = runs.read_metrics(run_dir)
        epochs = [r for r in records if r.get("kind") == "epoch"]
        steps = [r for r in records if r.get("kind") == "step"]

        def values(rows, metric):
            return [v for v in (reading(r.get(metric)) for r in rows) if v is not None]

        ssim, bits = values(epochs, "val_ssim"), values(epochs, "val_bits_per_code")
        codes = values(epochs, "val_codes_used") or values(steps, "codes_used")
        _SUMMARY_CACHE[key] = {"best val_ssim": max(ssim) if ssim else None,
                               "final val_ssim": ssim[-1] if ssim else None,
                               "bits per code": bits[-1] if bits else None,
                               "codes used": int(codes[-1]) if codes else None}
    return dict(_SUMMARY_CACHE[key])


def run_settings(run_dir: str | Path) -> dict:
    """A run's flattened config.json; {} when it cannot be read (a broken run)."""
    try:
        return flatten_settings(runs.read_config(run_dir))
    except (runs.RunError, OSError):
        return {}


def comparison_table(summaries: list, chosen: list[str], all_settings: bool = False) -> list[dict]:
    """One row per run: name, kind, state, the figures, wall time, then its settings.

    The settings shown are those that differ between the chosen runs (every setting when
    `all_settings`); a broken run has a row with its state and no figures.
    """
    settings = {s.name: run_settings(s.path) for s in summaries}
    compared = {name: settings[name] for name in chosen if name in settings}
    shown = (list(dict.fromkeys(n for flat in settings.values() for n in flat)) if all_settings
             else differing_settings(compared) if len(compared) > 1 else [])
    shown = [name for name in shown if name != "kind"]  # already a column of its own (broken runs: "?")
    rows = []
    for summary in summaries:
        row = {"run": summary.name, "kind": summary.kind, "state": summary.state,
               **run_figures(summary.path),
               "wall time (min)": round(summary.elapsed_s / 60.0, 2)}
        rows.append({**row, **{name: settings[summary.name].get(name) for name in shown}})
    return rows


