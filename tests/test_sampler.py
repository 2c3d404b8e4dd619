"""Tests for core.sampler: fast path equals the full pass, naive and fast agree, completion, progress."""

import numpy as np
import pytest

from core.models.prior import (PriorConfig, build_prior, level_layer, previous_layer, prior_inputs,
                               set_level_frequency, start_token)
from core.models import sampler
from core.models.sampler import keep_rows_mask, sample_codes, sample_volumes, teacher_forced_logits_fast

from model_fixtures import randomize_weights

TINY = dict(num_embeddings=8, grid_height=6, grid_width=7, filters=8, num_layers=3, kernel_size=3,
            embedding_dim=4, head_filters=16)


@pytest.fixture(scope="module")
def prior():
    return randomize_weights(build_prior(PriorConfig(**TINY)))


@pytest.mark.parametrize("changes", [
    {},
    dict(kernel_size=5, num_layers=2),
    dict(embedding_dim=8, num_layers=2, grid_height=4, grid_width=9),  # residual from the first layer on
    dict(position_embedding=False),
    dict(num_levels=3),  # conditioned on a slice level per sample
])
def test_fast_teacher_forced_logits_match_full_pass(changes):
    model = randomize_weights(build_prior(PriorConfig(**{**TINY, **changes})), seed=5)
    config = PriorConfig(**{**TINY, **changes})
    codes = np.random.default_rng(6).integers(0, 8, (3, config.grid_height, config.grid_width))
    levels = np.array([2, 0, 1], np.int32) if config.num_levels else None
    fast = teacher_forced_logits_fast(model, codes, levels)
    full = model(prior_inputs(model, codes.astype(np.int32), levels)).numpy()
    assert fast.shape == full.shape
    assert np.abs(fast - full).max() < 1e-4
    assert np.abs(full).max() > 0.5  # the comparison is not between near-zero logits


@pytest.mark.parametrize("use_xla", [False, True])
def test_fast_path_with_and_without_xla(prior, use_xla, monkeypatch):
    monkeypatch.setattr(sampler, "USE_XLA", use_xla)  # XLA is what a GPU uses by default
    codes = np.random.default_rng(8).integers(0, 8, (2, 6, 7))
    assert np.abs(teacher_forced_logits_fast(prior, codes) - prior(codes.astype(np.int32)).numpy()).max() < 1e-4
    np.testing.assert_array_equal(sample_codes(prior, 2, seed=9, top_k=4),
                                  sample_codes(prior, 2, seed=9, top_k=4, method="naive"))


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, None), (1.0, 3)])
def test_naive_and_fast_give_identical_codes(prior, temperature, top_k):
    kwargs = dict(seed=11, temperature=temperature, top_k=top_k)
    fast = sample_codes(prior, 3, method="fast", **kwargs)
    naive = sample_codes(prior, 3, method="naive", **kwargs)
    assert fast.dtype == np.int32 and fast.shape == (3, 6, 7)
    np.testing.assert_array_equal(fast, naive)
    assert len(np.unique(fast)) > 1


def test_top_k_restricts_codes_to_the_k_most_likely(prior):
    codes = sample_codes(prior, 4, seed=3, top_k=2)
    logits = prior(codes).numpy()
    rank = (logits > np.take_along_axis(logits, codes[..., None], -1)).sum(-1)  # codes scoring higher
    assert rank.max() <= 1


def test_seeds_fix_and_vary_the_samples(prior):
    a = sample_codes(prior, 4, seed=0)
    np.testing.assert_array_equal(a, sample_codes(prior, 4, seed=0))
    assert (a != sample_codes(prior, 4, seed=1)).mean() > 0.2


def test_small_temperature_is_greedy(prior):
    greedy = sample_codes(prior, 3, seed=0, temperature=0.0)
    # greedy codes are the argmax of the model's own logits given them (the prior is causal)
    np.testing.assert_array_equal(greedy, prior(greedy).numpy().argmax(-1))
    np.testing.assert_array_equal(sample_codes(prior, 3, seed=4, temperature=1e-6), greedy)


