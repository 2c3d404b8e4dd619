"""core.codebook: PCA projection against a NumPy reference, code occurrences, decoding one code, overlays."""
from __future__ import annotations

import numpy as np
import pytest

from core.codebook import (code_occurrences, codebook_report, decode_code, overlay_mask,
                           project_codebook_2d, split_codebook_report)
from core.models.vqvae import VQVAEConfig, build_vqvae

TINY = VQVAEConfig(image_size=16, downsample_factor=4, num_embeddings=8, embedding_dim=3,
                   hidden_channels=16, num_residual_blocks=1)


def test_projection_keeps_the_two_largest_directions():
    rng = np.random.default_rng(0)
    # Points spread along x (var 100) and y (var 4), hardly at all along z: PC1 ~ x, PC2 ~ y.
    vectors = rng.normal(size=(200, 3)) * np.array([10.0, 2.0, 0.01]) + 5.0
    coordinates, explained = project_codebook_2d(vectors)
    centred = vectors - vectors.mean(0)
    assert coordinates.shape == (200, 2)
    assert abs(np.corrcoef(coordinates[:, 0], centred[:, 0])[0, 1]) > 0.99
    assert abs(np.corrcoef(coordinates[:, 1], centred[:, 1])[0, 1]) > 0.99
    assert explained[0] > explained[1] > 0 and explained.sum() <= 1.0 + 1e-6
    np.testing.assert_allclose(coordinates.mean(0), 0.0, atol=1e-4)


def test_projection_of_one_dimensional_codes_lies_on_the_x_axis():
    coordinates, _ = project_codebook_2d(np.arange(5.0)[:, None])
    assert coordinates.shape == (5, 2) and np.all(coordinates[:, 1] == 0)


def test_projection_refuses_a_vector():
    with pytest.raises(ValueError, match="codebook"):
        project_codebook_2d(np.zeros(4))


def test_code_occurrences_counts_and_orders_slices():
    indices = np.array([[[1, 2], [1, 1]], [[0, 0], [0, 0]], [[2, 1], [0, 0]]])
    found = code_occurrences(indices, 1)
    assert found.counts.tolist() == [3, 0, 1] and found.total == 4
    assert found.slices_with_code.tolist() == [0, 2]
    assert found.masks[0].tolist() == [[True, False], [True, True]]
    with pytest.raises(ValueError):
        code_occurrences(indices[0], 1)


def test_report_and_decode_code_on_a_tiny_model(oasis_tree):
    model = build_vqvae(TINY)
    report = split_codebook_report(model, oasis_tree, "test", limit=5)
    assert len(report.names) == 5 and report.images.shape == (5, 16, 16)
    assert report.indices.shape == (5, 4, 4) and report.projection.shape == (8, 2)
    assert report.stats.counts.sum() == 5 * 16
    np.testing.assert_array_equal(report.indices, model.encode_to_indices(report.images[..., None]))
    same = codebook_report(model, report.images[..., None], report.names)
    np.testing.assert_array_equal(same.stats.counts, report.stats.counts)
    patch = decode_code(model, 3)
    assert patch.shape == (16, 16) and 0.0 <= patch.min() and patch.max() <= 1.0
    with pytest.raises(ValueError, match="code"):
        decode_code(model, 8)


def test_overlay_tints_only_the_masked_cells():
    image = np.full((8, 8), 0.5, np.float32)
    mask = np.zeros((2, 2), bool)
    mask[0, 1] = True
    rgb = overlay_mask(image, mask)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert (rgb[4:, :, 0] == rgb[4:, :, 1]).all()  # grey outside the mask
    assert (rgb[:4, 4:, 0] > rgb[:4, 4:, 1]).all()  # tinted inside
