"""core.pipeline: the VQ-VAE -> prior chain runs the prior only when the VQ-VAE finished (the whole chain from the launcher is in test_launcher)."""
from __future__ import annotations

import json

from core import pipeline


def test_the_chain_skips_the_prior_when_the_vqvae_fails_and_frees_its_name(tmp_path):
    vqvae_dir, prior_dir = tmp_path / "bad", tmp_path / "bad-prior"
    prior_dir.mkdir()
    code = pipeline.main(["--vqvae-args", json.dumps(["--run-dir", str(vqvae_dir), "--data",
                                                      str(tmp_path / "nowhere"), "--epochs", "1"]),
                          "--prior-args", json.dumps(["--run-dir", str(prior_dir)])])
    assert code != 0
    assert not prior_dir.exists()
