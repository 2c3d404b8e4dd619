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
