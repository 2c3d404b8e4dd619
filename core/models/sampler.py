"""Exact sampling from the gated PixelCNN prior: naive full passes, cached fast generation (Ramachandran et al. 2017, arXiv:1704.06001), whole stacks with their slices side by side."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf

from core.models.prior import (GatedPixelCNNLayer, LogitsHead, check_levels, check_previous, level_frequency,
                               level_layer, num_levels, previous_layer, prior_inputs, prior_parts, start_token)

# Measured with bench/sampling.py on the 2-core CPU (64x64, K=256, n=16, 8 layers): the plain graph
# ran in 1.23 s after a 1.7 s warm-up, XLA (jit_compile=True on the row step) in 1.34 s after a 3.0 s
# warm-up, so the CPU uses the plain graph. On a GPU each of the ~100 small ops per pixel would be a
# kernel launch, which XLA fuses, so XLA is used there (not timed: no GPU was available).
# None: decide per call from the visible devices; True/False forces it.
USE_XLA: Optional[bool] = None

ProgressFn = Callable[[int, int], None]


class _Static(NamedTuple):
    """Python-level structure of the priors a row step runs: part of the tf.function cache key.

    A NamedTuple, which tf.function compares by value; it keys a dataclass by identity, so every
    call traced the row step again.
    """

    reaches: tuple  # per prior, k // 2 of each gated layer
    residuals: tuple  # per prior, whether each gated layer adds its horizontal input
    top_k: Optional[int]
    return_logits: bool
    fused: bool = False  # several priors of one structure: their per-pixel steps run as one batched step


def _prior_weights(prior_model: keras.Model):
    """The weights the fast path needs, each layer handing over its own (core.models.prior.prior_parts)."""
    parts = prior_parts(prior_model)
    weights = dict(embedding=parts.embedding, position=parts.position,
                   layers=[layer.step_weights() for layer in parts.gated], head=parts.head.step_weights())
    return weights, tuple(l.reach for l in parts.gated), tuple(l.residual for l in parts.gated)


def _choose(logits, gumbel, inv_temperature, top_k):
    """Gumbel-max: argmax(logits / temperature + gumbel) over the top_k logits; shared by both paths."""
    if top_k is not None:
        kth = tf.math.top_k(logits, k=top_k).values[..., -1:]
        logits = tf.where(logits < kth, tf.constant(-np.inf, logits.dtype), logits)
    return tf.argmax(logits * inv_temperature + gumbel, axis=-1, output_type=tf.int32)


def _condition_map(prior_model, n, height, width, levels, previous=None) -> tf.Tensor:
    """(n, H, W, D) the condition maps of the slice levels and the slices below, added as the model
    adds them; D = 0 for a prior with neither."""
    maps = []
    for layer, given in ((level_layer(prior_model), levels), (previous_layer(prior_model), previous)):
        if layer is not None:
            maps.append(tf.convert_to_tensor(layer(tf.constant(given, tf.int32))))
    return tf.add_n(maps) if maps else tf.zeros([n, height, width, 0])


def _vertical_rows(weights, v_buffers, v_input, condition, reaches):
    """One prior's vertical stack for a whole row: (links (W, L, n, 2F), the new buffers)."""
    new_buffers, links = [], []
    v = v_input
    for layer, buffer, r in zip(weights["layers"], v_buffers, reaches):
        row = tf.pad(v, [[0, 0], [r, r], [0, 0]])[:, None]  # (n, 1, W + 2r, C)
        window = tf.concat([buffer, row], axis=1)  # (n, r + 1, W + 2r, C)
        v, link = GatedPixelCNNLayer.vertical_row(layer, window, condition)  # (n, W, F), (n, W, 2F)
        links.append(link)
        new_buffers.append(window[:, 1:])
    return tf.transpose(tf.stack(links), [2, 0, 1, 3]), tuple(new_buffers)  # one slice of links per pixel


def _horizontal_pixel(weights, h_buffers, h, links, reaches, residuals):
    """A prior's horizontal stack and head at one position: (logits (..., K), the new buffers). The
    leading axes are (n,) for one prior, or (P, n) for priors of one structure with `_stacked` weights."""
    new_buffers = []
    for layer, buffer, r, residual, link in zip(weights["layers"], h_buffers, reaches, residuals, tf.unstack(links)):
        window = tf.concat([buffer, h[..., None, :]], axis=-2)  # (..., r + 1, C)
        new_buffers.append(window[..., 1:, :])
        h = GatedPixelCNNLayer.horizontal_pixel(layer, window, link, h, residual)  # (..., F)
    return LogitsHead.logits(weights["head"], h), tuple(new_buffers)