@pytest.mark.parametrize("per_sample_mask", [False, True])
def test_completion_keeps_kept_codes_and_samples_the_rest(prior, per_sample_mask):
    rng = np.random.default_rng(7)
    init = rng.integers(0, 8, (3, 6, 7)).astype(np.int32)
    keep = rng.random((3, 6, 7)) < 0.5 if per_sample_mask else keep_rows_mask(6, 7, 3)
    fast = sample_codes(prior, 3, seed=2, init_codes=init, keep_mask=keep)
    kept = np.broadcast_to(keep, init.shape)
    np.testing.assert_array_equal(fast[kept], init[kept])
    assert (fast[~kept] != init[~kept]).any()
    # the sampled part is conditioned on the kept codes exactly as a full pass would be
    np.testing.assert_array_equal(fast, sample_codes(prior, 3, seed=2, method="naive", init_codes=init,
                                                     keep_mask=keep))


def test_keep_rows_mask():
    mask = keep_rows_mask(4, 3, 1)
    assert mask.shape == (4, 3) and mask.dtype == bool
    assert mask[0].all() and not mask[1:].any()
    with pytest.raises(ValueError, match="keep_rows"):
        keep_rows_mask(4, 3, 5)


@pytest.mark.parametrize("method", ["fast", "naive"])
def test_progress_is_called_after_each_row(prior, method):
    calls = []
    sample_codes(prior, 2, method=method, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(row, 6) for row in range(1, 7)]


@pytest.mark.parametrize("kwargs", [
    dict(method="beam"), dict(top_k=0), dict(top_k=9), dict(temperature=-1.0),
    dict(keep_mask=np.ones((6, 7), bool)), dict(init_codes=np.zeros((2, 6, 7)), keep_mask=np.ones((5, 7), bool)),
    dict(init_codes=np.full((2, 6, 7), 8), keep_mask=np.ones((6, 7), bool)),
])
def test_invalid_arguments_raise(prior, kwargs):
    with pytest.raises(ValueError, match="Expected"):
        sample_codes(prior, 2, **kwargs)


# --- slice levels ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def level_prior():
    model = randomize_weights(build_prior(PriorConfig(**TINY, num_levels=4, level_map_size=3)), seed=2)
    table = level_layer(model).table  # unit-scale level maps, so that the level visibly steers the codes
    table.assign(np.random.default_rng(3).normal(size=table.shape).astype("float32"))
    return model


def test_naive_and_fast_agree_with_levels_and_the_level_changes_the_samples(level_prior):
    levels = np.array([0, 3, 1])
    fast = sample_codes(level_prior, 3, seed=4, levels=levels)
    np.testing.assert_array_equal(fast, sample_codes(level_prior, 3, seed=4, levels=levels, method="naive"))
    # The level reaches every position's logits, the first included; so with the same noise the codes change.
    logits_at = {level: teacher_forced_logits_fast(level_prior, fast, np.full(3, level)) for level in (0, 2)}
    assert np.abs(logits_at[0] - logits_at[2]).max(axis=-1).min() > 1e-3
    assert (fast != sample_codes(level_prior, 3, seed=4, levels=[2, 2, 2])).any()


def test_levels_are_drawn_from_the_training_frequencies(level_prior):
    set_level_frequency(level_prior, [1, 3, 3, 3])  # training slices at levels 1 and 3 only, 3 three times as often
    try:
        drawn = sampler.draw_levels(level_prior, 400, seed=0)
        # Systematic sampling: 400 draws hold the levels in their exact proportions, in shuffled order.
        assert np.bincount(drawn, minlength=4).tolist() == [0, 100, 0, 300]
        assert 0 < np.flatnonzero(drawn == 1)[0] < 300
        np.testing.assert_array_equal(drawn, sampler.draw_levels(level_prior, 400, seed=0))
        assert sampler.draw_levels(level_prior, 4, seed=3).tolist().count(1) == 1
        # One draw at a time is still p(level): level 1 a quarter of the time.
        singles = [sampler.draw_levels(level_prior, 1, seed=seed)[0] for seed in range(400)]
        assert set(singles) == {1, 3} and 0.18 < np.mean(np.equal(singles, 1)) < 0.32
        # sample_codes without levels draws the same ones for the same seed.
        np.testing.assert_array_equal(sample_codes(level_prior, 3, seed=7),
                                      sample_codes(level_prior, 3, seed=7, levels=sampler.draw_levels(level_prior, 3, seed=7)))
    finally:
        set_level_frequency(level_prior, [0, 1, 2, 3])


