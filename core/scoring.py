"""Reconstruction scores of a VQ-VAE: one encode-decode pass, per-slice SSIM/PSNR/MSE, codebook usage, for slices or a split."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

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


# One compiled pass per model: built on first use, read the model's current weights on every call
# (so training's validation sees each epoch's weights without retracing).
_PASSES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _scoring_pass(vqvae):
    """images -> (indices, reconstructions in [0, 1], per-slice SSIM/PSNR/MSE), as one tf.function."""
    if vqvae not in _PASSES:
        @tf.function(reduce_retracing=True)
        def run(images):
            indices = vqvae.quantizer.indices(vqvae.encoder(images, training=False))
            decoded = vqvae.decoder(vqvae.lookup(indices), training=False)
            reconstructions = tf.clip_by_value(tf.cast(decoded, tf.float32), 0.0, 1.0)
            return indices, reconstructions, metrics.scores_graph(images, reconstructions)
        _PASSES[vqvae] = run
    return _PASSES[vqvae]


def score_slices(vqvae, images, batch_size: int = 32) -> SliceScores:
    """Reconstruct (N, H, W, 1) slices through the codebook (one pass) and score each one.

    Encode, quantize, decode and score run as one compiled graph per batch; the same result as
    `vqvae.reconstruct` followed by `metrics.image_scores`, several times faster.
    """
    if batch_size < 1:
        raise ValueError(f"Expected a batch size of at least 1. Received: batch_size={batch_size}")
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"Expected a non-empty (N, H, W, 1) batch of slices. Received: shape={images.shape}")
    metrics.check_size(images)
    run = _scoring_pass(vqvae)
    parts = [run(tf.constant(batch)) for batch in data.chunked(images, batch_size)]
    indices = np.concatenate([p[0].numpy() for p in parts])
    reconstructions = np.concatenate([p[1].numpy() for p in parts])
    scores = {name: np.concatenate([p[2][name].numpy() for p in parts]) for name in ("ssim", "psnr", "mse")}
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
    """Stream a split in chunks (bounded memory) and combine per-slice scores and code counts.

    `data_path` is an OASIS layout, a folder holding only the split, or a plain folder of PNG slices.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"Expected a limit of at least 1 slice (or None for all). Received: limit={limit}")
    paths = data.find_slices(data_path, split)[:limit]
    if not paths:
        raise data.DataError(f"No slices to score in the {split} split (limit={limit}).")
    size = vqvae.config.image_size
    chunks = [score_slices(vqvae, data.load_images(chunk, size), batch_size)
              for chunk in data.chunked(paths, CHUNK)]
    return {**summarize(chunks), "n_images": len(paths), "split": split}
