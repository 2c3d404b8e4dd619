"""core.models.reference: the reference feature network's config, shapes and .keras round trip."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from core.models.reference import ReferenceConfig, ReferenceNetwork, build_reference_network

TINY = ReferenceConfig(input_size=16, filters=(4, 8), feature_dim=6, num_levels=4)


def test_features_and_logits_have_the_configured_shapes_for_any_input_size():
    model = build_reference_network(TINY)
    for side in (16, 32, 45):
        images = np.random.default_rng(side).uniform(0, 1, (3, side, side, 1)).astype(np.float32)
        assert model.features(images).shape == (3, 6)
        assert tuple(model(images).shape) == (3, 4)
    assert model.features(np.zeros((0, 16, 16, 1), np.float32)).shape == (0, 6)


def test_features_are_the_same_in_any_batch_size():
    model = build_reference_network(TINY)
    images = np.random.default_rng(0).uniform(0, 1, (5, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(model.features(images, batch_size=2), model.features(images, batch_size=5),
                               rtol=1e-5, atol=1e-6)


def test_bundle_round_trips_to_the_same_features(tmp_path):
    model = build_reference_network(TINY)
    images = np.random.default_rng(1).uniform(0, 1, (4, 24, 24, 1)).astype(np.float32)
    model.save(tmp_path / "reference.keras")
    loaded = keras.saving.load_model(tmp_path / "reference.keras", compile=False)
    assert isinstance(loaded, ReferenceNetwork) and loaded.config == TINY
    np.testing.assert_allclose(loaded.features(images), model.features(images), rtol=0, atol=1e-6)


def test_config_round_trips_through_json():
    assert ReferenceConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY


@pytest.mark.parametrize("values", [dict(input_size=8, filters=(4, 8, 8, 8)), dict(feature_dim=0),
                                    dict(num_levels=1), dict(filters=())])
def test_invalid_configs_raise(values):
    with pytest.raises(ValueError, match="Expected"):
        ReferenceConfig(**values)