def test_level_log_likelihood_sums_the_kept_prefix_of_a_full_pass(level_prior):
    codes = np.random.default_rng(3).integers(0, 8, (2, 6, 7)).astype(np.int32)
    keep = np.zeros((6, 7), bool)
    keep[:2] = True
    keep[4, 3] = True  # kept, but after sampled positions: its likelihood is not tractable, so it is left out
    result = sampler.level_log_likelihood(level_prior, codes, keep)
    assert result.shape == (2, 4)
    for level in range(4):
        logits = level_prior(prior_inputs(level_prior, codes, np.full(2, level, np.int32))).numpy()
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_probs, codes[..., None], -1)[..., 0]
        np.testing.assert_allclose(result[:, level], picked[:, :2].sum(axis=(1, 2)), rtol=1e-4)
    assert np.ptp(result[0]) > 0.1  # the levels explain the kept rows differently


def test_completion_levels_follow_the_posterior(level_prior, monkeypatch):
    # Uniform frequencies; the kept codes make level 2 e^50 times likelier than the others.
    monkeypatch.setattr(sampler, "level_log_likelihood", lambda prior, init, keep: np.array([[0.0, 0.0, 50.0, 0.0]] * len(init)))
    init = np.zeros((5, 6, 7), np.int32)
    assert sampler.draw_levels(level_prior, 5, seed=1, init_codes=init, keep_mask=keep_rows_mask(6, 7, 2)).tolist() == [2] * 5
    monkeypatch.setattr(sampler, "level_log_likelihood", lambda prior, init, keep: np.log(np.array([[1.0, 1.0, 2.0, 4.0]] * len(init))))
    drawn = sampler.draw_levels(level_prior, 2000, seed=1, init_codes=np.zeros((2000, 6, 7), np.int32),
                                keep_mask=keep_rows_mask(6, 7, 2))
    np.testing.assert_allclose(np.bincount(drawn, minlength=4) / 2000, [0.125, 0.125, 0.25, 0.5], atol=0.04)


@pytest.mark.parametrize("levels", [[0, 4], [-1, 0], 7])
def test_levels_out_of_range_raise(level_prior, levels):
    with pytest.raises(ValueError, match="levels in \\[0, 4\\)"):
        sample_codes(level_prior, 2, levels=levels)


def test_an_unconditional_prior_takes_no_levels(prior):
    with pytest.raises(ValueError, match="not conditioned"):
        sample_codes(prior, 2, levels=[0, 1])


@pytest.mark.parametrize("use_xla", [False, True])
def test_batch_size_can_change_between_calls(level_prior, use_xla, monkeypatch):
    # The dashboard generates 16, then completes 1 or 4: a retraced row step must accept both.
    monkeypatch.setattr(sampler, "USE_XLA", use_xla)
    for n in (5, 1, 3):
        codes = sample_codes(level_prior, n, seed=n)
        assert codes.shape == (n, 6, 7)
        np.testing.assert_array_equal(codes, sample_codes(level_prior, n, seed=n, method="naive"))


def test_one_trace_serves_every_prior_of_the_same_structure(prior):
    # The weights travel as tensors, so another prior of the same config (another checkpoint) and
    # another Generate click reuse the traced row step instead of tracing it again (1-2 s each).
    sample_codes(prior, 2, seed=1)
    traces = sampler._row_step_graph.experimental_get_tracing_count()
    other = randomize_weights(build_prior(PriorConfig(**TINY)), seed=9)
    assert (sample_codes(other, 2, seed=1) != sample_codes(prior, 2, seed=1)).any()
    assert sampler._row_step_graph.experimental_get_tracing_count() == traces


# --- whole-brain priors: each slice given the slice below ------------------------------------------
@pytest.fixture(scope="module")
def volume_prior():
    model = randomize_weights(build_prior(PriorConfig(**TINY, num_levels=5, previous_slice=True)), seed=8)
    encoder = previous_layer(model)  # unit-scale maps, so that the slice below visibly steers the codes
    encoder.out_kernel.assign(np.random.default_rng(9).normal(size=encoder.out_kernel.shape).astype("float32"))
    return model


def test_fast_logits_of_a_whole_brain_prior_match_the_full_pass(volume_prior):
    rng = np.random.default_rng(10)
    codes = rng.integers(0, 8, (3, 6, 7))
    previous = rng.integers(0, 9, (3, 6, 7))  # 8 is the "no slice below" token
    levels = np.array([0, 4, 2], np.int32)
    fast = teacher_forced_logits_fast(volume_prior, codes, levels, previous)
    full = volume_prior(prior_inputs(volume_prior, codes.astype(np.int32), levels, previous.astype(np.int32))).numpy()
    assert np.abs(fast - full).max() < 1e-4 and np.abs(full).max() > 0.5
    # The slice below reaches the logits: another slice below, other logits.
    other = teacher_forced_logits_fast(volume_prior, codes, levels, (previous + 1) % 9)
    assert np.abs(other - fast).max() > 1e-3


