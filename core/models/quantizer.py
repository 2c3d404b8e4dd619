"""Vector quantizer layer (van den Oord et al. 2017, arXiv:1711.00937) with EMA codebook and dead-code restart."""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops


@dataclass(frozen=True)
class CodebookUsage:
    """How a set of code indices uses the codebook."""

    counts: np.ndarray  # (num_embeddings,) int64: how often each code was chosen
    perplexity: float  # exp(entropy) of the usage distribution: 1 = one code, K = all equally
    codes_used: int  # codes chosen at least once
    num_embeddings: int

    @property
    def dead_codes(self) -> np.ndarray:
        return np.flatnonzero(self.counts == 0)

    @property
    def usage_fraction(self) -> float:
        return self.codes_used / self.num_embeddings


def code_counts(indices, num_embeddings: int):
    """(num_embeddings,) how often each code occurs in `indices` (a tensor or an array, any shape)."""
    flat = ops.reshape(ops.cast(indices, "int32"), (-1,))
    # A segment sum with a fixed number of segments, not bincount: XLA needs the output size up front.
    return ops.segment_sum(ops.ones_like(flat), flat, num_segments=num_embeddings)


def perplexity(counts):
    """exp(entropy) of code usage counts: 1 = one code for everything, K = all K codes equally; 0 for no codes.

    The one definition, used in the training step (a tensor), evaluation and the Codebook page.
    """
    counts = ops.cast(counts, "float32")
    total = ops.sum(counts)
    probabilities = counts / ops.maximum(total, 1.0)
    safe = ops.where(probabilities > 0, probabilities, 1.0)  # 0 * log 0 counts as 0
    entropy = -ops.sum(probabilities * ops.log(safe))
    return ops.where(total > 0, ops.exp(entropy), 0.0)


def codes_used(counts):
    """How many codes occur at least once."""
    return ops.sum(ops.cast(ops.greater(counts, 0), "int32"))


def codebook_usage(indices=None, num_embeddings: int | None = None, *, counts=None) -> CodebookUsage:
    """Usage of the codebook by an array of code indices (with num_embeddings), or by per-code counts."""
    if counts is None:
        counts = code_counts(np.asarray(indices), num_embeddings)
    counts = np.asarray(ops.convert_to_numpy(counts), np.int64)
    return CodebookUsage(counts, float(ops.convert_to_numpy(perplexity(counts))),
                         int(ops.convert_to_numpy(codes_used(counts))), len(counts))


def _mean(values):
    """The mean, and 0 (not NaN) for an empty batch."""
    return ops.sum(values) / ops.maximum(ops.cast(ops.size(values), "float32"), 1.0)


def across_replicas(value, reduction: str):
    """Sum or mean `value` over the replicas of a tf.distribute strategy (itself when there is one).

    Without it each replica's EMA update would see only its own shard and the codebook copies
    would drift apart; with it all replicas write the same codebook (and a training step counts
    code usage over the global batch).
    """
    context = _replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(reduction, value)


