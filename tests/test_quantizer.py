"""core.quantizer: nearest-code lookup, straight-through gradients, losses, EMA and dead-code restart."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from oasis_fixtures import REPO_ROOT
from core.models.quantizer import CodebookUsage, VectorQuantizer, codebook_usage

K, D = 8, 4  # tiny codebook: 8 codes of dimension 4


def make_quantizer(**kwargs) -> VectorQuantizer:
    layer = VectorQuantizer(kwargs.pop("num_embeddings", K), kwargs.pop("embedding_dim", D), **kwargs)
    layer.build((None, layer.embedding_dim))
    return layer


def state(layer: VectorQuantizer) -> dict[str, np.ndarray]:
    return {"codebook": layer.codebook.numpy().copy(),
            "ema_cluster_size": layer.ema_cluster_size.numpy().copy(),
            "ema_embedding_sum": layer.ema_embedding_sum.numpy().copy()}


def numpy_nearest(inputs: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    flat = inputs.reshape(-1, codebook.shape[1]).astype(np.float64)
    distances = ((flat[:, None, :] - codebook[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return distances.argmin(1).reshape(inputs.shape[:-1])


def spread_codebook(layer: VectorQuantizer, seed: int = 0) -> np.ndarray:
    """Give the layer well-separated codes (the default init is tiny and nearly tied)."""
    codebook = np.random.default_rng(seed).normal(size=(layer.num_embeddings, layer.embedding_dim))
    layer.codebook.assign(codebook.astype(np.float32))
    return layer.codebook.numpy()


# --- lookup -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(16, D), (2, 3, 5, D), (1, 1, D)])
def test_chosen_codes_match_numpy_nearest_neighbour(shape):
    layer = make_quantizer()
    codebook = spread_codebook(layer)
    inputs = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    indices = np.asarray(layer.indices(inputs))
    assert indices.shape == shape[:-1] and indices.dtype == np.int32
    np.testing.assert_array_equal(indices, numpy_nearest(inputs, codebook))
    quantized, call_indices = layer(inputs, training=False)
    np.testing.assert_allclose(np.asarray(quantized), codebook[indices], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(call_indices), indices)  # the call's own indices, one pass
    np.testing.assert_allclose(np.asarray(layer.lookup(indices)), codebook[indices], atol=0)


def test_inputs_equal_to_codes_choose_themselves():
    layer = make_quantizer()
    codebook = spread_codebook(layer)
    np.testing.assert_array_equal(np.asarray(layer.indices(codebook[::-1])), np.arange(K)[::-1])


def test_straight_through_gradient_is_identity():
    layer = make_quantizer()
    spread_codebook(layer)
    inputs = tf.constant(np.random.default_rng(2).normal(size=(3, 5, D)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        total = tf.reduce_sum(layer(inputs, training=False)[0])
    np.testing.assert_array_equal(tape.gradient(total, inputs).numpy(), np.ones((3, 5, D), np.float32))


# --- losses -------------------------------------------------------------------------------------
def test_commitment_loss_matches_numpy_reference():
    layer = make_quantizer(commitment_cost=0.7)
    codebook = spread_codebook(layer)
    inputs = np.random.default_rng(3).normal(size=(6, D)).astype(np.float32)
    layer(inputs, training=False)
    nearest = codebook[numpy_nearest(inputs, codebook)]
    expected = 0.7 * np.mean((inputs - nearest) ** 2)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)


def test_commitment_loss_gradient_reaches_inputs_not_codebook():
    layer = make_quantizer(commitment_cost=0.5, use_ema=False)
    codebook = spread_codebook(layer)
    inputs = tf.constant(np.random.default_rng(4).normal(size=(6, D)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        layer(inputs, training=False)
        loss = layer.losses[0]
    nearest = codebook[numpy_nearest(inputs.numpy(), codebook)]
    # Without EMA: beta * ||z - sg(e)||^2 + ||sg(z) - e||^2 (eq. 3 of the paper).
    np.testing.assert_allclose(float(loss), 1.5 * np.mean((inputs.numpy() - nearest) ** 2), rtol=1e-5)
    size = inputs.numpy().size
    np.testing.assert_allclose(tape.gradient(loss, inputs).numpy(),
                               0.5 * 2 * (inputs.numpy() - nearest) / size, rtol=1e-4, atol=1e-7)
    assert layer.codebook.trainable
    assert tape.gradient(loss, layer.codebook) is not None


def test_ema_codebook_is_not_trainable():
    layer = make_quantizer(use_ema=True)
    assert not layer.codebook.trainable and layer.trainable_weights == []


# --- EMA updates --------------------------------------------------------------------------------
def _numpy_ema_step(before: dict, inputs: np.ndarray, decay: float, eps: float):
    codebook = before["codebook"].astype(np.float64)
    flat = inputs.reshape(-1, codebook.shape[1]).astype(np.float64)
    one_hot = np.eye(len(codebook))[numpy_nearest(flat, codebook)]
    cluster_size = before["ema_cluster_size"] * decay + one_hot.sum(0) * (1 - decay)
    embedding_sum = before["ema_embedding_sum"] * decay + one_hot.T @ flat * (1 - decay)
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + len(codebook) * eps) * total
    return embedding_sum / smoothed[:, None], cluster_size, embedding_sum, one_hot.sum(0)


def test_ema_step_matches_numpy_reference():
    layer = make_quantizer(ema_decay=0.9, dead_code_threshold=0.0)
    spread_codebook(layer)
    # A used, self-consistent EMA state (mass 3 per code at its vector), as after some training.
    layer.ema_cluster_size.assign(np.full(K, 3.0, np.float32))
    layer.ema_embedding_sum.assign(layer.codebook.numpy() * 3.0)
    before = state(layer)
    inputs = np.random.default_rng(5).normal(size=(32, D)).astype(np.float32)
    layer(inputs, training=True)
    codebook, cluster_size, embedding_sum, _ = _numpy_ema_step(before, inputs, 0.9, layer.epsilon)
    after = state(layer)
    np.testing.assert_allclose(after["ema_cluster_size"], cluster_size, rtol=1e-5)
    np.testing.assert_allclose(after["ema_embedding_sum"], embedding_sum, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after["codebook"], codebook, rtol=1e-4, atol=1e-5)


def test_ema_step_moves_used_codes_toward_the_mean_of_their_inputs():
    layer = make_quantizer(ema_decay=0.9, dead_code_threshold=0.0)
    spread_codebook(layer)
    layer.ema_cluster_size.assign(np.full(K, 3.0, np.float32))
    layer.ema_embedding_sum.assign(layer.codebook.numpy() * 3.0)
    before = state(layer)["codebook"]
    inputs = np.random.default_rng(6).normal(size=(32, D)).astype(np.float32)
    chosen = numpy_nearest(inputs, before)
    layer(inputs, training=True)
    after = state(layer)["codebook"]
    for code in np.unique(chosen):
        mean = inputs[chosen == code].mean(0)
        assert np.linalg.norm(after[code] - mean) < np.linalg.norm(before[code] - mean)
    for code in set(range(K)) - set(chosen.tolist()):
        # An unchosen code keeps its direction; only the Laplace-smoothed normaliser changes.
        np.testing.assert_allclose(after[code] / np.linalg.norm(after[code]),
                                   before[code] / np.linalg.norm(before[code]), rtol=1e-4)


def test_first_ema_step_from_fresh_layer_puts_used_codes_at_their_input_means():
    # Zero cluster sizes mean the EMA holds no mass yet: with restarts off (threshold 0) the
    # first step must land each used code on the mean of its inputs, not at init / (n * (1 - decay)).
    layer = make_quantizer(ema_decay=0.99, dead_code_threshold=0.0)
    before = state(layer)
    assert np.all(before["ema_cluster_size"] == 0)
    inputs = np.random.default_rng(7).normal(size=(64, D)).astype(np.float32)
    layer(inputs, training=True)
    codebook, _, _, counts = _numpy_ema_step(before, inputs, 0.99, layer.epsilon)
    after = state(layer)["codebook"]
    np.testing.assert_allclose(after, codebook, rtol=1e-4, atol=1e-5)  # the formula, from this state
    chosen = numpy_nearest(inputs, before["codebook"])
    assert np.all(np.isfinite(after))
    for code in np.flatnonzero(counts):
        np.testing.assert_allclose(after[code], inputs[chosen == code].mean(0), rtol=0, atol=2e-3)


def test_evaluation_leaves_codebook_and_statistics_unchanged():
    layer = make_quantizer()
    spread_codebook(layer)
    before = state(layer)
    inputs = np.random.default_rng(8).normal(size=(4, 3, 3, D)).astype(np.float32)
    layer(inputs, training=False)
    layer(inputs)  # training defaults to False
    layer.indices(inputs)
    for name, value in state(layer).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_training_call_changes_the_codebook():
    # Guards the test above: the same inputs in training do move the codebook.
    layer = make_quantizer()
    spread_codebook(layer)
    before = state(layer)["codebook"]
    layer(np.random.default_rng(8).normal(size=(4, 3, 3, D)).astype(np.float32), training=True)
    assert not np.allclose(state(layer)["codebook"], before)


# --- dead codes ---------------------------------------------------------------------------------
def test_fresh_layer_restarts_every_code_onto_inputs_at_the_first_step():
    layer = make_quantizer()  # threshold 1, zero cluster sizes: every code is dead at step 1
    inputs = np.random.default_rng(9).normal(size=(40, D)).astype(np.float32)
    layer(inputs, training=True)
    codebook = state(layer)["codebook"]
    distance_to_inputs = np.abs(codebook[:, None, :] - inputs[None]).max(-1).min(1)
    np.testing.assert_array_equal(distance_to_inputs, np.zeros(K))
    np.testing.assert_allclose(state(layer)["ema_cluster_size"], 2.0)


def test_a_code_nobody_chooses_is_restarted_onto_an_input():
    layer = make_quantizer(num_embeddings=4, embedding_dim=2, ema_decay=0.8, dead_code_threshold=1.0)
    centres = np.array([[0, 0], [5, 0], [0, 5], [100, 100]], np.float32)  # code 3: far away
    layer.codebook.assign(centres)
    layer.ema_cluster_size.assign(np.full(4, 4.0, np.float32))
    layer.ema_embedding_sum.assign(centres * 4.0)
    rng = np.random.default_rng(10)
    for step in range(30):
        inputs = (centres[rng.integers(0, 3, 24)] + rng.normal(0, 0.1, (24, 2))).astype(np.float32)
        layer(inputs, training=True)
        if np.abs(state(layer)["codebook"][3] - centres[3]).max() > 1.0:
            break
    else:
        pytest.fail("code 3 was never restarted")
    # 4 * 0.8^n < 1 first at n = 7: the code is restarted then, not before.
    assert step == 6
    restarted = state(layer)["codebook"][3]
    assert np.any(np.all(inputs == restarted, axis=1)), "the restarted code is one of the batch inputs"
    assert state(layer)["ema_cluster_size"][3] == pytest.approx(2.0)


# --- edge cases and arguments -------------------------------------------------------------------
@pytest.mark.parametrize("training", [False, True])
def test_zero_size_batch_gives_empty_output_zero_loss_and_no_update(training):
    layer = make_quantizer()
    spread_codebook(layer)
    before = state(layer)
    out, indices = layer(np.zeros((0, 3, 3, D), np.float32), training=training)
    assert tuple(out.shape) == (0, 3, 3, D) and tuple(indices.shape) == (0, 3, 3)
    assert float(layer.losses[0]) == 0.0
    for name, value in state(layer).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_zero_size_batch_inside_a_traced_function():
    layer = make_quantizer()
    spread_codebook(layer)
    before = state(layer)
    step = tf.function(lambda x: layer(x, training=True)[0],
                       input_signature=[tf.TensorSpec((None, D), tf.float32)])
    assert tuple(step(tf.zeros((0, D))).shape) == (0, D)
    for name, value in state(layer).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    step(tf.random.normal((16, D)))  # the same trace still learns from a real batch
    assert not np.allclose(state(layer)["codebook"], before["codebook"])


@pytest.mark.parametrize("kwargs, field", [
    ({"num_embeddings": 1}, "num_embeddings"),
    ({"num_embeddings": 0}, "num_embeddings"),
    ({"embedding_dim": 0}, "embedding_dim"),
    ({"ema_decay": 0.0}, "ema_decay"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"ema_decay": -0.5}, "ema_decay"),
    ({"commitment_cost": -0.1}, "commitment_cost"),
    ({"dead_code_threshold": -1.0}, "dead_code_threshold"),
    ({"epsilon": 0.0}, "epsilon"),
])
def test_invalid_arguments_raise_value_error(kwargs, field):
    arguments = {"num_embeddings": K, "embedding_dim": D, **kwargs}
    with pytest.raises(ValueError, match=field):
        VectorQuantizer(**arguments)


def test_inputs_of_the_wrong_dimension_raise_value_error():
    layer = VectorQuantizer(K, D)
    with pytest.raises(ValueError, match="last dimension"):
        layer(np.zeros((2, D + 1), np.float32))


def test_config_json_round_trip():
    layer = VectorQuantizer(K, D, commitment_cost=0.4, use_ema=False, ema_decay=0.95,
                            dead_code_threshold=0.5, epsilon=1e-4, name="vq")
    config = json.loads(json.dumps(layer.get_config()))
    clone = VectorQuantizer.from_config(config)
    assert clone.get_config() == layer.get_config()
    for name in ("num_embeddings", "embedding_dim", "commitment_cost", "use_ema", "ema_decay",
                 "dead_code_threshold", "epsilon"):
        assert getattr(clone, name) == getattr(layer, name)
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer))))
    assert isinstance(revived, VectorQuantizer) and revived.get_config() == layer.get_config()


# --- codebook statistics ------------------------------------------------------------------------
def test_codebook_usage_by_hand():
    stats = codebook_usage(np.array([[0, 0], [1, 3]]), 5)
    assert isinstance(stats, CodebookUsage)
    np.testing.assert_array_equal(stats.counts, [2, 1, 0, 1, 0])
    assert stats.counts.dtype == np.int64
    # p = (1/2, 1/4, 1/4): entropy 1.5 bits -> perplexity 2 ** 1.5
    assert stats.perplexity == pytest.approx(2 ** 1.5)
    assert stats.codes_used == 3 and stats.num_embeddings == 5
    np.testing.assert_array_equal(stats.dead_codes, [2, 4])
    assert stats.usage_fraction == pytest.approx(0.6)


def test_codebook_usage_extremes():
    assert codebook_usage(np.zeros(10, int), 4).perplexity == pytest.approx(1.0)
    uniform = codebook_usage(np.arange(16) % 8, 8)
    assert uniform.perplexity == pytest.approx(8.0) and uniform.codes_used == 8
    empty = codebook_usage(np.array([], int), 4)
    assert (empty.perplexity, empty.codes_used, len(empty.dead_codes)) == (0.0, 0, 4)


# --- data parallel ------------------------------------------------------------------------------
_MIRRORED_EMA = """
import sys
sys.path.insert(0, {repo!r})
import numpy as np, tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from core.models.quantizer import VectorQuantizer
strategy = tf.distribute.MirroredStrategy()
with strategy.scope():
    layer = VectorQuantizer(4, 2)
    layer.build((None, 2))
