"""Whole-brain volumes: a stack of axial slices as NIfTI (RAS, marked synthetic), montages, three-plane views, and coherence figures.

A volume here is a (Z, H, W) float array in [0, 1]: slice z is the axial slice at OASIS level z
(0 = base of the brain), shown as an image with row 0 at the top. As NIfTI it is stored as
(X, Y, Z) = (W, H, Z) voxels, x to the right, y from the bottom row up, z from base to vertex,
with an affine of nominal spacing that reads RAS; `core.uploads.nifti_slice` turns it back into
the same upright slices.
"""
from __future__ import annotations

import gzip
import io

import numpy as np

from core import images

# Nominal voxel size (mm): 1 mm in plane; OASIS's 32 slices span the brain, about 5 mm apart.
SPACING_MM = (1.0, 1.0, 5.0)
# Rows per slice in coronal and sagittal views, so that they show the nominal voxel shape.
Z_STRETCH = max(1, int(round(SPACING_MM[2] / SPACING_MM[0])))
DESCRIPTION = b"BrainVQ synthetic volume: generated, not a scan"
PLANES = ("axial", "coronal", "sagittal")


def check_volume(volume) -> np.ndarray:
    volume = np.asarray(volume, np.float32)
    if volume.ndim == 4 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"Expected a volume of shape (Z, H, W). Received: {volume.shape}")
    return volume


def to_voxels(volume) -> np.ndarray:
    """(Z, H, W) slices -> (X, Y, Z) uint8 voxels in RAS order (the inverse of nifti_slice's rotation)."""
    voxels = images.to_uint8(check_volume(volume))
    return np.ascontiguousarray(np.transpose(voxels[:, ::-1, :], (2, 1, 0)))


def nifti_bytes(volume) -> bytes:
    """A gzipped NIfTI-1 file of the volume: uint8 voxels, RAS affine of SPACING_MM, header saying synthetic."""
    import nibabel as nib

    voxels = to_voxels(volume)
    affine = np.diag([*SPACING_MM, 1.0])
    affine[:3, 3] = -np.array(voxels.shape) * np.array(SPACING_MM) / 2.0  # the volume's centre at the origin
    image = nib.Nifti1Image(voxels, affine)
    header = image.header
    header.set_xyzt_units("mm")
    header["descrip"] = DESCRIPTION
    image.set_qform(affine, code=2)  # aligned to an anatomy, not scanner coordinates
    image.set_sform(affine, code=2)
    raw = io.BytesIO()
    raw.write(image.to_bytes())
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def plane(volume, which: str, index: int) -> np.ndarray:
    """One upright 2-D view of a (Z, H, W) volume: axial (H, W) at slice z, coronal (Z, W) at row y,
    sagittal (Z, H) at column x; coronal and sagittal put the vertex at the top."""
    volume = check_volume(volume)
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[which]
    if not 0 <= index < volume.shape[axis]:
        raise ValueError(f"Expected a {which} index in [0, {volume.shape[axis]}). Received: {index}")
    view = np.take(volume, index, axis=axis)
    return view if which == "axial" else view[::-1]


def scaled_plane(volume, which: str, index: int) -> np.ndarray:
    """`plane`, stretched along z so that coronal and sagittal views show the nominal voxel shape."""
    view = plane(volume, which, index)
    return view if which == "axial" else np.repeat(view, Z_STRETCH, axis=0)


def views_through(volume, z: int, y: int, x: int) -> list[np.ndarray]:
    """The axial, coronal and sagittal `scaled_plane` views through the voxel (z, y, x)."""
    return [scaled_plane(volume, "axial", z), scaled_plane(volume, "coronal", y), scaled_plane(volume, "sagittal", x)]


def montage(volume, columns: int = 8) -> np.ndarray:
    """All axial slices side by side, base at the top left: (rows * H, columns * W)."""
    return images.mosaic(check_volume(volume), columns)


def three_plane(volume, point: tuple[int, int, int] | None = None, gap: int = 4) -> np.ndarray:
    """Axial, coronal and sagittal views through `point` (z, y, x; default the centre) in one picture."""
    volume = check_volume(volume)
    views = views_through(volume, *(point if point is not None else tuple(s // 2 for s in volume.shape)))
    height = max(v.shape[0] for v in views)
    padded = [np.pad(v, ((0, height - v.shape[0]), (0, gap))) for v in views]
    return np.concatenate(padded, axis=1)[:, :-gap]


def adjacent_ssim(volumes) -> float:
    """Mean SSIM between neighbouring axial slices of (N, Z, H, W) volumes: how smoothly a stack changes."""
    from core import metrics

    volumes = np.asarray(volumes, np.float32)
    if volumes.ndim == 3:
        volumes = volumes[None]
    below = volumes[:, :-1].reshape(-1, *volumes.shape[2:])[..., None]
    above = volumes[:, 1:].reshape(-1, *volumes.shape[2:])[..., None]
    return float(np.mean(metrics.ssim(below, above)))


def area_profile(volumes) -> np.ndarray:
    """(Z,) mean brain area (`sample_quality.brain_area`) of each slice level, over (N, Z, H, W) volumes."""
    from core.sample_quality import brain_area

    volumes = np.asarray(volumes, np.float32)
    if volumes.ndim == 3:
        volumes = volumes[None]
    count, depth = volumes.shape[:2]
    return brain_area(volumes.reshape(count * depth, *volumes.shape[2:])).reshape(count, depth).mean(axis=0)
