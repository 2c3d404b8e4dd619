"""ui.charts: the Curves page's long tables of curves and its Vega-Lite specs (valid against the Vega-Lite schema)."""
from __future__ import annotations

import json
from pathlib import Path

import altair
import jsonschema
import numpy as np
import pytest

from ui import charts

RECORDS = {
    "run-a": [{"kind": "step", "step": s, "epoch": 1, "loss": v} for s, v in ((1, 1.0), (2, 0.5), (3, float("nan")))]
    + [{"kind": "epoch", "step": 3, "epoch": 1, "val_ssim": 0.7}],
    "run-b": [{"kind": "step", "step": s, "epoch": 1, "loss": 2.0 / s} for s in (1, 2)],
}


@pytest.fixture(scope="module")
def vega_lite_schema():
    schema = next((Path(altair.__file__).parent / "vegalite").glob("v*/schema/vega-lite-schema.json"))
    return json.loads(schema.read_text())


def test_step_curves_hold_raw_and_smoothed_lines_per_run():
    rows = charts.curve_rows(RECORDS, "step", "loss", "step", 0.5)
    assert set(rows.columns) == {"run", "x", "value", "line", "colour"}
    # Each run in its colour, by its place among the runs given (the palette wraps after ten).
    assert rows.groupby("run").colour.unique().map(list).to_dict() == {"run-a": [charts.COLOURS[0]],
                                                                      "run-b": [charts.COLOURS[1]]}
    a = rows[rows.run == "run-a"]
    assert a[a.line == charts.RAW].x.tolist() == [1, 2, 3]
    np.testing.assert_allclose(a[a.line == charts.SMOOTHED].value[:2], [1.0, (0.25 * 1 + 0.5 * 0.5) / 0.75])
    assert len(rows[rows.run == "run-b"]) == 4


def test_epoch_curves_are_raw_only_and_no_runs_give_an_empty_table():
    rows = charts.curve_rows(RECORDS, "epoch", "val_ssim", "epoch", 0.5)
    assert rows.line.unique().tolist() == [charts.RAW] and rows.value.tolist() == [0.7]
    assert charts.curve_rows({}, "step", "loss", "step", 0.5).empty
    many = charts.curve_rows({f"r{i}": RECORDS["run-b"] for i in range(12)}, "step", "loss", "step", 0.5)
    assert many[many.run == "r10"].colour.unique().tolist() == [charts.COLOURS[0]]  # the palette wraps


@pytest.mark.parametrize("kind, log", [("step", True), ("step", False), ("epoch", False)])
def test_specs_are_valid_vega_lite(vega_lite_schema, kind, log):
    spec = charts.curve_spec("loss", kind, "step", log)
    rows = charts.curve_rows(RECORDS, kind, "loss" if kind == "step" else "val_ssim", "step", 0.5)
    # As Streamlit sends it: the data inline (values with NaN as null, as JSON has no NaN).
    values = json.loads(rows.to_json(orient="records"))
    jsonschema.validate({**spec, "data": {"values": values}}, vega_lite_schema)


def test_spec_takes_colours_from_the_rows_names_no_run_draws_raw_behind_and_keeps_a_log_axis_positive():
    spec = charts.curve_spec("loss", "step", "step", log=True)
    raw, smoothed = spec["layer"]
    assert "'raw'" in raw["transform"][0]["filter"] and raw["mark"]["opacity"] < 1
    assert "'smoothed'" in smoothed["transform"][0]["filter"]
    # Runs' colours come from the rows, so choosing other runs leaves the spec as it was (Streamlit
    # then updates the chart's data instead of building it again), and both layers share one legend.
    for layer in (raw, smoothed):
        assert layer["encoding"]["color"]["scale"] == {"range": {"field": "colour"}}
        assert layer["encoding"]["color"].get("legend", {}) is not None
    assert smoothed["encoding"]["y"]["scale"] == {"type": "log"}
    assert "datum.value > 0" in spec["transform"][0]["filter"]  # log(0) and below are left out
    assert "datum.value > 0" not in charts.curve_spec("loss", "step", "step")["transform"][0]["filter"]
    epoch = charts.curve_spec("val_ssim", "epoch", "epoch")
    assert len(epoch["layer"]) == 1 and epoch["layer"][0]["mark"]["point"] is True
