"""Build a tiny checkpoint bundle (vqvae.keras + prior.keras + config.json) for app tests."""
from __future__ import annotations

from pathlib import Path

TINY_VQVAE = dict(image_size=32, downsample_factor=4, num_embeddings=16, embedding_dim=4,
                  hidden_channels=16, num_residual_blocks=1)
TINY_PRIOR = dict(num_embeddings=16, grid_height=8, grid_width=8, filters=8, num_layers=2,
                  embedding_dim=8, head_filters=16, num_levels=4)


def make_tiny_bundle(folder: str | Path, with_prior: bool = True, with_volume_prior: bool = False) -> Path:
    """Untrained but complete: every page can load it and run each of its jobs in seconds."""
    from core.bundles import save_bundle
    from core.models.prior import PriorConfig, build_prior
    from core.models.vqvae import VQVAEConfig, build_vqvae

    prior_config = PriorConfig(**TINY_PRIOR) if with_prior else None
    volume_config = PriorConfig(**TINY_PRIOR, previous_slice=True) if with_volume_prior else None
    return save_bundle(folder, build_vqvae(VQVAEConfig(**TINY_VQVAE)),
                       build_prior(prior_config) if with_prior else None, prior_config=prior_config,
                       volume_prior=build_prior(volume_config) if with_volume_prior else None,
                       volume_config=volume_config, card="# Tiny test bundle\nUntrained; for tests only.\n")
