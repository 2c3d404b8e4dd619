"""core.data: finding the OASIS layout, validating splits, decoding and streaming slices."""
from __future__ import annotations

import io
import logging
import shutil
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf

from oasis_fixtures import OASIS_SPLIT_SIZES, brain_slice, make_oasis_tree, write_png
from core import data
from core.data import DataError


def _data_root(tree):
    return tree / "keras_png_slices_data"


# --- finding the layout -------------------------------------------------------------------------
def test_find_data_root_from_parent_and_from_folder_itself(oasis_tree):
    assert data.find_data_root(oasis_tree) == _data_root(oasis_tree)
    assert data.find_data_root(_data_root(oasis_tree)) == _data_root(oasis_tree)


@pytest.mark.parametrize("inner", ["slices/keras_png_slices_data", "slices"])
def test_find_data_root_from_slices_subfolder(tmp_path, oasis_tree, inner):
    target = tmp_path / inner
    shutil.copytree(_data_root(oasis_tree), target)
    assert data.find_data_root(tmp_path) == target


def test_find_data_root_accepts_str_and_user_paths(oasis_tree):
    assert data.find_data_root(str(oasis_tree)) == _data_root(oasis_tree)


def test_missing_folder_is_a_data_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as error:
        data.find_data_root(missing)
    assert str(missing) in str(error.value)


def test_file_instead_of_folder_is_a_data_error_naming_it(tmp_path):
    file = tmp_path / "slices.zip"
    file.write_bytes(b"not a folder")
    with pytest.raises(DataError, match="is a file") as error:
        data.find_data_root(file)
    assert str(file) in str(error.value)


def test_folder_without_oasis_layout_is_a_data_error(tmp_path):
    (tmp_path / "images").mkdir()
    write_png(tmp_path / "images" / "a.png", brain_slice(0))
    with pytest.raises(DataError, match="not an OASIS slice folder") as error:
        data.find_data_root(tmp_path)
    assert str(tmp_path) in str(error.value)
    assert "images" in str(error.value)  # says what it found instead