inputs = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
batches = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(inputs).batch(16))
step = tf.function(lambda x: layer(x, training=True)[0])
for batch in batches:
    strategy.run(step, args=(batch,))
copies = [c.numpy() for c in layer.codebook.value.values]
print("replicas", len(copies), "agree", all(np.array_equal(copies[0], c) for c in copies))
# One process on the whole batch: every code starts dead, so all are restarted on input rows
# drawn from the global batch; the replicas must pick the very rows one process picks.
alone = VectorQuantizer(4, 2)
alone.build((None, 2))
alone(tf.constant(inputs), training=True)
print("as one process", np.allclose(alone.codebook.numpy(), copies[0], rtol=0, atol=1e-6))
"""


def test_ema_codebook_and_restarts_across_mirrored_replicas_equal_one_process(tmp_path):
    script = tmp_path / "mirrored_ema.py"
    script.write_text(_MIRRORED_EMA.format(repo=str(REPO_ROOT)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replicas 2 agree" in result.stdout, result.stdout  # the probe itself ran
    assert "replicas 2 agree True" in result.stdout, result.stdout
    assert "as one process True" in result.stdout, result.stdout


def test_the_training_steps_usage_metrics_are_codebook_usage_of_the_same_indices():
    from core.models.quantizer import code_counts, codebook_usage, codes_used, perplexity

    indices = np.random.default_rng(5).integers(0, 5, size=(4, 6, 6))
    counts = code_counts(tf.constant(indices, tf.int32), 8)  # as the graph-mode step computes them
    usage = codebook_usage(indices, 8)
    np.testing.assert_array_equal(np.asarray(counts), usage.counts)
    assert float(perplexity(counts)) == pytest.approx(usage.perplexity, rel=1e-6)
    assert int(codes_used(counts)) == usage.codes_used == 5


def test_perplexity_by_hand():
    from core.models.quantizer import perplexity

    assert float(perplexity(np.array([2, 2, 0, 0]))) == pytest.approx(2.0)  # two codes equally
    assert float(perplexity(np.array([4, 0, 0]))) == pytest.approx(1.0)
    assert float(perplexity(np.array([0, 0]))) == 0.0  # no codes at all
    p = np.array([1, 3]) / 4
    assert float(perplexity(np.array([1, 3]))) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