def test_a_volume_is_each_slice_sampled_at_its_level_given_the_slice_below(volume_prior):
    stacks = sample_volumes(volume_prior, 2, seed=3)
    assert stacks.shape == (2, 5, 6, 7) and stacks.dtype == np.int32
    assert 0 <= stacks.min() and stacks.max() < 8
    # The reference: slice by slice with sample_codes, as the docstring says it is done.
    below = np.full((2, 6, 7), start_token(volume_prior))
    for z in range(5):
        expected = sample_codes(volume_prior, 2, seed=3, levels=z, previous=below, stream=z)
        np.testing.assert_array_equal(stacks[:, z], expected)
        below = expected
    np.testing.assert_array_equal(sample_volumes(volume_prior, 2, seed=3), stacks)  # the seed fixes it
    assert (sample_volumes(volume_prior, 2, seed=4) != stacks).any()
    assert not np.array_equal(stacks[:, 1], stacks[:, 2])  # each slice has its own noise


def test_naive_and_fast_agree_given_the_slice_below(volume_prior):
    below = np.random.default_rng(11).integers(0, 9, (2, 6, 7))
    fast = sample_codes(volume_prior, 2, seed=5, levels=[1, 3], previous=below)
    np.testing.assert_array_equal(fast, sample_codes(volume_prior, 2, seed=5, levels=[1, 3], previous=below,
                                                     method="naive"))


@pytest.fixture(scope="module")
def guide_prior():
    """A slice prior over the volume prior's codes, grid and levels."""
    return randomize_weights(build_prior(PriorConfig(**TINY, num_levels=5)), seed=12)


def test_a_guide_of_weight_zero_changes_nothing_and_of_weight_one_is_the_slice_prior(volume_prior, guide_prior):
    below = np.random.default_rng(13).integers(0, 9, (2, 6, 7))
    levels = [1, 3]
    alone = sample_codes(volume_prior, 2, seed=5, levels=levels, previous=below)
    np.testing.assert_array_equal(
        sample_codes(volume_prior, 2, seed=5, levels=levels, previous=below, guide=(guide_prior, 0.0)), alone)
    slice_prior_codes = sample_codes(guide_prior, 2, seed=5, levels=levels)
    assert (slice_prior_codes != alone).any()
    np.testing.assert_array_equal(
        sample_codes(volume_prior, 2, seed=5, levels=levels, previous=below, guide=(guide_prior, 1.0)),
        slice_prior_codes)


@pytest.mark.parametrize("weight, temperature, structure", [
    (0.4, 0.8, "same"),  # the one batched step for both priors (sampler._fused_columns)
    (0.7, 1.0, "same"),
    (0.4, 0.8, "other"),  # a guide of other layers: one prior's step after the other
])
def test_a_guided_code_is_the_gumbel_argmax_of_the_mixed_logits(volume_prior, guide_prior, weight, temperature,
                                                                structure):
    # The reference: full passes of both priors over the codes sampled (each position's logits depend
    # only on the codes before it), mixed, divided by the temperature, plus the same Gumbel noise.
    if structure == "other":
        guide_prior = randomize_weights(build_prior(PriorConfig(**{**TINY, "num_layers": 2, "filters": 12},
                                                                num_levels=5)), seed=15)
    weights = [sampler._prior_weights(m) for m in (volume_prior, guide_prior)]
    assert sampler._one_structure([w[0] for w in weights], [w[1] for w in weights],
                                  [w[2] for w in weights]) == (structure == "same")
    below = np.random.default_rng(14).integers(0, 9, (3, 6, 7))
    levels = np.array([0, 2, 4], np.int32)
    codes = sample_codes(volume_prior, 3, seed=7, levels=levels, previous=below, temperature=temperature,
                         guide=(guide_prior, weight))
    whole = volume_prior(prior_inputs(volume_prior, codes, levels, below.astype(np.int32))).numpy()
    alone = guide_prior(prior_inputs(guide_prior, codes, levels)).numpy()
    gumbel = sampler.gumbel_noise(7, (3, 6, 7, 8)).numpy()
    expected = np.argmax(((1 - weight) * whole + weight * alone) / temperature + gumbel, axis=-1)
    np.testing.assert_array_equal(codes, expected)
    assert (codes != sample_codes(volume_prior, 3, seed=7, levels=levels, previous=below,
                                  temperature=temperature)).any()


