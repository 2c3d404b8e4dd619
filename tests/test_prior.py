"""Tests for core.models.prior: config, causality without blind spot, save/load, training, metrics."""

import json

import numpy as np
import pytest
import tensorflow as tf
import keras

from core.models.prior import (GatedPixelCNNLayer, LogitsHead, PriorConfig, SliceLevelEmbedding, bits_per_code, build_prior, level_frequency,
                        num_levels, previous_layer, prior_inputs, prior_loss, set_level_frequency, start_token,
                        top1_accuracy)

from model_fixtures import randomize_weights

TINY = dict(num_embeddings=8, grid_height=6, grid_width=7, filters=8, num_layers=2, kernel_size=3,
            embedding_dim=4, head_filters=16)


@pytest.mark.parametrize("changes", [
    dict(num_embeddings=1), dict(grid_height=0), dict(filters=-3), dict(num_layers=0),
    dict(kernel_size=4), dict(kernel_size=1), dict(embedding_dim=2.5), dict(head_filters=True),
    dict(num_levels=-1), dict(num_levels=True), dict(level_map_size=0),
])
def test_config_rejects_invalid_values(changes):
    with pytest.raises(ValueError, match="Expected"):
        PriorConfig(**{**TINY, **changes})


def test_config_json_round_trip():
    config = PriorConfig(**TINY)
    assert PriorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="dropout"):
        PriorConfig.from_dict({**config.to_dict(), "dropout": 0.1})


def test_output_shape_and_dtype():
    model = build_prior(PriorConfig(**TINY))
    logits = model(np.zeros((3, 6, 7), np.int32))
    assert tuple(logits.shape) == (3, 6, 7, 8)
    assert logits.dtype == "float32"


