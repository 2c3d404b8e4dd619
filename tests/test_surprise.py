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
    bits = rng.uniform(0.0, 1.0, (3, 16, 16))
    bits[0] += 2.0  # much more brain: the largest total, but no block stands out
    bits[1, 9:12, 4:7] += 6.0  # a small lesion: 54 more bits, in one 3x3 block
    scored = surprise.Surprise(["a", "b", "c"], bits, [None] * 3)
    assert int(np.argmax(scored.total_bits)) == 0
    assert int(np.argmax(scored.hot_spot_bits)) == 1
    assert scored.hot_spot_corner[1].tolist() == [9, 4] and scored.hot_spot_side == 3
    assert surprise.Surprise(["d"], bits[:1, :2, :5], [None]).hot_spot_side == 2  # a grid smaller than a block
    assert scored.hot_spot_bits[1] == pytest.approx(bits[1, 9:12, 4:7].mean())
    row = scored.rows()[1]
    assert row["hot_spot_bits"] == pytest.approx(scored.hot_spot_bits[1], abs=1e-3)


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
        assert peak >= row["hot_spot_bits"] >= total / 64 - 1e-3  # a block's mean lies between the mean and the max
