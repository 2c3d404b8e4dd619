"""The one decode path (core.data): a slice gives the same array uploaded, read from a split, or streamed for training; lying files are refused cheaply."""
from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

from core import data, uploads
from oasis_fixtures import REPO_ROOT, write_png


def lying_png(width: int, height: int) -> bytes:
    """A valid 8x8 greyscale PNG whose header then claims width x height pixels (CRC fixed up)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def slice_variants(rng) -> dict[str, np.ndarray]:
    grey = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    return {"square 8-bit": grey,
            "non-square 8-bit": rng.integers(0, 256, (40, 24), dtype=np.uint8),
            "16-bit": rng.integers(0, 65536, (40, 40), dtype=np.uint16),
            "RGB": np.repeat(grey[..., None], 3, axis=-1) // np.array([1, 2, 3], np.uint8)}


@pytest.mark.parametrize("variant", ["square 8-bit", "non-square 8-bit", "16-bit", "RGB"])
@pytest.mark.parametrize("size", [32, 40, 64])
def test_a_slice_is_the_same_array_uploaded_from_a_split_and_in_training(tmp_path, variant, size):
    pixels = slice_variants(np.random.default_rng(0))[variant]
    folder = tmp_path / "keras_png_slices_test"
    path = write_png(folder / "case_001_slice_3.nii.png", pixels)
    uploaded = uploads.decode_uploads([(path.name, path.read_bytes())], size).images[0]
    from_split = data.load_images([path], size)[0]
    streamed = next(iter(data.make_dataset([path], batch_size=1, image_size=size, shuffle=False)))[0].numpy()
    assert uploaded.shape == (size, size, 1)
    np.testing.assert_array_equal(uploaded, from_split)
    np.testing.assert_array_equal(uploaded, streamed)


def test_a_non_square_slice_is_padded_not_stretched(tmp_path):
    pixels = np.full((40, 20), 255, np.uint8)  # a white 40x20 slice
    path = write_png(tmp_path / "tall.png", pixels)
    fitted = data.load_images([path], 40)[0, ..., 0]
    assert fitted[:, :10].max() == 0 and fitted[:, -10:].max() == 0  # black bars left and right
    np.testing.assert_allclose(fitted[:, 10:30], 1.0)


def test_a_claimed_20000_square_png_is_a_data_error_at_scan_time(tmp_path):
    folder = tmp_path / "keras_png_slices_train"
    write_png(folder / "case_001_slice_0.png", np.zeros((8, 8), np.uint8))
    (folder / "case_001_slice_1.png").write_bytes(lying_png(20000, 20000))
    with pytest.raises(data.DataError, match="case_001_slice_1.png.*decompression bomb"):
        data.scan_split(tmp_path, "train")
    with pytest.raises(data.DataError, match="decompression bomb"):
        data.load_images([folder / "case_001_slice_1.png"], 32)
    (folder / "case_001_slice_1.png").write_bytes(lying_png(5000, 5000))  # under PIL's own limit, over ours
    with pytest.raises(data.DataError, match="case_001_slice_1.png is 5000x5000 pixels; the limit is 4096x4096"):
        data.scan_split(tmp_path, "train")


def test_slices_too_small_to_encode_are_refused_at_scan_time(tmp_path):
    folder = tmp_path / "keras_png_slices_train"
    for i in range(3):
        write_png(folder / f"case_001_slice_{i}.png", np.full((1, 1), 100, np.uint8))
    with pytest.raises(data.DataError, match="1x1 pixels; a slice needs at least 8x8"):
        data.scan_split(tmp_path, "train")


PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {repo!r})
    from core import uploads
    payload = open(sys.argv[1], "rb").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        uploads.decode_uploads([(sys.argv[2], payload)], 64)
        print("accepted")
    except uploads.UploadError as error:
        print("refused:", error)
    print("grew_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""")


def peak_growth(tmp_path, payload: bytes, name: str) -> tuple[str, int]:
    """Decode an upload in a fresh process: its message, and how much its peak memory grew (KiB)."""
    (tmp_path / "payload").write_bytes(payload)
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT.format(repo=str(REPO_ROOT)))
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "payload"), name],
                            capture_output=True, text=True, timeout=120)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stderr[-2000:]
    return lines[0], int(lines[1].split()[1])


def nifti_header_claiming(shape: tuple[int, ...]) -> bytes:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    return header.binaryblock + b"\0" * 4 + np.zeros(64, np.float32).tobytes()


CEILING_KIB = 200 * 1024  # the bound: a lying file costs the process under +200 MB


def test_a_tiny_nifti_claiming_1024_cubed_is_refused_without_the_memory(tmp_path):
    # Before: 1.3 KB claiming 1024^3 float32 took the app to 5.1 GB before its message.
    message, grew = peak_growth(tmp_path, nifti_header_claiming((1024, 1024, 1024)), "liar.nii")
    assert message.startswith("refused:") and "4096 MiB" in message
    assert grew < CEILING_KIB, grew


def test_a_nifti_whose_voxels_are_missing_is_refused(tmp_path):
    message, grew = peak_growth(tmp_path, nifti_header_claiming((64, 64, 64)), "short.nii")
    assert message.startswith("refused:") and "truncated" in message
    assert grew < CEILING_KIB, grew


def test_a_gzip_bomb_is_refused_while_decompressing(tmp_path):
    # Before: a 494 KB .nii.gz expanding to 500 MB took 2.2 GB.
    bomb = gzip.compress(nifti_header_claiming((400, 400, 800))[:352] + b"\0" * (500 * 2**20), 9)
    assert len(bomb) < 1_000_000
    message, grew = peak_growth(tmp_path, bomb, "bomb.nii.gz")
    assert message.startswith("refused:") and ("MiB" in message)
    assert grew < CEILING_KIB, grew


def test_a_claimed_20000_square_png_upload_is_refused_without_the_memory(tmp_path):
    message, grew = peak_growth(tmp_path, lying_png(20000, 20000), "huge.png")
    assert message.startswith("refused:") and "decompression bomb" in message
    assert grew < CEILING_KIB, grew
