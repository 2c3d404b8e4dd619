"""BrainVQ engine: data, VQ-VAE, PixelCNN prior, sampling and run directories (no Streamlit here)."""
