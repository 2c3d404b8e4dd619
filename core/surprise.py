"""Surprise maps: each code's negative log2-likelihood under the prior, from one teacher-forced pass per slice; each slice's total and hot spot.

The prior is an exact autoregressive model, p(codes) = prod_t p(c_t | c_<t): fed a slice's own
codes, its logits at every position give every factor at once, so the bits of all codes of a
slice cost one forward pass. A level-conditioned prior needs the slice level; when the file name
carries none, the joint p(level) p(codes | level) is marginalised over levels: the prefix
log-likelihood log p(c_<=t) = logsumexp_l [log p(l) + sum_{s<=t} log p(c_s | l)], and code t's
bits are the difference of consecutive prefixes, so they still sum to the slice's total.

The same pass gives each position's expected bits, the entropy of the prior's prediction there:
where the prior is unsure (the cortex's folds, the brain's edge) any slice costs many bits. A
slice's total mostly measures how much brain it holds, so it cannot single out a small lesion;
the hot spot can: the largest mean over any HOT_SPOT x HOT_SPOT block of codes of the bits above
expected. A whole-brain prior, given the slice below, predicts a slice more sharply than the
slice prior alone and finds lesions better (bench/surprise.py, five lesion sets: hot-spot AUROC
0.91-0.93 against 0.85-0.90 for the slice prior; slice totals 0.52-0.53 either way).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import tensorflow as tf

from core import data
from core.models.prior import (check_previous, level_frequency, num_levels, previous_layer, prior_inputs,
                               start_token)

BATCH = 16  # slices per prior pass: bounded memory for any number of slices
# A 4-12 px lesion touches 2-7 codes a side at 4x downsampling; of the blocks tried on
# bench/surprise.py (1x1 to 5x5 codes of bits above expected), 4x4 separated lesion slices from
# clean ones best over five lesion seeds.
HOT_SPOT = 4
LOG2 = math.log(2.0)


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
    """Bits per code (N, H, W) of N slices, the bits the prior expected at each code, the level each
    was scored at (None: marginalised), and whether a whole-brain prior scored each given its slice below."""

    names: list[str]
    bits: np.ndarray
    levels: list[int | None]
    expected_bits: np.ndarray | None = None  # (N, H, W); None: not known, taken as zero
    # Per slice: a whole-brain prior scored it given the real slice below (a base slice, level 0: given
    # none, as it was trained). False for the slice prior, and for a slice whose slice below was missing
    # (the "no slice below" code stood in). None: False for every slice.
    given_below: list[bool] | None = None

    @property
    def total_bits(self) -> np.ndarray:
        """(N,) -log2 p(codes) of each slice."""
        return self.bits.sum(axis=(1, 2))

    @property
    def max_bits(self) -> np.ndarray:
        """(N,) the bits of each slice's most surprising code."""
        return self.bits.max(axis=(1, 2))

    @property
    def excess_bits(self) -> np.ndarray:
        """(N, H, W) bits above what the prior expected at each code (its prediction's entropy)."""
        return self.bits if self.expected_bits is None else self.bits - self.expected_bits

    @cached_property
    def _block_means(self) -> np.ndarray:
        return block_means(self.excess_bits)

    @property
    def hot_spot_side(self) -> int:
        """The side, in codes, of the blocks hot spots are found in (HOT_SPOT, or a smaller grid's)."""
        return block_side(*self.bits.shape[1:])

    @property
    def hot_spot_bits(self) -> np.ndarray:
        """(N,) mean bits above expected per code of each slice's most surprising hot_spot_side x hot_spot_side block."""
        return self._block_means.max(axis=(1, 2))

    @property
    def hot_spot_corner(self) -> np.ndarray:
        """(N, 2) (row, column) of the code at the top left of each slice's hot spot."""
        means = self._block_means
        flat = means.reshape(len(means), -1).argmax(axis=1)
        return np.stack(np.unravel_index(flat, means.shape[1:]), axis=1)

    def rows(self) -> list[dict]:
        """One JSON-ready row per slice: name, bits, expected_bits, max_bits, hot_spot_bits, level, given_below."""
        expected_totals = self.total_bits - self.excess_bits.sum(axis=(1, 2))
        return [{"name": name, "bits": round(float(total), 3), "expected_bits": round(float(expected), 3),
                 "max_bits": round(float(peak), 3), "hot_spot_bits": round(float(spot), 3), "level": level,
                 "given_below": given}
                for name, total, expected, peak, spot, level, given in zip(
                    self.names, self.total_bits, expected_totals, self.max_bits, self.hot_spot_bits, self.levels,
                    self.given_below or [False] * len(self.names))]


# One compiled pass per prior (as core.scoring's): eager calls of the functional model cost a
# third more per slice on a 2-core CPU.
_PASSES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled_pass(prior_model):
    """(codes, inputs, full) -> (B, H, W, K) log-probabilities when `full` (a Python bool: one trace
    each), else ((B, H, W) log-probability of each given code, (B, H, W) entropy in nats)."""
    if prior_model not in _PASSES:
        @tf.function(reduce_retracing=True)
        def run(codes, inputs, full: bool = False):
            log_softmax = tf.nn.log_softmax(tf.cast(prior_model(inputs, training=False), tf.float32))
            if full:
                return log_softmax
            return (tf.gather(log_softmax, codes, batch_dims=3),
                    -tf.reduce_sum(tf.exp(log_softmax) * log_softmax, axis=-1))
        _PASSES[prior_model] = run
    return _PASSES[prior_model]


