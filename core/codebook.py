"""Looking inside a VQ-VAE codebook: code maps, usage over slices, where a code occurs, a 2-D projection."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.models.quantizer import CodebookUsage, codebook_usage


@dataclass(frozen=True)
class CodebookReport:
    """How a set of slices uses the codebook, and where each code vector lies."""

    names: list[str]  # one per slice
    images: np.ndarray  # (N, H, W) the slices, in [0, 1]
    indices: np.ndarray  # (N, h, w) int32 code map of each slice
    stats: CodebookUsage  # counts, perplexity, codes used, dead codes
    projection: np.ndarray  # (K, 2) code vectors projected on their two principal axes
    explained: np.ndarray  # (2,) fraction of the codebook's variance each axis explains


@dataclass(frozen=True)
class CodeOccurrences:
    """Where one code occurs across slices."""

    code: int
    counts: np.ndarray  # (N,) positions of each slice's code map holding the code
    masks: np.ndarray  # (N, h, w) bool, True where the code occurs

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def slices_with_code(self) -> np.ndarray:
        """Slice numbers holding the code, most occurrences first."""
        order = np.argsort(-self.counts, kind="stable")
        return order[self.counts[order] > 0]


def project_codebook_2d(codebook) -> tuple[np.ndarray, np.ndarray]:
    """(K, D) code vectors -> (K, 2) PCA coordinates (via SVD) and the variance fraction per axis."""
    vectors = np.asarray(codebook, np.float64)
    if vectors.ndim != 2 or len(vectors) < 1:
        raise ValueError(f"Expected a (K, D) codebook. Received shape {vectors.shape}")
    centred = vectors - vectors.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    axes = components[:2]
    coordinates = centred @ axes.T  # (K, <=2)
    variance = singular ** 2
    explained = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(len(axes))
    if coordinates.shape[1] < 2:  # D == 1: a line; put it on the x axis
        coordinates = np.pad(coordinates, ((0, 0), (0, 2 - coordinates.shape[1])))
        explained = np.pad(explained, (0, 2 - len(explained)))
    return coordinates.astype(np.float32), explained.astype(np.float32)


def code_occurrences(indices, code: int) -> CodeOccurrences:
    """Where `code` occurs in (N, h, w) code maps."""
    indices = np.asarray(indices)
    if indices.ndim != 3:
        raise ValueError(f"Expected (N, h, w) code maps. Received shape {indices.shape}")
    masks = indices == int(code)
    return CodeOccurrences(int(code), masks.sum(axis=(1, 2)).astype(np.int64), masks)


def codebook_report(vqvae, images, names: list[str]) -> CodebookReport:
    """Encode (N, H, W, 1) slices; their code maps, usage statistics and the codebook projection."""
    images = np.asarray(images, np.float32)
    indices = vqvae.encode_to_indices(images)
    projection, explained = project_codebook_2d(vqvae.codebook())
    return CodebookReport(list(names), images[..., 0], indices,
                          codebook_usage(indices, vqvae.config.num_embeddings), projection, explained)


def split_codebook_report(vqvae, data_path, split: str, limit: int) -> CodebookReport:
    """codebook_report over up to `limit` slices of a split, evenly spaced through it."""
    from core import data

    chosen = data.evenly_spaced(data.list_slices(data.find_data_root(data_path), split), limit)
    images = data.load_images(chosen, vqvae.config.image_size)
    return codebook_report(vqvae, images, [p.name for p in chosen])


def overlay_mask(image: np.ndarray, mask: np.ndarray, colour=(1.0, 0.2, 0.1)) -> np.ndarray:
    """(H, W) slice and an (h, w) code-grid mask -> (H, W, 3) uint8 with the mask's cells tinted."""
    image = np.clip(np.asarray(image, np.float32), 0, 1)
    scale = image.shape[0] // mask.shape[0]
    cells = np.kron(mask.astype(np.float32), np.ones((scale, scale), np.float32))[..., None]
    rgb = np.repeat(image[..., None], 3, axis=-1)
    tinted = 0.45 * rgb + 0.55 * np.asarray(colour, np.float32)
    return ((cells * tinted + (1 - cells) * rgb) * 255).round().astype(np.uint8)


def decode_code(vqvae, code: int) -> np.ndarray:
    """What one code decodes to: a code grid filled with it, decoded, (H, W) in [0, 1]."""
    num_embeddings = vqvae.config.num_embeddings
    if not 0 <= code < num_embeddings:
        raise ValueError(f"Expected a code in [0, {num_embeddings}). Received: code={code}")
    grid = vqvae.config.code_grid
    image = vqvae.decode_indices(np.full((1, grid, grid), code, np.int32))[0, ..., 0]
    return np.clip(image, 0.0, 1.0)
