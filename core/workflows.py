"""The dashboard's one-call jobs (numpy in, numpy out): score reconstructions, generate and complete brains, smooth curves."""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core import data, metrics


@dataclass(frozen=True)
class ReconstructionReport:
    """Slices, their reconstructions and per-slice scores, all (N, H, W) in [0, 1]."""

    names: list[str]
    originals: np.ndarray
    reconstructions: np.ndarray
    differences: np.ndarray  # reconstruction - original, in [-1, 1]
    ssim: np.ndarray  # (N,)
    psnr: np.ndarray  # (N,) dB

    def rows(self) -> list[dict]:
        return [{"slice": name, "SSIM": round(float(s), 4), "PSNR (dB)": round(float(p), 2)}
                for name, s, p in zip(self.names, self.ssim, self.psnr)]


def reconstruct_and_score(vqvae, images, names: list[str]) -> ReconstructionReport:
    """Reconstruct (N, H, W, 1) slices through the codebook and score each one."""
    images = np.asarray(images, np.float32)
    reconstructions = vqvae.reconstruct(images)
    return ReconstructionReport(list(names), images[..., 0], reconstructions[..., 0],
                                reconstructions[..., 0] - images[..., 0],
                                metrics.ssim(images, reconstructions),
                                metrics.psnr(images, reconstructions))


def diverging_rgb(difference: np.ndarray, limit: float = 1.0) -> np.ndarray:
    """(H, W) signed values -> (H, W, 3) uint8: blue below 0, white at 0, red above (fixed scale)."""
    t = np.clip(np.asarray(difference, np.float32) / limit, -1.0, 1.0)[..., None]
    white, red, blue = np.ones(3), np.array([0.70, 0.09, 0.17]), np.array([0.13, 0.40, 0.67])
    rgb = np.where(t >= 0, white + t * (red - white), white + (-t) * (blue - white))
    return (rgb * 255).round().astype(np.uint8)


# --- slices from a data folder ---------------------------------------------------------------------
def split_slice_names(data_path: str | Path, split: str = "test") -> list[str]:
    """File names of a split, in case/slice order (DataError when the folder is not OASIS)."""
    return [p.name for p in data.list_slices(data.find_data_root(data_path), split)]


def load_split_slices(data_path: str | Path, names: list[str], image_size: int,
                      split: str = "test") -> np.ndarray:
    """Chosen slices of a split as (N, S, S, 1) float32 in [0, 1], resized to the model."""
    folder = data.find_data_root(data_path) / data.split_folder_name(split)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise data.DataError(f"{folder} has no slice named {missing[0]}.")
    return data.load_images([folder / n for n in names], image_size)


# --- generation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Brains:
    """Generated slices (n, H, W) in [0, 1] and the slice level each was drawn at (None: unconditional prior)."""

    images: np.ndarray
    levels: np.ndarray | None

    def names(self, stem: str) -> list[str]:
        """One file name per slice: stem_00, stem_01 ... with _level12 when the level is known."""
        digits = max(2, len(str(len(self.images) - 1)))
        return [f"{stem}_{i:0{digits}d}" + (f"_level{self.levels[i]}" if self.levels is not None else "")
                for i in range(len(self.images))]


def _levels(prior, n: int, level: int | None, seed: int, init=None, keep=None) -> np.ndarray | None:
    """The n slice levels to sample at: `level` n times, or drawn (given the kept codes, if any).

    sample_codes checks them: a level for an unconditional prior, or out of range, is a ValueError.
    """
    from core.prior import num_levels
    from core.sampler import draw_levels

    if level is not None:
        return np.full(n, level, np.int32)
    return draw_levels(prior, n, seed=seed, init_codes=init, keep_mask=keep) if num_levels(prior) else None


def level_from_name(prior, name: str) -> int | None:
    """The slice level a file name carries (case_441_slice_12 -> 12), if the prior knows that level."""
    from core.prior import num_levels

    level = data.slice_level(name)
    return level if level is not None and level < num_levels(prior) else None


def generate_brains(vqvae, prior, n: int, *, seed: int = 0, temperature: float = 1.0,
                    top_k: int | None = None, level: int | None = None, progress=None) -> Brains:
    """n new slices: codes sampled from the prior, decoded by the VQ-VAE.

    `level` fixes the slice level (0 = base of the brain) of a level-conditioned prior; None draws
    each slice's level as often as it occurred in training.
    """
    from core.sampler import sample_codes

    levels = _levels(prior, n, level, seed)
    codes = sample_codes(prior, n, seed=seed, temperature=temperature, top_k=top_k,
                         progress=progress, levels=levels)
    return Brains(np.clip(vqvae.decode_indices(codes), 0.0, 1.0)[..., 0], levels)


def complete_brain(vqvae, prior, image, keep_rows: int, n: int, *, seed: int = 0,
                   temperature: float = 1.0, top_k: int | None = None, level: int | None = None,
                   progress=None) -> Brains:
    """Keep the code rows above `keep_rows` of one (H, W, 1) slice; the prior samples the rest.

    With a level-conditioned prior and no `level`, each completion's level is drawn from
    p(level | kept rows), so the top of a base slice is completed as a base slice.
    """
    from core.sampler import keep_rows_mask, sample_codes

    codes = vqvae.encode_to_indices(np.asarray(image, np.float32)[None])  # (1, h, w)
    _, height, width = codes.shape
    init, keep = np.repeat(codes, n, axis=0), keep_rows_mask(height, width, keep_rows)
    levels = _levels(prior, n, level, seed, init, keep)
    completed = sample_codes(prior, n, seed=seed, temperature=temperature, top_k=top_k,
                             progress=progress, init_codes=init, keep_mask=keep, levels=levels)
    return Brains(np.clip(vqvae.decode_indices(completed), 0.0, 1.0)[..., 0], levels)


# --- files to download ---------------------------------------------------------------------------
def mosaic(images, columns: int) -> np.ndarray:
    """(N, H, W) or (N, H, W, 1) images -> one (rows*H, columns*W) picture, blank where a row is short."""
    images = np.asarray(images, np.float32)
    if images.ndim == 4:
        images = images[..., 0]
    n, height, width = images.shape
    rows = -(-n // columns)
    picture = np.zeros((rows * height, columns * width), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        picture[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    return picture


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W) in [0, 1] -> 8-bit greyscale PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def zip_of_pngs(images, names: list[str]) -> bytes:
    """(N, H, W) images -> one zip of PNGs named `names` (".png" added when missing)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for image, name in zip(images, names):
            stem = Path(name.replace("/", "_")).name
            archive.writestr(stem if stem.endswith(".png") else f"{stem}.png", png_bytes(image))
    return buffer.getvalue()


# --- curves --------------------------------------------------------------------------------------
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
    from core import runs

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