def test_a_guided_volume_samples_every_slice_with_the_guide(volume_prior, guide_prior):
    # Weight 1: each slice is the slice prior's own sample at its level (stream z), whatever lies below.
    stacks = sample_volumes(volume_prior, 2, seed=3, guide=(guide_prior, 1.0))
    for z in range(5):
        np.testing.assert_array_equal(stacks[:, z], sample_codes(guide_prior, 2, seed=3, levels=z, stream=z))
    mixed = sample_volumes(volume_prior, 2, seed=3, guide=(guide_prior, 0.5))
    assert (mixed != stacks).any() and (mixed != sample_volumes(volume_prior, 2, seed=3)).any()
    # Another weight is another input, not another trace (a slider move on the Sample page).
    traces = sampler._row_step_graph.experimental_get_tracing_count()
    sample_volumes(volume_prior, 2, seed=3, guide=(guide_prior, 0.2))
    assert sampler._row_step_graph.experimental_get_tracing_count() == traces


def test_a_guide_must_be_a_slice_prior_over_the_same_codes_and_levels(volume_prior, guide_prior, prior):
    below = np.zeros((1, 6, 7))
    with pytest.raises(ValueError, match="slice prior as the guide"):
        sample_codes(volume_prior, 1, levels=0, previous=below, guide=(volume_prior, 0.5))
    with pytest.raises(ValueError, match="same codes, grid and levels"):
        sample_codes(volume_prior, 1, levels=0, previous=below, guide=(prior, 0.5))  # no levels
    for weight in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"guide weight in \[0, 1\]"):
            sample_codes(volume_prior, 1, levels=0, previous=below, guide=(guide_prior, weight))
    with pytest.raises(ValueError, match="method 'fast' with a guide"):
        sample_codes(volume_prior, 1, levels=0, previous=below, guide=(guide_prior, 0.5), method="naive")


@pytest.mark.parametrize("shape", [(3, 6, 7, 8), (2, 5, 3, 5), (1, 20, 1, 3), (4, 3, 2, 2, 3), (9, 10, 1, 1),
                                   (2, 17, 64, 4)],
                         ids=["rows of 56", "rows of 15", "rows of 3 (several draws a slice)", "5-d",
                              "rows of 1 (stretches overlap)", "rows of 256 (whole multiples of 64)"])
def test_a_row_of_noise_drawn_alone_is_that_row_of_the_whole_draw(shape):
    # The wavefront draws each slice's noise a few rows at a time (sampler.GumbelRows), so that it holds
    # those rows per slice in flight instead of whole slices: the numbers must be the same to the bit.
    whole = sampler.gumbel_noise(11, shape, stream=4).numpy()
    rows = sampler.GumbelRows(11, shape, stream=4)
    for row in [*range(shape[1]), *reversed(range(shape[1]))]:  # up, then back down through earlier draws
        np.testing.assert_array_equal(rows(row).numpy(), whole[:, row])
    assert not np.array_equal(sampler.GumbelRows(11, shape, stream=5)(0).numpy(), whole[:, 0])


def slice_by_slice(prior_model, n, seed, num_slices, levels=True, **options):
    """The definition of a whole brain: sample_codes slice after slice, each given the one below."""
    below, slices = np.full((n, 6, 7), start_token(prior_model)), []
    for z in range(num_slices):
        below = sample_codes(prior_model, n, seed=seed, levels=z if levels else None, previous=below, stream=z,
                             **options)
        slices.append(below)
    return np.stack(slices, axis=1)


@pytest.mark.parametrize("options", [
    dict(guide_weight=0.5, temperature=0.8),  # the two priors' one batched step
    dict(temperature=0.0),  # greedy
    dict(top_k=3, num_slices=3),  # a stack shorter than the lanes' cycle
    dict(use_xla=True, guide_weight=0.3),
], ids=["guided", "greedy", "top_k", "xla"])
def test_slices_side_by_side_are_the_slices_sampled_one_after_the_other(volume_prior, guide_prior, options,
                                                                        monkeypatch):
    # sample_volumes runs slice z a few rows behind slice z - 1 (sampler._run_wavefront): it must not
    # change a code. 6 rows and a lag of 3 rows: 2 lanes, each slice's lane free again for slice z + 2.
    options = dict(options)
    monkeypatch.setattr(sampler, "USE_XLA", options.pop("use_xla", False))
    weight = options.pop("guide_weight", None)
    if weight is not None:
        options["guide"] = (guide_prior, weight)
    num_slices = options.pop("num_slices", 5)
    stacks = sample_volumes(volume_prior, 3, seed=6, num_slices=num_slices, **options)
    np.testing.assert_array_equal(stacks, slice_by_slice(volume_prior, 3, 6, num_slices, **options))


