"""The jobs the pages call, one call each (NumPy in, NumPy out): reconstruct and score, pick split slices, generate and complete brains and whole volumes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import data, scoring, surprise
from core.models.prior import level_frequency, num_levels
from core.models.sampler import (draw_levels, keep_rows_mask, level_log_likelihood, sample_codes,
                                 sample_volumes)


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
    scores = scoring.score_slices(vqvae, images)
    reconstructions = scores.reconstructions[..., 0]
    return ReconstructionReport(list(names), images[..., 0], reconstructions,
                                reconstructions - images[..., 0], scores.ssim, scores.psnr)


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


def find_split_slice(data_path: str | Path, name: str | None, image_size: int,
                     split: str = "test") -> np.ndarray | None:
    """The (S, S, 1) slice of that file name in the folder data.find_slices reads for a split (any
    layout), or None when it holds none of that name. Only that file is read, not the whole split."""
    folder, _ = data.slice_folder(data_path, split)
    if not name or Path(name).name != name or not data.is_png_file(folder / name):
        return None
    return data.load_images([folder / name], image_size)[0]


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
    if level is not None:
        return np.full(n, level, np.int32)
    return draw_levels(prior, n, seed=seed, init_codes=init, keep_mask=keep) if num_levels(prior) else None


def level_from_name(prior, name: str) -> int | None:
    """The slice level a file name carries (case_441_slice_12 -> 12), if the prior knows that level."""
    level = data.slice_level(name)
    return level if level is not None and level < num_levels(prior) else None


def generate_brains(vqvae, prior, n: int, *, seed: int = 0, temperature: float = 1.0,
                    top_k: int | None = None, level: int | None = None, progress=None) -> Brains:
    """n new slices: codes sampled from the prior, decoded by the VQ-VAE.

    `level` fixes the slice level (0 = base of the brain) of a level-conditioned prior; None draws
    each slice's level as often as it occurred in training.
    """
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
    codes = vqvae.encode_to_indices(np.asarray(image, np.float32)[None])  # (1, h, w)
    _, height, width = codes.shape
    init, keep = np.repeat(codes, n, axis=0), keep_rows_mask(height, width, keep_rows)
    levels = _levels(prior, n, level, seed, init, keep)
    completed = sample_codes(prior, n, seed=seed, temperature=temperature, top_k=top_k,
                             progress=progress, init_codes=init, keep_mask=keep, levels=levels)
    return Brains(np.clip(vqvae.decode_indices(completed), 0.0, 1.0)[..., 0], levels)


# A whole brain's default temperature. At 1.0 each slice adds its own full sampling noise and
# neighbouring slices differ more than real ones (demo: adjacent-slice SSIM 0.794 against 0.829
# for real validation volumes); at 0.9 they match (0.824). bench/volumes.py, BENCHMARKS.md.
VOLUME_TEMPERATURE = 0.9
# The slice prior's weight in a whole brain's logits: it holds each slice to what slices of its level
# look like, against the drift of errors handed up the stack (demo, T = 0.9, 16 volumes: FD per slice
# 32.6 at 0, 25.4 at 0.3, 27.3 at 0.5; the slice prior's own samples 23.8; adjacent-slice SSIM 0.807
# at 0.3, real 0.829, below 0.8 from 0.5 on). bench/volumes.py --guidance, BENCHMARKS.md.
VOLUME_GUIDANCE = 0.3


def default_guidance(slice_prior) -> float:
    """The guidance a whole brain gets unless told: VOLUME_GUIDANCE, or 0 without a slice prior to guide it."""
    return VOLUME_GUIDANCE if slice_prior is not None else 0.0


def generate_volumes(vqvae, volume_prior, n: int, *, seed: int = 0, temperature: float = VOLUME_TEMPERATURE,
                     top_k: int | None = None, progress=None, slice_prior=None,
                     guidance: float = VOLUME_GUIDANCE) -> np.ndarray:
    """n whole brains (n, Z, H, W) in [0, 1]: each slice's codes sampled given the slice below, then decoded.

    With a slice prior, each slice samples from the whole-brain prior's logits mixed with the slice
    prior's at weight `guidance` (0: the whole-brain prior alone).
    `progress(slices_done, Z)` is called as each slice of the stack is finished, base to vertex (the slices
    run side by side, each a few rows behind the one below: for the demo's 32 slices of 64 code rows the first
    is done after 64 of 157 row steps).
    """
    guide = (slice_prior, guidance) if slice_prior is not None and guidance != 0 else None  # NaN: refused there
    stacks = sample_volumes(volume_prior, n, seed=seed, temperature=temperature, top_k=top_k, progress=progress,
                            guide=guide)
    n, depth, height, width = stacks.shape
    decoded = vqvae.decode_indices(stacks.reshape(n * depth, height, width))
    return np.clip(decoded, 0.0, 1.0)[..., 0].reshape(n, depth, *decoded.shape[1:3])


# How many stacks are drawn below a real slice when a brain is completed from it (the one under which the
# real slice is most likely is kept). One: keeping the best of 8 joined no better (SSIM with the slice
# below within 0.013, its bits per code 0.02-0.03 lower) at 2-5x the time (bench/completion.py --candidates;
# BENCHMARKS.md "Whole brains from one real slice").
COMPLETION_CANDIDATES = 1
# Stacks drawn side by side at most, candidates of several brains together (memory: bench/volume_memory.py).
_STACKS_AT_ONCE = 32


@dataclass(frozen=True)
class CompletedVolumes:
    """Whole brains (n, Z, H, W) in [0, 1] through real slices at `level`, and what joins them.

    `below_bits`: (n,) bits per code of each real slice given the slice generated below it (NaN at
    level 0, which has none): how well the two join (given its real slice below, a slice costs about
    the whole-brain prior's validation bits per code).
    """

    volumes: np.ndarray
    level: int
    below_bits: np.ndarray


def most_likely_level(vqvae, slice_prior, image) -> int:
    """The slice level a level-conditioned slice prior finds most likely for one (H, W, 1) slice."""
    codes = vqvae.encode_to_indices(np.asarray(image, np.float32)[None])
    log_posterior = (np.log(np.maximum(level_frequency(slice_prior), 1e-12))
                     + level_log_likelihood(slice_prior, codes, np.ones(codes.shape[1:], bool))[0])
    return int(np.argmax(log_posterior))


def real_slice_level(vqvae, slice_prior, volume_prior, name: str, image) -> tuple[int, str]:
    """Where a real slice goes in a whole brain, and how that was found: the level its file name gives
    (case_441_slice_12 -> 12), else the slice prior's most likely level for it; a ValueError without either."""
    depth = num_levels(volume_prior)
    named = data.slice_level(name)
    if named is not None and named < depth:
        return named, "file name"
    if slice_prior is None or not num_levels(slice_prior):
        raise ValueError(f"{Path(name).name} names no slice level below {depth} (as in case_441_slice_12), and this "
                         "checkpoint has no slice prior to estimate one: give the level.")
    return most_likely_level(vqvae, slice_prior, image), "estimated by the slice prior"


def complete_volumes(vqvae, volume_prior, slices, level: int, *, seed: int = 0,
                     temperature: float = VOLUME_TEMPERATURE, top_k: int | None = None, progress=None,
                     slice_prior=None, guidance: float = VOLUME_GUIDANCE,
                     candidates: int = COMPLETION_CANDIDATES) -> CompletedVolumes:
    """One whole brain through each real (H, W, 1) slice of `slices`, kept as it is at `level`.

    Above it, slices are drawn up the stack given it, as a whole brain's are. Below it, the prior knows
    only the upward way (each slice given the one below): for each brain, `candidates` stacks of levels
    0 .. level - 1 are drawn from the base up, and the one under which the real slice is most likely (one
    teacher-forced pass each) is kept. The stack below is thus another brain's, and the real slice sits
    on it with a seam (BENCHMARKS.md, "Whole brains from one real slice": there too, why the prior read
    downwards, the other way tried, lost the anatomy); a prior trained top-down would remove it.
    `below_bits` measures the seam either way.
    `progress(slices_done, Z - 1)` counts the generated slices, those below first.
    """
    slices = np.asarray(slices, np.float32)
    if slices.ndim == 3:
        slices = slices[..., None]
    depth = num_levels(volume_prior)
    if not 0 <= level < depth:
        raise ValueError(f"Expected a slice level in [0, {depth}) for this whole-brain prior. Received: {level}")
    if int(candidates) != candidates or candidates < 1:
        raise ValueError(f"Expected candidates >= 1. Received: {candidates}")
    n, candidates = len(slices), int(candidates)
    codes = vqvae.encode_to_indices(slices)  # (n, h, w)
    guide = (slice_prior, guidance) if slice_prior is not None and guidance != 0 else None
    options = dict(temperature=temperature, top_k=top_k, guide=guide)
    generated = depth - 1
    stacks, below_bits = [], np.full(n, np.nan)
    if level:
        per_call = max(1, _STACKS_AT_ONCE // candidates)
        below = []
        for first in range(0, n, per_call):
            count = min(per_call, n - first)
            step = None if progress is None else (
                lambda done, total, first=first, count=count: progress(
                    round(level * (first + done / total * count) / n), generated))
            drawn = sample_volumes(volume_prior, count * candidates, num_slices=level, seed=seed + first,
                                   progress=step, **options)
            bits = surprise.code_bits(volume_prior, np.repeat(codes[first:first + count], candidates, axis=0),
                                      [level] * (count * candidates), drawn[:, -1]).reshape(count, candidates, -1)
            best = np.argmin(bits.sum(axis=2), axis=1)
            below.append(drawn.reshape(count, candidates, *drawn.shape[1:])[np.arange(count), best])
            below_bits[first:first + count] = bits[np.arange(count), best].mean(axis=1)
        stacks.append(np.concatenate(below))
    stacks.append(codes[:, None])
    if level < depth - 1:
        step = None if progress is None else (lambda done, total: progress(level + done, generated))
        stacks.append(sample_volumes(volume_prior, n, seed=seed, start=level + 1, below=codes, progress=step,
                                     **options))
    stacks = np.concatenate(stacks, axis=1)
    _, _, height, width = stacks.shape
    decoded = np.clip(vqvae.decode_indices(stacks.reshape(n * depth, height, width)), 0.0, 1.0)[..., 0]
    volumes = decoded.reshape(n, depth, *decoded.shape[1:])
    volumes[:, level] = np.clip(slices[..., 0], 0.0, 1.0)  # the real slice as it is, not its reconstruction
    return CompletedVolumes(volumes, level, below_bits)
