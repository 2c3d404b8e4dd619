"""Image viewer for the pages: window/level, panels that zoom and pan together (plotly), a wipe, and heat-map overlays."""
from __future__ import annotations

import base64
import io

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from plotly.subplots import make_subplots

from core import images

AUTO_PERCENTILES = (0.1, 99.9)  # a few hot or dead pixels must not set the whole window
WINDOW_MODES = ("auto (0.1-99.9 %)", "full range", "manual")
COMPARE_MODES = ("side by side", "wipe", "flicker")
UI_REVISION = "viewer"  # same value on every rerun: plotly keeps the user's zoom while the pictures change


def auto_window(image: np.ndarray) -> tuple[float, float]:
    """(black, white) at the 0.1 and 99.9 percentiles of the image; never an empty window."""
    low, high = np.percentile(np.asarray(image, np.float64), AUTO_PERCENTILES)
    return (float(low), float(high)) if high > low else (float(low), float(low) + 1e-3)


def apply_window(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Grey values -> [0, 1]: black at or below window[0], white at or above window[1]."""
    low, high = window
    if not high > low:
        raise ValueError(f"Expected a window with white above black. Received: window={window}")
    return np.clip((np.asarray(image, np.float32) - low) / (high - low), 0.0, 1.0)


def colour_map(values: np.ndarray, colorscale: str, low: float, high: float) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 through a plotly colour scale from `low` to `high`."""
    table = np.array([plotly.colors.unlabel_rgb(c) for c in
                      plotly.colors.sample_colorscale(colorscale, np.linspace(0, 1, 256))], np.float64)
    t = np.clip((np.asarray(values, np.float64) - low) / max(high - low, 1e-12), 0, 1)
    return table[(t * 255).round().astype(int)].round().astype(np.uint8)


def wipe(left: np.ndarray, right: np.ndarray, position: float) -> np.ndarray:
    """`left` up to `position` (a fraction of the width), `right` after it, with a one-pixel white seam."""
    left, right = np.asarray(left, np.float32), np.asarray(right, np.float32)
    column = int(round(np.clip(position, 0.0, 1.0) * left.shape[1]))
    picture = np.concatenate([left[:, :column], right[:, column:]], axis=1)
    if 0 < column < left.shape[1]:
        picture[:, column] = 1.0
    return picture


def _rgb(picture: np.ndarray) -> np.ndarray:
    """[0, 1] grey (H, W) or uint8 (H, W, 3) -> uint8 (H, W, 3)."""
    if picture.ndim == 2:
        return np.repeat(images.to_uint8(picture)[..., None], 3, axis=-1)
    return np.asarray(picture, np.uint8)


def _png_source(picture: np.ndarray) -> str:
    """A PNG data URI: a few kB per panel where a heat map of every value would send megabytes."""
    buffer = io.BytesIO()
    Image.fromarray(_rgb(picture), "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def linked_views(panels: list[tuple], height: int = 340) -> go.Figure:
    """Panels side by side on shared pixel axes: zooming or panning one moves them all.

    Each panel is (title, picture) or (title, picture, offset): a [0, 1] grey (H, W) or uint8
    (H, W, 3) picture, drawn with its top-left pixel at (offset, offset) (the SSIM map starts at
    the centre of the first 11x11 window).
    """
    fig = make_subplots(1, len(panels), subplot_titles=[p[0] for p in panels], shared_xaxes="all",
                        shared_yaxes="all", horizontal_spacing=0.01)
    for column, panel in enumerate(panels, start=1):
        offset = panel[2] if len(panel) > 2 else 0
        fig.add_trace(go.Image(source=_png_source(panel[1]), x0=offset, y0=offset, name=panel[0],
                               hovertemplate="x %{x}, y %{y}<extra>" + panel[0] + "</extra>"), 1, column)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor="x", autorange="reversed")
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0), uirevision=UI_REVISION,
                      dragmode="pan")
    return fig


