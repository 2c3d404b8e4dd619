"""core.images: diverging difference colours, PNG bytes and zips of PNGs."""
from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image

from core import images


def test_diverging_map_is_white_at_zero_red_above_blue_below():
    rgb = images.diverging_rgb(np.array([[0.0, 1.0, -1.0, 5.0]]))
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1, 0] > rgb[0, 1, 2] and rgb[0, 2, 2] > rgb[0, 2, 0]
    assert rgb[0, 3].tolist() == rgb[0, 1].tolist()  # clipped at the limit


def test_zip_of_pngs_round_trips():
    slices = np.stack([np.zeros((4, 4)), np.ones((4, 4))])
    archive = zipfile.ZipFile(io.BytesIO(images.zip_of_pngs(slices, ["a", "b.png"])))
    assert archive.namelist() == ["a.png", "b.png"]
    assert np.asarray(Image.open(io.BytesIO(archive.read("b.png")))).min() == 255
