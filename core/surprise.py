"""Surprise maps: each code's negative log2-likelihood under the prior, from one teacher-forced pass per slice; each slice's total and hot spot.

The prior is an exact autoregressive model, p(codes) = prod_t p(c_t | c_<t): fed a slice's own
codes, its logits at every position give every factor at once, so the bits of all codes of a
slice cost one forward pass. A level-conditioned prior needs the slice level; when the file name
carries none, the joint p(level) p(codes | level) is marginalised over levels: the prefix
log-likelihood log p(c_<=t) = logsumexp_l [log p(l) + sum_{s<=t} log p(c_s | l)], and code t's
bits are the difference of consecutive prefixes, so they still sum to the slice's total.

A slice's total mostly measures how much brain it holds, so it cannot single out a small lesion;
the hot spot, the largest mean of bits over any block of HOT_SPOT x HOT_SPOT codes, can
(bench/surprise.py: AUROC 0.52 for totals against 0.87-0.96 for hot spots on synthetic lesions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import tensorflow as tf

from core import data
from core.models.prior import level_frequency, num_levels, prior_inputs

BATCH = 16  # slices per prior pass: bounded memory for any number of slices
# A 4-12 px lesion touches 2-7 codes a side at 4x downsampling; of the blocks tried on
# bench/surprise.py (1x1 to 5x5 codes), 3x3 separated lesion slices from clean ones about best.
HOT_SPOT = 3


def block_side(height: int, width: int, size: int = HOT_SPOT) -> int:
    """The side of the blocks a (height, width) grid is scored in: `size`, or the grid's when it is smaller."""
    return min(size, height, width)


def block_means(bits: np.ndarray, size: int = HOT_SPOT) -> np.ndarray:
    """(N, H - s + 1, W - s + 1) mean bits of every s x s block of codes, s = block_side(H, W, size)."""
    bits = np.asarray(bits, np.float64)
    size = block_side(bits.shape[1], bits.shape[2], size)
    table = np.pad(bits.cumsum(axis=1).cumsum(axis=2), ((0, 0), (1, 0), (1, 0)))  # summed-area table
    sums = table[:, size:, size:] - table[:, :-size, size:] - table[:, size:, :-size] + table[:, :-size, :-size]
    return sums / (size * size)


@dataclass(frozen=True)
class Surprise:
    """Bits per code (N, H, W) of N slices, and the level each was scored at (None: marginalised)."""

    names: list[str]
    bits: np.ndarray
    levels: list[int | None]

    @property
    def total_bits(self) -> np.ndarray:
        """(N,) -log2 p(codes) of each slice."""
        return self.bits.sum(axis=(1, 2))

    @property
    def max_bits(self) -> np.ndarray:
        """(N,) the bits of each slice's most surprising code."""
        return self.bits.max(axis=(1, 2))

    @cached_property
    def _block_means(self) -> np.ndarray:
        return block_means(self.bits)

    @property
    def hot_spot_side(self) -> int:
        """The side, in codes, of the blocks hot spots are found in (HOT_SPOT, or a smaller grid's)."""
        return block_side(*self.bits.shape[1:])

    @property
    def hot_spot_bits(self) -> np.ndarray:
        """(N,) mean bits per code of each slice's most surprising hot_spot_side x hot_spot_side block of codes."""
        return self._block_means.max(axis=(1, 2))

    @property
    def hot_spot_corner(self) -> np.ndarray:
        """(N, 2) (row, column) of the code at the top left of each slice's hot spot."""
        means = self._block_means
        flat = means.reshape(len(means), -1).argmax(axis=1)
        return np.stack(np.unravel_index(flat, means.shape[1:]), axis=1)

    def rows(self) -> list[dict]:
        """One JSON-ready row per slice: name, bits, max_bits, hot_spot_bits, level."""
        return [{"name": name, "bits": round(float(total), 3), "max_bits": round(float(peak), 3),
                 "hot_spot_bits": round(float(spot), 3), "level": level}
                for name, total, peak, spot, level in zip(self.names, self.total_bits, self.max_bits,
                                                          self.hot_spot_bits, self.levels)]


