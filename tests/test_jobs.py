"""core.jobs: reconstruction reports, split slices, generation and completion."""
from __future__ import annotations

import numpy as np
import pytest

from core import jobs
from core.data import DataError
from helpers_bundle import make_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from core.bundles import load_bundle

    return load_bundle(make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny"))


def test_reconstruction_report_scores_each_slice(bundle):
    images = np.random.default_rng(0).uniform(size=(3, 32, 32, 1)).astype(np.float32)
    report = jobs.reconstruct_and_score(bundle.vqvae, images, ["a", "b", "c"])
    assert report.originals.shape == report.reconstructions.shape == (3, 32, 32)
    np.testing.assert_allclose(report.differences, report.reconstructions - report.originals)
    assert report.ssim.shape == report.psnr.shape == (3,)
    assert [row["slice"] for row in report.rows()] == ["a", "b", "c"]


def test_generate_gives_n_images_in_unit_range(bundle):
    brains = jobs.generate_brains(bundle.vqvae, bundle.prior, 2, seed=1)
    assert brains.images.shape == (2, 32, 32) and 0 <= brains.images.min() and brains.images.max() <= 1
    again = jobs.generate_brains(bundle.vqvae, bundle.prior, 2, seed=1)
    np.testing.assert_array_equal(brains.images, again.images)
    np.testing.assert_array_equal(brains.levels, again.levels)
    assert brains.levels.shape == (2,) and set(brains.levels) <= {0, 1, 2, 3}


def test_generate_at_a_chosen_level_names_it(bundle):
    brains = jobs.generate_brains(bundle.vqvae, bundle.prior, 3, seed=1, level=2)
    assert brains.levels.tolist() == [2, 2, 2]
    assert brains.names("brain") == ["brain_00_level2", "brain_01_level2", "brain_02_level2"]
    with pytest.raises(ValueError, match="levels in \\[0, 4\\)"):
        jobs.generate_brains(bundle.vqvae, bundle.prior, 1, level=4)


def test_level_from_name_only_gives_levels_the_prior_knows(bundle):
    assert jobs.level_from_name(bundle.prior, "case_441_slice_3.nii.png") == 3
    assert jobs.level_from_name(bundle.prior, "case_441_slice_30.nii.png") is None  # the tiny prior knows 0..3
    assert jobs.level_from_name(bundle.prior, "upload.png") is None


def test_brains_without_levels_are_named_by_index():
    brains = jobs.Brains(np.zeros((12, 4, 4)), None)
    assert brains.names("s")[0] == "s_00" and brains.names("s")[-1] == "s_11"


def test_complete_keeps_the_code_rows_above_and_samples_below(bundle, monkeypatch):
    slice_ = np.random.default_rng(1).uniform(size=(32, 32, 1)).astype(np.float32)
    original = bundle.vqvae.encode_to_indices(slice_[None])  # (1, 8, 8)
    decoded_codes, decode = [], bundle.vqvae.decode_indices
    monkeypatch.setattr(bundle.vqvae, "decode_indices",
                        lambda codes: decoded_codes.append(codes.copy()) or decode(codes))
    steps = []
    done = jobs.complete_brain(bundle.vqvae, bundle.prior, slice_, 4, 3, seed=2,
                                    progress=lambda d, t: steps.append((d, t)))
    assert done.images.shape == (3, 32, 32) and steps[-1] == (8, 8)
    assert done.levels.shape == (3,)
    (codes,) = decoded_codes
    np.testing.assert_array_equal(codes[:, :4], np.repeat(original[:, :4], 3, axis=0))
    assert not all(np.array_equal(codes[i, 4:], original[0, 4:]) for i in range(3))


def test_split_slices_load_resized_and_missing_names_are_data_errors(oasis_tree):
    names = jobs.split_slice_names(oasis_tree, "test")
    images = jobs.load_split_slices(oasis_tree, names[:2], 16)
    assert images.shape == (2, 16, 16, 1)
    with pytest.raises(DataError, match="no slice named"):
        jobs.load_split_slices(oasis_tree, ["nope.png"], 16)


def test_find_split_slice_loads_a_slice_by_name_or_gives_none(oasis_tree):
    from core import data
    names = jobs.split_slice_names(oasis_tree, "test")
    found = jobs.find_split_slice(oasis_tree, names[1], 32, "test")
    np.testing.assert_array_equal(found, jobs.load_split_slices(oasis_tree, [names[1]], 32, "test")[0])
    assert jobs.find_split_slice(oasis_tree, "case_999_slice_3.nii.png", 32, "test") is None
    assert jobs.find_split_slice(oasis_tree, "../" + names[1], 32, "test") is None  # names, not paths
    assert jobs.find_split_slice(oasis_tree, None, 32, "test") is None
    # A folder holding only that split's slices works too.
    only = data.find_data_root(oasis_tree) / data.split_folder_name("test")
    assert jobs.find_split_slice(only, names[1], 32, "test").shape == (32, 32, 1)


def test_find_split_slice_reads_only_the_slice_it_finds(tmp_path):
    from core import data
    from oasis_fixtures import make_oasis_tree
    root = make_oasis_tree(tmp_path, {"test": 4}, image_size=32)
    split = root / "keras_png_slices_data" / "keras_png_slices_test"
    (split / "case_009_slice_0.nii.png").write_bytes(b"not a png")  # the split fails a full scan
    with pytest.raises(DataError):
        data.find_slices(root, "test")
    assert jobs.find_split_slice(root, "case_001_slice_1.nii.png", 32, "test").shape == (32, 32, 1)


def test_a_level_for_an_unconditional_prior_is_refused(bundle):
    from core.models.prior import PriorConfig, build_prior

    plain = build_prior(PriorConfig(num_embeddings=16, grid_height=8, grid_width=8, filters=8, num_layers=2,
                                    embedding_dim=8, head_filters=16))
    with pytest.raises(ValueError, match="not conditioned"):
        jobs.generate_brains(bundle.vqvae, plain, 1, level=0)
    assert jobs.generate_brains(bundle.vqvae, plain, 1).levels is None
