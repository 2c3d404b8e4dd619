"""Training-curve charts as Vega-Lite specs: Streamlit's built-in chart element, far lighter in the browser than plotly."""
from __future__ import annotations

import pandas as pd

from core import curves

# Plotly's qualitative palette, as the dashboard's other charts colour runs.
COLOURS = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF",
           "#FECB52")
RAW, SMOOTHED = "raw", "smoothed"
SMOOTHING = 0.6  # the EMA weight a chart starts with


def curve_rows(runs_records: dict, kind: str, metric: str, x_axis: str, smoothing: float) -> pd.DataFrame:
    """Long table (run, x, value, line, colour) of each run's curve: step metrics raw and EMA-smoothed,
    epoch metrics as they are (line "raw" only); each run's colour by its place in `runs_records`."""
    frames = []
    for i, (name, records) in enumerate(runs_records.items()):
        x, raw, smooth = curves.curve(records, kind, metric, x_axis, smoothing)
        colour = COLOURS[i % len(COLOURS)]
        frames.append(pd.DataFrame({"run": name, "x": x, "value": raw, "line": RAW, "colour": colour}))
        if kind == "step":
            frames.append(pd.DataFrame({"run": name, "x": x, "value": smooth, "line": SMOOTHED, "colour": colour}))
    rows = (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=["run", "x", "value", "line", "colour"]))
    return rows  # NaN and inf values (a diverged step) are left out by the spec's filter


def curve_spec(title: str, kind: str, x_axis: str, log: bool = False) -> dict:
    """Each run's raw line faint behind its smoothed line (step metrics) or a line with points (epoch
    metrics), each run in the colour its rows carry; drag to pan, wheel to zoom, double-click resets.

    The spec names no run: choosing other runs changes only the data, so Streamlit hands the chart its
    new rows instead of building the chart again (about 75 ms a chart in Chromium here)."""
    y = {"field": "value", "type": "quantitative", "title": title, "scale": {"type": "log"} if log else {"zero": False}}
    colour = {"field": "run", "type": "nominal", "title": None, "legend": {"orient": "bottom"},
              "scale": {"range": {"field": "colour"}}}
    x = {"field": "x", "type": "quantitative", "title": x_axis}
    tooltip = [{"field": "run", "type": "nominal"}, {"field": "x", "type": "quantitative", "title": x_axis,
                                                      "format": ".4~g"},
               {"field": "value", "type": "quantitative", "title": title, "format": ".4~g"}]
    valid = "isValid(datum.value) && isFinite(datum.value)" + (" && datum.value > 0" if log else "")
    front = {"transform": [{"filter": f"datum.line == '{SMOOTHED if kind == 'step' else RAW}'"}],
             "mark": {"type": "line", "strokeWidth": 2, "point": kind != "step"},
             "encoding": {"x": x, "y": y, "color": colour, "tooltip": tooltip},
             "params": [{"name": "zoom", "select": "interval", "bind": "scales"}]}
    layers = [front]
    if kind == "step":
        layers.insert(0, {"transform": [{"filter": f"datum.line == '{RAW}'"}],
                          "mark": {"type": "line", "strokeWidth": 1, "opacity": 0.25},
                          "encoding": {"x": x, "y": y, "color": colour}})  # one legend, merged with the front layer's
    return {"title": title, "height": 260, "transform": [{"filter": valid}], "layer": layers}
