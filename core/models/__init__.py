"""Models that know no files, runs or UI: the quantizer, the VQ-VAE, the PixelCNN prior and its sampler."""
