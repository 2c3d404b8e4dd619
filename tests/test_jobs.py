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


@pytest.fixture(scope="module")
def volume_bundle(tmp_path_factory):
    """A tiny bundle with a slice and a whole-brain prior of 4 levels, their weights random so that slices differ."""
    from core.bundles import load_bundle
    from core.models.prior import level_layer, previous_layer
    from model_fixtures import randomize_weights

    import keras

    keras.utils.set_random_seed(0)  # the VQ-VAE's weights too: the same bundle whichever tests ran before
    loaded = load_bundle(make_tiny_bundle(tmp_path_factory.mktemp("volume") / "tiny", with_volume_prior=True))
    rng = np.random.default_rng(3)
    for prior in (loaded.prior, loaded.volume_prior):
        randomize_weights(prior, seed=int(rng.integers(100)))
        table = level_layer(prior).table  # unit-scale level maps, so that the level visibly steers the codes
        table.assign(rng.normal(size=table.shape).astype("float32"))
    encoder = previous_layer(loaded.volume_prior)  # and so does the slice below
    encoder.out_kernel.assign(rng.normal(size=encoder.out_kernel.shape).astype("float32"))
    return loaded


def decoded_stacks(bundle, monkeypatch) -> list:
    """Every code grid the VQ-VAE decodes from now on, as it is handed over."""
    handed, decode = [], bundle.vqvae.decode_indices
    monkeypatch.setattr(bundle.vqvae, "decode_indices", lambda codes: handed.append(np.array(codes)) or decode(codes))
    return handed


def full_pass_bits(prior, codes, level, below) -> np.ndarray:
    """Reference: total bits of each code grid given its slice below, from one plain forward pass."""
    import tensorflow as tf
    from core.models.prior import prior_inputs

    n = len(below)
    codes = np.repeat(codes, n, axis=0).astype(np.int32)
    logits = prior(prior_inputs(prior, codes, np.full(n, level, np.int32), below.astype(np.int32)))
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32)).numpy()
    return -np.take_along_axis(log_p, codes[..., None], axis=-1)[..., 0].sum(axis=(1, 2)) / np.log(2)


@pytest.mark.parametrize("level", [1, 2])
def test_a_brain_completed_from_a_real_slice_keeps_it_grows_up_from_it_and_picks_the_stack_below_it_fits(
        volume_bundle, monkeypatch, level):
    from core.models.sampler import sample_volumes

    real = np.random.default_rng(4).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    codes = volume_bundle.vqvae.encode_to_indices(real)
    handed = decoded_stacks(volume_bundle, monkeypatch)
    steps = []
    done = jobs.complete_volumes(volume_bundle.vqvae, volume_bundle.volume_prior, real, level, seed=5,
                                 candidates=3, progress=lambda d, t: steps.append((d, t)))
    assert done.volumes.shape == (2, 4, 32, 32) and done.level == level and steps[-1] == (3, 3)
    np.testing.assert_array_equal(done.volumes[:, level], real[..., 0])  # the real slice, not its reconstruction
    stacks = handed[-1].reshape(2, 4, 8, 8)
    np.testing.assert_array_equal(stacks[:, level], codes)
    # Above: the top of a stack grown from the real slice's codes.
    np.testing.assert_array_equal(stacks[:, level + 1:], sample_volumes(
        volume_bundle.volume_prior, 2, seed=5, temperature=jobs.VOLUME_TEMPERATURE, start=level + 1, below=codes))
    # Below: of the 3 stacks drawn for each brain, the one under which its real slice costs the fewest bits.
    drawn = sample_volumes(volume_bundle.volume_prior, 6, num_slices=level, seed=5,
                           temperature=jobs.VOLUME_TEMPERATURE).reshape(2, 3, level, 8, 8)
    for brain in range(2):
        bits = full_pass_bits(volume_bundle.volume_prior, codes[brain:brain + 1], level, drawn[brain, :, -1])
        # The candidates differ, and one is best beyond float noise: the choice is a real one.
        assert len({stack.tobytes() for stack in drawn[brain]}) == 3 and np.diff(np.sort(bits))[0] > 1e-3
        np.testing.assert_array_equal(stacks[brain, :level], drawn[brain, np.argmin(bits)])
        np.testing.assert_allclose(done.below_bits[brain], bits.min() / 64, rtol=1e-4)
    decoded = np.clip(volume_bundle.vqvae.decode_indices(stacks.reshape(8, 8, 8)), 0, 1)[..., 0].reshape(2, 4, 32, 32)
    others = [z for z in range(4) if z != level]
    np.testing.assert_allclose(done.volumes[:, others], decoded[:, others], atol=1e-6)


