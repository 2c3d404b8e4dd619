"""`python -m core.evaluate`: score a checkpoint on one split and print ONE JSON object on stdout."""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from core import data, metrics  # noqa: E402
from core.checkpoints import CheckpointError, load_bundle  # noqa: E402
from core.quantizer import codebook_stats  # noqa: E402


def _score(vqvae, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-image SSIM, PSNR and MSE of the reconstructions, and the code counts, of one chunk."""
    indices = vqvae.encode_to_indices(images, batch_size)
    reconstructions = np.clip(vqvae.decode_indices(indices, batch_size), 0.0, 1.0)
    return (metrics.ssim(images, reconstructions), metrics.psnr(images, reconstructions),
            metrics.mse(images, reconstructions),
            codebook_stats(indices, vqvae.config.num_embeddings).counts)


def _summary(chunks: list[tuple]) -> dict:
    ssims, psnrs, mses, counts = zip(*chunks)
    total = np.sum(counts, axis=0)
    usage = codebook_stats(np.repeat(np.arange(len(total)), total), len(total))
    return {"ssim": float(np.mean(np.concatenate(ssims))),
            "psnr": float(np.mean(np.concatenate(psnrs))),
            "mse": float(np.mean(np.concatenate(mses))),
            "perplexity": usage.perplexity, "codes_used": usage.codes_used,
            "codebook_size": usage.num_embeddings, "dead_codes": int(len(usage.dead_codes))}


def evaluate_images(vqvae, images: np.ndarray, batch_size: int = 32) -> dict:
    """Reconstruction quality and codebook usage of a VQ-VAE over `images` (N, H, W, 1)."""
    return _summary([_score(vqvae, images, batch_size)])


def evaluate_split(vqvae, data_path: str, split: str, limit: int | None = None,
                   batch_size: int = 32) -> dict:
    """Stream a split in chunks (bounded memory) and combine per-image scores and code counts."""
    root = data.find_data_root(data_path)
    paths = list(data.scan_split(root, split).paths)[:limit]
    if not paths:
        raise data.DataError(f"No slices to score in the {split} split (limit={limit}).")
    size = vqvae.config.image_size
    chunks = [_score(vqvae, data.load_images(paths[start:start + 256], size), batch_size)
              for start in range(0, len(paths), 256)]
    return {**_summary(chunks), "n_images": len(paths), "split": split}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate",
                                     description="Score a VQ-VAE checkpoint on a data split.")
    parser.add_argument("--checkpoint", required=True,
                        help="a run directory (its best checkpoint) or a bundle folder")
    parser.add_argument("--data", required=True, help="OASIS folder")
    parser.add_argument("--split", choices=data.SPLITS, default="test")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N slices")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        bundle = load_bundle(args.checkpoint)
        result = evaluate_split(bundle.vqvae, args.data, args.split, args.limit, args.batch_size)
    except (data.DataError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({**result, "checkpoint": str(bundle.path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
