"""core.curves: TensorBoard-style smoothing, following a growing metrics.jsonl, curves against step, epoch and time."""
from __future__ import annotations

import numpy as np
import pytest

from core import curves, runs


def test_smooth_ema_matches_a_reference_and_carries_gaps():
    values = np.array([1.0, 2.0, np.nan, 4.0])
    smoothed = curves.smooth_ema(values, 0.5)
    assert smoothed[0] == 1.0
    assert smoothed[1] == pytest.approx((0.25 * 1 + 0.5 * 2) / 0.75)
    assert smoothed[2] == smoothed[1]
    np.testing.assert_allclose(curves.smooth_ema(values[:2], 0.0), values[:2])
    with pytest.raises(ValueError):
        curves.smooth_ema(values, 1.0)


def test_follow_metrics_reads_increments_and_restarts_after_a_rewrite(tmp_path):
    cursor = {}
    assert curves.follow_metrics(tmp_path, cursor) == []
    runs.append_metrics(tmp_path, [{"kind": "step", "step": 1, "loss": 1.0}])
    assert len(curves.follow_metrics(tmp_path, cursor)) == 1
    runs.append_metrics(tmp_path, [{"kind": "step", "step": 2, "loss": 0.5}])
    assert [r["step"] for r in curves.follow_metrics(tmp_path, cursor)] == [1, 2]
    runs.truncate_metrics(tmp_path, 1)  # what a resume does: a new file with fewer lines
    assert [r["step"] for r in curves.follow_metrics(tmp_path, cursor)] == [1]


def test_curve_by_step_epoch_and_wall_time():
    records = [{"kind": "step", "step": s, "epoch": 1 + (s - 1) // 4, "elapsed_s": 30.0 * s,
                "loss": 1.0 / s} for s in (2, 4, 6, 8)]
    records += [{"kind": "epoch", "step": 4, "epoch": 1, "val_ssim": 0.5},
                {"kind": "epoch", "step": 8, "epoch": 2, "val_ssim": 0.6}]
    x, raw, smooth = curves.curve(records, "step", "loss", "step", 0.0)
    assert x.tolist() == [2, 4, 6, 8] and np.allclose(smooth, raw)
    assert curves.curve(records, "step", "loss", "epoch", 0.0)[0].tolist() == [0.5, 1, 1.5, 2]
    assert curves.curve(records, "step", "loss", "wall time (min)", 0.0)[0].tolist() == [1, 2, 3, 4]
    assert curves.curve(records, "epoch", "val_ssim", "epoch", 0.0)[1].tolist() == [0.5, 0.6]
    assert curves.metric_names(records, "step") == ["loss"]


def test_flatten_and_differing_settings():
    a = curves.flatten_settings({"kind": "vqvae", "model": {"num_embeddings": 256, "beta": 0.25},
                                 "train": {"lr": 1e-3, "size": [1, 2]}})
    assert a == {"kind": "vqvae", "model.num_embeddings": 256, "model.beta": 0.25, "train.lr": 1e-3,
                 "train.size": "[1, 2]"}
    b = {**a, "model.num_embeddings": 512}
    c = {k: v for k, v in a.items() if k != "train.lr"}
    assert curves.differing_settings({"a": a, "b": b}) == ["model.num_embeddings"]
    assert curves.differing_settings({"a": a, "c": c}) == ["train.lr"]
    assert curves.differing_settings({"a": a}) == []


def make_run(root, name, config, records, state="finished", elapsed_s=120.0):
    from core import atomic

    run_dir = root / name
    runs.create_run(run_dir, config)
    runs.append_metrics(run_dir, records)
    atomic.write_json(run_dir / "status.json", {"state": state, "step": 4, "epoch": 2, "elapsed_s": elapsed_s})
    return run_dir


