"""core.workflows: reconstruction reports, generation and completion, downloads, curve smoothing, metric following."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core import runs, workflows
from core.data import DataError
from helpers_bundle import make_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from core.checkpoints import load_bundle

    return load_bundle(make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny"))


def test_reconstruction_report_scores_each_slice(bundle):
    images = np.random.default_rng(0).uniform(size=(3, 32, 32, 1)).astype(np.float32)
    report = workflows.reconstruct_and_score(bundle.vqvae, images, ["a", "b", "c"])
    assert report.originals.shape == report.reconstructions.shape == (3, 32, 32)
    np.testing.assert_allclose(report.differences, report.reconstructions - report.originals)
    assert report.ssim.shape == report.psnr.shape == (3,)
    assert [row["slice"] for row in report.rows()] == ["a", "b", "c"]


def test_diverging_map_is_white_at_zero_red_above_blue_below():
    rgb = workflows.diverging_rgb(np.array([[0.0, 1.0, -1.0, 5.0]]))
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1, 0] > rgb[0, 1, 2] and rgb[0, 2, 2] > rgb[0, 2, 0]
    assert rgb[0, 3].tolist() == rgb[0, 1].tolist()  # clipped at the limit


def test_generate_gives_n_images_in_unit_range(bundle):
    brains = workflows.generate_brains(bundle.vqvae, bundle.prior, 2, seed=1)
    assert brains.images.shape == (2, 32, 32) and 0 <= brains.images.min() and brains.images.max() <= 1
    again = workflows.generate_brains(bundle.vqvae, bundle.prior, 2, seed=1)
    np.testing.assert_array_equal(brains.images, again.images)
    np.testing.assert_array_equal(brains.levels, again.levels)
    assert brains.levels.shape == (2,) and set(brains.levels) <= {0, 1, 2, 3}


def test_generate_at_a_chosen_level_names_it(bundle):
    brains = workflows.generate_brains(bundle.vqvae, bundle.prior, 3, seed=1, level=2)
    assert brains.levels.tolist() == [2, 2, 2]
    assert brains.names("brain") == ["brain_00_level2", "brain_01_level2", "brain_02_level2"]
    with pytest.raises(ValueError, match="levels in \\[0, 4\\)"):
        workflows.generate_brains(bundle.vqvae, bundle.prior, 1, level=4)


def test_level_from_name_only_gives_levels_the_prior_knows(bundle):
    assert workflows.level_from_name(bundle.prior, "case_441_slice_3.nii.png") == 3
    assert workflows.level_from_name(bundle.prior, "case_441_slice_30.nii.png") is None  # the tiny prior knows 0..3
    assert workflows.level_from_name(bundle.prior, "upload.png") is None


def test_brains_without_levels_are_named_by_index():
    brains = workflows.Brains(np.zeros((12, 4, 4)), None)
    assert brains.names("s")[0] == "s_00" and brains.names("s")[-1] == "s_11"


def test_complete_keeps_the_code_rows_above_and_samples_below(bundle, monkeypatch):
    slice_ = np.random.default_rng(1).uniform(size=(32, 32, 1)).astype(np.float32)
    original = bundle.vqvae.encode_to_indices(slice_[None])  # (1, 8, 8)
    decoded_codes, decode = [], bundle.vqvae.decode_indices
    monkeypatch.setattr(bundle.vqvae, "decode_indices",
                        lambda codes: decoded_codes.append(codes.copy()) or decode(codes))
    steps = []
    done = workflows.complete_brain(bundle.vqvae, bundle.prior, slice_, 4, 3, seed=2,
                                    progress=lambda d, t: steps.append((d, t)))
    assert done.images.shape == (3, 32, 32) and steps[-1] == (8, 8)
    assert done.levels.shape == (3,)
    (codes,) = decoded_codes
    np.testing.assert_array_equal(codes[:, :4], np.repeat(original[:, :4], 3, axis=0))
    assert not all(np.array_equal(codes[i, 4:], original[0, 4:]) for i in range(3))


def test_zip_of_pngs_round_trips():
    images = np.stack([np.zeros((4, 4)), np.ones((4, 4))])
    archive = zipfile.ZipFile(io.BytesIO(workflows.zip_of_pngs(images, ["a", "b.png"])))
    assert archive.namelist() == ["a.png", "b.png"]
    assert np.asarray(Image.open(io.BytesIO(archive.read("b.png")))).min() == 255


def test_smooth_ema_matches_a_reference_and_carries_gaps():
    values = np.array([1.0, 2.0, np.nan, 4.0])
    smoothed = workflows.smooth_ema(values, 0.5)
    assert smoothed[0] == 1.0
    assert smoothed[1] == pytest.approx((0.25 * 1 + 0.5 * 2) / 0.75)
    assert smoothed[2] == smoothed[1]
    np.testing.assert_allclose(workflows.smooth_ema(values[:2], 0.0), values[:2])
    with pytest.raises(ValueError):
        workflows.smooth_ema(values, 1.0)


def test_follow_metrics_reads_increments_and_restarts_after_a_rewrite(tmp_path):
    cursor = {}
    assert workflows.follow_metrics(tmp_path, cursor) == []
    runs.append_metrics(tmp_path, [{"kind": "step", "step": 1, "loss": 1.0}])
    assert len(workflows.follow_metrics(tmp_path, cursor)) == 1
    runs.append_metrics(tmp_path, [{"kind": "step", "step": 2, "loss": 0.5}])
    assert [r["step"] for r in workflows.follow_metrics(tmp_path, cursor)] == [1, 2]
    runs.truncate_metrics(tmp_path, 1)  # what a resume does: a new file with fewer lines
    assert [r["step"] for r in workflows.follow_metrics(tmp_path, cursor)] == [1]


def test_curve_by_step_epoch_and_wall_time():
    records = [{"kind": "step", "step": s, "epoch": 1 + (s - 1) // 4, "elapsed_s": 30.0 * s,
                "loss": 1.0 / s} for s in (2, 4, 6, 8)]
    records += [{"kind": "epoch", "step": 4, "epoch": 1, "val_ssim": 0.5},
                {"kind": "epoch", "step": 8, "epoch": 2, "val_ssim": 0.6}]
    x, raw, smooth = workflows.curve(records, "step", "loss", "step", 0.0)
    assert x.tolist() == [2, 4, 6, 8] and np.allclose(smooth, raw)
    assert workflows.curve(records, "step", "loss", "epoch", 0.0)[0].tolist() == [0.5, 1, 1.5, 2]
    assert workflows.curve(records, "step", "loss", "wall time (min)", 0.0)[0].tolist() == [1, 2, 3, 4]
    assert workflows.curve(records, "epoch", "val_ssim", "epoch", 0.0)[1].tolist() == [0.5, 0.6]
    assert workflows.metric_names(records, "step") == ["loss"]


def test_split_slices_load_resized_and_missing_names_are_data_errors(oasis_tree):
    names = workflows.split_slice_names(oasis_tree, "test")
    images = workflows.load_split_slices(oasis_tree, names[:2], 16)
    assert images.shape == (2, 16, 16, 1)
    with pytest.raises(DataError, match="no slice named"):
        workflows.load_split_slices(oasis_tree, ["nope.png"], 16)


def test_a_level_for_an_unconditional_prior_is_refused(bundle):
    from core.prior import PriorConfig, build_prior

    plain = build_prior(PriorConfig(num_embeddings=16, grid_height=8, grid_width=8, filters=8, num_layers=2,
                                    embedding_dim=8, head_filters=16))
    with pytest.raises(ValueError, match="not conditioned"):
        workflows.generate_brains(bundle.vqvae, plain, 1, level=0)
    assert workflows.generate_brains(bundle.vqvae, plain, 1).levels is None