def _replica_context():
    """The tf.distribute replica context a step runs in (None for other backends)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    return tf.distribute.get_replica_context()


def check_quantizer_settings(commitment_cost: float, ema_decay: float, dead_code_threshold: float) -> None:
    """ValueError for settings the quantizer cannot train with (also checked by VQVAEConfig, early)."""
    if not 0.0 < ema_decay < 1.0:
        raise ValueError(f"Expected ema_decay in (0, 1). Received: ema_decay={ema_decay}")
    if commitment_cost < 0:
        raise ValueError(f"Expected commitment_cost >= 0. Received: commitment_cost={commitment_cost}")
    if dead_code_threshold < 0:
        raise ValueError(f"Expected dead_code_threshold >= 0 (0 turns restarts off). "
                         f"Received: dead_code_threshold={dead_code_threshold}")


@keras.saving.register_keras_serializable(package="brainvq")
class VectorQuantizer(keras.layers.Layer):
    """Snaps each input vector to its nearest codebook vector.

    Gradients pass straight through to the encoder (eq. 3 of the paper). The commitment loss
    `commitment_cost * ||z - sg(e)||^2` is beta of eq. 4 ("best kept between 0.25 and 2"). With
    `use_ema` the codebook follows an exponential moving average of the vectors assigned to
    each code (appendix A.1) instead of a codebook loss; codes whose average usage falls below
    `dead_code_threshold` are restarted at random encoder outputs of the current batch, so the
    whole codebook stays in use.

    Args:
        num_embeddings: K, the number of codes.
        embedding_dim: D, the size of each code vector.
        commitment_cost: beta.
        use_ema: update the codebook by EMA (True) or by gradient of the codebook loss.
        ema_decay: gamma of the EMA update.
        dead_code_threshold: EMA of assignments per step below which a code is dead and restarted.

    Input shape: (..., D) float. Output: (quantized, indices): the same shape quantized, and the
    (...) int32 index of each vector's code, both from one computation of the distances.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25,
                 use_ema: bool = True, ema_decay: float = 0.99, dead_code_threshold: float = 1.0,
                 epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if num_embeddings < 2:
            raise ValueError(f"Expected num_embeddings >= 2. Received: num_embeddings={num_embeddings}")
        if embedding_dim < 1:
            raise ValueError(f"Expected embedding_dim >= 1. Received: embedding_dim={embedding_dim}")
        check_quantizer_settings(commitment_cost, ema_decay, dead_code_threshold)
        if epsilon <= 0:
            raise ValueError(f"Expected epsilon > 0. Received: epsilon={epsilon}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = commitment_cost
        self.use_ema = use_ema
        self.ema_decay = ema_decay
        self.dead_code_threshold = dead_code_threshold
        self.epsilon = epsilon
        self.seed_generator = keras.random.SeedGenerator(1337)

    def build(self, input_shape):
        if input_shape[-1] != self.embedding_dim:
            raise ValueError(f"Expected inputs with last dimension {self.embedding_dim}. "
                             f"Received: input_shape={input_shape}")
        init = keras.initializers.RandomUniform(-1.0 / self.num_embeddings, 1.0 / self.num_embeddings)
        self.codebook = self.add_weight(name="codebook", shape=(self.num_embeddings, self.embedding_dim),
                                        initializer=init, trainable=not self.use_ema)
        # EMA statistics; also kept without EMA, where they only track usage for dead codes.
        # Zero counts make every code "dead" at the first training step, so the codebook starts
        # on real encoder outputs rather than on the random initialisation. The sums start at
        # zero too (no mass yet): with restarts off, the first step puts each used code at the
        # mean of its inputs instead of at init / (n * (1 - decay)).
        self.ema_cluster_size = self.add_weight(name="ema_cluster_size", shape=(self.num_embeddings,),
                                                initializer="zeros", trainable=False)
        self.ema_embedding_sum = self.add_weight(name="ema_embedding_sum",
                                                 shape=(self.num_embeddings, self.embedding_dim),
                                                 initializer="zeros", trainable=False)
        self.built = True

    def nearest_indices(self, flat_inputs):
        """(N, D) -> (N,) int32 index of the nearest code (squared Euclidean distance)."""
        codebook = ops.cast(self.codebook, flat_inputs.dtype)
        distances = (ops.sum(flat_inputs ** 2, axis=1, keepdims=True)
                     - 2.0 * ops.matmul(flat_inputs, ops.transpose(codebook))
                     + ops.sum(codebook ** 2, axis=1)[None, :])
        return ops.cast(ops.argmin(distances, axis=1), "int32")

    def lookup(self, indices):
        """Code indices of any shape -> their code vectors, shape indices.shape + (D,)."""
        return ops.take(self.codebook, ops.cast(indices, "int32"), axis=0)

    def indices(self, inputs):
        """(..., D) -> (...) int32 code indices."""
        flat = ops.reshape(ops.cast(inputs, "float32"), (-1, self.embedding_dim))
        return ops.reshape(self.nearest_indices(flat), ops.shape(inputs)[:-1])

    def call(self, inputs, training=False):
        inputs32 = ops.cast(inputs, "float32")  # distances and EMA in float32 under mixed precision
        flat = ops.reshape(inputs32, (-1, self.embedding_dim))
        indices = self.nearest_indices(flat)
        one_hot = ops.one_hot(indices, self.num_embeddings, dtype="float32")
        if training:
            # An empty batch (a zero-size shard) has nothing to learn from: no update at all.
            ops.cond(ops.shape(flat)[0] > 0, lambda: self._update_codebook(flat, one_hot),
                     lambda: None)
        quantized = ops.reshape(ops.take(self.codebook, indices, axis=0), ops.shape(inputs32))
        commitment = _mean((inputs32 - ops.stop_gradient(quantized)) ** 2)
        loss = self.commitment_cost * commitment
        if not self.use_ema:
            loss = loss + _mean((ops.stop_gradient(inputs32) - quantized) ** 2)
        self.add_loss(loss)
        quantized = inputs32 + ops.stop_gradient(quantized - inputs32)  # straight-through
        # The indices come from the same distances: training never computes them twice.
        return ops.cast(quantized, inputs.dtype), ops.reshape(indices, ops.shape(inputs)[:-1])

    def _update_codebook(self, flat, one_hot):
        decay = self.ema_decay
        counts = across_replicas(ops.sum(one_hot, axis=0), "sum")
        cluster_size = self.ema_cluster_size * decay + counts * (1.0 - decay)
        self.ema_cluster_size.assign(cluster_size)
        if self.use_ema:
            sums = across_replicas(ops.matmul(ops.transpose(one_hot), flat), "sum")
            embedding_sum = self.ema_embedding_sum * decay + sums * (1.0 - decay)
            # Laplace smoothing keeps rarely used codes from dividing by ~0.
            total = ops.sum(cluster_size)
            smoothed = (cluster_size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
            codebook = embedding_sum / smoothed[:, None]
        else:
            embedding_sum = self.ema_embedding_sum
            codebook = ops.convert_to_tensor(self.codebook)
        # Dead-code restart: a code no vector chose for a long while moves onto a random input.
        dead = cluster_size < self.dead_code_threshold
        replacements = ops.stop_gradient(self._random_rows(flat))
        codebook = ops.where(dead[:, None], replacements, codebook)
        self.codebook.assign(codebook)
        # A restarted code gets twice the threshold: ~70 steps (at decay 0.99) to win vectors.
        restart_size = 2.0 * self.dead_code_threshold
        self.ema_embedding_sum.assign(ops.where(dead[:, None], replacements * restart_size, embedding_sum))
        self.ema_cluster_size.assign(ops.where(dead, ops.full_like(cluster_size, restart_size),
                                               cluster_size))

    def _random_rows(self, flat):
        """One random input vector per code, drawn from the whole global batch.

        Under data parallelism each replica holds one run of the global batch (replica i the
        i-th): every replica draws the same global positions, keeps the rows it holds, and a sum
        over replicas assembles them. All replicas restart a code at the same place, the same
        place a single-process run would choose.
        """
        rows = ops.shape(flat)[0]
        context = _replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        picks = keras.random.randint((self.num_embeddings,), 0, rows * replicas, seed=self.seed_generator)
        if replicas == 1:
            return ops.take(flat, picks, axis=0)
        local = picks - ops.cast(context.replica_id_in_sync_group, "int32") * rows
        held = ops.logical_and(local >= 0, local < rows)
        chosen = ops.take(flat, ops.clip(local, 0, rows - 1), axis=0) * ops.cast(held, flat.dtype)[:, None]
        return context.all_reduce("sum", chosen)

    def compute_output_shape(self, input_shape):
        return input_shape, tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                      commitment_cost=self.commitment_cost, use_ema=self.use_ema,
                      ema_decay=self.ema_decay, dead_code_threshold=self.dead_code_threshold,
                      epsilon=self.epsilon)
        return config
