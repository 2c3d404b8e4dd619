"""Gated PixelCNN prior over VQ-VAE code grids, without blind spot (van den Oord et al. 2016, arXiv:1606.05328)."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from core.settings import Config, setting


@dataclass(frozen=True)
class PriorConfig(Config):
    """Hyperparameters of the gated PixelCNN prior; the only way to rebuild a saved prior."""

    num_embeddings: int = setting(help="K: codebook size of the VQ-VAE, logits per position", minimum=2)
    grid_height: int = setting(help="H: rows of the code grid", minimum=1)
    grid_width: int = setting(help="W: columns of the code grid", minimum=1)
    filters: int = setting(64, help="channels of each stack (each gate has 2 * filters pre-activations)",
                           flag="--filters", minimum=1, maximum=4096)
    num_layers: int = setting(8, help="gated layers (receptive field: layers * (kernel // 2) + 1 rows)",
                              flag="--num-layers", minimum=1, maximum=256)
    kernel_size: int = setting(3, help="odd kernel size k: vertical kernel (k // 2 + 1, k), horizontal (1, k // 2 + 1)",
                               flag="--kernel-size", minimum=3, maximum=63)
    embedding_dim: int = setting(32, help="size of the learned embedding of each code",
                                 flag="--prior-embedding-dim", minimum=1, maximum=4096)
    head_filters: int = setting(128, help="hidden width of the 1x1 output head", flag="--head-filters",
                                minimum=1, maximum=8192)
    position_embedding: bool = setting(True, help="add a learned embedding of (row, column) to each code's")
    # Slice levels the prior is conditioned on (0: unconditional). OASIS names 32 levels per case,
    # base (0) to vertex (31); a level decides most of a slice's size and shape, which a few code
    # rows of context cannot (van den Oord et al. 2016, section 2.3: conditional PixelCNN).
    num_levels: int = setting(0, help="slice levels the prior is conditioned on (0: unconditional)", minimum=0)
    level_map_size: int = setting(8, help="side of each level's learned map, upsampled to the code grid",
                                  flag="--level-map-size", minimum=1, maximum=256)
    # A whole-brain prior: slice z is also conditioned on the codes of slice z - 1 of the same case
    # (a slice-conditioned 2-D model applied slice after slice, as Peng et al. 2023), so a stack
    # generated from the base up is coherent. Slice 0 sees a grid of the "no slice below" token.
    previous_slice: bool = setting(False, help="a whole-brain prior: condition each slice on the codes of the "
                                   "slice below it (generate volumes with python -m core.sample --volume)",
                                   flag="--volume", label="Whole-brain (volume) prior")

    def check(self):
        if self.kernel_size % 2 == 0:
            raise ValueError(f"Expected an odd kernel_size >= 3. Received: kernel_size={self.kernel_size}")


def gate(x):
    """Gated activation tanh(a) * sigmoid(b) over the two halves of the last axis (equation 2)."""
    a, b = ops.split(x, 2, axis=-1)
    return ops.tanh(a) * ops.sigmoid(b)


@keras.saving.register_keras_serializable(package="brainvq")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned (H, W, E) table to embedded codes, so each position knows where it is.

    Brain slices are centred and upright: whether (i, j) is background or cortex depends mostly on
    where it is, which a PixelCNN with a receptive field of a few rows cannot see on its own.
    Position is known before sampling, so adding it keeps the model autoregressive.
    """

    def build(self, input_shape):
        self.table = self.add_weight(name="table", shape=tuple(input_shape[1:]),
                                     initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.built = True

    def call(self, x):
        return x + ops.cast(self.table, x.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="brainvq")
class SliceLevelEmbedding(keras.layers.Layer):
    """Slice levels (B,) int -> (B, H, W, D) learned maps; also holds how often each level occurs in training.

    Each level owns a coarse (map_size, map_size, D) map, upsampled bilinearly to the code grid:
    where brain ends differs by level (a vertex slice is a small disc in the middle), which a
    vector added everywhere states only weakly. The frequencies make the model a full joint
    p(level) p(codes | level): unconditional samples draw their level from them
    (`core.models.sampler.draw_levels`). They are data, not trained weights.

    Args:
        num_levels: number of slice levels.
        output_dim: size D of the map's vectors.
        grid_height, grid_width: the code grid the maps are upsampled to.
        map_size: side of each level's learned map.
    """

    def __init__(self, num_levels: int, output_dim: int, grid_height: int, grid_width: int, map_size: int = 8,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_levels = int(num_levels)
        self.output_dim = int(output_dim)
        self.grid_height, self.grid_width = int(grid_height), int(grid_width)
        self.map_size = int(map_size)

    def build(self, input_shape):
        self.table = self.add_weight(name="table", shape=(self.num_levels, self.map_size, self.map_size, self.output_dim),
                                     initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.frequency = self.add_weight(name="frequency", shape=(self.num_levels,), trainable=False,
                                         initializer=keras.initializers.Constant(1.0 / self.num_levels))
        self.built = True

    def call(self, levels):
        maps = ops.take(self.table, ops.cast(levels, "int32"), axis=0)  # (B, m, m, D)
        return ops.image.resize(maps, (self.grid_height, self.grid_width), interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.grid_height, self.grid_width, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "num_levels": self.num_levels, "output_dim": self.output_dim,
                "grid_height": self.grid_height, "grid_width": self.grid_width, "map_size": self.map_size}


@keras.saving.register_keras_serializable(package="brainvq")
class PreviousSliceEncoder(keras.layers.Layer):
    """The codes of the slice below (B, H, W) int -> (B, H, W, D) condition map for the slice above.

    The slice below is known in full when this one is generated, so it is read with ordinary
    (non-causal) 3x3 convolutions: each position sees a 5x5 neighbourhood of codes below it. Code
    `num_embeddings` is the "no slice below" token of a stack's first slice. The last convolution
    starts at zero, so a fresh encoder adds nothing: a prior warm-started from a slice prior begins
    exactly as that prior and learns what the slice below adds.

    Args:
        num_embeddings: K, codes of the VQ-VAE (the token is K).
        embedding_dim: size of each code's embedding.
        output_dim: D, channels of the condition map.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.num_embeddings, self.embedding_dim, self.output_dim = int(num_embeddings), int(embedding_dim), int(output_dim)

    def build(self, input_shape):
        e, d = self.embedding_dim, self.output_dim
        self.table = self.add_weight(name="table", shape=(self.num_embeddings + 1, e),
                                     initializer=keras.initializers.RandomNormal(stddev=0.05))
        self.hidden_kernel = self.add_weight(name="hidden_kernel", shape=(3, 3, e, d), initializer="variance_scaling")
        self.hidden_bias = self.add_weight(name="hidden_bias", shape=(d,), initializer="zeros")
        self.out_kernel = self.add_weight(name="out_kernel", shape=(3, 3, d, d), initializer="zeros")
        self.out_bias = self.add_weight(name="out_bias", shape=(d,), initializer="zeros")
        self.built = True

    def call(self, previous):
        x = ops.take(self.table, ops.cast(previous, "int32"), axis=0)  # (B, H, W, E)
        x = ops.relu(ops.conv(x, self.hidden_kernel, padding="same") + self.hidden_bias)
        return ops.conv(x, self.out_kernel, padding="same") + self.out_bias

    @property
    def reach(self) -> int:
        """R: a condition row reads the rows of the slice below from R above it to R below it (2 here)."""
        return self.hidden_kernel.shape[0] // 2 + self.out_kernel.shape[0] // 2

    def row(self, window, on_grid):
        """One row of `call`'s map from the rows of the slice below around it, so that a slice can start
        before the slice below is finished.

        window (B, 2R + 1, W) int: the codes of rows i - R .. i + R of the slice below; on_grid (B, 2R + 1)
        bool: False for the rows off the grid (their codes are ignored: `call` pads there with zeros).
        Returns (B, W, D), row i of `call`'s output.
        """
        hidden_reach, out_reach = self.hidden_kernel.shape[0] // 2, self.out_kernel.shape[0] // 2
        on_grid = ops.cast(on_grid, "float32")[:, :, None, None]
        x = ops.take(self.table, ops.cast(window, "int32"), axis=0) * on_grid  # (B, 2R + 1, W, E)
        x = ops.pad(x, [[0, 0], [0, 0], [hidden_reach, hidden_reach], [0, 0]])  # "same" across, exact rows down
        x = ops.relu(ops.conv(x, self.hidden_kernel, padding="valid") + self.hidden_bias)  # (B, 2 out_reach + 1, W, D)
        x = x * on_grid[:, hidden_reach:hidden_reach + 2 * out_reach + 1]  # hidden rows off the grid are padding
        x = ops.pad(x, [[0, 0], [0, 0], [out_reach, out_reach], [0, 0]])
        return (ops.conv(x, self.out_kernel, padding="valid") + self.out_bias)[:, 0]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        return {**super().get_config(), "num_embeddings": self.num_embeddings,
                "embedding_dim": self.embedding_dim, "output_dim": self.output_dim}


@keras.saving.register_keras_serializable(package="brainvq")
class CausalShift(keras.layers.Layer):
    """Shifts a (B, H, W, C) map one row down or one column right, filling with zeros.

    Args:
        direction: "down" (row i sees row i - 1: start of the vertical stack) or
            "right" (column j sees column j - 1: start of the horizontal stack).
    """

    def __init__(self, direction: str, **kwargs):
        super().__init__(**kwargs)
        if direction not in ("down", "right"):
            raise ValueError(f"Expected direction 'down' or 'right'. Received: direction={direction!r}")
        self.direction = direction

    def call(self, x):
        if self.direction == "down":
            return ops.pad(x, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]
        return ops.pad(x, [[0, 0], [0, 0], [1, 0], [0, 0]])[:, :, :-1]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "direction": self.direction}


@keras.saving.register_keras_serializable(package="brainvq")
class GatedPixelCNNLayer(keras.layers.Layer):
    """One gated layer: vertical and horizontal stacks with a vertical -> horizontal link (figure 2).

    Inputs are [v, h], both (B, H, W, C_in), or [v, h, condition] with a condition map (B, H, W, D)
    mapped by 1x1 kernels into both stacks' pre-activations (equation 5); v at row i must already depend
    only on rows < i and h at (i, j) only on (i, j' < j). Outputs [v', h'], both (B, H, W, filters), keep those properties:
    the vertical kernel covers rows [i - k//2, i] x columns [j - k//2, j + k//2] and the horizontal
    kernel row i x columns [j - k//2, j] (zero padding above / on the left).

    Args:
        filters: output channels of each stack.
        kernel_size: odd kernel size k.
        residual: add h to the horizontal output (needs C_in == filters).
    """

    def __init__(self, filters: int, kernel_size: int, residual: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.residual = bool(residual)
        self.reach = self.kernel_size // 2

    def build(self, input_shape):
        v_shape, h_shape = input_shape[:2]
        c_v, c_h = int(v_shape[-1]), int(h_shape[-1])
        f2, r, k = 2 * self.filters, self.reach, self.kernel_size
        if self.residual and c_h != self.filters:
            raise ValueError(f"Expected {self.filters} horizontal input channels for the residual. Received: {c_h}")
        fan_in = "variance_scaling"  # unit variance per fan-in, truncated normal
        self.v_kernel = self.add_weight(name="v_kernel", shape=(r + 1, k, c_v, f2), initializer=fan_in)
        self.v_bias = self.add_weight(name="v_bias", shape=(f2,), initializer="zeros")
        self.h_kernel = self.add_weight(name="h_kernel", shape=(1, r + 1, c_h, f2), initializer=fan_in)
        self.h_bias = self.add_weight(name="h_bias", shape=(f2,), initializer="zeros")
        self.link_kernel = self.add_weight(name="link_kernel", shape=(f2, f2), initializer=fan_in)
        self.out_kernel = self.add_weight(name="out_kernel", shape=(self.filters, self.filters), initializer=fan_in)
        self.out_bias = self.add_weight(name="out_bias", shape=(self.filters,), initializer="zeros")
        self.conditioned = len(input_shape) == 3
        if self.conditioned:
            c_condition = int(input_shape[2][-1])
            self.v_condition_kernel = self.add_weight(name="v_condition_kernel", shape=(c_condition, f2),
                                                      initializer=fan_in)
            self.h_condition_kernel = self.add_weight(name="h_condition_kernel", shape=(c_condition, f2),
                                                      initializer=fan_in)

    def call(self, inputs):
        v, h = inputs[:2]
        r = self.reach
        v_pad = ops.pad(v, [[0, 0], [r, 0], [r, r], [0, 0]])  # rows above, both sides
        v_pre = ops.conv(v_pad, self.v_kernel, padding="valid") + self.v_bias  # (B, H, W, 2F)
        h_pad = ops.pad(h, [[0, 0], [0, 0], [r, 0], [0, 0]])  # columns on the left only
        h_pre = ops.conv(h_pad, self.h_kernel, padding="valid") + self.h_bias + ops.matmul(v_pre, self.link_kernel)
        if self.conditioned:
            # Added after the link, so the horizontal stack gets the condition once, not twice.
            condition = inputs[2]
            v_pre = v_pre + ops.matmul(condition, self.v_condition_kernel)
            h_pre = h_pre + ops.matmul(condition, self.h_condition_kernel)
        h_out = ops.matmul(gate(h_pre), self.out_kernel) + self.out_bias
        if self.residual:
            h_out = h_out + h
        return gate(v_pre), h_out

    def compute_output_shape(self, input_shape):
        v_shape = input_shape[0]
        return tuple(v_shape[:-1]) + (self.filters,), tuple(v_shape[:-1]) + (self.filters,)

    # --- one step at a time (the fast sampler): the same maths as `call`, on cached rows and columns ---
    def step_weights(self) -> dict:
        """This layer's weights as the step functions below take them (tensors, so one trace serves any prior)."""
        h_kernel = ops.convert_to_tensor(self.h_kernel)  # (1, r + 1, C, 2F)
        f2 = self.v_bias.shape[0]
        return dict(v_kernel=ops.convert_to_tensor(self.v_kernel), v_bias=ops.convert_to_tensor(self.v_bias),
                    h_kernel=ops.reshape(h_kernel, (-1, h_kernel.shape[-1])),  # ((r + 1) * C, 2F), tap-major
                    h_bias=ops.convert_to_tensor(self.h_bias), link_kernel=ops.convert_to_tensor(self.link_kernel),
                    out_kernel=ops.convert_to_tensor(self.out_kernel), out_bias=ops.convert_to_tensor(self.out_bias),
                    # (0, 2F) without a condition: a condition map with no channels adds nothing.
                    v_condition_kernel=(ops.convert_to_tensor(self.v_condition_kernel) if self.conditioned
                                        else ops.zeros((0, f2))),
                    h_condition_kernel=(ops.convert_to_tensor(self.h_condition_kernel) if self.conditioned
                                        else ops.zeros((0, f2))))

    @staticmethod
    def vertical_row(weights: dict, window, condition):
        """The vertical stack for one whole row from its cached rows above.

        window (n, r + 1, W + 2r, C): the r rows above and this row's input, padded by r on both sides;
        condition (n, W, D). Returns this row's vertical output (n, W, F) and its link into the
        horizontal stack (n, W, 2F), as `call` computes them.
        """
        v_pre = ops.conv(window, weights["v_kernel"], padding="valid")[:, 0] + weights["v_bias"]
        # As in `call`: the link reads v_pre before the condition is added.
        link = (ops.matmul(v_pre, weights["link_kernel"]) + weights["h_bias"]
                + ops.matmul(condition, weights["h_condition_kernel"]))
        return gate(v_pre + ops.matmul(condition, weights["v_condition_kernel"])), link

    @staticmethod
    def horizontal_pixel(weights: dict, window, link, h, residual: bool):
        """The horizontal stack at one position: window (..., r + 1, C) of the r columns on the left and
        this one, link (..., 2F) from vertical_row, h (..., C) this position's input. Returns (..., F).
        The leading axes are the samples, (n,), or several priors' samples, (P, n) with P-leading weights."""
        h_pre = ops.matmul(ops.reshape(window, (*ops.shape(window)[:-2], -1)), weights["h_kernel"]) + link
        out = ops.matmul(gate(h_pre), weights["out_kernel"]) + weights["out_bias"]
        return out + h if residual else out

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "residual": self.residual}


@keras.saving.register_keras_serializable(package="brainvq")
class LogitsHead(keras.layers.Layer):
    """1x1 head: relu -> dense(head_filters) -> relu -> dense(num_embeddings) logits."""

    def __init__(self, head_filters: int, num_embeddings: int, **kwargs):
        super().__init__(**kwargs)
        self.head_filters = int(head_filters)
        self.num_embeddings = int(num_embeddings)

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.hidden_kernel = self.add_weight(name="hidden_kernel", shape=(c, self.head_filters),
                                             initializer="glorot_uniform")
        self.hidden_bias = self.add_weight(name="hidden_bias", shape=(self.head_filters,), initializer="zeros")
        self.logits_kernel = self.add_weight(name="logits_kernel", shape=(self.head_filters, self.num_embeddings),
                                             initializer="glorot_uniform")
        self.logits_bias = self.add_weight(name="logits_bias", shape=(self.num_embeddings,), initializer="zeros")

    def call(self, h):
        return self.logits(self.step_weights(), h)

    def step_weights(self) -> list:
        return [ops.convert_to_tensor(w) for w in (self.hidden_kernel, self.hidden_bias, self.logits_kernel,
                                                    self.logits_bias)]

    @staticmethod
    def logits(weights: list, h):
        """(..., C) -> (..., K): the head's maths, for a whole map (call) or one position (the sampler)."""
        hidden_kernel, hidden_bias, logits_kernel, logits_bias = weights
        x = ops.relu(ops.matmul(ops.relu(h), hidden_kernel) + hidden_bias)
        return ops.matmul(x, logits_kernel) + logits_bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_embeddings,)

    def get_config(self):
        return {**super().get_config(), "head_filters": self.head_filters, "num_embeddings": self.num_embeddings}


def build_prior(config: PriorConfig) -> keras.Model:
    """Builds the prior: int32 codes (B, H, W) [, int32 levels (B,)] [, int32 codes of the slice below
    (B, H, W)] -> float32 logits (B, H, W, K).

    Logits at (i, j) depend on rows i - 1 - L*(k//2) .. i - 1 within columns j -+ L*(k//2), and on
    row i columns j - 1 - L*(k//2) .. j - 1 (L = num_layers); on nothing else but the level and the
    slice below. The inputs are a list when there is a condition; `prior_inputs` builds them.
    """
    codes = keras.Input((config.grid_height, config.grid_width), dtype="int32", name="codes")
    inputs, condition = [codes], []
    if config.num_levels:
        levels = keras.Input((), dtype="int32", name="levels")
        inputs.append(levels)
        condition.append(SliceLevelEmbedding(config.num_levels, config.embedding_dim, config.grid_height,
                                             config.grid_width, config.level_map_size, name="level_embedding")(levels))
    if config.previous_slice:
        previous = keras.Input((config.grid_height, config.grid_width), dtype="int32", name="previous")
        inputs.append(previous)
        condition.append(PreviousSliceEncoder(config.num_embeddings, config.embedding_dim, config.embedding_dim,
                                              name="previous_slice")(previous))
    # One condition map: the level's and the slice below's add up (same channels, so a volume prior
    # has a slice prior's gated layers and can start from its weights).
    condition = [keras.layers.Add(name="condition")(condition)] if len(condition) == 2 else condition
    inputs = inputs if len(inputs) > 1 else codes
    x = keras.layers.Embedding(config.num_embeddings, config.embedding_dim, name="code_embedding")(codes)
    if config.position_embedding:
        x = PositionEmbedding(name="position_embedding")(x)
    v = CausalShift("down", name="shift_down")(x)  # (B, H, W, E), row i sees row i - 1
    h = CausalShift("right", name="shift_right")(x)  # (B, H, W, E), column j sees column j - 1
    for layer in range(config.num_layers):
        residual = layer > 0 or config.embedding_dim == config.filters
        v, h = GatedPixelCNNLayer(config.filters, config.kernel_size, residual=residual,
                                  name=f"gated_{layer}")([v, h, *condition])
    logits = LogitsHead(config.head_filters, config.num_embeddings, name="head")(h)  # (B, H, W, K)
    return keras.Model(inputs, logits, name="gated_pixelcnn_prior")


@dataclass(frozen=True)
class PriorParts:
    """What stepping through a prior needs, named: the code embedding table, the position table, the
    gated layers in order and the head (the level layer is `level_layer`)."""

    embedding: typing.Any  # (K, E)
    position: typing.Any  # (H, W, E), zeros for a prior without position embedding
    gated: list
    head: "LogitsHead"


def prior_parts(prior_model: keras.Model) -> PriorParts:
    """The parts of a prior made by build_prior; a ValueError for any other model."""
    embeddings = [l for l in prior_model.layers if isinstance(l, keras.layers.Embedding)]
    gated = [l for l in prior_model.layers if isinstance(l, GatedPixelCNNLayer)]
    heads = [l for l in prior_model.layers if isinstance(l, LogitsHead)]
    if len(embeddings) != 1 or not gated or len(heads) != 1:
        raise ValueError("Expected a prior from core.models.prior.build_prior (one Embedding, gated layers, "
                         f"one LogitsHead). Received layers: {[type(l).__name__ for l in prior_model.layers]}")
    embedding = ops.convert_to_tensor(embeddings[0].embeddings)
    positions = [l for l in prior_model.layers if isinstance(l, PositionEmbedding)]
    _, height, width = prior_model.inputs[0].shape
    position = (ops.convert_to_tensor(positions[0].table) if positions
                else ops.zeros((height, width, embedding.shape[-1])))
    return PriorParts(embedding, position, gated, heads[0])


def level_layer(prior_model: keras.Model) -> SliceLevelEmbedding | None:
    """The prior's slice-level embedding, or None for an unconditional prior."""
    found = [l for l in prior_model.layers if isinstance(l, SliceLevelEmbedding)]
    return found[0] if found else None


def num_levels(prior_model: keras.Model) -> int:
    """How many slice levels the prior is conditioned on (0: unconditional)."""
    layer = level_layer(prior_model)
    return layer.num_levels if layer is not None else 0


def level_frequency(prior_model: keras.Model) -> np.ndarray:
    """(num_levels,) how often each level occurred in the prior's training data (sums to 1)."""
    layer = level_layer(prior_model)
    if layer is None:
        raise ValueError("This prior is not conditioned on slice levels.")
    return np.asarray(ops.convert_to_numpy(layer.frequency), np.float64)


def set_level_frequency(prior_model: keras.Model, levels) -> None:
    """Store the training split's level distribution in the prior, from its (N,) level numbers."""
    layer = level_layer(prior_model)
    counts = np.bincount(np.asarray(levels, np.int64), minlength=layer.num_levels)[:layer.num_levels]
    if counts.sum() == 0:
        raise ValueError("Expected at least one level in [0, num_levels).")
    layer.frequency.assign((counts / counts.sum()).astype("float32"))


def _level_count(prior_model: keras.Model, levels_given: bool) -> int:
    """The rule for levels, in one place: an unconditional prior takes none, a conditioned one needs them."""
    count = num_levels(prior_model)
    if not count and levels_given:
        raise ValueError("This prior is not conditioned on slice levels; it takes no levels.")
    if count and not levels_given:
        raise ValueError(f"This prior is conditioned on slice levels (0..{count - 1}); pass levels.")
    return count


def check_levels(prior_model: keras.Model, n: int, levels) -> np.ndarray | None:
    """(n,) int32 levels (one level is repeated n times) for a conditioned prior, None for an
    unconditional one; a ValueError for levels the prior cannot take or does not know."""
    count = _level_count(prior_model, levels is not None)
    if not count:
        return None
    levels = np.broadcast_to(np.asarray(levels), (n,)).astype(np.int64)
    if levels.min() < 0 or levels.max() >= count:
        raise ValueError(f"Expected slice levels in [0, {count}). Received values in [{levels.min()}, {levels.max()}]")
    return levels.astype(np.int32)


def previous_layer(prior_model: keras.Model) -> PreviousSliceEncoder | None:
    """The whole-brain prior's encoder of the slice below, or None for a slice prior."""
    found = [l for l in prior_model.layers if isinstance(l, PreviousSliceEncoder)]
    return found[0] if found else None


def start_token(prior_model: keras.Model) -> int:
    """The code that fills "the slice below" of a stack's first slice (K, one past the codebook)."""
    return previous_layer(prior_model).num_embeddings


def _previous_encoder(prior_model: keras.Model, previous_given: bool) -> PreviousSliceEncoder | None:
    """The rule for the slice below, in one place: a whole-brain prior needs it, a slice prior takes none."""
    layer = previous_layer(prior_model)
    if (layer is not None) != previous_given:
        raise ValueError("A whole-brain prior needs the codes of the slice below (previous=...); a slice prior "
                         "takes none.")
    return layer


def check_previous(prior_model: keras.Model, n: int, previous) -> np.ndarray | None:
    """(n, H, W) int32 codes of the slices below for a whole-brain prior, None for a slice prior; a
    ValueError for codes it cannot take (`start_token` is the "no slice below" code)."""
    layer = _previous_encoder(prior_model, previous is not None)
    if layer is None:
        return None
    previous = np.asarray(previous)
    expected = (n, *prior_model.inputs[0].shape[1:])
    if previous.shape != expected:
        raise ValueError(f"Expected previous codes of shape {expected}. Received: {previous.shape}")
    if previous.min() < 0 or previous.max() > layer.num_embeddings:
        raise ValueError(f"Expected previous codes in [0, {layer.num_embeddings}] ({layer.num_embeddings}: no slice "
                         f"below). Received values in [{previous.min()}, {previous.max()}]")
    return previous.astype(np.int32)


def prior_inputs(prior_model: keras.Model, codes, levels=None, previous=None):
    """What to call the prior with: codes alone, or [codes, levels] for a level-conditioned prior,
    followed by the slice below's codes for a whole-brain prior."""
    inputs = [codes, levels] if _level_count(prior_model, levels is not None) else [codes]
    if _previous_encoder(prior_model, previous is not None) is not None:
        inputs.append(previous)
    return inputs if len(inputs) > 1 else codes


def prior_loss(codes, logits):
    """Mean sparse categorical cross-entropy (nats) of (B, H, W) codes under (B, H, W, K) logits."""
    return ops.mean(keras.losses.sparse_categorical_crossentropy(codes, logits, from_logits=True))


def bits_per_code(logits, codes) -> float:
    """Mean negative log2-likelihood of the codes, in bits per code."""
    return float(ops.convert_to_numpy(prior_loss(codes, logits))) / math.log(2.0)


def top1_accuracy(logits, codes) -> float:
    """Fraction of positions where the most likely code is the true code."""
    predicted = ops.argmax(logits, axis=-1)
    return float(ops.convert_to_numpy(ops.mean(ops.cast(predicted == ops.cast(codes, predicted.dtype), "float32"))))