def _row_step(weights, v_buffers, v_input, position, gumbel, keep, init, inv_temperature, condition, mix,
              static: _Static):
    """Samples one row of codes for all n samples, from one prior or from several priors' mixed logits.

    Per prior p (tuples, one entry each): v_buffers[p][l] (n, r, W + 2r, C_l) the last r rows of
    layer l's vertical input (zero padded); v_input[p] (n, W, E) embedded codes of the previous row;
    position[p] (n, W, E) each sample's row of the position embedding (the samples of `sample_volumes`
    are at different rows); condition[p] (n, W, D) each sample's row of its condition
    map; mix (P,) the weight of each prior's logits in the logits sampled from (a tensor: another weight
    needs no new trace). gumbel (n, W, K); keep, init (n, W): where keep is True the code is init
    instead of the sampled one. Returns codes (n, W), logits (n, W, K) (empty unless
    static.return_logits), the new buffers and the embedded rows, per prior.
    """
    n, width = tf.shape(v_input[0])[0], v_input[0].shape[1]
    # Vertical stacks for the whole row at once, from the cached rows above.
    rows = [_vertical_rows(w, b, v, c, r) for w, b, v, c, r in zip(weights, v_buffers, v_input, condition,
                                                                     static.reaches)]
    links, new_buffers = tuple(row[0] for row in rows), tuple(row[1] for row in rows)
    gumbel_t = tf.transpose(gumbel, [1, 0, 2])  # (W, n, K)
    keep_t, init_t = tf.transpose(keep), tf.transpose(init)  # (W, n)
    if static.fused:
        return _fused_columns(weights, links, gumbel_t, keep_t, init_t, inv_temperature, mix, position, static,
                              new_buffers, n, width)

    # Horizontal stacks one column at a time; h_buffers[p][l]: (n, r, C_l) last r columns of layer l's input.
    h_buffers0 = tuple(tuple(tf.zeros([n, r, layer["h_kernel"].shape[0] // (r + 1)])
                             for layer, r in zip(w["layers"], reaches))
                       for w, reaches in zip(weights, static.reaches))
    h0 = tuple(tf.zeros([n, w["embedding"].shape[-1]]) for w in weights)

    def body(j, h, h_buffers, codes_ta, logits_ta):
        steps = [_horizontal_pixel(w, b, x, l[j], reaches, residuals) for w, b, x, l, reaches, residuals
                 in zip(weights, h_buffers, h, links, static.reaches, static.residuals)]
        if len(steps) == 1:  # exactly the prior's own logits, as the naive path computes them
            logits = steps[0][0]
        else:
            logits = tf.add_n([mix[p] * step[0] for p, step in enumerate(steps)])
        code = tf.where(keep_t[j], init_t[j], _choose(logits, gumbel_t[j], inv_temperature, static.top_k))
        codes_ta = codes_ta.write(j, code)
        if static.return_logits:
            logits_ta = logits_ta.write(j, logits)
        embedded = tuple(tf.gather(w["embedding"], code) + p[:, j] for w, p in zip(weights, position))
        return j + 1, embedded, tuple(step[1] for step in steps), codes_ta, logits_ta

    # A tf.function retraced for another n relaxes some inputs' batch size to None and keeps others
    # static, so the loop state must allow any batch size.
    invariants = (tuple(tf.TensorShape([None, x.shape[-1]]) for x in h0),
                  tuple(tuple(tf.TensorShape([None, *b.shape[1:]]) for b in buffers) for buffers in h_buffers0))
    return _columns(body, (h0, h_buffers0), invariants, width, weights, position, new_buffers, static)


def _columns(body, state, invariants, width, weights, position, new_buffers, static: _Static):
    """Runs a row's column loop, body(j, *state, codes, logits) -> (j + 1, *state, codes, logits), and
    returns what `_row_step` returns."""
    codes_ta = tf.TensorArray(tf.int32, size=width)
    logits_ta = tf.TensorArray(tf.float32, size=width if static.return_logits else 1)
    *_, codes_ta, logits_ta = tf.while_loop(
        lambda j, *_: j < width, body, (tf.constant(0), *state, codes_ta, logits_ta),
        shape_invariants=(tf.TensorShape([]), *invariants, tf.TensorShape(None), tf.TensorShape(None)),
        maximum_iterations=width)
    codes = tf.transpose(codes_ta.stack())  # (n, W)
    logits = tf.transpose(logits_ta.stack(), [1, 0, 2]) if static.return_logits else tf.zeros([0])
    embedded = tuple(tf.gather(w["embedding"], codes) + p for w, p in zip(weights, position))
    return codes, logits, new_buffers, embedded


def _stacked(weights) -> dict:
    """The horizontal-stack, head and embedding weights of priors of one structure, stacked on a new
    leading axis (biases as (P, 1, F), to broadcast over the samples)."""
    layers = [dict(h_kernel=tf.stack([w["layers"][l]["h_kernel"] for w in weights]),
                   out_kernel=tf.stack([w["layers"][l]["out_kernel"] for w in weights]),
                   out_bias=tf.stack([w["layers"][l]["out_bias"] for w in weights])[:, None])
              for l in range(len(weights[0]["layers"]))]
    head = [tf.stack([w["head"][i] for w in weights]) for i in range(4)]
    head[1], head[3] = head[1][:, None], head[3][:, None]
    return dict(layers=layers, head=head, embedding=tf.stack([w["embedding"] for w in weights]))


def _fused_columns(weights, links, gumbel_t, keep_t, init_t, inv_temperature, mix, position, static,
                   new_buffers, n, width):
    """The horizontal stacks of P priors of one structure, one column at a time, as one batched step
    (P-leading tensors): half the ops of running them one after the other (on the 2-core CPU a guided
    slice took 6.9 s so against 7.7 s; BENCHMARKS.md). The same maths as `_row_step`'s loop; returns
    what `_row_step` returns."""
    stacked = _stacked(weights)
    links = tf.stack(links, axis=2)  # (W, L, P, n, 2F)
    positions = tf.stack(position)  # (P, n, W, E)
    reaches, residuals = static.reaches[0], static.residuals[0]
    priors = len(weights)
    h_buffers0 = tuple(tf.zeros([priors, n, r, layer["h_kernel"].shape[1] // (r + 1)])
                       for layer, r in zip(stacked["layers"], reaches))
    h0 = tf.zeros([priors, n, stacked["embedding"].shape[-1]])

    def body(j, h, h_buffers, codes_ta, logits_ta):
        per_prior, new_h_buffers = _horizontal_pixel(stacked, h_buffers, h, links[j], reaches, residuals)
        logits = tf.tensordot(mix, per_prior, axes=1)  # (P, n, K) -> (n, K)
        code = tf.where(keep_t[j], init_t[j], _choose(logits, gumbel_t[j], inv_temperature, static.top_k))
        codes_ta = codes_ta.write(j, code)
        if static.return_logits:
            logits_ta = logits_ta.write(j, logits)
        embedded = tf.gather(stacked["embedding"], code, axis=1) + positions[:, :, j]  # (P, n, E)
        return j + 1, embedded, new_h_buffers, codes_ta, logits_ta

    invariants = (tf.TensorShape([priors, None, h0.shape[-1]]),
                  tuple(tf.TensorShape([priors, None, *b.shape[2:]]) for b in h_buffers0))
    return _columns(body, (h0, h_buffers0), invariants, width, weights, position, new_buffers, static)


_row_step_xla = tf.function(_row_step, jit_compile=True)
_row_step_graph = tf.function(_row_step, jit_compile=False)


def _one_structure(weights, reaches, residuals) -> bool:
    """Whether priors share every shape of their horizontal stacks and heads (then `_fused_columns` runs them)."""
    shapes = [([tuple(l[k].shape) for l in w["layers"] for k in ("h_kernel", "out_kernel", "out_bias")],
               [tuple(t.shape) for t in w["head"]], tuple(w["embedding"].shape)) for w in weights]
    return all(x == shapes[0] for x in shapes) and len(set(reaches)) == 1 and len(set(residuals)) == 1


def _guided(prior_model, guide):
    """(the priors a row step runs, the weight of each one's logits): the prior, then guide=(slice prior, weight)."""
    if guide is None:
        return [prior_model], [1.0]
    return [prior_model, guide[0]], [1.0 - guide[1], guide[1]]


def _steppers(models, mix, top_k, return_logits):
    """(weights, static, mix, row step) of the priors `_guided` names."""
    parts = [_prior_weights(model) for model in models]
    weights = tuple(p[0] for p in parts)
    static = _Static(tuple(p[1] for p in parts), tuple(p[2] for p in parts), top_k, return_logits,
                     fused=len(parts) > 1 and _one_structure(weights, [p[1] for p in parts], [p[2] for p in parts]))
    use_xla = bool(tf.config.list_logical_devices("GPU")) if USE_XLA is None else USE_XLA
    return weights, static, tf.constant(mix, tf.float32), _row_step_xla if use_xla else _row_step_graph


def _fresh_state(weights, static, n, width):
    """The row step's state before a grid's first row: per prior, empty buffers and an empty row above."""
    buffers = tuple(tuple(tf.zeros([n, r, width + 2 * r, layer["h_kernel"].shape[0] // (r + 1)])
                          for layer, r in zip(w["layers"], reaches)) for w, reaches in zip(weights, static.reaches))
    return buffers, tuple(tf.zeros([n, width, w["embedding"].shape[-1]]) for w in weights)


def _run_fast(prior_model, n, gumbel, keep, init, inv_temperature, top_k, progress, return_logits, levels,
              previous=None, guide=None):
    """The cached fast path; guide=(slice prior, weight) mixes the slice prior's logits in at that weight."""
    models, mix = _guided(prior_model, guide)
    weights, static, mix, step = _steppers(models, mix, top_k, return_logits)
    _, height, width = keep.shape
    conditions = tuple(_condition_map(model, n, height, width, levels, previous if model is prior_model else None)
                       for model in models)
    buffers, v_input = _fresh_state(weights, static, n, width)
    codes, logits = np.zeros((n, height, width), np.int32), []
    inv_temperature = tf.constant(inv_temperature, tf.float32)
    for i in range(height):
        row_codes, row_logits, buffers, v_input = step(
            weights, buffers, v_input, tuple(tf.broadcast_to(w["position"][i], [n, *w["position"].shape[1:]])
                                             for w in weights), gumbel[:, i],
            tf.constant(keep[:, i]), tf.constant(init[:, i]), inv_temperature,
            tuple(c[:, i] for c in conditions), mix, static)
        codes[:, i] = row_codes.numpy()
        if return_logits:
            logits.append(row_logits.numpy())
        if progress is not None:
            progress(i + 1, height)
    return codes, (np.stack(logits, axis=1) if return_logits else None)


def _run_wavefront(prior_model, n, num_slices, seed, temperature, top_k, progress, guide, start=0, below=None):
    """Whole stacks with the slices of a stack sampled side by side, each a few rows behind the one below.

    Row i of a slice reads the slice below only through row i of its condition map, which needs the rows
    up to i + R below (R = PreviousSliceEncoder.reach). So slice z can sample row i as soon as slice z - 1
    has sampled row i + R: slice z runs `lag` = R + 1 rows behind slice z - 1, and a stack of Z slices of
    H rows takes H + lag (Z - 1) row steps instead of Z H (157 instead of 2048 for the demo's 32 x 64).
    Each step samples a row of every slice in flight from the inputs `sample_codes` gives that row (the
    same noise, level, condition and state), so the codes are those of sampling the slices one after the
    other. Slices run in fixed lanes of the batch (slice z in lane z % lanes, free again before slice
    z + lanes starts), so that the row step keeps one shape: one trace, one XLA compile.
    It samples slices start .. num_slices - 1 (the k-th of them, slice start + k, runs k lags behind),
    slice `start` given `below` (n, H, W) codes, or the "no slice below" token when None.
    """
    height, width, num_embeddings = _grid_shape(prior_model)
    models, mix = _guided(prior_model, guide)
    weights, static, mix, step = _steppers(models, mix, top_k, False)
    encoder, token = previous_layer(prior_model), start_token(prior_model)
    lag = encoder.reach + 1
    count = num_slices - start  # the slices sampled here; the k-th is slice start + k
    lanes = min(count, -(-height // lag))
    levels = np.arange(start, num_slices, dtype=np.int32) if num_levels(prior_model) else None
    # Per prior, (Z, H, W, D) the level part of each slice's condition map (None: a prior without levels).
    level_maps = [tf.convert_to_tensor(level_layer(model)(tf.constant(levels))) if levels is not None else None
                  for model in models]
    buffers, v_input = _fresh_state(weights, static, lanes * n, width)
    keep, init = tf.zeros([lanes * n, width], tf.bool), tf.zeros([lanes * n, width], tf.int32)
    stacks, noise = np.zeros((n, count, height, width), np.int32), {}  # noise: per slice in flight
    inv_temperature = _inverse_temperature(temperature)  # and at temperature 0 no noise is drawn
    offsets = np.arange(-encoder.reach, encoder.reach + 1)
    for t in range(height + lag * (count - 1)):
        # Per lane: (k, row) it samples in this step, or None (idle: it samples a row thrown away).
        rows = [None] * lanes
        for k in range(count):
            if 0 <= t - lag * k < height:
                rows[k % lanes] = (k, t - lag * k)
        starting = np.repeat([row is not None and row[1] == 0 for row in rows], n)
        if starting.any():  # a lane takes a new slice: the empty state of a grid's first row
            fresh = tf.constant(~starting, tf.float32)
            buffers = tuple(tuple(b * fresh[:, None, None, None] for b in per_prior) for per_prior in buffers)
            v_input = tuple(v * fresh[:, None, None] for v in v_input)
        window = np.zeros((lanes, n, len(offsets), width), np.int32)  # the slice below around each lane's row
        on_grid = np.zeros((lanes, n, len(offsets)), bool)
        for lane, row in enumerate(rows):
            if row is None:
                continue
            k, i = row
            if i == 0 and temperature:
                noise[k] = GumbelRows(seed, (n, height, width, num_embeddings), start + k)
            around = i + offsets
            inside = (around >= 0) & (around < height)
            window[lane][:, inside] = (stacks[:, k - 1, around[inside]] if k else
                                       token if below is None else below[:, around[inside]])
            on_grid[lane] = inside
        from_below = encoder.row(window.reshape(lanes * n, len(offsets), width), on_grid.reshape(lanes * n, -1))
        conditions = []
        for model, level_map in zip(models, level_maps):
            if level_map is None:  # no levels (the guide has none either): the slice below is all there is
                conditions.append(from_below if model is prior_model else tf.zeros((lanes * n, width, 0)))
                continue
            depth = level_map.shape[-1]
            level_part = tf.concat([tf.zeros((n, width, depth)) if row is None
                                    else tf.broadcast_to(level_map[row[0], row[1]], (n, width, depth))
                                    for row in rows], axis=0)
            conditions.append(level_part + from_below if model is prior_model else level_part)  # the guide: its level
        gumbel = tf.concat([noise[row[0]](row[1]) if row is not None and temperature
                            else tf.zeros((n, width, num_embeddings)) for row in rows], axis=0)
        positions = tuple(tf.concat([tf.broadcast_to(w["position"][row[1] if row is not None else 0],
                                                     [n, *w["position"].shape[1:]]) for row in rows], axis=0)
                          for w in weights)
        row_codes, _, buffers, v_input = step(weights, buffers, v_input, positions, gumbel, keep, init,
                                              tf.constant(inv_temperature, tf.float32), tuple(conditions), mix,
                                              static)
        row_codes = row_codes.numpy().reshape(lanes, n, width)
        for lane, row in enumerate(rows):
            if row is None:
                continue
            k, i = row
            stacks[:, k, i] = row_codes[lane]
            if i == height - 1:
                noise.pop(k, None)
                if progress is not None:
                    progress(k + 1, count)
    return stacks


def _run_naive(prior_model, n, gumbel, keep, init, inv_temperature, top_k, progress, levels, previous=None):
    """The keras.io way: one full forward pass of the prior per position (reference; slow)."""
    level_tensor = None if levels is None else tf.constant(levels, tf.int32)
    previous_tensor = None if previous is None else tf.constant(previous, tf.int32)
    forward = tf.function(lambda c: prior_model(prior_inputs(prior_model, c, level_tensor, previous_tensor),
                                                training=False))
    _, height, width = keep.shape
    codes = np.where(keep, init, 0).astype(np.int32)
    inv_temperature = tf.constant(inv_temperature, tf.float32)
    for i in range(height):
        for j in range(width):
            if keep[:, i, j].all():  # nothing to sample here
                continue
            logits = forward(tf.constant(codes))[:, i, j]  # (n, K)
            sampled = _choose(logits, gumbel[:, i, j], inv_temperature, top_k).numpy()
            codes[:, i, j] = np.where(keep[:, i, j], init[:, i, j], sampled)
        if progress is not None:
            progress(i + 1, height)
    return codes


def keep_rows_mask(height: int, width: int, keep_rows: int) -> np.ndarray:
    """(H, W) bool mask that keeps the first keep_rows rows (for completing the bottom of a grid)."""
    if not 0 <= keep_rows <= height:
        raise ValueError(f"Expected 0 <= keep_rows <= {height}. Received: keep_rows={keep_rows}")
    mask = np.zeros((height, width), bool)
    mask[:keep_rows] = True
    return mask


_TINY = np.finfo(np.float32).tiny  # the smallest uniform drawn, so that log(-log(u)) stays finite
_AUTO_SELECT = 3  # tf.random.Algorithm.AUTO_SELECT: what tf.random.stateless_uniform uses by default


def _seed(seed: int, stream: int) -> list:
    return [int(seed), 0x5EED + int(stream)]


def _gumbel(uniform: tf.Tensor) -> tf.Tensor:
    return -tf.math.log(-tf.math.log(uniform))


def gumbel_noise(seed: int, shape, stream: int = 0) -> tf.Tensor:
    """Gumbel(0, 1) noise fixed by the seed (stateless), drawn up front for every position; `stream`
    gives the same seed independent noise (one per slice of a volume)."""
    return _gumbel(tf.random.stateless_uniform(shape, seed=_seed(seed, stream), minval=_TINY, maxval=1.0))


class GumbelRows:
    """Row i of `gumbel_noise(seed, shape, stream)` ((n, W, K): `[:, i]`), drawn a few rows at a time.

    The wavefront holds ~H / lag slices in flight; their whole noise up front would be n x 4 MB each
    for the demo (1.4 GB for 16 stacks), 8 rows of it n x 0.5 MB. Philox is counter-based: number e of
    a draw comes from counter + e // 4 (four 32-bit numbers per counter value), so a stretch of the
    whole draw is a draw of its own from the counter skipped ahead. Each stretch starts on a multiple
    of 64 numbers and ends on one or at the draw's end, so that the logarithms run in the same SIMD
    lanes (and the same scalar tail) as over the whole draw: the same numbers to the bit.
    """

    ROWS_PER_DRAW = 8  # memory against op count: 8 draws a slice of 64 rows take as long as one whole
    _ALIGN = 64  # numbers; a multiple of every SIMD width and of Philox's 4

    def __init__(self, seed: int, shape, stream: int = 0):
        self.n, self.height = int(shape[0]), int(shape[1])
        self.row_shape = tuple(int(d) for d in shape[2:])
        self.row_size, self.total = int(np.prod(self.row_shape)), int(np.prod(shape))
        self.key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(
            seed=tf.constant(_seed(seed, stream), tf.int64))
        low, high = (int(word) for word in counter.numpy())  # the 128-bit counter, low word first
        self.counter = low + (high << 64)
        self.first_row, self.rows = None, None  # the rows drawn last: (n, rows, *row_shape)

    def __call__(self, row: int) -> tf.Tensor:
        if self.first_row is None or not 0 <= row - self.first_row < self.rows.shape[1]:
            self.first_row = row - row % self.ROWS_PER_DRAW
            self.rows = self._draw(self.first_row, min(self.first_row + self.ROWS_PER_DRAW, self.height))
        return self.rows[:, row - self.first_row]

    def _draw(self, first: int, last: int) -> tf.Tensor:
        size = (last - first) * self.row_size
        starts = [(sample * self.height + first) * self.row_size for sample in range(self.n)]
        stretches = []  # [begin, end) of the whole draw, aligned, merged where they overlap
        for start in starts:
            begin = start - start % self._ALIGN
            end = min(-(-(start + size) // self._ALIGN) * self._ALIGN, self.total)
            if stretches and begin < stretches[-1][1]:
                stretches[-1][1] = max(stretches[-1][1], end)
            else:
                stretches.append([begin, end])
        # Laid end to end they keep their alignment (each a multiple of 64 long but the one at the
        # draw's end, which comes last), so one Gumbel transform serves them all.
        raw = tf.concat([self._raw(begin, end) for begin, end in stretches], 0)
        noise = _gumbel(raw * (tf.constant(1.0) - _TINY) + _TINY)  # stateless_uniform's own scaling
        shape = (last - first, *self.row_shape)
        if stretches == [[start, start + size] for start in starts]:  # rows of whole multiples of 64 (the demo)
            return tf.reshape(noise, (self.n, *shape))
        at, laid = {}, 0
        for begin, end in stretches:
            at[begin], laid = laid, laid + end - begin
        pieces = []
        for start in starts:
            begin = max(b for b in at if b <= start)
            offset = at[begin] + start - begin
            pieces.append(tf.reshape(noise[offset:offset + size], shape))
        return tf.stack(pieces)

    def _raw(self, begin: int, end: int) -> tf.Tensor:
        counter = (self.counter + begin // 4) % (1 << 128)
        return tf.raw_ops.StatelessRandomUniformV2(
            shape=[end - begin], key=self.key, alg=_AUTO_SELECT, dtype=tf.float32,
            counter=tf.constant([counter & (2 ** 64 - 1), counter >> 64], tf.uint64))


def _inverse_temperature(temperature: float) -> float:
    """What the logits are multiplied by; temperature 0 is greedy (no noise either): plain argmax."""
    return 1.0 / temperature if temperature else 1.0


def _noise(seed: int, shape, stream: int, temperature: float):
    """(Gumbel noise of `shape`, `_inverse_temperature`) to sample with; no noise at temperature 0."""
    noise = gumbel_noise(seed, shape, stream) if temperature else tf.zeros(shape)
    return noise, _inverse_temperature(temperature)


def _check_guide(prior_model, guide, method: str) -> None:
    """A guide is (a slice prior over the same codes, grid and levels, a weight in [0, 1]), fast path only."""
    guide_model, weight = guide
    if method != "fast":
        raise ValueError(f"Expected method 'fast' with a guide. Received: method={method!r}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"Expected a guide weight in [0, 1]. Received: {weight}")
    if previous_layer(guide_model) is not None:
        raise ValueError("Expected a slice prior as the guide. Received: a whole-brain prior")
    if _grid_shape(guide_model) != _grid_shape(prior_model) or num_levels(guide_model) != num_levels(prior_model):
        raise ValueError("Expected a guide over the same codes, grid and levels. Received: (H, W, K) "
                         f"{_grid_shape(guide_model)} with {num_levels(guide_model)} levels against "
                         f"{_grid_shape(prior_model)} with {num_levels(prior_model)}")


def _check_request(n, temperature, top_k, num_embeddings) -> None:
    """What sample_codes and sample_volumes both refuse: a count, temperature or top_k out of range."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Expected n to be a positive integer. Received: n={n!r}")
    if not temperature >= 0:
        raise ValueError(f"Expected temperature >= 0. Received: temperature={temperature}")
    if top_k is not None and not 1 <= top_k <= num_embeddings:
        raise ValueError(f"Expected top_k in [1, {num_embeddings}] or None. Received: top_k={top_k}")


def _grid_shape(prior_model):
    _, height, width = prior_model.inputs[0].shape
    num_embeddings = prior_model.output_shape[-1]
    return height, width, num_embeddings


def _completion_inputs(n, height, width, num_embeddings, init_codes, keep_mask):
    if keep_mask is None and init_codes is None:
        return np.zeros((n, height, width), bool), np.zeros((n, height, width), np.int32)
    if keep_mask is None or init_codes is None:
        raise ValueError("Expected init_codes and keep_mask together. Received: "
                         f"init_codes={'set' if init_codes is not None else None}, "
                         f"keep_mask={'set' if keep_mask is not None else None}")
    init = np.asarray(init_codes)
    if init.shape != (n, height, width):
        raise ValueError(f"Expected init_codes of shape {(n, height, width)}. Received: {init.shape}")
    keep = np.asarray(keep_mask, bool)
    if keep.shape not in ((height, width), (n, height, width)):
        raise ValueError(f"Expected keep_mask of shape {(height, width)} or {(n, height, width)}. "
                         f"Received: {keep.shape}")
    keep = np.broadcast_to(keep, (n, height, width)).copy()
    kept = init[keep]
    if kept.size and (kept.min() < 0 or kept.max() >= num_embeddings):
        raise ValueError(f"Expected kept init_codes in [0, {num_embeddings}). "
                         f"Received values in [{kept.min()}, {kept.max()}]")
    return keep, np.where(keep, init, 0).astype(np.int32)


def sample_codes(prior_model: keras.Model, n: int, *, seed: int = 0, temperature: float = 1.0,
                 top_k: Optional[int] = None, method: str = "fast", progress: Optional[ProgressFn] = None,
                 init_codes=None, keep_mask=None, levels=None, previous=None, stream: int = 0,
                 guide=None) -> np.ndarray:
    """Samples n code grids (n, H, W) int32 in raster order from a prior built by core.models.prior.build_prior.

    Args:
        seed: fixes the Gumbel noise of every position, so "naive" and "fast" give the same codes.
        temperature: divides the logits; 0 means greedy (argmax).
        top_k: keep only the k largest logits at each position (None: all).
        method: "fast" (cached incremental generation) or "naive" (a full forward pass per position).
        progress: called as progress(rows_done, rows_total) after each row.
        init_codes, keep_mask: completion; where keep_mask ((H, W) or (n, H, W)) is True the code is
            taken from init_codes (n, H, W), elsewhere it is sampled.
        levels: slice levels, one int or (n,), for a level-conditioned prior; None draws them with
            `draw_levels` (from the training frequencies, or given the kept codes when completing).
        previous: (n, H, W) codes of the slices below, for a whole-brain prior (`sample_volumes`).
        stream: another stream of noise for the same seed.
        guide: (slice prior, weight): sample from (1 - weight) * this prior's logits + weight * the
            slice prior's at the same levels (the fast method only).
    """
    height, width, num_embeddings = _grid_shape(prior_model)
    _check_request(n, temperature, top_k, num_embeddings)
    if method not in ("fast", "naive"):
        raise ValueError(f"Expected method 'fast' or 'naive'. Received: method={method!r}")
    keep, init = _completion_inputs(n, height, width, num_embeddings, init_codes, keep_mask)
    previous = check_previous(prior_model, n, previous)
    if levels is None and num_levels(prior_model):
        levels = draw_levels(prior_model, n, seed=seed, init_codes=init if keep.any() else None,
                             keep_mask=keep if keep.any() else None)
    levels = check_levels(prior_model, n, levels)
    gumbel, inv_temperature = _noise(seed, (n, height, width, num_embeddings), stream, temperature)
    if guide is not None:
        _check_guide(prior_model, guide, method)
    if method == "naive":
        return _run_naive(prior_model, n, gumbel, keep, init, inv_temperature, top_k, progress, levels, previous)
    codes, _ = _run_fast(prior_model, n, gumbel, keep, init, inv_temperature, top_k, progress, False, levels,
                         previous, guide)
    return codes


def sample_volumes(prior_model: keras.Model, n: int, *, num_slices: int | None = None, seed: int = 0,
                   temperature: float = 1.0, top_k: Optional[int] = None,
                   progress: Optional[ProgressFn] = None, guide=None, start: int = 0, below=None) -> np.ndarray:
    """Samples n whole stacks of code grids (n, Z, H, W) int32 from a whole-brain prior, base to vertex.

    Slice z is sampled at level z (a level-conditioned prior) given the codes of slice z - 1 (the
    "no slice below" token for z = 0), with the noise of `sample_codes(..., stream=z)`: the codes are
    those of calling it slice after slice, but the slices run side by side, each a few rows behind the
    one below (`_run_wavefront`), and the n stacks too.
    Args:
        num_slices: Z; default the prior's level count (32 for OASIS).
        progress: called as progress(slices_done, Z) after each slice.
        guide: (slice prior, weight): each slice's logits mixed with the slice prior's at its level
            (`sample_codes`), which holds every slice to what slices of its level look like, so that
            errors handed up the stack compound less (BENCHMARKS.md, whole brains).
        start, below: the top of a stack only: slices start .. Z - 1, (n, Z - start, H, W), slice `start`
            given the (n, H, W) codes `below` (a real slice, to complete a brain above it); the codes are
            those of the same slices of a whole stack whose slice start - 1 was `below`.
    """
    if previous_layer(prior_model) is None:
        raise ValueError("This prior is a slice prior: whole brains need a whole-brain prior (trained with "
                         "python -m core.train prior --volume).")
    levels = num_levels(prior_model)
    num_slices = num_slices if num_slices is not None else levels
    if not num_slices or num_slices < 1 or (levels and num_slices > levels):
        raise ValueError(f"Expected 1 <= num_slices <= {levels or 'any'}. Received: num_slices={num_slices}")
    if not 0 <= start < num_slices or (start > 0) != (below is not None):
        raise ValueError(f"Expected 0 <= start < num_slices ({num_slices}), and the codes of the slice below "
                         f"exactly when start > 0. Received: start={start}, below given: {below is not None}")
    _check_request(n, temperature, top_k, _grid_shape(prior_model)[2])
    if below is not None:
        below = check_previous(prior_model, n, below)
    if guide is not None:
        _check_guide(prior_model, guide, "fast")
    return _run_wavefront(prior_model, n, num_slices, seed, temperature, top_k, progress, guide, start, below)


def level_log_likelihood(prior_model: keras.Model, init_codes, keep_mask) -> np.ndarray:
    """(n, L) log p(kept codes | level) for every level, from one teacher-forced pass per level.

    Only the kept codes before the first sampled position (in raster order) count: their
    likelihood is exact, while kept codes after a sampled one would need it marginalised. For
    "keep the rows above r" that prefix is all of the kept codes.
    """
    count = num_levels(prior_model)
    init = np.asarray(init_codes, np.int32)
    n, height, width = init.shape
    keep = np.broadcast_to(np.asarray(keep_mask, bool), init.shape).reshape(n, -1)
    prefix = np.cumprod(keep, axis=1).astype(bool).reshape(n, height, width)
    every_level = tf.range(count, dtype=tf.int32)
    result = np.zeros((n, count))
    for i in range(n):
        if not prefix[i].any():
            continue
        if i and np.array_equal(prefix[i], prefix[i - 1]) and np.array_equal(init[i][prefix[i]],
                                                                              init[i - 1][prefix[i - 1]]):
            result[i] = result[i - 1]  # the same slice again (completions repeat one slice n times)
            continue
        codes = tf.constant(np.repeat(np.where(prefix[i], init[i], 0)[None], count, axis=0))
        # A plain call: a tf.function made here would be traced anew on every completion, for one pass.
        logits = prior_model(prior_inputs(prior_model, codes, every_level), training=False)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))  # (L, H, W, K)
        picked = tf.gather(log_probs, codes, batch_dims=3).numpy()  # (L, H, W)
        result[i] = picked[:, prefix[i]].sum(axis=1)
    return result


def draw_levels(prior_model: keras.Model, n: int, *, seed: int = 0, init_codes=None, keep_mask=None) -> np.ndarray:
    """(n,) slice levels for a level-conditioned prior, fixed by the seed.

    Without kept codes they follow the training split's level frequencies, drawn by systematic
    sampling (one uniform offset, n evenly spaced points, then shuffled): each level is still
    p(level)-distributed, but n samples cover the levels as n real slices of whole cases do,
    e.g. 64 samples of 32 equally common levels hold each level twice. When completing, each
    level is drawn from the posterior p(level | kept codes), so a kept top half of a base slice
    is completed as a base slice.
    """
    frequency = level_frequency(prior_model)
    rng = np.random.default_rng([int(seed), 0x1E7E1])
    if init_codes is None:
        points = (rng.uniform() + np.arange(n)) / n
        levels = np.searchsorted(np.cumsum(frequency) / frequency.sum(), points, side="right")
        return rng.permutation(np.minimum(levels, len(frequency) - 1)).astype(np.int32)
    log_posterior = np.log(np.maximum(frequency, 1e-12)) + level_log_likelihood(prior_model, init_codes, keep_mask)
    probabilities = np.exp(log_posterior - log_posterior.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probabilities], np.int32)


def teacher_forced_logits_fast(prior_model: keras.Model, codes, levels=None, previous=None) -> np.ndarray:
    """Test hook: the fast path's logits (n, H, W, K) at every position when fed the given codes."""
    codes = np.asarray(codes, np.int32)
    n, height, width = codes.shape
    num_embeddings = _grid_shape(prior_model)[2]
    gumbel = tf.zeros((n, height, width, num_embeddings))
    keep = np.ones_like(codes, bool)
    levels = check_levels(prior_model, n, levels)
    previous = check_previous(prior_model, n, previous)
    _, logits = _run_fast(prior_model, n, gumbel, keep, codes, 1.0, None, None, True, levels, previous)
    return logits
