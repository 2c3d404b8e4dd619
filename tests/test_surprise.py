"""Tests for core.surprise: per-code bits against a NumPy reference, the level marginal, ranks and folders."""
import math

import numpy as np
import pytest

from core import surprise
from core.models.prior import PriorConfig, build_prior, set_level_frequency
from core.models.vqvae import VQVAEConfig, build_vqvae
from helpers_bundle import TINY_VQVAE
from model_fixtures import randomize_weights

TINY = dict(num_embeddings=8, grid_height=5, grid_width=6, filters=8, num_layers=2, kernel_size=3,
            embedding_dim=4, head_filters=16)


def numpy_bits(logits: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """-log2 softmax(logits)[code] in float64 NumPy."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_softmax, codes[..., None].astype(np.int64), axis=-1)[..., 0]
    return -picked / math.log(2.0)


@pytest.fixture(scope="module")
def prior():
    return randomize_weights(build_prior(PriorConfig(**TINY)))


@pytest.fixture(scope="module")
def level_prior():
    model = randomize_weights(build_prior(PriorConfig(**TINY, num_levels=3)))
    set_level_frequency(model, [0, 1, 1, 2, 2, 2])
    return model


def codes(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 8, (n, 5, 6)).astype(np.int32)


def test_bits_match_a_numpy_log_softmax_and_sum_to_the_teacher_forced_total(prior):
    grids = codes()
    bits = surprise.code_bits(prior, grids)
    logits = np.asarray(prior(grids))
    np.testing.assert_allclose(bits, numpy_bits(logits, grids), rtol=1e-4, atol=1e-4)
    # The total is the slice's negative log2-likelihood: the prior's own cross-entropy loss times H*W.
    from core.models.prior import bits_per_code
    for i in range(len(grids)):
        assert bits[i].sum() == pytest.approx(bits_per_code(logits[i:i + 1], grids[i:i + 1]) * 30, rel=1e-4)


def test_a_code_changed_to_an_unlikely_one_raises_that_positions_bits(prior):
    grid = codes(1, seed=3)
    logits = np.asarray(prior(grid))
    i, j = 2, 3
    unlikely = int(np.argmin(logits[0, i, j]))
    likely = int(np.argmax(logits[0, i, j]))
    grid[0, i, j] = likely
    before = surprise.code_bits(prior, grid)
    grid[0, i, j] = unlikely
    after = surprise.code_bits(prior, grid)
    assert after[0, i, j] > before[0, i, j] + 0.1
    # Positions before (i, j) in raster order do not see it: their bits are unchanged.
    flat_before, flat_after = before.reshape(-1), after.reshape(-1)
    np.testing.assert_allclose(flat_after[:i * 6 + j], flat_before[:i * 6 + j], atol=1e-6)


def test_a_known_level_uses_that_levels_conditional(level_prior):
    grids = codes(2, seed=5)
    bits = surprise.code_bits(level_prior, grids, [2, 0])
    logits = np.asarray(level_prior([grids, np.array([2, 0], np.int32)]))
    np.testing.assert_allclose(bits, numpy_bits(logits, grids), rtol=1e-4, atol=1e-4)


def test_an_unknown_level_is_marginalised_with_the_level_frequencies(level_prior):
    grid = codes(1, seed=7)
    bits = surprise.code_bits(level_prior, grid, [None])
    # Reference: log p(codes) = log sum_l p(l) p(codes | l), each term from a conditional pass.
    per_level = [numpy_bits(np.asarray(level_prior([grid, np.array([l], np.int32)])), grid).sum()
                 for l in range(3)]
    frequency = np.array([1, 2, 3]) / 6
    expected = -np.log2(np.sum(frequency * 2.0 ** -np.array(per_level)))
    assert bits.sum() == pytest.approx(expected, rel=1e-6)
    assert (bits > 0).all()  # each code's share is a conditional probability below one


def test_levels_are_checked(prior, level_prior):
    with pytest.raises(ValueError, match="not conditioned"):
        surprise.code_bits(prior, codes(1), [1])
    with pytest.raises(ValueError, match=r"Expected slice levels in \[0, 3\)"):
        surprise.code_bits(level_prior, codes(1), [3])
    with pytest.raises(ValueError, match="one level per code grid"):
        surprise.code_bits(level_prior, codes(2), [1])
    with pytest.raises(ValueError, match=r"Expected code grids"):
        surprise.code_bits(prior, np.zeros((5, 6), np.int32))


def test_levels_come_from_names_only_when_the_prior_knows_them(level_prior, prior):
    names = ["case_001_slice_2.nii.png", "case_001_slice_9.nii.png", "upload.png"]
    assert surprise.slice_levels_for(level_prior, names) == [2, None, None]
    assert surprise.slice_levels_for(prior, names) == [None, None, None]


def test_rank_against_the_same_level_else_all():
    values, levels = np.array([1.0, 2.0, 3.0, 4.0]), [0, 0, 1, None]
    assert surprise.rank(2.5, 0, values, levels) == (1.0, 2)
    assert surprise.rank(2.5, 1, values, levels) == (0.0, 1)
    assert surprise.rank(2.5, None, values, levels) == (0.5, 4)
    assert surprise.rank(2.5, 7, values, levels) == (0.5, 4)  # no reference slice of that level
    with pytest.raises(ValueError, match="one level per reference value"):
        surprise.rank(2.5, 0, values, levels[:3])


def test_block_means_match_a_loop_over_every_block():
    bits = np.random.default_rng(4).exponential(2.0, (3, 7, 9))
    means = surprise.block_means(bits, 3)
    assert means.shape == (3, 5, 7)
    for n in range(3):
        for i in range(5):
            for j in range(7):
                assert means[n, i, j] == pytest.approx(bits[n, i:i + 3, j:j + 3].mean(), rel=1e-12)
    # A grid smaller than the block: one block, the whole grid.
    np.testing.assert_allclose(surprise.block_means(bits[:, :2, :2], 3)[:, 0, 0], bits[:, :2, :2].mean(axis=(1, 2)))


def test_the_hot_spot_finds_a_planted_block_that_the_total_does_not_rank_first():
    rng = np.random.default_rng(5)
    side = surprise.HOT_SPOT
    bits = rng.uniform(0.0, 1.0, (3, 16, 16))
    bits[0] += 2.0  # much more brain: the largest total, but no block stands out
    bits[1, 9:9 + side, 4:4 + side] += 6.0  # a small lesion, in one block
    scored = surprise.Surprise(["a", "b", "c"], bits, [None] * 3)
    assert int(np.argmax(scored.total_bits)) == 0
    assert int(np.argmax(scored.hot_spot_bits)) == 1
    assert scored.hot_spot_corner[1].tolist() == [9, 4] and scored.hot_spot_side == side
    assert surprise.Surprise(["d"], bits[:1, :2, :5], [None]).hot_spot_side == 2  # a grid smaller than a block
    assert scored.hot_spot_bits[1] == pytest.approx(bits[1, 9:9 + side, 4:4 + side].mean())
    row = scored.rows()[1]
    assert row["hot_spot_bits"] == pytest.approx(scored.hot_spot_bits[1], abs=1e-3)


def test_the_hot_spot_is_where_bits_exceed_what_the_prior_expected():
    rng = np.random.default_rng(6)
    side = surprise.HOT_SPOT
    expected = rng.uniform(0.0, 1.0, (1, 16, 16))
    expected[0, 1:1 + side, 1:1 + side] += 8.0  # the prior was unsure here: many bits, as expected
    bits = expected + rng.uniform(0.0, 0.1, expected.shape)
    bits[0, 10:10 + side, 8:8 + side] += 3.0  # fewer bits than the unsure block, but unexpected
    scored = surprise.Surprise(["a"], bits, [None], expected)
    assert scored.hot_spot_corner[0].tolist() == [10, 8]
    assert surprise.Surprise(["a"], bits, [None]).hot_spot_corner[0].tolist() == [1, 1]  # bits alone
    np.testing.assert_allclose(scored.excess_bits, bits - expected)
    row = scored.rows()[0]
    assert row["expected_bits"] == pytest.approx(expected.sum(), abs=1e-3)
    assert row["bits"] == pytest.approx(bits.sum(), abs=1e-3)


def numpy_entropy_bits(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -(np.exp(log_p) * log_p).sum(axis=-1) / math.log(2.0)


def test_expected_bits_are_the_entropy_of_each_prediction(prior, level_prior):
    grids = codes(2, seed=8)
    bits, expected = surprise.score_codes(prior, grids)
    np.testing.assert_allclose(expected, numpy_entropy_bits(np.asarray(prior(grids))), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bits, surprise.code_bits(prior, grids))
    levels = np.array([1, 2], np.int32)
    _, expected = surprise.score_codes(level_prior, grids, [1, 2])
    np.testing.assert_allclose(expected, numpy_entropy_bits(np.asarray(level_prior([grids, levels]))),
                               rtol=1e-4, atol=1e-4)


def test_marginal_expected_bits_are_the_entropy_of_the_level_mixture(level_prior):
    grid = codes(1, seed=9)
    _, expected = surprise.score_codes(level_prior, grid, [None])
    # Reference: at code t the prediction is sum_l p(l | c_<t) p(. | c_<t, l).
    flat = grid.reshape(-1)
    distributions, log_joint = [], []
    for level in range(3):
        logits = np.asarray(level_prior([grid, np.array([level], np.int32)]), np.float64).reshape(flat.size, -1)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        distributions.append(p)
        log_joint.append(np.log([1, 2, 3][level] / 6) + np.concatenate([[0.0], np.cumsum(np.log(p[np.arange(flat.size), flat]))[:-1]]))
    weights = np.exp(np.array(log_joint) - np.array(log_joint).max(axis=0))
    weights /= weights.sum(axis=0)
    mixture = np.einsum("lt,ltk->tk", weights, np.array(distributions))
    reference = -(mixture * np.log(mixture)).sum(axis=1) / math.log(2.0)
    np.testing.assert_allclose(expected.reshape(-1), reference, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def whole_brain_prior():
    model = randomize_weights(build_prior(PriorConfig(**{**TINY, "grid_height": 8, "grid_width": 8},
                                                      num_levels=2, previous_slice=True)))
    set_level_frequency(model, [0, 1])
    return model


def test_a_whole_brain_prior_scores_a_slice_given_the_slice_below(whole_brain_prior):
    from core.models.prior import start_token

    vqvae = build_vqvae(VQVAEConfig(**{**TINY_VQVAE, "num_embeddings": 8}))
    rng = np.random.default_rng(10)
    images = rng.uniform(0, 1, (2, 32, 32, 1)).astype(np.float32)
    below = rng.uniform(0, 1, (32, 32, 1)).astype(np.float32)
    names = ["case_001_slice_1.nii.png", "case_001_slice_0.nii.png"]
    scored = surprise.image_surprise(vqvae, whole_brain_prior, images, names, below=[below, None])
    assert scored.given_below == [True, True] and scored.levels == [1, 0]  # the base slice: given none, as trained
    grid = vqvae.encode_to_indices(images)
    previous = np.stack([vqvae.encode_to_indices(below[None])[0], np.full((8, 8), start_token(whole_brain_prior))])
    logits = np.asarray(whole_brain_prior([grid, np.array([1, 0], np.int32), previous.astype(np.int32)]))
    np.testing.assert_allclose(scored.bits, numpy_bits(logits, grid), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scored.expected_bits, numpy_entropy_bits(logits), rtol=1e-4, atol=1e-4)
    # Another slice below changes the bits: the context is used.
    other = surprise.image_surprise(vqvae, whole_brain_prior, images[:1], names[:1], below=[1.0 - below])
    assert np.abs(other.bits[0] - scored.bits[0]).max() > 1e-3
    # A slice above the base without its slice below is scored with the "no slice below" code: not given.
    alone = surprise.image_surprise(vqvae, whole_brain_prior, images[:1], names[:1], below=[None])
    assert alone.given_below == [False] and [row["given_below"] for row in alone.rows()] == [False]


def test_slice_below_of_tells_which_slices_a_whole_brain_prior_can_score():
    store = {"case_001_slice_4.nii.png": np.ones((4, 4, 1))}
    known, below = surprise.slice_below_of("case_001_slice_5.nii.png", store.get)
    assert known and below is store["case_001_slice_4.nii.png"]
    assert surprise.slice_below_of("case_001_slice_0.nii.png", store.get) == (True, None)  # a base: the token
    assert surprise.slice_below_of("case_001_slice_9.nii.png", store.get) == (False, None)  # not found
    assert surprise.slice_below_of("scan.png", store.get) == (False, None)  # no case or slice


def test_the_slice_below_is_for_a_whole_brain_prior_only(prior, whole_brain_prior):
    vqvae = build_vqvae(VQVAEConfig(**{**TINY_VQVAE, "num_embeddings": 8}))
    image = np.zeros((1, 32, 32, 1), np.float32)
    slice_prior = build_prior(PriorConfig(**{**TINY, "grid_height": 8, "grid_width": 8}))
    with pytest.raises(ValueError, match="(?i)slice below|previous"):
        surprise.image_surprise(vqvae, slice_prior, image, ["a.png"], below=[None])
    with pytest.raises(ValueError, match="(?i)slice below|previous"):
        surprise.image_surprise(vqvae, whole_brain_prior, image, ["case_001_slice_1.png"])
    with pytest.raises(ValueError, match="one slice below"):
        surprise.image_surprise(vqvae, whole_brain_prior, image, ["case_001_slice_1.png"], below=[None, None])


def test_folder_surprise_with_a_whole_brain_prior_reads_each_slice_below_from_the_folder(oasis_tree, whole_brain_prior):
    from core import data

    vqvae = build_vqvae(VQVAEConfig(**{**TINY_VQVAE, "num_embeddings": 8}))
    folder = oasis_tree / "keras_png_slices_data" / "keras_png_slices_validate"
    result = surprise.folder_surprise(vqvae, whole_brain_prior, folder, limit=4)
    assert result.given_below == [True] * 4 and len(result.names) == 4  # every slice's slice below is there
    paths = data.find_slices(folder, "validate")
    below = data.slice_below(paths)
    for name, bits in zip(result.names, result.bits):
        i = [p.name for p in paths].index(name)
        under = None if below[i] < 0 else data.load_images([paths[below[i]]], 32)[0]
        alone = surprise.image_surprise(vqvae, whole_brain_prior, data.load_images([paths[i]], 32), [name], [under])
        np.testing.assert_allclose(bits, alone.bits[0], rtol=1e-6, atol=1e-6)


def test_folder_surprise_says_which_slices_had_no_slice_below_in_the_folder(tmp_path, whole_brain_prior):
    from oasis_fixtures import brain_slice, write_png

    vqvae = build_vqvae(VQVAEConfig(**{**TINY_VQVAE, "num_embeddings": 8}))
    for number in (0, 1, 3):  # slice 2 is missing: slice 3 has no slice below here
        write_png(tmp_path / f"case_001_slice_{number}.nii.png", brain_slice(number, 32))
    rows = surprise.folder_surprise(vqvae, whole_brain_prior, tmp_path).rows()
    assert {row["name"]: row["given_below"] for row in rows} == {
        "case_001_slice_0.nii.png": True, "case_001_slice_1.nii.png": True, "case_001_slice_3.nii.png": False}
    slice_prior = build_prior(PriorConfig(**{**TINY, "grid_height": 8, "grid_width": 8}))
    assert not any(row["given_below"] for row in surprise.folder_surprise(vqvae, slice_prior, tmp_path).rows())


def test_folder_surprise_reads_a_plain_folder_and_reports_rows(oasis_tree):
    vqvae = build_vqvae(VQVAEConfig(**{**TINY_VQVAE, "num_embeddings": 8}))
    model = build_prior(PriorConfig(**{**TINY, "grid_height": 8, "grid_width": 8, "num_levels": 2}))
    folder = oasis_tree / "keras_png_slices_data" / "keras_png_slices_validate"
    result = surprise.folder_surprise(vqvae, model, folder, limit=5)
    assert result.bits.shape == (5, 8, 8) and len(result.names) == 5
    rows = result.rows()
    assert {row["level"] for row in rows} <= {0, 1, None} and None in {row["level"] for row in rows}
    for row, total, peak, spot in zip(rows, result.total_bits, result.max_bits, result.hot_spot_bits):
        assert row["bits"] == pytest.approx(total, abs=1e-3) and row["max_bits"] == pytest.approx(peak, abs=1e-3)
        excess = (row["bits"] - row["expected_bits"]) / 64
        # A block's mean of bits above expected lies between their mean and their max.
        assert result.excess_bits[rows.index(row)].max() + 1e-3 >= row["hot_spot_bits"] >= excess - 1e-3
