"""OASIS `keras_png_slices_data` on disk -> validated slice lists -> the one decode path for a slice -> tf.data pipelines of [0,1] float32."""
from __future__ import annotations

import io
import logging
import os
import re
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from core.paths import expand_user

log = logging.getLogger(__name__)

SPLITS = ("train", "validate", "test")
DATA_FOLDER = "keras_png_slices_data"
_SLICE_NUMBER = re.compile(r"(\d+)")
_SLICE_LEVEL = re.compile(r"slice_(\d+)", re.IGNORECASE)


class DataError(ValueError):
    """A problem with the user's data that the user can fix; the message says what and how."""


def split_folder_name(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Expected a split in {SPLITS}. Received: split={split!r}")
    return f"keras_png_slices_{split}"


def _user_path(path: str | Path) -> Path:
    try:
        return expand_user(path)
    except ValueError as error:
        raise DataError(f"Data folder {error}") from error


def find_data_root(path: str | Path) -> Path:
    """Return the folder holding `keras_png_slices_{train,validate,test}`.

    Accepts that folder itself, its parent (the folder that holds `keras_png_slices_data/`),
    or a `slices/` folder that holds it (the layout some OASIS mirrors use).
    """
    path = _user_path(path)
    if not path.exists():
        raise DataError(f"Data folder {path} does not exist. Point --data at the folder that "
                        f"holds {DATA_FOLDER}/ (or at {DATA_FOLDER} itself).")
    if not path.is_dir():
        raise DataError(f"{path} is a file, not a folder. Point --data at the folder that holds "
                        f"{DATA_FOLDER}/.")
    candidates = [path, path / DATA_FOLDER, path / "slices", path / "slices" / DATA_FOLDER]
    for candidate in candidates:
        if (candidate / split_folder_name("train")).is_dir() or (
            candidate / split_folder_name("validate")).is_dir():
            return candidate
    present = sorted(p.name for p in path.iterdir())[:8]
    raise DataError(
        f"{path} is not an OASIS slice folder: expected keras_png_slices_train/ and "
        f"keras_png_slices_validate/ inside it (or inside {DATA_FOLDER}/ or slices/). "
        f"Found: {present or 'nothing'}.")


def is_png_file(path: Path) -> bool:
    """Whether `path` is a file that a folder of slices counts as a slice (a *.png, any case)."""
    return path.suffix.lower() == ".png" and path.is_file()


def slice_folder(path: str | Path, split: str = "test") -> tuple[Path, bool]:
    """(the folder whose PNG slices `find_slices` reads at `path`, whether it is a plain folder of them).

    Nothing is read but folder listings: a DataError when `path` has none of the three layouts.
    """
    path = _user_path(path)
    if path.is_dir():
        if any(is_png_file(p) for p in path.iterdir()):
            return path, True
        for candidate in (path, path / DATA_FOLDER, path / "slices", path / "slices" / DATA_FOLDER):
            if (candidate / split_folder_name(split)).is_dir():
                return candidate / split_folder_name(split), False
        if not any((path / name).is_dir() for name in (DATA_FOLDER, "slices", split_folder_name("train"),
                                                          split_folder_name("validate"))):
            present = sorted(p.name for p in path.iterdir())[:8]
            raise DataError(f"{path} holds no PNG slices: expected an OASIS folder (with "
                            f"{split_folder_name(split)}/ inside it or inside {DATA_FOLDER}/), or a "
                            f"folder of *.png slices. Found: {present or 'nothing'}.")
    return find_data_root(path) / split_folder_name(split), False  # its errors say what is missing


def find_slices(path: str | Path, split: str = "test") -> list[Path]:
    """The PNG slices to score at `path`, in case/slice order, whichever of three layouts it has.

    An OASIS layout (as `find_data_root` accepts; the `split` folder is read, every file checked), a
    folder holding only `keras_png_slices_{split}/`, or a plain folder of PNG slices (then `split`
    is not used).
    """
    folder, plain = slice_folder(path, split)
    if plain:
        return sorted(filter(is_png_file, folder.iterdir()), key=_slice_sort_key)
    return list(scan_split(folder.parent, split).paths)  # its errors say what is missing


def _slice_sort_key(path: Path) -> tuple:
    # case_001_slice_10 must come after case_001_slice_9, as a person reads them.
    # Numbers first as one tuple, so a name without numbers still compares (it sorts first).
    return tuple(int(n) for n in _SLICE_NUMBER.findall(path.name)), path.name


def list_slices(root: str | Path, split: str, required: bool = True) -> list[Path]:
    """The PNG slices of one split in case/slice order; segmentation folders are never read."""
    folder = Path(root) / split_folder_name(split)
    if not folder.is_dir():
        if not required:
            return []
        raise DataError(f"Split folder {folder} is missing. An OASIS data folder holds "
                        f"keras_png_slices_train/, keras_png_slices_validate/ and "
                        f"keras_png_slices_test/.")
    paths = sorted(filter(is_png_file, folder.iterdir()), key=_slice_sort_key)
    if required and not paths:
        raise DataError(f"No PNG slices in {folder}. Copy the *.png slices of the {split} split "
                        f"there.")
    return paths


def evenly_spaced(items, count: int) -> list:
    """`count` items spread evenly from the first to the last (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def chunked(items, size: int):
    """Consecutive pieces of at most `size` items: work on any number of slices in bounded memory."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def slice_level(name: str | Path) -> int | None:
    """The slice level an OASIS file name carries (case_001_slice_12.nii.png -> 12), else None."""
    match = _SLICE_LEVEL.search(Path(name).name)
    return int(match.group(1)) if match else None


MAX_SLICE_LEVEL = 4095  # OASIS has 32 slices per case; a level beyond this is a misnamed file, not anatomy


def slice_levels(paths) -> np.ndarray | None:
    """(N,) int32 slice levels of the files, or None when any name carries no level; a DataError naming
    the file when a level is beyond MAX_SLICE_LEVEL (a prior would need an embedding row for each)."""
    levels = [slice_level(p) for p in paths]
    if not levels or any(level is None for level in levels):
        return None
    top = max(range(len(levels)), key=levels.__getitem__)
    if levels[top] > MAX_SLICE_LEVEL:
        raise DataError(f"{Path(paths[top]).name} names slice level {levels[top]}; levels go up to "
                        f"{MAX_SLICE_LEVEL} (OASIS: 0..31). Rename or remove it.")
    return np.asarray(levels, np.int32)


_CASE_AND_LEVEL = re.compile(r"^(.*?)_?slice_(\d+)", re.IGNORECASE)


def case_and_level(name: str | Path) -> tuple[str, int] | None:
    """(case, level) an OASIS file name carries (case_001_slice_12.nii.png -> ("case_001", 12)), else None."""
    match = _CASE_AND_LEVEL.match(Path(name).name)
    if not match or not match.group(1):
        return None
    return match.group(1), int(match.group(2))


def name_below(name: str | Path) -> str | None:
    """The file name of the slice one level below in the same case (case_001_slice_12.nii.png ->
    case_001_slice_11.nii.png; a zero-padded number keeps its width), None for a base slice or a
    name without one."""
    name = Path(name).name
    match = _CASE_AND_LEVEL.match(name)
    if not match or not match.group(1) or int(match.group(2)) == 0:
        return None
    digits = match.group(2)
    width = len(digits) if digits.startswith("0") else 1
    return f"{name[:match.start(2)]}{int(digits) - 1:0{width}d}{name[match.end(2):]}"


def slice_below(paths) -> np.ndarray:
    """(N,) index of the slice one level below each slice of the same case (-1: none, a stack's base).

    A DataError names the first file whose name carries no case and slice number, and a case that
    holds one level twice: a whole-brain prior learns from neighbouring slices of one case.
    """
    keys = []
    for path in paths:
        key = case_and_level(path)
        if key is None:
            raise DataError(f"{Path(path).name} carries no case and slice number in its name (OASIS names "
                            f"slices case_001_slice_12.nii.png); a whole-brain prior needs them to know "
                            f"which slices lie on top of each other.")
        keys.append(key)
    index = {}
    for position, key in enumerate(keys):
        if key in index:
            raise DataError(f"{Path(paths[position]).name} and {Path(paths[index[key]]).name} are both slice "
                            f"{key[1]} of {key[0]}.")
        index[key] = position
    return np.array([index.get((case, level - 1), -1) for case, level in keys], np.int64)


def case_stacks(paths) -> list[list]:
    """The files grouped by case, each case's slices from base to vertex (names as case_and_level reads them)."""
    cases: dict[str, list] = {}
    for path in paths:
        key = case_and_level(path)
        if key is not None:
            cases.setdefault(key[0], []).append((key[1], path))
    return [[path for _, path in sorted(stack)] for _, stack in sorted(cases.items())]


@dataclass(frozen=True)
class SliceSet:
    """A validated split: its files, their common size, and how they must be decoded."""

    split: str
    paths: tuple[Path, ...]
    height: int
    width: int
    converted: int  # files that are RGB/RGBA/16-bit and are converted to 8-bit-equivalent grey

    def __len__(self) -> int:
        return len(self.paths)


def _check_slice_file(path: Path) -> tuple[tuple[int, int], str]:
    """A split file's (width, height) and mode, after the one decode path read every pixel of it: what
    training will read is refused now, naming the file, rather than mid-run."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error}). Check its permissions, then start again.") from error
    try:
        with _open(content, path.name) as image:
            return image.size, image.mode
    except DataError as error:
        raise DataError(f"{path} is not a readable PNG ({error}) Remove or replace it, then start "
                        f"again.") from error


def scan_split(root: str | Path, split: str, required: bool = True) -> SliceSet:
    """Check every file of a split (readable, complete, one size) before any training starts."""
    paths = list_slices(root, split, required=required)
    sizes: dict[tuple[int, int], Path] = {}
    converted = 0
    # Decoding releases the GIL: files are checked side by side, and the first bad one in order is reported.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        headers = list(pool.map(_check_slice_file, paths))
    for path, (size, mode) in zip(paths, headers):
        sizes.setdefault((size[1], size[0]), path)
        if mode != "L":
            converted += 1
    if len(sizes) > 1:
        examples = ", ".join(f"{p.name} is {w}x{h}" for (h, w), p in list(sizes.items())[:3])
        raise DataError(f"Slices in {Path(root) / split_folder_name(split)} have different sizes "
                        f"({examples}). All slices must share one size; resize them first.")
    if converted:
        log.warning("%d of %d slices in the %s split are RGB, RGBA or 16-bit; they are converted "
                    "to greyscale in [0, 1] on load.", converted, len(paths), split)
    height, width = next(iter(sizes)) if sizes else (0, 0)
    return SliceSet(split, tuple(paths), height, width, converted)


# --- one decode path for a slice, whether uploaded or read from a split ------------------------------
MAX_PIXELS = 4096 * 4096  # larger images are refused from their header, before any pixel is decoded
MIN_SIDE = 8  # the smallest slice a VQ-VAE can encode (VQVAEConfig's smallest image_size)
IMAGE_FORMATS = ("PNG", "JPEG")


def _open(data: bytes, name: str) -> Image.Image:
    """A PIL image whose header was checked (format, size) and whose pixels were all decoded."""
    if not data:
        raise DataError(f"{name} is empty (0 bytes). Expected a PNG or JPEG slice.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{name} claims to be enormous ({error}); refused as a possible "
                        f"decompression bomb.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{name} is not an image: expected a PNG or JPEG slice.") from error
    if image.format not in IMAGE_FORMATS:
        raise DataError(f"{name} is a {image.format} image; expected PNG or JPEG.")
    _check_size(image.size, name)
    try:
        image.load()  # decodes every pixel: a truncated or corrupt file fails here
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{name} is damaged or truncated ({error}); use the complete file.") from error
    if image.format == "PNG" and _png_pixels_short(data):
        width, height = image.size
        raise DataError(f"{name} is truncated: its header says {width}x{height} pixels, but its pixel data "
                        f"holds fewer rows; use the complete file.")
    return image


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_pixels_short(data: bytes) -> bool:
    """Whether a PNG's IDAT stream inflates to fewer bytes than its header's size needs. Pillow fills
    the rows a short but well-formed stream lacks with black and says nothing: a header that lies."""
    position, header, idat = 8, None, []
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    if header is None or header[3] not in _PNG_CHANNELS:
        return False  # Pillow has judged these already
    width, height, depth, colour, _, _, interlace = header
    bits = depth * _PNG_CHANNELS[colour]
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    needed = 0
    for x0, y0, dx, dy in passes:
        columns, lines = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and lines > 0:
            needed += lines * (1 + -(-columns * bits // 8))  # a filter byte, then the packed row
    try:
        inflated = zlib.decompressobj().decompress(b"".join(idat), needed)  # never more than needed
    except zlib.error:
        return False  # a broken stream: Pillow's load() has refused it already
    return len(inflated) < needed


def raised_inside_pipeline(error: BaseException) -> DataError | None:
    """The DataError a slice's decode raised inside tf.data, which TensorFlow hands on as an OpError
    whose message holds the DataError's text and then a Python traceback; None for any other error."""
    if not isinstance(error, tf.errors.OpError):
        return None
    found = re.search(r"DataError: ([^\n]+)", error.message or "")
    return DataError(found.group(1).strip()) if found else None


def _check_size(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        side = int(MAX_PIXELS ** 0.5)
        raise DataError(f"{name} is {width}x{height} pixels; the limit is {side}x{side}. Refused as a "
                        f"possible decompression bomb; downscale it first.")
    if min(width, height) < MIN_SIDE:
        raise DataError(f"{name} is {width}x{height} pixels; a slice needs at least {MIN_SIDE}x{MIN_SIDE}.")


def _to_grey(image: Image.Image) -> tuple[np.ndarray, str | None]:
    """A PIL image of any mode -> (H, W) float32 in [0, 1], and the conversion made (or None)."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, np.float32) / 255.0, None
    if mode.startswith("I;16"):
        return np.asarray(image, np.float32) / 65535.0, "16-bit"
    if mode == "I":  # 32-bit integers (some writers' 16-bit greyscale): scale by what the values need
        array = np.asarray(image, np.float32)
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        return np.clip(array / top, 0, 1), "16-bit" if top > 255 else None
    if mode == "F":
        return np.clip(np.asarray(image, np.float32), 0, 1), "floating-point"
    if mode == "1":
        return np.asarray(image, np.float32), None
    label = {"RGB": "RGB", "RGBA": "RGBA", "LA": "grey+alpha", "P": "palette"}.get(mode, mode)
    return np.asarray(image.convert("L"), np.float32) / 255.0, label


def decode_slice(data: bytes, name: str) -> tuple[np.ndarray, str | None]:
    """PNG or JPEG bytes -> (H, W) float32 in [0, 1] (RGB to luminance, 16-bit keeps its depth), and the
    conversion made (None for 8-bit greyscale). DataError naming the file when it cannot be used."""
    return _to_grey(_open(data, name))


def fit_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) float32 -> (size, size): pad to a square with black (keeps the aspect), then resize."""
    height, width = image.shape
    if height != width:
        side = max(height, width)
        padded = np.zeros((side, side), np.float32)
        top, left = (side - height) // 2, (side - width) // 2
        padded[top:top + height, left:left + width] = image
        image = padded
    if image.shape[0] != size:
        resample = Image.Resampling.LANCZOS if image.shape[0] > size else Image.Resampling.BICUBIC
        image = np.asarray(Image.fromarray(image, mode="F").resize((size, size), resample))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def slice_file_bytes(path: str | Path) -> bytes:
    """A slice file's bytes; a DataError naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror}).") from error


def read_slice(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """One slice file -> (S, S) float32 in [0, 1] through the one decode path (its own size when None)."""
    image, _ = decode_slice(slice_file_bytes(path), str(path))
    return image if image_size is None else fit_to_size(image, image_size)


def load_images(paths, image_size: int | None = None) -> np.ndarray:
    """Read slices into one (N, S, S, 1) float32 array (for fixed validation and test sets).

    Without `image_size` the slices keep their own size (they must share one)."""
    images = [read_slice(p, image_size) for p in paths]
    if not images:
        return np.zeros((0, image_size or 0, image_size or 0, 1), np.float32)
    return np.stack(images)[..., None]


def shard_batches(dataset: tf.data.Dataset, part_size: int, index: int, count: int) -> tf.data.Dataset:
    """Batches of `part_size`: the `index`-th run of each whole batch of `part_size * count` elements.

    Worker i of a job then holds the same slices, in the same order, as replica i of a one-process
    MirroredStrategy (which also cuts each global batch into runs): a global batch, and anything
    computed over it, does not depend on how many workers share it.
    """
    return (dataset.batch(part_size * count, drop_remainder=True)
            .map(lambda *batch: tf.nest.map_structure(lambda t: t[index * part_size:(index + 1) * part_size],
                                                      batch if len(batch) > 1 else batch[0])))


def make_dataset(paths, *, batch_size: int, image_size: int, shuffle: bool, seed: int = 0,
                 crop_size: int | None = None, drop_remainder: bool = False,
                 shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """Stream slices from disk (bounded memory for any split size): decode, resize, crop, batch.

    `crop_size` trains on random square crops: the networks are convolutional, so crops teach
    the same filters at a fraction of the cost per step. `shard` = (index, count): one worker's part
    of a multi-worker job, the index-th of count equal runs of each batch of `batch_size * count`
    slices, each with the crop it has unsharded; only those slices are read.
    """
    files = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=False)
    cropping = crop_size is not None and crop_size < image_size
    # Crop seeds are drawn in the shuffled order, before sharding: a slice's crop is the same
    # however many workers share the epoch.
    crop_seeds = tf.data.Dataset.random(seed=seed).batch(2) if cropping else tf.data.Dataset.from_tensors(0).repeat()
    items = tf.data.Dataset.zip((files, crop_seeds))
    if shard is not None:
        items = shard_batches(items, batch_size, *shard).unbatch()

    def load(path, crop_seed):
        # The same decode path as an upload or a validation slice (PIL inside tf.data): a slice
        # trains exactly as it is scored and shown.
        image = tf.numpy_function(lambda p: read_slice(p.decode(), image_size)[..., None], [path], tf.float32)
        image = tf.ensure_shape(image, (image_size, image_size, 1))
        if cropping:
            image = tf.image.stateless_random_crop(image, (crop_size, crop_size, 1),
                                                   seed=tf.cast(crop_seed % 2**31, tf.int32))
        return image

    images = items.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return images.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