def _log_probs(prior_model, codes: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    """(N, H, W) natural log-probability of each given code under the prior, teacher-forced."""
    parts = []
    for start in range(0, len(codes), BATCH):
        batch = tf.constant(codes[start:start + BATCH])
        level_batch = None if levels is None else tf.constant(levels[start:start + BATCH])
        logits = prior_model(prior_inputs(prior_model, batch, level_batch), training=False)
        log_softmax = tf.nn.log_softmax(tf.cast(logits, tf.float32))  # (B, H, W, K)
        parts.append(tf.gather(log_softmax, batch, batch_dims=3).numpy())  # (B, H, W)
    return np.concatenate(parts).astype(np.float64)


def _marginal_bits(prior_model, codes: np.ndarray) -> np.ndarray:
    """(H, W) bits per code of one slice under sum_l p(l) p(codes | l)."""
    count = num_levels(prior_model)
    height, width = codes.shape
    per_level = _log_probs(prior_model, np.repeat(codes[None], count, axis=0),
                           np.arange(count, dtype=np.int32)).reshape(count, -1)  # (L, H*W)
    log_prior = np.log(np.maximum(level_frequency(prior_model), 1e-30))[:, None]
    prefix = log_prior + np.cumsum(per_level, axis=1)  # (L, H*W): log p(l, c_<=t)
    peak = prefix.max(axis=0)
    marginal = peak + np.log(np.exp(prefix - peak).sum(axis=0))  # log p(c_<=t)
    nats = -np.diff(np.concatenate([[0.0], marginal]))
    return (nats / math.log(2.0)).reshape(height, width)


def code_bits(prior_model, codes, levels: list[int | None] | None = None) -> np.ndarray:
    """(N, H, W) -log2 p(c_ij | codes before it[, level]) of each code of N code grids.

    `levels`: one level (or None: marginalise) per slice for a level-conditioned prior; ignored
    entries are refused for an unconditional prior (pass None).
    """
    codes = np.asarray(codes, np.int32)
    if codes.ndim != 3:
        raise ValueError(f"Expected code grids (N, H, W). Received: shape={codes.shape}")
    count = num_levels(prior_model)
    if not count:
        if levels is not None and any(level is not None for level in levels):
            raise ValueError("This prior is not conditioned on slice levels; it takes no levels.")
        return _log_probs(prior_model, codes, None) / -math.log(2.0)
    levels = [None] * len(codes) if levels is None else list(levels)
    if len(levels) != len(codes):
        raise ValueError(f"Expected one level per code grid ({len(codes)}). Received: {len(levels)} levels")
    for level in levels:
        if level is not None and not 0 <= level < count:
            raise ValueError(f"Expected slice levels in [0, {count}). Received: level={level}")
    bits = np.zeros(codes.shape, np.float64)
    known = [i for i, level in enumerate(levels) if level is not None]
    if known:
        bits[known] = _log_probs(prior_model, codes[known], np.asarray([levels[i] for i in known],
                                                                       np.int32)) / -math.log(2.0)
    for i, level in enumerate(levels):
        if level is None:
            bits[i] = _marginal_bits(prior_model, codes[i])
    return bits


def slice_levels_for(prior_model, names: list[str]) -> list[int | None]:
    """The level each name carries when the prior is conditioned on it and knows it, else None."""
    count = num_levels(prior_model)
    if not count:
        return [None] * len(names)
    found = [data.slice_level(name) for name in names]
    return [level if level is not None and level < count else None for level in found]


def image_surprise(vqvae, prior_model, images, names: list[str]) -> Surprise:
    """Encode (N, H, W[, 1]) slices in [0, 1] and score every code under the prior."""
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) != len(names) or not len(images):
        raise ValueError(f"Expected N slices (N, H, W[, 1]) and N names. Received: shape={images.shape}, "
                         f"{len(names)} names")
    codes = vqvae.encode_to_indices(images)
    levels = slice_levels_for(prior_model, names)
    return Surprise(list(names), code_bits(prior_model, codes, levels), levels)


def folder_surprise(vqvae, prior_model, data_path, split: str = "validate", limit: int | None = None) -> Surprise:
    """image_surprise of the slices at `data_path` (any layout data.find_slices reads), in chunks."""
    paths = data.find_slices(data_path, split)
    if limit is not None:
        paths = data.evenly_spaced(paths, limit)
    size = vqvae.config.image_size
    parts = [image_surprise(vqvae, prior_model, data.load_images(chunk, size), [p.name for p in chunk])
             for chunk in data.chunked(paths, 64)]
    return Surprise([n for p in parts for n in p.names], np.concatenate([p.bits for p in parts]),
                    [level for p in parts for level in p.levels])


def rank(value: float, level: int | None, reference_values, reference_levels: list[int | None]) -> tuple[float, int]:
    """(fraction of reference slices scoring less than `value`, how many were compared).

    `reference_values`: one score per reference slice (e.g. its total_bits or hot_spot_bits).
    Compared with the reference slices of the same level; a slice without a level, or a level no
    reference slice has, against all of them.
    """
    values = np.asarray(reference_values, np.float64)
    if len(values) != len(reference_levels):
        raise ValueError(f"Expected one level per reference value ({len(values)}). "
                         f"Received: {len(reference_levels)} levels")
    same = np.array([other == level for other in reference_levels], bool)
    if level is not None and same.any():
        values = values[same]
    if not len(values):
        raise ValueError("Expected at least one reference slice to rank against. Received: none")
    return float((values < value).mean()), int(len(values))