def test_segmentation_folder_alone_is_not_an_oasis_layout(tmp_path):
    write_png(tmp_path / "keras_png_slices_seg_train" / "seg_0.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="not an OASIS slice folder"):
        data.find_data_root(tmp_path)


# --- listing splits -----------------------------------------------------------------------------
@pytest.mark.parametrize("split", data.SPLITS)
def test_splits_map_to_their_own_folders(oasis_tree, split):
    paths = data.list_slices(_data_root(oasis_tree), split)
    assert len(paths) == OASIS_SPLIT_SIZES[split]
    assert {p.parent.name for p in paths} == {f"keras_png_slices_{split}"}


def test_unknown_split_is_a_value_error():
    with pytest.raises(ValueError, match="split"):
        data.split_folder_name("seg_train")


def test_segmentation_files_are_never_listed(oasis_tree):
    root = _data_root(oasis_tree)
    listed = {p for split in data.SPLITS for p in data.list_slices(root, split)}
    seg_files = set((root / "keras_png_slices_seg_train").iterdir())
    assert seg_files and not (listed & seg_files)
    assert not any("seg" in p.parent.name for p in listed)


def test_invalid_file_in_segmentation_folder_does_not_break_scanning(tmp_path):
    root = _data_root(make_oasis_tree(tmp_path, {"train": 4, "validate": 2}))
    (root / "keras_png_slices_seg_train" / "broken.png").write_bytes(b"\x89PNG garbage")
    (root / "keras_png_slices_seg_validate").mkdir()
    (root / "keras_png_slices_seg_validate" / "also_broken.png").write_bytes(b"")
    assert len(data.scan_split(root, "train")) == 4
    assert len(data.scan_split(root, "validate")) == 2


def test_slices_are_in_natural_case_and_slice_order(tmp_path):
    folder = tmp_path / "keras_png_slices_train"
    names = ["case_002_slice_0.nii.png", "case_001_slice_10.nii.png", "case_001_slice_9.nii.png",
             "case_001_slice_1.nii.png", "case_010_slice_0.nii.png", "case_001_slice_0.nii.png"]
    for name in names:
        write_png(folder / name, np.zeros((8, 8), np.uint8))
    (folder / "notes.txt").write_text("not a slice")
    ordered = [p.name for p in data.list_slices(tmp_path, "train")]
    assert ordered == ["case_001_slice_0.nii.png", "case_001_slice_1.nii.png",
                       "case_001_slice_9.nii.png", "case_001_slice_10.nii.png",
                       "case_002_slice_0.nii.png", "case_010_slice_0.nii.png"]


def test_a_folder_named_like_a_slice_is_not_a_slice(tmp_path):
    folder = tmp_path / "keras_png_slices_train"
    write_png(folder / "case_001_slice_0.nii.png", np.zeros((8, 8), np.uint8))
    (folder / "case_001_slice_1.nii.png").mkdir()  # as every other reader of slices counts it (data.is_png_file)
    assert [p.name for p in data.list_slices(tmp_path, "train")] == ["case_001_slice_0.nii.png"]
    assert len(data.scan_split(tmp_path, "train")) == 1


def test_missing_split_folder_is_a_data_error_unless_optional(tmp_path):
    root = _data_root(make_oasis_tree(tmp_path, {"train": 2, "validate": 2}))
    with pytest.raises(DataError, match="keras_png_slices_test"):
        data.list_slices(root, "test")
    assert data.list_slices(root, "test", required=False) == []
    assert len(data.scan_split(root, "test", required=False)) == 0


def test_empty_split_is_a_data_error_naming_the_folder(tmp_path):
    root = _data_root(make_oasis_tree(tmp_path, {"train": 0, "validate": 2}))
    (root / "keras_png_slices_train" / "readme.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "keras_png_slices_train" / "readme.txt").write_text("no pngs here")
    with pytest.raises(DataError, match="No PNG slices") as error:
        data.scan_split(root, "train")
    assert str(root / "keras_png_slices_train") in str(error.value)


# --- scanning: bad files ----------------------------------------------------------------------
def test_truncated_png_is_a_data_error_naming_the_file(tmp_path):
    root = _data_root(make_oasis_tree(tmp_path, {"train": 4, "validate": 2}))
    victim = data.list_slices(root, "train")[2]
    content = victim.read_bytes()
    victim.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="not a readable PNG") as error:
        data.scan_split(root, "train")
    assert str(victim) in str(error.value)


def test_non_png_bytes_with_png_suffix_is_a_data_error_naming_the_file(tmp_path):
    root = _data_root(make_oasis_tree(tmp_path, {"train": 2, "validate": 2}))
    victim = root / "keras_png_slices_train" / "case_009_slice_0.nii.png"
    victim.write_text("hello")
    with pytest.raises(DataError) as error:
        data.scan_split(root, "train")
    assert str(victim) in str(error.value)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_idat(width: int, height: int, idat: bytes, depth: int = 8, interlace: int = 0) -> bytes:
    """A greyscale PNG whose chunks all have good CRCs, holding `idat` as its pixel data."""
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def rows(width: int, count: int, depth: int = 8) -> bytes:
    return b"".join(b"\x00" + b"\x80" * (width * depth // 8) for _ in range(count))


def test_a_png_whose_pixel_stream_is_corrupt_is_refused_by_the_scan_naming_it(tmp_path):
    """verify() checks CRCs only: a stream with good CRCs and bad zlib data used to fail mid-training."""
    root = _data_root(make_oasis_tree(tmp_path, {"train": 4, "validate": 2}))
    victim = data.list_slices(root, "train")[1]
    victim.write_bytes(png_with_idat(32, 32, b"\x78\x9c" + bytes(range(256)) * 2))
    with pytest.raises(DataError) as error:
        data.scan_split(root, "train")
    assert str(victim) in str(error.value)


@pytest.mark.parametrize("depth", [8, 16])
def test_a_png_whose_header_claims_more_rows_than_it_holds_is_refused(tmp_path, depth):
    """Pillow fills the missing rows of a short but well-formed stream with black, silently."""
    lying = png_with_idat(32, 32, zlib.compress(rows(32, 1, depth)), depth)
    with pytest.raises(DataError, match="32x32") as error:
        data.decode_slice(lying, "liar.png")
    assert "liar.png" in str(error.value)
    root = _data_root(make_oasis_tree(tmp_path, {"train": 4, "validate": 2}))
    victim = data.list_slices(root, "train")[0]
    victim.write_bytes(lying)
    with pytest.raises(DataError) as error:
        data.scan_split(root, "train")
    assert str(victim) in str(error.value)


@pytest.mark.parametrize("interlace", [0, 1])
def test_a_complete_png_written_by_hand_is_read_whole(interlace):
    """The row count check knows Adam7's passes: an interlaced image is as complete as its header says."""
    from PIL import Image
    image = np.arange(33 * 21, dtype=np.uint8).reshape(21, 33)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", interlace=interlace)  # Pillow writes Adam7 when asked
    decoded, _ = data.decode_slice(buffer.getvalue(), "whole.png")
    np.testing.assert_array_equal(np.round(decoded * 255).astype(np.uint8), image)
    whole = png_with_idat(33, 21, zlib.compress(b"".join(b"\x00" + bytes(row) for row in image)))
    np.testing.assert_array_equal(np.round(data.decode_slice(whole, "w.png")[0] * 255).astype(np.uint8), image)


def test_a_slice_damaged_after_the_scan_stops_training_with_the_files_name_not_a_traceback(tmp_path):
    """Inside tf.data the DataError comes back wrapped in an OpError with a Python traceback."""
    root = _data_root(make_oasis_tree(tmp_path, {"train": 4, "validate": 2}))
    victim = data.list_slices(root, "train")[0]
    victim.write_bytes(png_with_idat(32, 32, b"\x78\x9c" + bytes(range(256)) * 2))
    dataset = data.make_dataset([victim], batch_size=1, image_size=32, shuffle=False)
    with pytest.raises(tf.errors.OpError) as wrapped:
        next(iter(dataset))
    found = data.raised_inside_pipeline(wrapped.value)
    assert isinstance(found, DataError)
    assert str(victim) in str(found) and "Traceback" not in str(found) and "\n" not in str(found)
    assert data.raised_inside_pipeline(ValueError("no")) is None


def test_slices_of_different_sizes_are_a_data_error(tmp_path):
    root = _data_root(make_oasis_tree(tmp_path, {"train": 3, "validate": 2}))
    odd = write_png(root / "keras_png_slices_train" / "case_005_slice_0.nii.png", brain_slice(1, 24))
    with pytest.raises(DataError, match="different sizes") as error:
        data.scan_split(root, "train")
    message = str(error.value)
    assert str(root / "keras_png_slices_train") in message
    assert odd.name in message and "24x24" in message and "32x32" in message


def test_scan_reports_size_and_count(oasis_tree):
    scanned = data.scan_split(_data_root(oasis_tree), "validate")
    assert (scanned.split, len(scanned), scanned.height, scanned.width, scanned.converted) == (
        "validate", 8, 32, 32, 0)
    assert scanned.paths == tuple(data.list_slices(_data_root(oasis_tree), "validate"))


def test_rgb_and_16_bit_slices_are_converted_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "keras_png_slices_train"
    write_png(folder / "case_001_slice_0.png", np.full((8, 8), 100, np.uint8))
    write_png(folder / "case_001_slice_1.png", np.full((8, 8, 3), 100, np.uint8))  # RGB grey
    write_png(folder / "case_001_slice_2.png", np.full((8, 8), 65535, np.uint16))  # 16-bit white
    with caplog.at_level(logging.WARNING, logger="core.data"):
        scanned = data.scan_split(tmp_path, "train")
    assert scanned.converted == 2
    assert any("2 of 3" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    images = data.load_images(scanned.paths)
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], 100 / 255, rtol=0, atol=1e-6)
    np.testing.assert_allclose(images[1], images[0], rtol=0, atol=1e-6)  # RGB grey -> same grey
    assert np.all(images[2] == 1.0)  # 16-bit 65535 -> exactly 1


def test_16_bit_mid_grey_keeps_its_depth(tmp_path):
    path = write_png(tmp_path / "deep.png", np.tile(np.array([[0, 1, 32768, 65535]], np.uint16), (8, 2)))
    decoded, converted = data.decode_slice(path.read_bytes(), path.name)
    assert converted == "16-bit"
    np.testing.assert_allclose(decoded[0, :4], [0, 1 / 65535, 32768 / 65535, 1], rtol=1e-6, atol=0)


# --- decoding and streaming ---------------------------------------------------------------------
def test_decode_gives_one_channel_float32_with_exact_values(tmp_path):
    pixels = np.tile(np.array([[0, 255, 128], [1, 254, 64]], np.uint8), (4, 4))
    values, converted = data.decode_slice(write_png(tmp_path / "a.png", pixels).read_bytes(), "a.png")
    assert values.shape == (8, 12) and values.dtype == np.float32 and converted is None
    assert values[0, 0] == 0.0 and values[0, 1] == 1.0
    np.testing.assert_allclose(values, pixels / 255.0, rtol=0, atol=1e-6)
    assert values.min() >= 0.0 and values.max() <= 1.0


def test_load_images_resizes_and_handles_empty(oasis_tree):
    paths = data.list_slices(_data_root(oasis_tree), "test")[:3]
    full = data.load_images(paths)
    assert full.shape == (3, 32, 32, 1) and full.dtype == np.float32
    assert data.load_images(paths, 32).shape == (3, 32, 32, 1)
    small = data.load_images(paths, 16)
    assert small.shape == (3, 16, 16, 1) and 0.0 <= small.min() and small.max() <= 1.0
    assert data.load_images([], 16).shape == (0, 16, 16, 1)


def test_make_dataset_streams_batches_in_order(oasis_tree):
    paths = data.list_slices(_data_root(oasis_tree), "train")
    batches = list(data.make_dataset(paths, batch_size=5, image_size=32, shuffle=False))
    assert [tuple(b.shape) for b in batches] == [(5, 32, 32, 1)] * 3 + [(1, 32, 32, 1)]
    assert all(b.dtype == tf.float32 for b in batches)
    np.testing.assert_allclose(np.concatenate([b.numpy() for b in batches]), data.load_images(paths),
                               atol=1e-6)
    dropped = list(data.make_dataset(paths, batch_size=5, image_size=32, shuffle=False,
                                     drop_remainder=True))
    assert len(dropped) == 3


def test_make_dataset_shuffles_deterministically_per_seed(oasis_tree):
    paths = data.list_slices(_data_root(oasis_tree), "train")

    def epoch(seed):
        return np.concatenate([b.numpy() for b in data.make_dataset(
            paths, batch_size=4, image_size=32, shuffle=True, seed=seed)])

    first, again, other = epoch(1), epoch(1), epoch(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # A shuffle is a permutation: the same slices, in another order.
    ordered = data.load_images(paths)
    np.testing.assert_allclose(np.sort(first.reshape(16, -1), axis=0),
                               np.sort(ordered.reshape(16, -1), axis=0), atol=1e-6)


def test_make_dataset_crops_and_resizes(oasis_tree):
    paths = data.list_slices(_data_root(oasis_tree), "train")[:8]
    crops = list(data.make_dataset(paths, batch_size=4, image_size=32, shuffle=False, crop_size=16))
    assert [tuple(b.shape) for b in crops] == [(4, 16, 16, 1)] * 2
    # A crop is a window of the slice it came from.
    whole, crop = data.load_images(paths[:1])[0, ..., 0], crops[0].numpy()[0, ..., 0]
    windows = np.lib.stride_tricks.sliding_window_view(whole, (16, 16))
    assert np.any(np.all(np.abs(windows - crop) < 1e-6, axis=(2, 3)))
    resized = next(iter(data.make_dataset(paths, batch_size=8, image_size=16, shuffle=False)))
    assert resized.shape == (8, 16, 16, 1)
    assert 0.0 <= float(tf.reduce_min(resized)) and float(tf.reduce_max(resized)) <= 1.0


def test_shard_batches_gives_worker_i_the_ith_run_of_each_global_batch():
    numbers = tf.data.Dataset.range(20)
    parts = [[b.numpy().tolist() for b in data.shard_batches(numbers, 3, index, 2)] for index in range(2)]
    # Global batches of 6 (the last 2 elements make no whole batch and are dropped).
    assert parts == [[[0, 1, 2], [6, 7, 8], [12, 13, 14]], [[3, 4, 5], [9, 10, 11], [15, 16, 17]]]
    pairs = tf.data.Dataset.from_tensor_slices((np.arange(8), np.arange(8) * 10))
    first = next(iter(data.shard_batches(pairs, 2, 1, 2)))
    assert [t.numpy().tolist() for t in first] == [[2, 3], [20, 30]]


def test_sharded_datasets_put_together_are_the_unsharded_batches(oasis_tree):
    # Two workers' shards of a shuffled, cropped epoch, side by side, are the one-process epoch:
    # the same slices in each global batch, with the same crops.
    paths = data.list_slices(_data_root(oasis_tree), "train")
    settings = dict(image_size=32, shuffle=True, seed=3, crop_size=16, drop_remainder=True)
    whole = [b.numpy() for b in data.make_dataset(paths, batch_size=4, **settings)]
    shards = [[b.numpy() for b in data.make_dataset(paths, batch_size=2, shard=(i, 2), **settings)]
              for i in range(2)]
    assert len(whole) == len(shards[0]) == len(shards[1]) == 4
    for step, batch in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([shards[0][step], shards[1][step]]), batch)


def test_case_and_level_read_oasis_names():
    assert data.case_and_level("case_001_slice_12.nii.png") == ("case_001", 12)
    assert data.case_and_level("/x/OAS1_0441_MR1_slice_3.png") == ("OAS1_0441_MR1", 3)
    assert data.case_and_level("slice_3.png") is None and data.case_and_level("brain.png") is None


def test_name_below_names_the_same_cases_slice_one_level_down():
    assert data.name_below("case_001_slice_12.nii.png") == "case_001_slice_11.nii.png"
    assert data.name_below("/x/OAS1_0441_MR1_slice_10.png") == "OAS1_0441_MR1_slice_9.png"
    assert data.name_below("case_7_slice_010.png") == "case_7_slice_009.png"  # the number's width kept
    assert data.name_below("case_001_slice_0.nii.png") is None  # a base slice
    assert data.name_below("slice_3.png") is None and data.name_below("brain.png") is None
    # The one below is what slice_below pairs it with.
    names = ["case_001_slice_12.nii.png", data.name_below("case_001_slice_12.nii.png")]
    assert data.slice_below(names).tolist() == [1, -1]


def test_slice_below_finds_the_same_cases_neighbour_one_level_down():
    names = ["a_slice_1.png", "a_slice_0.png", "b_slice_1.png", "a_slice_2.png", "b_slice_3.png"]
    np.testing.assert_array_equal(data.slice_below(names), [1, -1, -1, 0, -1])  # b has no slice 0 or 2
    with pytest.raises(DataError, match="brain.png carries no case and slice number"):
        data.slice_below(["a_slice_0.png", "brain.png"])
    with pytest.raises(DataError, match="both slice 0 of a"):
        data.slice_below(["a_slice_0.png", "x/a_slice_0.png"])
    stacks = data.case_stacks(names + ["brain.png"])
    assert stacks == [["a_slice_0.png", "a_slice_1.png", "a_slice_2.png"], ["b_slice_1.png", "b_slice_3.png"]]


def test_slice_level_reads_oasis_file_names():
    assert data.slice_level("case_001_slice_12.nii.png") == 12
    assert data.slice_level("/x/keras_png_slices_seg_train/seg_441_slice_0.nii.png") == 0
    assert data.slice_level("brain.png") is None
    assert data.slice_level("volume.nii [axis 2, slice 40]") is None  # a NIfTI index is not an OASIS level
    np.testing.assert_array_equal(data.slice_levels(["case_1_slice_3.png", "case_2_slice_0.png"]), [3, 0])
    assert data.slice_levels(["case_1_slice_3.png", "other.png"]) is None
    assert data.slice_levels([]) is None


def test_slices_sort_as_a_person_reads_them_even_beside_unnumbered_names(tmp_path):
    folder = tmp_path / "keras_png_slices_train"
    for name in ("case_001_slice_10.nii.png", "case_001_slice_9.nii.png", "notes.png", "case_002_slice_0.nii.png"):
        write_png(folder / name, brain_slice(0))
    assert [p.name for p in data.list_slices(tmp_path, "train")] == [
        "notes.png", "case_001_slice_9.nii.png", "case_001_slice_10.nii.png", "case_002_slice_0.nii.png"]


def test_evenly_spaced_spans_first_to_last():
    assert data.evenly_spaced(list("abcdefghi"), 3) == ["a", "e", "i"]
    assert data.evenly_spaced([1, 2], 5) == [1, 2]
    assert data.evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]


@pytest.mark.parametrize("given", ["~nosuchuser_brainvq/data", "/tmp/data\x00"])
def test_a_data_folder_that_names_no_folder_is_a_data_error(given):
    with pytest.raises(DataError, match="Data folder"):
        data.find_data_root(given)
    with pytest.raises(DataError, match="Data folder"):
        data.find_slices(given)


def test_a_slice_level_too_large_for_any_prior_is_a_data_error_naming_the_file(tmp_path):
    """It overflowed int32 (99999999999), or asked a prior for 10**8 level embeddings."""
    names = ["case_001_slice_0.nii.png", "case_001_slice_99999999999.nii.png"]
    with pytest.raises(DataError, match="case_001_slice_99999999999.nii.png"):
        data.slice_levels([tmp_path / n for n in names])
    assert data.slice_levels([tmp_path / "case_001_slice_4095.nii.png"]).tolist() == [4095]
