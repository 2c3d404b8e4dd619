"""Reconstruction scores of a VQ-VAE: one encode-decode pass, per-slice SSIM/PSNR/MSE, codebook usage, for slices or a split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core import data, metrics
from core.models.quantizer import codebook_usage

CHUNK = 256  # slices read from disk at a time: bounded memory for any split size


@dataclass(frozen=True)
class SliceScores:
    """Reconstructions (N, H, W, 1) in [0, 1], per-slice scores (N,), and how often each code was used."""

    reconstructions: np.ndarray
    ssim: np.ndarray
    psnr: np.ndarray
    mse: np.ndarray
    code_counts: np.ndarray  # (num_embeddings,)


def score_slices(vqvae, images, batch_size: int = 32) -> SliceScores:
    """Reconstruct (N, H, W, 1) slices through the codebook (one pass) and score each one."""
    images = np.asarray(images, np.float32)
    indices = vqvae.encode_to_indices(images, batch_size)
    reconstructions = np.clip(vqvae.decode_indices(indices, batch_size), 0.0, 1.0)
    scores = metrics.image_scores(images, reconstructions)
    counts = np.bincount(indices.ravel(), minlength=vqvae.config.num_embeddings)
    return SliceScores(reconstructions, scores["ssim"], scores["psnr"], scores["mse"], counts)


def summarize(chunks: list[SliceScores]) -> dict:
    """Mean scores over all slices of the chunks, and the codebook usage of all their codes."""
    counts = np.sum([c.code_counts for c in chunks], axis=0)
    usage = codebook_usage(counts=counts)
    return {"ssim": float(np.mean(np.concatenate([c.ssim for c in chunks]))),
            "psnr": float(np.mean(np.concatenate([c.psnr for c in chunks]))),
            "mse": float(np.mean(np.concatenate([c.mse for c in chunks]))),
            "perplexity": usage.perplexity, "codes_used": usage.codes_used,
            "codebook_size": usage.num_embeddings, "dead_codes": int(len(usage.dead_codes))}


def evaluate_images(vqvae, images: np.ndarray, batch_size: int = 32) -> dict:
    """Reconstruction quality and codebook usage of a VQ-VAE over `images` (N, H, W, 1)."""
    return summarize([score_slices(vqvae, images, batch_size)])


def evaluate_split(vqvae, data_path: str, split: str, limit: int | None = None,
                   batch_size: int = 32) -> dict:
    """Stream a split in chunks (bounded memory) and combine per-slice scores and code counts."""
    root = data.find_data_root(data_path)
    paths = list(data.scan_split(root, split).paths)[:limit]
    if not paths:
        raise data.DataError(f"No slices to score in the {split} split (limit={limit}).")
    size = vqvae.config.image_size
    chunks = [score_slices(vqvae, data.load_images(chunk, size), batch_size)
              for chunk in data.chunked(paths, CHUNK)]
    return {**summarize(chunks), "n_images": len(paths), "split": split}
