"""Build a tiny checkpoint bundle (vqvae.keras + prior.keras + config.json) for app tests."""
from __future__ import annotations

import json
from pathlib import Path

TINY_VQVAE = dict(image_size=32, downsample_factor=4, num_embeddings=16, embedding_dim=4,
                  hidden_channels=16, num_residual_blocks=1)
TINY_PRIOR = dict(num_embeddings=16, grid_height=8, grid_width=8, filters=8, num_layers=2,
                  embedding_dim=8, head_filters=16, num_levels=4)


def make_tiny_bundle(folder: str | Path, with_prior: bool = True) -> Path:
    """Untrained but complete: every page can load it and run each of its jobs in seconds."""
    from core.models.prior import PriorConfig, build_prior
    from core.models.vqvae import VQVAEConfig, build_vqvae

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vqvae_config = VQVAEConfig(**TINY_VQVAE)
    build_vqvae(vqvae_config).save(folder / "vqvae.keras")
    config = {"kind": "vqvae", "vqvae": vqvae_config.to_dict()}
    if with_prior:
        prior_config = PriorConfig(**TINY_PRIOR)
        build_prior(prior_config).save(folder / "prior.keras")
        config = {"kind": "prior", "vqvae": vqvae_config.to_dict(), "prior": prior_config.to_dict()}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "README.md").write_text("# Tiny test bundle\nUntrained; for tests only.\n")
    return folder
