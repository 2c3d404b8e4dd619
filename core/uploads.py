"""User uploads (PNG/JPEG slices, NIfTI volumes) as bytes, or a slice file a command names -> (N, H, W, 1) float32 in [0, 1], with notices."""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field

import numpy as np

from core.data import DataError, decode_slice, fit_to_size, slice_file_bytes

MAX_FILES = 64  # slices per upload
MAX_NIFTI_BYTES = 256 * 2**20  # a volume whose voxels take more is refused, from its header (a 256^3 float32 volume is 64 MiB)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class UploadError(ValueError):
    """An upload that cannot be used; the message names the file and says what was expected."""


@dataclass
class DecodedUploads:
    """Slices ready for the model, one name per slice, and what was changed to get there."""

    images: np.ndarray  # (N, S, S, 1) float32 in [0, 1], S = the model's image_size
    names: list[str]
    notices: list[str] = field(default_factory=list)


def read_slice_file(path, image_size: int) -> tuple[np.ndarray, list[str]]:
    """A slice file named on a command line -> (S, S, 1) float32 in [0, 1] and the notices its upload would give."""
    image, notices = decode_image(slice_file_bytes(path), str(path), image_size)
    return image[..., None], notices


def is_nifti(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


# --- PNG / JPEG: the one decode path of core.data ----------------------------------------------------
def decode_image(data: bytes, name: str, image_size: int) -> tuple[np.ndarray, list[str]]:
    """PNG or JPEG bytes -> (S, S) float32 in [0, 1] and notices about what was converted."""
    try:
        grey, converted = decode_slice(data, name)
    except DataError as error:
        raise UploadError(str(error)) from error
    notices = []
    if converted:
        notices.append(f"{name}: {converted} image converted to 8-bit-equivalent greyscale.")
    height, width = grey.shape
    if (height, width) != (image_size, image_size):
        notices.append(f"{name}: {width}x{height} resized to the model's {image_size}x{image_size}"
                       + (" (padded to a square first)." if height != width else "."))
    return fit_to_size(grey, image_size), notices


# --- NIfTI --------------------------------------------------------------------------------------
def _gunzip(data: bytes, name: str) -> bytes:
    """Decompress in chunks, refusing as soon as the output passes the cap (a gzip bomb never fills memory)."""
    decompressor, parts, size = zlib.decompressobj(wbits=31), [], 0
    try:
        source = io.BytesIO(data)
        while chunk := source.read(1 << 16):
            while chunk:
                part = decompressor.decompress(chunk, 1 << 20)
                size += len(part)
                if size > MAX_NIFTI_BYTES + 2**16:
                    raise UploadError(f"{name} decompresses to more than {MAX_NIFTI_BYTES // 2**20} MiB; refused.")
                parts.append(part)
                chunk = decompressor.unconsumed_tail
        if not decompressor.eof:
            raise UploadError(f"{name} is a damaged or truncated .gz file (it ends early).")
    except zlib.error as error:
        raise UploadError(f"{name} is a damaged or truncated .gz file ({error}).") from error
    return b"".join(parts)


def _check_declared_size(image, data: bytes, name: str) -> None:
    """Refuse, from the header alone, a volume too large for memory or larger than the file holding it."""
    header = image.header
    shape = tuple(int(s) for s in header.get_data_shape())
    if any(size < 0 for size in shape):
        raise UploadError(f"{name}: its header declares a negative size ({'x'.join(map(str, shape))}); "
                          f"the header is damaged.")
    dtype = header.get_data_dtype()
    if dtype.kind not in "biuf":  # RGB (a record), complex or void voxels: not one grey value each
        raise UploadError(f"{name} holds {'RGB' if dtype.names else dtype.kind} voxels ({dtype}); expected "
                          f"greyscale numbers, one value per voxel.")
    needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if needed > MAX_NIFTI_BYTES:
        raise UploadError(f"{name} declares a {'x'.join(map(str, shape))} volume of {needed / 2**20:.0f} MiB; "
                          f"the limit is {MAX_NIFTI_BYTES // 2**20} MiB. Refused before reading its voxels.")
    available = len(data) - int(header.get_data_offset())
    if needed > available:
        raise UploadError(f"{name}: its header promises {needed} bytes of voxels but the file holds "
                          f"{max(available, 0)}; the file is truncated or its header is wrong.")


def _nifti_image(data: bytes, name: str):
    import nibabel as nib

    if not data:
        raise UploadError(f"{name} is empty (0 bytes). Upload a .nii or .nii.gz volume.")
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        data = _gunzip(data, name)
    for kind in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            image = kind.from_bytes(data)
        except Exception:  # nibabel raises several types for "not this format"
            continue
        _check_declared_size(image, data, name)
        return image
    raise UploadError(f"{name} is not a NIfTI volume: expected a .nii or .nii.gz file with a "
                      f"NIfTI-1 or NIfTI-2 header.")


def nifti_shape(data: bytes, name: str) -> tuple[int, int, int]:
    """The three spatial sizes of a NIfTI volume, read from its header (for the slice picker)."""
    shape = tuple(int(s) for s in _nifti_image(data, name).shape)
    if len(shape) < 2:
        raise UploadError(f"{name} has shape {shape}; expected a 3-D volume (or a 2-D slice).")
    return (shape + (1,))[:3] if len(shape) == 2 else shape[:3]


def read_nifti_volume(data: bytes, name: str) -> tuple[np.ndarray, list[str]]:
    """NIfTI bytes -> (X, Y, Z) float32 volume scaled to [0, 1] by its 1st-99th percentiles."""
    image = _nifti_image(data, name)
    shape, notices = image.shape, []
    if len(shape) > 4 and any(s > 1 for s in shape[4:]):
        raise UploadError(f"{name} has shape {shape}; expected a 3-D volume (or 4-D, whose first "
                          f"volume is used).")
    if len(shape) >= 4 and shape[3] > 1:
        notices.append(f"{name}: 4-D volume of shape {shape}; the first of its {shape[3]} volumes "
                       f"is used.")
    try:
        volume = np.asarray(image.dataobj[(slice(None),) * 3 + (0,) * (len(shape) - 3)]
                            if len(shape) > 3 else image.dataobj, np.float32)
    except Exception as error:  # a header promising more voxels than the file holds
        raise UploadError(f"{name}: its voxels cannot be read as its header describes them; the file is "
                          f"truncated or its header is damaged.") from error
    if volume.ndim == 2:
        volume = volume[..., None]
    finite = np.isfinite(volume)
    if not finite.any():
        raise UploadError(f"{name} holds no finite values (all NaN or infinite).")
    if not finite.all():
        notices.append(f"{name}: {int((~finite).sum())} NaN or infinite voxels set to 0.")
        volume = np.where(finite, volume, 0.0).astype(np.float32)
    low, high = np.percentile(volume, [1, 99])
    if high <= low:
        notices.append(f"{name}: the volume is (nearly) constant; shown as black.")
        return np.zeros_like(volume), notices
    return np.clip((volume - low) / (high - low), 0.0, 1.0), notices


def nifti_slice(volume: np.ndarray, axis: int, index: int, image_size: int) -> np.ndarray:
    """One slice of a [0, 1] volume along `axis`, rotated to display upright, fitted to the model."""
    if axis not in (0, 1, 2):
        raise UploadError(f"Expected a slice axis 0, 1 or 2. Received: axis={axis}")
    depth = volume.shape[axis]
    if not 0 <= index < depth:
        raise UploadError(f"Slice {index} is outside the volume: axis {axis} has slices "
                          f"0..{depth - 1}.")
    plane = np.rot90(np.take(volume, index, axis=axis))
    return fit_to_size(np.ascontiguousarray(plane, np.float32), image_size)


# --- many files -----------------------------------------------------------------------------------
def decode_uploads(files: list[tuple[str, bytes]], image_size: int, *, axis: int = 2,
                   slice_index: int | None = None) -> DecodedUploads:
    """Decode uploaded (name, bytes) pairs into model-ready slices.

    Images give one slice each; a NIfTI volume gives the slice `slice_index` along `axis`
    (the middle slice when None). Raises UploadError naming the first unusable file.
    """
    if not files:
        raise UploadError("No file was uploaded.")
    if len(files) > MAX_FILES:
        raise UploadError(f"{len(files)} files were uploaded; at most {MAX_FILES} at a time.")
    images, names, notices = [], [], []
    for name, data in files:
        if is_nifti(name):
            volume, volume_notices = read_nifti_volume(data, name)
            index = volume.shape[axis] // 2 if slice_index is None else slice_index
            images.append(nifti_slice(volume, axis, index, image_size))
            names.append(f"{name} [axis {axis}, slice {index}]")
            notices.extend(volume_notices)
            plane = tuple(s for i, s in enumerate(volume.shape) if i != axis)
            if plane != (image_size, image_size):
                notices.append(f"{name}: {plane[0]}x{plane[1]} slices fitted to the model's "
                               f"{image_size}x{image_size}.")
        else:
            image, image_notices = decode_image(data, name, image_size)
            images.append(image)
            names.append(name)
            notices.extend(image_notices)
    return DecodedUploads(np.stack(images)[..., None].astype(np.float32), names,
                          _summarise(notices))


def _summarise(notices: list[str], keep: int = 6) -> list[str]:
    """Many files with the same problem give a few lines and a count, not one line per file."""
    if len(notices) <= keep:
        return notices
    return notices[:keep] + [f"... and {len(notices) - keep} more notices like these."]
