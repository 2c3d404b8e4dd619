"""Training: the loop shared by both models, and one task per model (VQ-VAE, prior)."""
