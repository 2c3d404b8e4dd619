"""ui.viewer: the window/level maths, the wipe, colour maps and the linked figure's shared axes."""
import numpy as np
import pytest

from ui import viewer


def test_auto_window_ignores_a_few_outlier_pixels():
    image = np.full((100, 100), 0.4, np.float32)
    image[:50] = 0.2
    image[0, 0], image[0, 1] = 1.0, 0.0  # 2 of 10,000 pixels: below the 0.1 % tails
    assert viewer.auto_window(image) == pytest.approx((0.2, 0.4), abs=1e-6)
    low, high = viewer.auto_window(np.zeros((8, 8)))
    assert high > low  # a flat image still has a usable window


def test_apply_window_maps_black_and_white_and_clips():
    image = np.array([[0.1, 0.2, 0.3, 0.5]], np.float32)
    np.testing.assert_allclose(viewer.apply_window(image, (0.2, 0.4)), [[0.0, 0.0, 0.5, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="Expected a window"):
        viewer.apply_window(image, (0.4, 0.4))


def test_wipe_puts_left_before_the_seam_and_right_after():
    left, right = np.zeros((4, 10)), np.full((4, 10), 0.5)
    picture = viewer.wipe(left, right, 0.3)
    assert (picture[:, :3] == 0).all() and (picture[:, 3] == 1).all() and (picture[:, 4:] == 0.5).all()
    assert (viewer.wipe(left, right, 0.0) == 0.5).all() and (viewer.wipe(left, right, 1.0) == 0).all()


def test_colour_map_ends_at_the_scale_ends():
    rgb = viewer.colour_map(np.array([[0.0, 1.0, 2.0]]), "Greys", 0.0, 1.0)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 1] == rgb[0, 2]).all() and not (rgb[0, 0] == rgb[0, 1]).all()


def test_linked_views_share_both_axes_and_keep_the_zoom_across_reruns():
    fig = viewer.linked_views([("a", np.zeros((16, 16))), ("b", np.ones((16, 16))),
                               ("c", np.zeros((6, 6, 3), np.uint8), 5)])
    layout = fig.to_plotly_json()["layout"]
    assert layout["xaxis2"]["matches"] == "x" and layout["yaxis3"]["matches"] == "y"
    assert layout["uirevision"] == viewer.UI_REVISION
    assert [t.x0 for t in fig.data] == [0, 0, 5]
    assert all(t.source.startswith("data:image/png;base64,") for t in fig.data)
