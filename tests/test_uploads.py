"""core.uploads: every bad upload gives an UploadError or a notice; good ones give [0, 1] slices of the model's size."""
from __future__ import annotations

import gzip
import io
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from core.uploads import (MAX_FILES, UploadError, decode_uploads, nifti_shape, nifti_slice,
                          read_nifti_volume)

SIZE = 32


def png(array, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), mode).save(buffer, "PNG")
    return buffer.getvalue()


def slice_array(size=SIZE) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return ((x + y) * 255 // (2 * size - 2)).astype(np.uint8)


def nifti(volume, gz=False, version=1) -> bytes:
    kind = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    data = kind(np.asarray(volume), np.eye(4)).to_bytes()
    return gzip.compress(data) if gz else data


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A tiny file whose header claims width x height pixels (the decompression-bomb shape)."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def decode_one(name, data, **kwargs):
    return decode_uploads([(name, data)], SIZE, **kwargs)


# --- good input ---------------------------------------------------------------------------------
def test_grey_png_of_the_model_size_passes_unchanged_without_notices():
    array = slice_array()
    decoded = decode_one("a.png", png(array))
    assert decoded.images.shape == (1, SIZE, SIZE, 1) and decoded.images.dtype == np.float32
    np.testing.assert_allclose(decoded.images[0, ..., 0], array / 255.0, atol=1e-6)
    assert decoded.notices == [] and decoded.names == ["a.png"]


def test_jpeg_is_accepted():
    buffer = io.BytesIO()
    Image.fromarray(slice_array()).save(buffer, "JPEG")
    decoded = decode_one("a.jpg", buffer.getvalue())
    assert decoded.images.shape == (1, SIZE, SIZE, 1)


def test_many_files_keep_their_order_and_names():
    files = [(f"s{i}.png", png(np.full((SIZE, SIZE), i * 20, np.uint8))) for i in range(5)]
    decoded = decode_uploads(files, SIZE)
    assert decoded.names == [f"s{i}.png" for i in range(5)]
    np.testing.assert_allclose(decoded.images[:, 0, 0, 0], np.arange(5) * 20 / 255.0, atol=1e-6)


# --- refused ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, data, words", [
    ("empty.png", b"", "empty"),
    ("notes.png", b"this is a text file, not a picture\n" * 4, "not an image"),
    ("truncated.png", png(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:300],
     "truncated"),
    ("bomb.png", bomb_png(), "decompression bomb"),
    ("big.png", bomb_png(5000, 5000), "decompression bomb"),
])
def test_bad_images_raise_upload_error_naming_the_file(name, data, words):
    with pytest.raises(UploadError, match=words) as error:
        decode_one(name, data)
    assert name in str(error.value)


def test_a_gif_is_refused_with_the_formats_expected():
    buffer = io.BytesIO()
    Image.fromarray(slice_array()).save(buffer, "GIF")
    with pytest.raises(UploadError, match="PNG or JPEG"):
        decode_one("a.gif", buffer.getvalue())


def test_too_many_files_are_refused():
    files = [(f"s{i}.png", png(slice_array())) for i in range(MAX_FILES + 1)]
    with pytest.raises(UploadError, match=f"at most {MAX_FILES}"):
        decode_uploads(files, SIZE)


def test_no_files_is_refused():
    with pytest.raises(UploadError):
        decode_uploads([], SIZE)


def test_upload_error_is_a_value_error():
    assert issubclass(UploadError, ValueError)


# --- converted with a notice --------------------------------------------------------------------
@pytest.mark.parametrize("channels, label", [(3, "RGB"), (4, "RGBA")])
def test_colour_images_become_grey_with_a_notice(channels, label):
    array = np.repeat(slice_array()[..., None], channels, axis=-1)
    if channels == 4:
        array[..., 3] = 255
    decoded = decode_one("colour.png", png(array))
    assert any(label in n and "greyscale" in n for n in decoded.notices)
    np.testing.assert_allclose(decoded.images[0, ..., 0], slice_array() / 255.0, atol=2 / 255)


def test_16_bit_png_keeps_its_range_with_a_notice():
    array16 = (slice_array().astype(np.uint16) * 257)
    decoded = decode_one("deep.png", png(array16))
    assert any("16-bit" in n for n in decoded.notices)
    np.testing.assert_allclose(decoded.images[0, ..., 0], array16 / 65535.0, atol=1e-4)


def test_other_size_is_resized_with_a_notice():
    decoded = decode_one("large.png", png(np.full((300, 300), 128, np.uint8)))
    assert decoded.images.shape == (1, SIZE, SIZE, 1)
    assert any("300x300" in n and f"{SIZE}x{SIZE}" in n for n in decoded.notices)
    np.testing.assert_allclose(decoded.images, 128 / 255.0, atol=1e-3)


