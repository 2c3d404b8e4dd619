"""core.vqvae: config validation and round trips, shapes, the index API, and `.keras` save -> load."""
from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest

from core.models.vqvae import VQVAE, VQVAEConfig, build_vqvae


def tiny_config(**overrides) -> VQVAEConfig:
    values = dict(image_size=32, downsample_factor=4, num_embeddings=16, embedding_dim=4,
                  hidden_channels=16, num_residual_blocks=1)
    return VQVAEConfig(**{**values, **overrides})


def images(count: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, size, size, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> VQVAE:
    vqvae = build_vqvae(tiny_config())
    # One EMA training call so the codebook is no longer its initialisation (save/load must keep it).
    vqvae(images(4, seed=1), training=True)
    return vqvae


# --- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("image_size", 4),
    ("image_size", 30),  # not divisible by the factor 4
    ("downsample_factor", 1),
    ("downsample_factor", 3),
    ("downsample_factor", 0),
    ("downsample_factor", 64),  # larger than the image
    ("num_embeddings", 1),
    ("embedding_dim", 0),
    ("hidden_channels", 0),
    ("num_residual_blocks", -1),
    ("commitment_cost", -0.25),
    ("ema_decay", 1.0),
    ("ema_decay", 0.0),
    ("dead_code_threshold", -1.0),
])
def test_invalid_config_field_raises_value_error(field, value):
    with pytest.raises(ValueError, match=field if field != "image_size" or value < 8 else "divisible"):
        tiny_config(**{field: value})


def test_config_is_frozen_and_derives_the_grid():
    config = tiny_config(downsample_factor=8)
    assert (config.code_grid, config.num_downsamplings) == (4, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.image_size = 64


def test_config_json_round_trip():
    config = tiny_config(commitment_cost=0.5, use_ema=False, ema_decay=0.9, dead_code_threshold=0.0)
    text = json.dumps(config.to_dict())
    assert json.loads(text) == dataclasses.asdict(config)
    assert VQVAEConfig.from_dict(json.loads(text)) == config
    with pytest.raises(ValueError, match="unknown_future_field"):  # one rule for every config
        VQVAEConfig.from_dict({**config.to_dict(), "unknown_future_field": 1})


def test_default_config_is_valid():
    assert VQVAEConfig().code_grid == 64


# --- shapes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_output_and_index_shapes_per_downsample_factor(factor):
    vqvae = build_vqvae(tiny_config(downsample_factor=factor))
    x = images(2)
    grid = 32 // factor
    assert tuple(vqvae(x).shape) == (2, 32, 32, 1)
    assert tuple(vqvae.encoder(x).shape) == (2, grid, grid, 4)
    indices = vqvae.encode_to_indices(x)
    assert indices.shape == (2, grid, grid) and indices.dtype == np.int32
    assert indices.min() >= 0 and indices.max() < 16
    assert vqvae.decode_indices(indices).shape == (2, 32, 32, 1)


def test_decoding_random_indices_gives_images(model):
    indices = np.random.default_rng(2).integers(0, 16, (5, 8, 8))
    decoded = model.decode_indices(indices, batch_size=2)  # batched in chunks of 2
    assert decoded.shape == (5, 32, 32, 1) and decoded.dtype == np.float32
    assert np.all(np.isfinite(decoded))
    np.testing.assert_allclose(model.decode_indices(indices[3:4]), decoded[3:4], rtol=1e-5, atol=1e-6)


def test_empty_inputs_give_empty_outputs(model):
    assert model.encode_to_indices(np.zeros((0, 32, 32, 1))).shape == (0, 8, 8)
    assert model.decode_indices(np.zeros((0, 8, 8), int)).shape == (0, 32, 32, 1)


def test_lookup_returns_code_vectors(model):
    indices = np.array([[0, 3], [15, 3]])
    np.testing.assert_allclose(np.asarray(model.lookup(indices)), model.codebook()[indices], atol=0)


# --- the index API ------------------------------------------------------------------------------
def test_decode_of_encode_equals_forward_pass(model):
    x = images(5, seed=3)
    np.testing.assert_allclose(model.decode_indices(model.encode_to_indices(x, batch_size=2)),
                               np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_indices_match_nearest_code_of_encoder_output(model):
    x = images(2, seed=4)
    latents = np.asarray(model.encoder(x)).reshape(-1, 4)
    distances = ((latents[:, None] - model.codebook()[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(model.encode_to_indices(x).ravel(), distances.argmin(1))


def test_reconstruct_is_clipped_forward_pass(model):
    x = images(2, seed=5)
    reconstruction = model.reconstruct(x)
    assert reconstruction.min() >= 0.0 and reconstruction.max() <= 1.0
    np.testing.assert_allclose(reconstruction, np.clip(np.asarray(model(x)), 0, 1), atol=1e-5)


def test_evaluation_call_does_not_change_the_codebook(model):
    before = model.codebook().copy()
    model(images(2, seed=6))
    model.encode_to_indices(images(2, seed=6))
    np.testing.assert_array_equal(model.codebook(), before)


# --- saving -------------------------------------------------------------------------------------
def test_keras_save_and_load_gives_identical_outputs(model, tmp_path):
    path = tmp_path / "vqvae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, VQVAE)
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.codebook(), model.codebook())
    x = images(3, seed=7)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.encode_to_indices(x), model.encode_to_indices(x))
    for saved, restored in zip(model.quantizer.weights, loaded.quantizer.weights):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored), err_msg=saved.path)


def test_model_config_round_trip():
    vqvae = VQVAE(tiny_config(downsample_factor=2))
    clone = VQVAE.from_config(json.loads(json.dumps(vqvae.get_config())))
    assert clone.config == vqvae.config
    assert VQVAE(tiny_config().to_dict()).config == tiny_config()