def expected_dependencies(height, width, num_layers, kernel_size):
    """deps[i, j, a, b]: the analytic receptive field of logits (i, j) over codes (a, b)."""
    reach = num_layers * (kernel_size // 2)
    i, j, a, b = np.meshgrid(*(np.arange(s) for s in (height, width, height, width)), indexing="ij")
    same_row = (a == i) & (b >= j - 1 - reach) & (b <= j - 1)
    above = (i - a >= 1) & (i - a <= reach + 1) & (np.abs(b - j) <= reach)
    return same_row | above


@pytest.mark.parametrize("num_layers,kernel_size,levels", [(2, 3, 0), (2, 5, 0), (2, 3, 3)])
def test_causality_without_blind_spot(num_layers, kernel_size, levels):
    config = PriorConfig(**{**TINY, "num_layers": num_layers, "kernel_size": kernel_size, "num_levels": levels})
    height, width = config.grid_height, config.grid_width
    model = randomize_weights(build_prior(config))
    base = np.random.default_rng(1).integers(0, 8, (height, width)).astype(np.int32)
    batch = np.repeat(base[None], height * width + 1, axis=0)  # sample 0 unchanged, sample 1 + p changes p
    for p in range(height * width):
        batch[1 + p, p // width, p % width] = (base[p // width, p % width] + 3) % 8
    logits = model(prior_inputs(model, batch, np.full(len(batch), 2, np.int32) if levels else None)).numpy()
    diff = np.abs(logits[1:] - logits[:1]).max(axis=-1).reshape(height, width, height, width)  # [a, b, i, j]
    deps = expected_dependencies(height, width, num_layers, kernel_size).transpose(2, 3, 0, 1)  # [a, b, i, j]
    assert diff[~deps].max() < 1e-6, "a logit changed for a code outside its causal receptive field"
    assert diff[deps].min() > 1e-5, "a code inside the receptive field did not change a logit"
    reach = num_layers * (kernel_size // 2)
    for p in range(height * width):
        a, b = divmod(p, width)
        changed = diff[a, b].reshape(-1) > 1e-6
        assert not changed[:p + 1].any()  # nothing at or before p in raster order
        if b + 1 < width:
            assert diff[a, b, a, b + 1] > 1e-5  # the next position
        if a + 1 < height:
            assert diff[a, b, a + 1, b] > 1e-5  # directly below
            for j in (b - reach, b + reach):  # no blind spot: the far corners of the kernel reach below
                if 0 <= j < width:
                    assert diff[a, b, a + 1, j] > 1e-5


def test_keras_save_load_round_trip(tmp_path):
    model = randomize_weights(build_prior(PriorConfig(**TINY)))
    codes = np.random.default_rng(2).integers(0, 8, (2, 6, 7)).astype(np.int32)
    model.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert sum(isinstance(l, GatedPixelCNNLayer) for l in loaded.layers) == 2
    assert any(isinstance(l, LogitsHead) for l in loaded.layers)
    np.testing.assert_array_equal(loaded(codes).numpy(), model(codes).numpy())


def test_level_conditioned_prior_round_trips_with_its_level_frequencies(tmp_path):
    model = randomize_weights(build_prior(PriorConfig(**TINY, num_levels=3)))
    set_level_frequency(model, [0, 0, 2, 2, 2, 2])
    np.testing.assert_allclose(level_frequency(model), [1 / 3, 0, 2 / 3])
    codes = np.random.default_rng(2).integers(0, 8, (2, 6, 7)).astype(np.int32)
    levels = np.array([0, 2], np.int32)
    model.save(tmp_path / "prior.keras")
    loaded = keras.models.load_model(tmp_path / "prior.keras")
    assert num_levels(loaded) == 3
    np.testing.assert_allclose(level_frequency(loaded), [1 / 3, 0, 2 / 3])
    np.testing.assert_array_equal(loaded([codes, levels]).numpy(), model([codes, levels]).numpy())
    # The frequencies are data, not trained weights: an optimizer never sees them.
    assert [w.name for w in model.non_trainable_weights] == ["frequency"]


def test_level_maps_are_coarse_maps_upsampled_to_the_grid():
    layer = SliceLevelEmbedding(num_levels=3, output_dim=2, grid_height=6, grid_width=8, map_size=2)
    layer.build((None,))
    table = np.zeros((3, 2, 2, 2), np.float32)
    table[1, 0, 0] = 1.0  # level 1: the top-left cell of its map is on
    layer.table.assign(table)
    maps = keras.ops.convert_to_numpy(layer(np.array([0, 1])))
    assert maps.shape == (2, 6, 8, 2)
    assert np.abs(maps[0]).max() == 0  # level 0's map is all zero
    assert maps[1, 0, 0, 0] > maps[1, 5, 7, 0] and maps[1, 5, 7, 0] == 0  # on top-left, fades towards bottom-right


def test_prior_inputs_says_what_a_prior_needs():
    plain, conditioned = build_prior(PriorConfig(**TINY)), build_prior(PriorConfig(**TINY, num_levels=3))
    codes = np.zeros((1, 6, 7), np.int32)
    assert prior_inputs(plain, codes) is codes and num_levels(plain) == 0
    with pytest.raises(ValueError, match="not conditioned"):
        prior_inputs(plain, codes, np.zeros(1))
    with pytest.raises(ValueError, match="pass levels"):
        prior_inputs(conditioned, codes)


def test_training_lowers_loss_on_structured_codes():
    keras.utils.set_random_seed(0)
    config = PriorConfig(**TINY)
    model = build_prior(config)
    rows, cols = np.meshgrid(np.arange(6), np.arange(7), indexing="ij")
    offsets = np.random.default_rng(3).integers(0, 8, (32, 1, 1))
    codes = ((rows + cols + offsets) % 8).astype(np.int32)  # diagonal stripes: predictable from the left
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = prior_loss(batch, model(batch, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
        return loss

    first = float(prior_loss(codes, model(codes)))
    for _ in range(60):
        step(codes)
    last = float(prior_loss(codes, model(codes)))
    assert first > 1.8  # about log(8) at init
    assert last < 0.5 * first
    assert top1_accuracy(model(codes), codes) > 0.8


def test_bits_per_code_and_accuracy_match_numpy():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (2, 3, 4, 5)).astype(np.float32)
    codes = rng.integers(0, 5, (2, 3, 4))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    reference = -np.take_along_axis(log_probs, codes[..., None], -1).mean() / np.log(2)
    assert bits_per_code(logits, codes) == pytest.approx(reference, rel=1e-5)
    assert top1_accuracy(logits, codes) == pytest.approx((logits.argmax(-1) == codes).mean())
    uniform = np.zeros((1, 2, 2, 8), np.float32)
    assert bits_per_code(uniform, np.zeros((1, 2, 2), int)) == pytest.approx(3.0, rel=1e-6)


def test_the_slice_below_conditions_every_position_and_keeps_the_codes_causal():
    config = PriorConfig(**{**TINY, "num_levels": 2, "previous_slice": True})
    model = randomize_weights(build_prior(config))
    encoder = previous_layer(model)
    encoder.out_kernel.assign(np.random.default_rng(4).normal(size=encoder.out_kernel.shape).astype("float32"))
    height, width = config.grid_height, config.grid_width
    codes = np.random.default_rng(5).integers(0, 8, (1, height, width)).astype(np.int32)
    below = np.random.default_rng(6).integers(0, 9, (1, height, width)).astype(np.int32)
    levels = np.array([1], np.int32)
    logits = model(prior_inputs(model, codes, levels, below)).numpy()
    # One code of the slice below changed: every position near it changes, the top-left included
    # (the slice below is known in full, so nothing about it is causal).
    changed_below = below.copy()
    changed_below[0, 0, 0] = (below[0, 0, 0] + 1) % 9
    moved = np.abs(model(prior_inputs(model, codes, levels, changed_below)).numpy() - logits).max(axis=-1)[0]
    assert moved[0, 0] > 1e-4 and moved[1, 1] > 1e-4 and moved[2, 2] > 1e-4  # its 5x5 neighbourhood
    # The codes of this slice stay causal: changing the last code moves no logit.
    changed = codes.copy()
    changed[0, -1, -1] = (codes[0, -1, -1] + 1) % 8
    np.testing.assert_array_equal(model(prior_inputs(model, changed, levels, below)).numpy(), logits)


def test_a_condition_row_from_the_rows_around_it_is_that_row_of_the_whole_map():
    # What lets a slice start before the one below is finished (core.models.sampler.sample_volumes).
    model = randomize_weights(build_prior(PriorConfig(**{**TINY, "previous_slice": True})), seed=9)
    encoder = previous_layer(model)
    encoder.out_kernel.assign(np.random.default_rng(4).normal(size=encoder.out_kernel.shape).astype("float32"))
    height, width, reach = TINY["grid_height"], TINY["grid_width"], encoder.reach
    assert reach == 2  # two 3x3 convolutions
    below = np.random.default_rng(10).integers(0, 9, (2, height, width)).astype(np.int32)
    whole = encoder(below).numpy()
    for i in range(height):
        rows = np.arange(i - reach, i + reach + 1)
        on_grid = np.broadcast_to((rows >= 0) & (rows < height), (2, len(rows)))
        window = np.where(on_grid[:, :, None], below[:, np.clip(rows, 0, height - 1)], 3)  # off the grid: ignored
        np.testing.assert_allclose(encoder.row(window, on_grid).numpy(), whole[:, i], atol=1e-5)


def test_a_fresh_encoder_of_the_slice_below_adds_nothing(tmp_path):
    # Its last convolution starts at zero: a whole-brain prior with a slice prior's weights begins
    # as that slice prior (the warm start of core.training.prior_task).
    slice_prior = randomize_weights(build_prior(PriorConfig(**TINY, num_levels=2)), seed=3)
    volume = build_prior(PriorConfig(**TINY, num_levels=2, previous_slice=True))
    for layer in slice_prior.layers:
        if layer.get_weights():
            volume.get_layer(layer.name).set_weights(layer.get_weights())
    codes = np.random.default_rng(7).integers(0, 8, (2, 6, 7)).astype(np.int32)
    levels = np.array([0, 1], np.int32)
    below = np.random.default_rng(8).integers(0, 9, (2, 6, 7)).astype(np.int32)
    np.testing.assert_allclose(volume([codes, levels, below]).numpy(), slice_prior([codes, levels]).numpy(),
                               atol=1e-6)
    volume.save(tmp_path / "volume_prior.keras")
    loaded = keras.models.load_model(tmp_path / "volume_prior.keras")
    assert previous_layer(loaded).num_embeddings == 8 and start_token(loaded) == 8
    np.testing.assert_array_equal(loaded([codes, levels, below]).numpy(), volume([codes, levels, below]).numpy())
    with pytest.raises(ValueError, match="slice below"):
        prior_inputs(volume, codes, levels)