def test_non_square_image_is_padded_then_resized():
    decoded = decode_one("wide.png", png(np.full((16, 64), 255, np.uint8)))
    assert decoded.images.shape == (1, SIZE, SIZE, 1)
    assert any("padded" in n for n in decoded.notices)
    assert decoded.images[0, 0, 0, 0] < 0.05 and decoded.images[0, SIZE // 2, SIZE // 2, 0] > 0.95


# --- NIfTI --------------------------------------------------------------------------------------
def volume_3d(shape=(40, 48, 20)) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(100.0, 30.0, shape).astype(np.float32)


@pytest.mark.parametrize("gz", [False, True])
def test_3d_nifti_gives_the_chosen_slice_scaled_to_unit_range(gz):
    data = nifti(volume_3d(), gz=gz)
    name = "brain.nii.gz" if gz else "brain.nii"
    assert nifti_shape(data, name) == (40, 48, 20)
    decoded = decode_one(name, data, axis=2, slice_index=7)
    assert decoded.images.shape == (1, SIZE, SIZE, 1)
    assert 0.0 <= decoded.images.min() and decoded.images.max() <= 1.0
    assert "slice 7" in decoded.names[0]
    volume, _ = read_nifti_volume(data, name)
    expected = nifti_slice(volume, 2, 7, SIZE)
    np.testing.assert_allclose(decoded.images[0, ..., 0], expected)


def test_nifti_scaling_is_robust_to_outliers():
    volume = volume_3d()
    volume[0, 0, 0] = 1e9  # one hot voxel must not turn the rest black
    scaled, _ = read_nifti_volume(nifti(volume), "v.nii")
    assert np.median(scaled) > 0.3


def test_nifti2_is_read():
    assert nifti_shape(nifti(volume_3d(), version=2), "v.nii") == (40, 48, 20)


def test_4d_nifti_uses_the_first_volume_with_a_notice():
    volume = np.stack([volume_3d(), volume_3d() * 0], axis=-1)  # (40, 48, 20, 2)
    decoded = decode_one("fmri.nii", nifti(volume))
    assert any("4-D" in n and "first" in n for n in decoded.notices)
    assert decoded.images.std() > 0.05  # the first volume (not the zero second one)


def test_5d_nifti_is_refused():
    with pytest.raises(UploadError, match="3-D"):
        decode_one("odd.nii", nifti(np.zeros((4, 4, 4, 2, 2), np.float32)))


def test_nan_voxels_become_zero_with_a_notice():
    volume = volume_3d()
    volume[:5] = np.nan
    decoded = decode_one("nan.nii", nifti(volume))
    assert any("NaN" in n for n in decoded.notices)
    assert np.isfinite(decoded.images).all()


def test_all_nan_volume_is_refused():
    with pytest.raises(UploadError, match="no finite"):
        decode_one("nan.nii", nifti(np.full((8, 8, 8), np.nan, np.float32)))


def test_slice_index_out_of_range_is_refused():
    with pytest.raises(UploadError, match="outside"):
        decode_one("brain.nii", nifti(volume_3d()), axis=2, slice_index=20)


@pytest.mark.parametrize("data, words", [
    (b"", "empty"), (b"not a nifti header" * 30, "not a NIfTI"),
    (gzip.compress(b"x" * 100)[:20], "truncated"),
])
def test_bad_nifti_is_refused(data, words):
    with pytest.raises(UploadError, match=words):
        decode_one("bad.nii.gz", data)


def test_truncated_nifti_voxels_are_refused():
    data = nifti(volume_3d())
    with pytest.raises(UploadError, match="truncated|not a NIfTI"):
        decode_one("cut.nii", data[: len(data) // 2])


def test_constant_volume_gives_black_with_a_notice():
    decoded = decode_one("flat.nii", nifti(np.ones((8, 8, 8), np.float32)))
    assert any("constant" in n for n in decoded.notices)
    assert decoded.images.max() == 0.0


def test_decoding_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    decode_uploads([("a.png", png(slice_array())), ("b.nii.gz", nifti(volume_3d(), gz=True))], SIZE)
    assert list(tmp_path.iterdir()) == []


def test_a_nifti_whose_header_lies_gets_a_plain_message():
    """Each is one message that names the file and what is wrong, no exception class, no line break."""
    import struct

    good = nifti(volume_3d((8, 8, 8)))
    negative = bytearray(good)
    negative[42:44] = struct.pack("<h", -8)  # dim[1]: a negative size
    far = bytearray(good)
    far[108:112] = struct.pack("<f", 2.0 ** 40)  # vox_offset: voxels far beyond the end of the file
    rgb = nifti(np.zeros((8, 8, 4), [("R", "u1"), ("G", "u1"), ("B", "u1")]))
    for data, words in ((bytes(negative), "negative"), (bytes(far), "header is damaged"), (rgb, "RGB|greyscale")):
        with pytest.raises(UploadError, match=words) as refused:
            decode_one("lying.nii", data)
        message = str(refused.value)
        assert "lying.nii" in message and "\n" not in message and "Error" not in message, message