def _pass(prior_model, codes: np.ndarray, levels: np.ndarray | None, previous: np.ndarray | None):
    """Teacher-forced passes in batches: (N, H, W) natural log-probability of each given code, and
    (N, H, W) entropy in nats of the prediction at each code."""
    run = _compiled_pass(prior_model)
    picked, entropies = [], []
    for start in range(0, len(codes), BATCH):
        batch = tf.constant(codes[start:start + BATCH])
        level_batch = None if levels is None else tf.constant(levels[start:start + BATCH])
        previous_batch = None if previous is None else tf.constant(previous[start:start + BATCH])
        log_p, entropy = run(batch, prior_inputs(prior_model, batch, level_batch, previous_batch))
        picked.append(log_p.numpy())
        entropies.append(entropy.numpy())
    return np.concatenate(picked).astype(np.float64), np.concatenate(entropies).astype(np.float64)


def _marginal_bits(prior_model, codes: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bits per code of one slice under sum_l p(l) p(codes | l), and (H, W) expected bits.

    The prediction at code t is the mixture sum_l p(l | c_<t) p(c_t | c_<t, l); its entropy is the
    expected bits there, from each level's full distribution.
    """
    count = num_levels(prior_model)
    height, width = codes.shape
    levels = np.arange(count, dtype=np.int32)
    repeated = None if previous is None else np.repeat(previous[None], count, axis=0)
    per_level, distributions = [], []
    for start in range(0, count, BATCH):
        chunk = levels[start:start + BATCH]
        batch = tf.constant(np.repeat(codes[None], len(chunk), axis=0))
        inputs = prior_inputs(prior_model, batch, tf.constant(chunk),
                              None if repeated is None else tf.constant(repeated[start:start + BATCH]))
        log_softmax = _compiled_pass(prior_model)(batch, inputs, full=True).numpy()
        distributions.append(log_softmax.reshape(len(chunk), height * width, -1))
        per_level.append(np.take_along_axis(distributions[-1], codes.reshape(1, -1, 1), axis=2)[..., 0])
    per_level, distributions = np.concatenate(per_level).astype(np.float64), np.concatenate(distributions)
    log_prior = np.log(np.maximum(level_frequency(prior_model), 1e-30))[:, None]
    prefix = log_prior + np.cumsum(per_level, axis=1)  # (L, H*W): log p(l, c_<=t)
    marginal = _logsumexp(prefix, axis=0)  # log p(c_<=t)
    nats = -np.diff(np.concatenate([[0.0], marginal]))
    # p(l | c_<t): the prefix before t (log p(l) alone at t = 0), normalised over levels.
    before = np.concatenate([log_prior, prefix[:, :-1]], axis=1)
    weights = np.exp(before - _logsumexp(before, axis=0)[None])  # (L, H*W)
    mixture = np.einsum("lt,ltk->tk", weights.astype(np.float32), np.exp(distributions)).astype(np.float64)
    entropy = -np.sum(mixture * np.log(np.maximum(mixture, 1e-300)), axis=1)
    return (nats / LOG2).reshape(height, width), (entropy / LOG2).reshape(height, width)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = values.max(axis=axis)
    return peak + np.log(np.exp(values - np.expand_dims(peak, axis)).sum(axis=axis))


def score_codes(prior_model, codes, levels: list[int | None] | None = None,
                previous=None) -> tuple[np.ndarray, np.ndarray]:
    """(bits, expected bits), each (N, H, W): -log2 p(c_ij | codes before it[, level][, slice below])
    of each code of N code grids, and the entropy in bits of the prior's prediction there.

    `levels`: one level (or None: marginalise) per slice for a level-conditioned prior; ignored
    entries are refused for an unconditional prior (pass None). `previous`: (N, H, W) codes of the
    slice below each (core.models.prior.start_token for none), for a whole-brain prior only.
    """
    codes = np.asarray(codes, np.int32)
    if codes.ndim != 3:
        raise ValueError(f"Expected code grids (N, H, W). Received: shape={codes.shape}")
    previous = check_previous(prior_model, len(codes), previous)
    count = num_levels(prior_model)
    if not count:
        if levels is not None and any(level is not None for level in levels):
            raise ValueError("This prior is not conditioned on slice levels; it takes no levels.")
        nats, entropy = _pass(prior_model, codes, None, previous)
        return -nats / LOG2, entropy / LOG2
    levels = [None] * len(codes) if levels is None else list(levels)
    if len(levels) != len(codes):
        raise ValueError(f"Expected one level per code grid ({len(codes)}). Received: {len(levels)} levels")
    for level in levels:
        if level is not None and not 0 <= level < count:
            raise ValueError(f"Expected slice levels in [0, {count}). Received: level={level}")
    bits, expected = np.zeros(codes.shape, np.float64), np.zeros(codes.shape, np.float64)
    known = [i for i, level in enumerate(levels) if level is not None]
    if known:
        nats, entropy = _pass(prior_model, codes[known], np.asarray([levels[i] for i in known], np.int32),
                              None if previous is None else previous[known])
        bits[known], expected[known] = -nats / LOG2, entropy / LOG2
    for i, level in enumerate(levels):
        if level is None:
            bits[i], expected[i] = _marginal_bits(prior_model, codes[i], None if previous is None else previous[i])
    return bits, expected


def code_bits(prior_model, codes, levels: list[int | None] | None = None, previous=None) -> np.ndarray:
    """(N, H, W) -log2 p(c_ij | codes before it[, level][, slice below]): score_codes' bits alone."""
    return score_codes(prior_model, codes, levels, previous)[0]


def slice_levels_for(prior_model, names: list[str]) -> list[int | None]:
    """The level each name carries when the prior is conditioned on it and knows it, else None."""
    count = num_levels(prior_model)
    if not count:
        return [None] * len(names)
    found = [data.slice_level(name) for name in names]
    return [level if level is not None and level < count else None for level in found]


def is_whole_brain(prior_model) -> bool:
    """Whether the prior is a whole-brain prior, which scores a slice given the slice below it."""
    return previous_layer(prior_model) is not None


def slice_below_of(name: str, find) -> tuple[bool, np.ndarray | None]:
    """(whether a whole-brain prior can score the slice `name`, the slice below it to give it).

    `find(name)` returns the slice of that name, or None when there is none. A base slice (level 0)
    has nothing below (True, None: the "no slice below" code, as in training); another slice needs
    its slice below found, else (False, None): score it with the slice prior.
    """
    key = data.case_and_level(name)
    if key is None:
        return False, None
    if key[1] == 0:
        return True, None
    below = find(data.name_below(name))
    return (below is not None), below


def image_surprise(vqvae, prior_model, images, names: list[str], below=None) -> Surprise:
    """Encode (N, H, W[, 1]) slices in [0, 1] and score every code under the prior.

    `below`, for a whole-brain prior only: one entry per slice, the (H, W[, 1]) slice one level
    below it, or None for a slice with none (a stack's first slice: the "no slice below" code, as
    the prior was trained).
    """
    images = _as_slices(images)
    if len(images) != len(names) or not len(images):
        raise ValueError(f"Expected N slices (N, H, W[, 1]) and N names. Received: shape={images.shape}, "
                         f"{len(names)} names")
    codes = vqvae.encode_to_indices(images)
    previous = None
    if below is not None:
        if len(below) != len(images):
            raise ValueError(f"Expected one slice below (or None) per slice ({len(images)}). Received: {len(below)}")
        check_previous(prior_model, len(codes), codes)  # the one rule: a slice prior takes no slice below
        previous = np.full(codes.shape, start_token(prior_model), np.int32)
        known = [i for i, image in enumerate(below) if image is not None]
        if known:
            previous[known] = vqvae.encode_to_indices(_as_slices(np.stack([below[i] for i in known])))
    levels = slice_levels_for(prior_model, names)
    bits, expected = score_codes(prior_model, codes, levels, previous)
    given = None if below is None else [image is not None or level == 0 for image, level in zip(below, levels)]
    return Surprise(list(names), bits, levels, expected, given_below=given)


def _as_slices(images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    images = images[..., None] if images.ndim == 3 else images
    if images.ndim != 4:
        raise ValueError(f"Expected N slices (N, H, W[, 1]). Received: shape={images.shape}")
    return images


def folder_surprise(vqvae, prior_model, data_path, split: str = "validate", limit: int | None = None) -> Surprise:
    """image_surprise of the slices at `data_path` (any layout data.find_slices reads), in chunks.

    A whole-brain prior scores each slice given the slice below it in the same folder (none there:
    the "no slice below" code, as in training); the names must carry case and slice numbers.
    """
    every = data.find_slices(data_path, split)
    below_index = data.slice_below(every) if is_whole_brain(prior_model) else None
    chosen = list(range(len(every))) if limit is None else data.evenly_spaced(list(range(len(every))), limit)
    size = vqvae.config.image_size
    parts = []
    for chunk in data.chunked(chosen, 64):
        images = data.load_images([every[i] for i in chunk], size)
        below = None
        if below_index is not None:
            below_paths = {i: every[below_index[i]] for i in chunk if below_index[i] >= 0}
            loaded = dict(zip(below_paths, data.load_images(list(below_paths.values()), size))) if below_paths else {}
            below = [loaded.get(i) for i in chunk]
        parts.append(image_surprise(vqvae, prior_model, images, [every[i].name for i in chunk], below))
    return Surprise([n for p in parts for n in p.names], np.concatenate([p.bits for p in parts]),
                    [level for p in parts for level in p.levels],
                    np.concatenate([p.expected_bits for p in parts]),
                    given_below=None if below_index is None else [given for p in parts for given in p.given_below])


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