def overlay_figure(image: np.ndarray, values: np.ndarray, title: str, unit: str, colorscale: str = "Hot",
                   opacity: float = 0.55, height: int = 420, box: tuple[int, int, int] | None = None) -> go.Figure:
    """A [0, 1] grey slice with a coarse (h, w) map drawn over it, one cell per code; hover shows the value.

    `box`: (row, column, side) in cells, outlined over the map.
    """
    size, grid = image.shape[0], values.shape[0]
    scale = size / grid
    fig = go.Figure(go.Image(source=_png_source(image), hoverinfo="skip"))
    fig.add_trace(go.Heatmap(z=values, x0=(scale - 1) / 2, dx=scale, y0=(scale - 1) / 2, dy=scale,
                             opacity=opacity, colorscale=colorscale, colorbar=dict(title=unit),
                             hovertemplate="%{z:.2f} " + unit + "<extra></extra>"))
    if box is not None:
        row, column, side = box
        fig.add_shape(type="rect", x0=column * scale - 0.5, x1=(column + side) * scale - 0.5,
                      y0=row * scale - 0.5, y1=(row + side) * scale - 0.5, line=dict(color="cyan", width=2))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor="x", autorange="reversed")
    fig.update_layout(title=title, height=height, margin=dict(l=0, r=0, t=40, b=0), uirevision=UI_REVISION)
    return fig


def strip_figure(values: np.ndarray, current: int, title: str) -> go.Figure:
    """One value per slice of a volume as a line, the slice shown marked in red."""
    fig = go.Figure(go.Scatter(y=np.asarray(values).tolist(), mode="lines+markers", name="SSIM"))
    fig.add_vline(x=current, line_color="crimson")
    fig.update_layout(height=180, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="slice", title=title)
    return fig


def window_controls(image: np.ndarray, key: str, where=st) -> tuple[float, float]:
    """The window/level controls: automatic percentile stretch, the full [0, 1] range, or manual."""
    left, right = where.columns([2, 3])
    mode = left.radio("Window / level", WINDOW_MODES, horizontal=True, key=f"{key}_window_mode")
    if mode == WINDOW_MODES[0]:
        return auto_window(image)
    if mode == WINDOW_MODES[1]:
        return 0.0, 1.0
    low, high = auto_window(image)
    black, white = right.slider("Window (black, white)", 0.0, 1.0, (round(low, 2), round(max(high, low + 0.01), 2)),
                                0.01, key=f"{key}_window")
    if white <= black:  # a slider range can close up completely; keep the window one step wide
        white = min(black + 0.01, 1.0)
        black = white - 0.01
    return black, white


CROSSHAIR_RGB = (255, 200, 0)


def with_crosshair(picture: np.ndarray, row: int, column: int) -> np.ndarray:
    """(H, W) grey in [0, 1] -> (H, W, 3) uint8 with a thin cross through (row, column), dashed so
    the anatomy under it stays visible."""
    rgb = _rgb(picture)
    height, width = picture.shape
    dashes_across = (np.arange(width) // 3) % 2 == 0
    dashes_down = (np.arange(height) // 3) % 2 == 0
    rgb[min(max(row, 0), height - 1), dashes_across] = CROSSHAIR_RGB
    rgb[dashes_down, min(max(column, 0), width - 1)] = CROSSHAIR_RGB
    return rgb


def three_planes(volume: np.ndarray, z: int, y: int, x: int) -> list[tuple[str, np.ndarray]]:
    """The axial, coronal and sagittal views through (z, y, x) of a (Z, H, W) volume, each with the
    cross-hair at the point the other two show; coronal and sagittal are stretched to nominal mm."""
    from core import volumes

    stretch = volumes.Z_STRETCH
    row_of_z = (volume.shape[0] - 1 - z) * stretch + stretch // 2  # the vertex is at the top of those views
    axial, coronal, sagittal = volumes.views_through(volume, z, y, x)
    return [(f"axial, slice {z}", with_crosshair(axial, y, x)),
            (f"coronal, row {y}", with_crosshair(coronal, row_of_z, x)),
            (f"sagittal, column {x}", with_crosshair(sagittal, row_of_z, y))]
