"""core/volumes.py: NIfTI that reads RAS and round-trips through the upload path, the three planes, montages, coherence figures."""
from __future__ import annotations

import numpy as np
import pytest

from core import uploads, volumes


def asymmetric_volume(depth=4, height=12, width=10) -> np.ndarray:
    """Slices whose every voxel is told apart: value = (z, row, column) coded, in [0, 1]."""
    z, row, column = np.meshgrid(np.arange(depth), np.arange(height), np.arange(width), indexing="ij")
    return ((z * height * width + row * width + column) / (depth * height * width - 1)).astype(np.float32)


def test_voxels_are_x_right_y_up_z_from_the_base():
    volume = asymmetric_volume()
    voxels = volumes.to_voxels(volume)
    assert voxels.shape == (10, 12, 4) and voxels.dtype == np.uint8
    # x = column; y counts rows from the bottom of the picture; z = slice.
    assert voxels[3, 0, 2] == np.round(volume[2, 11, 3] * 255)
    assert voxels[0, 11, 0] == np.round(volume[0, 0, 0] * 255)


def test_nifti_reads_ras_says_synthetic_and_round_trips_through_the_upload_path():
    import nibabel as nib

    volume = asymmetric_volume()
    data = volumes.nifti_bytes(volume)
    image = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(data))
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert image.header.get_zooms() == volumes.SPACING_MM
    assert b"synthetic" in bytes(image.header["descrip"])
    # The Reconstruct page's own reader and slicer give back the generated slices, upright.
    read, notices = uploads.read_nifti_volume(data, "brain.nii.gz")
    assert read.shape == (10, 12, 4)
    low, high = np.percentile(np.round(volume * 255), [1, 99])  # the reader's contrast stretch
    for z in range(4):
        expected = np.clip((np.round(volume[z] * 255) - low) / (high - low), 0, 1)
        got = np.rot90(read[:, :, z])
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert volumes.nifti_bytes(volume) == data  # no time stamp: the same volume, the same bytes


def test_planes_are_upright_with_the_vertex_at_the_top():
    volume = asymmetric_volume()
    np.testing.assert_array_equal(volumes.plane(volume, "axial", 2), volume[2])
    coronal = volumes.plane(volume, "coronal", 5)
    assert coronal.shape == (4, 10)
    np.testing.assert_array_equal(coronal[0], volume[3, 5])  # top row: the highest slice
    sagittal = volumes.plane(volume, "sagittal", 7)
    assert sagittal.shape == (4, 12)
    np.testing.assert_array_equal(sagittal[-1], volume[0, :, 7])
    assert volumes.scaled_plane(volume, "coronal", 5).shape == (4 * 5, 10)  # 5 mm slices, 1 mm pixels
    with pytest.raises(ValueError, match="sagittal index"):
        volumes.plane(volume, "sagittal", 10)


def test_montage_and_three_plane_sheet():
    volume = asymmetric_volume(depth=10)
    sheet = volumes.montage(volume, columns=4)
    assert sheet.shape == (3 * 12, 4 * 10)
    np.testing.assert_array_equal(sheet[12:24, 10:20], volume[5])
    assert sheet[24:, 20:].max() == 0  # two empty cells after the last slice
    views = volumes.three_plane(volume, (1, 2, 3), gap=2)
    assert views.shape == (10 * 5, 10 + 2 + 10 + 2 + 12)
    np.testing.assert_array_equal(views[:12, :10], volume[1])


def test_adjacent_ssim_and_area_profile():
    steady = np.repeat(asymmetric_volume(depth=1, height=16, width=16), 3, axis=0)
    assert volumes.adjacent_ssim(steady) == pytest.approx(1.0, abs=1e-5)
    noisy = np.random.default_rng(0).uniform(size=(2, 3, 16, 16)).astype(np.float32)
    assert volumes.adjacent_ssim(noisy) < 0.2
    profile = volumes.area_profile(np.stack([np.zeros((8, 8)), np.ones((8, 8)), np.eye(8)])[None])
    np.testing.assert_allclose(profile, [0.0, 1.0, 1 / 8])