def test_comparison_table_figures_settings_and_a_broken_run(tmp_path):
    make_run(tmp_path, "small", {"kind": "vqvae", "model": {"num_embeddings": 64}, "train": {"lr": 1e-3}},
             [{"kind": "step", "step": 2, "codes_used": 40}, {"kind": "epoch", "step": 2, "val_ssim": 0.7},
              {"kind": "epoch", "step": 4, "val_ssim": 0.65, "val_codes_used": 50}])
    make_run(tmp_path, "large", {"kind": "vqvae", "model": {"num_embeddings": 256}, "train": {"lr": 1e-3}},
             [{"kind": "step", "step": 2, "codes_used": 200}], state="stopped", elapsed_s=30.0)
    make_run(tmp_path, "prior", {"kind": "prior", "model": {"num_embeddings": 256}, "train": {"lr": 3e-4}},
             [{"kind": "epoch", "step": 4, "val_bits_per_code": 3.0},
              {"kind": "epoch", "step": 8, "val_bits_per_code": 2.5}])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    summaries = runs.list_runs(tmp_path)
    rows = {r["run"]: r for r in curves.comparison_table(summaries, ["small", "large"])}
    assert set(rows) == {"small", "large", "prior", "broken"}
    assert rows["small"]["best val_ssim"] == 0.7 and rows["small"]["final val_ssim"] == 0.65
    assert rows["small"]["codes used"] == 50 and rows["large"]["codes used"] == 200
    assert rows["prior"]["bits per code"] == 2.5 and rows["small"]["bits per code"] is None
    assert rows["large"]["state"] == "stopped" and rows["large"]["wall time (min)"] == 0.5
    assert rows["broken"]["state"] == "broken" and rows["broken"]["best val_ssim"] is None
    # Only what differs between the chosen runs, unless every setting is asked for.
    assert "model.num_embeddings" in rows["small"] and "train.lr" not in rows["small"]
    everything = curves.comparison_table(summaries, ["small", "large"], all_settings=True)
    assert all("train.lr" in row for row in everything)
    assert {row["run"]: row["kind"] for row in everything}["broken"] == "?"
    assert curves.comparison_table(summaries, ["small", "prior"])[0].keys() >= {"train.lr", "model.num_embeddings"}


def test_sample_epochs_and_the_picture_at_or_before_an_epoch(tmp_path):
    (tmp_path / "samples").mkdir()
    for name in ("epoch_001.png", "epoch_003.png", "epoch_latest.png"):
        (tmp_path / "samples" / name).write_bytes(b"")
    pictures = curves.sample_epochs(tmp_path)
    assert sorted(pictures) == [1, 3]
    assert curves.picture_at(pictures, 2) == (1, tmp_path / "samples" / "epoch_001.png")
    assert curves.picture_at(pictures, 5)[0] == 3
    assert curves.picture_at(pictures, 0) is None and curves.sample_epochs(tmp_path / "none") == {}


def test_curves_skip_values_that_are_not_finite_numbers_and_steps_that_are_missing_or_not_numbers():
    records = [{"kind": "epoch", "epoch": 1, "val_ssim": 0.5},  # no step: the epoch axis must not need one
               {"kind": "epoch", "step": 10, "epoch": 2, "val_ssim": 0.6},
               {"kind": "step", "step": "x", "epoch": 1, "loss": 0.5},
               {"kind": "step", "step": 4, "epoch": 1, "loss": True},
               {"kind": "step", "step": 5, "epoch": 1, "loss": 10 ** 400},
               {"kind": "step", "step": 6, "epoch": 1, "loss": 0.25}]
    for axis in curves.X_AXES:
        x, raw, _ = curves.curve(records, "step", "loss", axis, 0.0)
        assert raw.tolist() == [0.5, 0.25] and len(x) == 2
    x, _, _ = curves.curve(records, "step", "loss", "step", 0.0)
    assert np.isnan(x[0]) and x[1] == 6  # a step that is not a number is not placed
    x, _, _ = curves.curve(records, "step", "loss", "epoch", 0.0)
    assert x[1] == pytest.approx(0.6)  # steps per epoch from the epoch record that has a step
    x, raw, _ = curves.curve(records, "epoch", "val_ssim", "epoch", 0.0)
    assert x.tolist() == [1, 2] and raw.tolist() == [0.5, 0.6]
    assert curves.metric_names(records, "step") == ["loss"]


@pytest.mark.parametrize("codes", [float("inf"), float("nan"), 10 ** 40, 10 ** 400])
def test_run_figures_and_settings_hold_only_what_a_table_can_show(tmp_path, codes):
    run_dir = make_run(tmp_path, "odd", {"kind": "vqvae", "train": {"batch_size": 10 ** 30}},
                       [{"kind": "epoch", "step": 3, "epoch": 1, "val_ssim": 0.5, "val_codes_used": 12},
                        {"kind": "epoch", "step": 6, "epoch": 2, "val_ssim": float("inf"), "val_codes_used": codes}])
    figures = curves.run_figures(run_dir)
    assert figures["best val_ssim"] == figures["final val_ssim"] == 0.5 and figures["codes used"] == 12
    assert curves.run_settings(run_dir)["train.batch_size"] == str(10 ** 30)  # beyond int64: shown as text


def test_sample_epochs_keep_only_readable_files_named_with_ascii_digits(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    from PIL import Image
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(samples / "epoch_001.png")
    (samples / "epoch_002.png").write_bytes(b"not a png at all")
    (samples / "epoch_003.png").mkdir()
    (samples / "epoch_004.png").symlink_to(tmp_path / "gone.png")
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(samples / "epoch_\u00b2.png")
    pictures = curves.sample_epochs(tmp_path)
    assert sorted(pictures) == [1, 2]
    assert curves.load_picture(pictures[1]).shape == (4, 8)
    assert curves.load_picture(pictures[2]) is None  # not a picture: the page says so
