"""core.scoring: one compiled reconstruct-and-score pass equals the model's own index API and the metrics module."""
from __future__ import annotations

import numpy as np
import pytest

from helpers_bundle import TINY_VQVAE
from model_fixtures import randomize_weights
from oasis_fixtures import brain_slice, make_oasis_tree, write_png
from core import data, metrics, scoring
from core.models.vqvae import VQVAEConfig, build_vqvae


@pytest.fixture(scope="module")
def vqvae():
    model = build_vqvae(VQVAEConfig(**TINY_VQVAE))
    randomize_weights(model, seed=3)
    return model


def slices(count: int, size: int = 32) -> np.ndarray:
    return np.stack([brain_slice(seed, size) for seed in range(count)])[..., None].astype(np.float32) / 255.0


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_score_slices_equals_the_index_api_and_the_metrics(vqvae, batch_size):
    images = slices(7)  # 7: batches of 3 leave a remainder of 1
    scores = scoring.score_slices(vqvae, images, batch_size)
    indices = vqvae.encode_to_indices(images)
    reconstructions = vqvae.reconstruct(images)
    np.testing.assert_allclose(scores.reconstructions, reconstructions, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(scores.code_counts, np.bincount(indices.ravel(), minlength=16))
    expected = metrics.image_scores(images, reconstructions)
    np.testing.assert_allclose(scores.ssim, expected["ssim"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores.mse, expected["mse"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(scores.psnr, expected["psnr"], rtol=1e-4)


def test_score_slices_follows_the_weights_as_they_change(vqvae):
    # Training validates every epoch with the same compiled pass: it must read the current weights.
    images = slices(2)
    before = scoring.score_slices(vqvae, images).reconstructions
    saved = vqvae.get_weights()
    randomize_weights(vqvae, seed=9)
    try:
        after = scoring.score_slices(vqvae, images).reconstructions
        np.testing.assert_allclose(after, vqvae.reconstruct(images), rtol=0, atol=1e-5)
        assert not np.allclose(before, after)
    finally:
        vqvae.set_weights(saved)


@pytest.mark.parametrize("batch_size", [0, -2])
def test_score_slices_rejects_a_batch_size_below_one(vqvae, batch_size):
    with pytest.raises(ValueError, match="Expected a batch size of at least 1"):
        scoring.score_slices(vqvae, slices(2), batch_size)


def test_evaluate_split_rejects_a_limit_below_one(vqvae, oasis_tree):
    for limit in (0, -1):
        with pytest.raises(ValueError, match="Expected a limit of at least 1"):
            scoring.evaluate_split(vqvae, str(oasis_tree), "validate", limit=limit)


def test_evaluate_split_reads_an_oasis_tree_a_split_only_folder_and_a_plain_folder(vqvae, tmp_path):
    tree = make_oasis_tree(tmp_path / "tree", {"validate": 5})
    only = tmp_path / "only"
    plain = tmp_path / "plain"
    for index, path in enumerate(sorted((tree / data.DATA_FOLDER / "keras_png_slices_validate").iterdir())):
        write_png(only / "keras_png_slices_validate" / path.name, brain_slice(index))
        write_png(plain / path.name, brain_slice(index))
    results = [scoring.evaluate_split(vqvae, str(folder), "validate") for folder in (tree, only, plain)]
    assert [r["n_images"] for r in results] == [5, 5, 5]
    assert results[0]["ssim"] == pytest.approx(results[1]["ssim"], abs=1e-6)
    assert results[0]["ssim"] == pytest.approx(results[2]["ssim"], abs=1e-6)


def test_find_slices_sorts_a_plain_folder_as_a_person_reads_it(tmp_path):
    for name in ("case_1_slice_10.png", "case_1_slice_9.png", "case_1_slice_0.png"):
        write_png(tmp_path / name, brain_slice(0, 16))
    assert [p.name for p in data.find_slices(tmp_path, "test")] == [
        "case_1_slice_0.png", "case_1_slice_9.png", "case_1_slice_10.png"]


def test_find_slices_of_a_folder_without_slices_says_what_it_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(data.DataError, match="holds no PNG slices"):
        data.find_slices(tmp_path, "test")
    with pytest.raises(data.DataError, match="does not exist"):
        data.find_slices(tmp_path / "missing", "test")


def test_find_slices_of_an_oasis_tree_without_the_split_names_the_missing_folder(tmp_path):
    tree = make_oasis_tree(tmp_path, {"train": 2, "validate": 2})
    with pytest.raises(data.DataError, match="keras_png_slices_test"):
        data.find_slices(tree, "test")