@pytest.mark.parametrize("start", [1, 3, 4])
def test_the_top_of_a_stack_given_the_slice_below_it_is_those_slices_of_a_whole_stack(volume_prior, guide_prior,
                                                                                      start):
    # Completing a brain above a real slice: slices start..4 given the codes below are those a whole stack
    # samples there when its slice start - 1 came out as those codes (level z and noise stream z each).
    below = np.random.default_rng(21).integers(0, 8, (3, 6, 7))
    top = sample_volumes(volume_prior, 3, seed=6, temperature=0.8, start=start, below=below,
                         guide=(guide_prior, 0.4))
    assert top.shape == (3, 5 - start, 6, 7)
    expected, previous = [], below
    for z in range(start, 5):
        previous = sample_codes(volume_prior, 3, seed=6, temperature=0.8, levels=z, previous=previous, stream=z,
                                guide=(guide_prior, 0.4))
        expected.append(previous)
    np.testing.assert_array_equal(top, np.stack(expected, axis=1))


def test_the_top_of_a_stack_needs_its_slice_below_and_a_start_inside_the_stack(volume_prior):
    below = np.zeros((1, 6, 7), np.int32)
    for options in (dict(start=2), dict(below=below), dict(start=5, below=below), dict(start=-1, below=below)):
        with pytest.raises(ValueError, match="start"):
            sample_volumes(volume_prior, 1, **options)
    with pytest.raises(ValueError, match="previous codes of shape"):
        sample_volumes(volume_prior, 2, start=2, below=below)  # one slice below for two stacks


def test_a_whole_brain_never_draws_a_slice_s_noise_whole(volume_prior, monkeypatch):
    # Whole slices' noise for every slice in flight was 22 x n x 4 MB for the demo (BENCHMARKS.md):
    # the wavefront draws rows, and the codes are still those of whole draws slice after slice.
    expected = slice_by_slice(volume_prior, 2, 3, 4, temperature=0.7)
    draws = []
    monkeypatch.setattr(sampler, "gumbel_noise", lambda *args, **kwargs: draws.append(args) or 1 / 0)
    np.testing.assert_array_equal(sample_volumes(volume_prior, 2, seed=3, num_slices=4, temperature=0.7), expected)
    assert draws == []


def test_a_whole_brain_prior_without_levels_stacks_slices_side_by_side_too():
    model = randomize_weights(build_prior(PriorConfig(**TINY, previous_slice=True)), seed=16)
    encoder = previous_layer(model)
    encoder.out_kernel.assign(np.random.default_rng(17).normal(size=encoder.out_kernel.shape).astype("float32"))
    stacks = sample_volumes(model, 2, seed=1, num_slices=4)
    np.testing.assert_array_equal(stacks, slice_by_slice(model, 2, 1, 4, levels=False))


def test_a_whole_brain_keeps_one_row_step_shape(volume_prior):
    # Slices join and leave the batch as the stack goes up, but in fixed lanes: one trace (one XLA
    # compile on a GPU) per call, none for the next call.
    before = sampler._row_step_graph.experimental_get_tracing_count()
    sample_volumes(volume_prior, 7, seed=1)
    traced = sampler._row_step_graph.experimental_get_tracing_count()
    sample_volumes(volume_prior, 7, seed=2)
    assert traced - before <= 1 and sampler._row_step_graph.experimental_get_tracing_count() == traced


def test_volume_progress_counts_slices(volume_prior):
    calls = []
    sample_volumes(volume_prior, 1, num_slices=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_whole_brain_and_slice_priors_refuse_each_others_inputs(prior, volume_prior):
    with pytest.raises(ValueError, match="whole-brain prior"):
        sample_volumes(prior, 1)
    with pytest.raises(ValueError, match="slice below"):
        sample_codes(volume_prior, 1, levels=0)  # no previous
    with pytest.raises(ValueError, match="slice prior takes none"):
        sample_codes(prior, 1, previous=np.zeros((1, 6, 7)))
    with pytest.raises(ValueError, match=r"previous codes in \[0, 8\]"):
        sample_codes(volume_prior, 1, levels=0, previous=np.full((1, 6, 7), 9))
    with pytest.raises(ValueError, match="num_slices"):
        sample_volumes(volume_prior, 1, num_slices=6)  # the prior knows 5 levels