def test_a_brain_completed_from_its_base_or_vertex_draws_only_the_other_side(volume_bundle, monkeypatch):
    real = np.random.default_rng(6).uniform(size=(1, 32, 32, 1)).astype(np.float32)
    from_base = jobs.complete_volumes(volume_bundle.vqvae, volume_bundle.volume_prior, real, 0, seed=1)
    assert np.isnan(from_base.below_bits).all() and from_base.volumes.shape == (1, 4, 32, 32)
    from_vertex = jobs.complete_volumes(volume_bundle.vqvae, volume_bundle.volume_prior, real, 3, seed=1)
    assert np.isfinite(from_vertex.below_bits).all()
    np.testing.assert_array_equal(from_vertex.volumes[:, 3], real[..., 0])
    # Another seed, other slices around the same real one.
    other = jobs.complete_volumes(volume_bundle.vqvae, volume_bundle.volume_prior, real, 0, seed=2)
    assert not np.array_equal(other.volumes[:, 1:], from_base.volumes[:, 1:])


def test_completing_a_brain_refuses_a_level_the_prior_lacks_and_no_candidates(volume_bundle):
    real = np.zeros((1, 32, 32, 1), np.float32)
    for level in (-1, 4):
        with pytest.raises(ValueError, match=r"slice level in \[0, 4\)"):
            jobs.complete_volumes(volume_bundle.vqvae, volume_bundle.volume_prior, real, level)
    with pytest.raises(ValueError, match="candidates >= 1"):
        jobs.complete_volumes(volume_bundle.vqvae, volume_bundle.volume_prior, real, 1, candidates=0)


def test_the_most_likely_level_of_a_slice_weighs_its_likelihood_with_the_levels_frequencies(volume_bundle):
    from core import surprise
    from core.models.prior import level_layer, set_level_frequency

    prior = volume_bundle.prior
    real = np.random.default_rng(7).uniform(size=(32, 32, 1)).astype(np.float32)
    codes = volume_bundle.vqvae.encode_to_indices(real[None])
    bits = surprise.code_bits(prior, np.repeat(codes, 4, axis=0), [0, 1, 2, 3]).sum(axis=(1, 2))
    assert bits.max() - bits.min() > 1.0  # the levels disagree about this slice
    saved = np.array(level_layer(prior).frequency)
    try:
        for counts in ([1, 1, 1, 1], [1, 1, 1, 10**6], [10**6, 1, 1, 1]):
            set_level_frequency(prior, np.repeat(np.arange(4), counts))
            expected = int(np.argmax(np.log(np.array(counts) / sum(counts)) - bits * np.log(2)))
            assert jobs.most_likely_level(volume_bundle.vqvae, prior, real) == expected
        assert expected == 0  # a level a million times more common than the others wins
    finally:
        level_layer(prior).frequency.assign(saved)


def test_a_real_slice_s_level_comes_from_its_name_else_from_the_slice_prior_else_it_is_asked_for(volume_bundle):
    real = np.random.default_rng(9).uniform(size=(32, 32, 1)).astype(np.float32)
    vqvae, prior, volume_prior = volume_bundle.vqvae, volume_bundle.prior, volume_bundle.volume_prior
    assert jobs.real_slice_level(vqvae, prior, volume_prior, "case_441_slice_2.nii.png", real) == (2, "file name")
    estimated = (jobs.most_likely_level(vqvae, prior, real), "estimated by the slice prior")
    for name in ("scan.png", "case_441_slice_7.nii.png"):  # no level; a level the prior lacks (0..3)
        assert jobs.real_slice_level(vqvae, prior, volume_prior, name, real) == estimated
    with pytest.raises(ValueError, match="scan.png names no slice level below 4.*give the level"):
        jobs.real_slice_level(vqvae, None, volume_prior, "uploads/scan.png", real)
