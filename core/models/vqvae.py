"""VQ-VAE (van den Oord et al. 2017): residual conv encoder -> vector quantizer -> decoder, with an index API."""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from core.models.quantizer import VectorQuantizer
from core.settings import Config, setting


@dataclass(frozen=True)
class VQVAEConfig(Config):
    """Everything needed to rebuild a VQ-VAE; saved as JSON beside its weights."""

    image_size: int = setting(256, help="slices are fitted to this square side, pixels", flag="--image-size",
                              label="Image size (pixels)", minimum=8, maximum=4096)
    downsample_factor: int = setting(4, help="image side / code-grid side, a power of two (256 -> 64x64 codes)",
                                     flag="--downsample-factor", label="Downsample factor (image / code grid)",
                                     choices=(2, 4, 8, 16, 32, 64))
    num_embeddings: int = setting(256, help="K, codes in the codebook", flag="--codebook-size",
                                  aliases=("--num-embeddings",), label="Codebook size (codes)", minimum=2,
                                  maximum=65536)
    embedding_dim: int = setting(16, help="D, size of one code vector", flag="--code-dim",
                                 aliases=("--embedding-dim",), label="Code size (values per code)",
                                 minimum=1, maximum=1024)
    hidden_channels: int = setting(64, help="width of the residual trunk at code-grid resolution",
                                   flag="--hidden-channels", minimum=16, maximum=2048)  # finer levels: >= 16 wide
    num_residual_blocks: int = setting(2, help="residual blocks in the encoder and in the decoder",
                                       flag="--residual-blocks", minimum=0, maximum=64)
    commitment_cost: float = setting(0.25, help="beta of the commitment loss (eq. 4; best kept in 0.25..2)",
                                     flag="--commitment-cost", minimum=0.0,
                                     maximum=100.0)
    use_ema: bool = setting(True, help="learn the codebook by EMA updates (--no-ema: by gradient)",
                            flag="--ema")
    ema_decay: float = setting(0.99, help="decay of the EMA codebook updates", flag="--ema-decay",
                               above=0.0, below=1.0)
    dead_code_threshold: float = setting(1.0, help="EMA assignments per step under which a code restarts",
                                         minimum=0.0)

    def check(self):
        if self.image_size % self.downsample_factor:
            raise ValueError(f"Expected image_size divisible by downsample_factor. Received: "
                             f"image_size={self.image_size}, downsample_factor={self.downsample_factor}")

    @property
    def code_grid(self) -> int:
        return self.image_size // self.downsample_factor

    @property
    def num_downsamplings(self) -> int:
        return int(math.log2(self.downsample_factor))


@keras.saving.register_keras_serializable(package="brainvq")
class ResidualBlock(layers.Layer):
    """x + conv1x1(relu(conv3x3(relu(x)))), the block of the paper's encoder and decoder."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.conv3 = layers.Conv2D(channels, 3, padding="same", name="conv3x3")
        self.conv1 = layers.Conv2D(channels, 1, name="conv1x1")

    def build(self, input_shape):
        self.conv3.build(input_shape)
        self.conv1.build(input_shape[:-1] + (self.channels,))
        self.built = True

    def call(self, inputs):
        hidden = self.conv3(ops.relu(inputs))
        return inputs + self.conv1(ops.relu(hidden))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def _channels_at(config: VQVAEConfig, level: int) -> int:
    # Halve the width at each finer level: full resolution is where CPU time goes.
    return max(config.hidden_channels // 2 ** (config.num_downsamplings - level), 16)


def build_encoder(config: VQVAEConfig) -> keras.Model:
    # Spatial sizes are left open: training may use crops, and any multiple of the factor works.
    images = keras.Input((None, None, 1), name="images")
    x = images
    for level in range(1, config.num_downsamplings + 1):
        x = layers.Conv2D(_channels_at(config, level), 4, strides=2, padding="same",
                          activation="relu" if level < config.num_downsamplings else None,
                          name=f"down{level}")(x)
    for block in range(config.num_residual_blocks):
        x = ResidualBlock(config.hidden_channels, name=f"residual{block}")(x)
    x = layers.Conv2D(config.embedding_dim, 1, name="to_codes")(ops.relu(x))
    return keras.Model(images, x, name="encoder")


def build_decoder(config: VQVAEConfig) -> keras.Model:
    codes = keras.Input((None, None, config.embedding_dim), name="code_vectors")
    x = layers.Conv2D(config.hidden_channels, 3, padding="same", name="from_codes")(codes)
    for block in range(config.num_residual_blocks):
        x = ResidualBlock(config.hidden_channels, name=f"residual{block}")(x)
    x = ops.relu(x)
    for level in range(config.num_downsamplings - 1, 0, -1):
        x = layers.Conv2DTranspose(_channels_at(config, level), 4, strides=2, padding="same",
                                   activation="relu", name=f"up{level}")(x)
    x = layers.Conv2DTranspose(1, 4, strides=2, padding="same", name="to_image")(x)
    # Linear output in float32: the MSE is taken on [0, 1] images, clipping is for display only.
    x = layers.Activation("linear", dtype="float32", name="reconstruction")(x)
    return keras.Model(codes, x, name="decoder")


@keras.saving.register_keras_serializable(package="brainvq")
class VQVAE(keras.Model):
    """Images (B, H, W, 1) in [0, 1] -> reconstructions, through a discrete code grid.

    The index API is what the prior, the sampler and the dashboard use:
    `encode_to_indices(images)` -> (B, h, w) int32, `decode_indices(indices)` -> images,
    `lookup(indices)` -> code vectors. `decode_indices(encode_to_indices(x))` equals `self(x)`.
    """

    def __init__(self, config: dict | VQVAEConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(config, VQVAEConfig):
            config = VQVAEConfig.from_dict(config or {})
        self.config = config
        self.encoder = build_encoder(config)
        self.quantizer = VectorQuantizer(
            config.num_embeddings, config.embedding_dim, commitment_cost=config.commitment_cost,
            use_ema=config.use_ema, ema_decay=config.ema_decay,
            dead_code_threshold=config.dead_code_threshold, dtype="float32", name="quantizer")
        self.decoder = build_decoder(config)

    def build(self, input_shape=None):
        grid = self.config.code_grid
        self.encoder.build((None, self.config.image_size, self.config.image_size, 1))
        self.quantizer.build((None, grid, grid, self.config.embedding_dim))
        self.decoder.build((None, grid, grid, self.config.embedding_dim))
        self.built = True

    def call(self, images, training=False):
        quantized, _ = self.quantizer(self.encoder(images, training=training), training=training)
        return self.decoder(quantized, training=training)

    # --- index API (NumPy in, NumPy out; batched so any number of slices fits in memory) ---
    def encode_to_indices(self, images, batch_size: int = 32) -> np.ndarray:
        images = np.asarray(images, np.float32)
        outputs = [ops.convert_to_numpy(self.quantizer.indices(self.encoder(images[i:i + batch_size])))
                   for i in range(0, len(images), batch_size)]
        grid = self.config.code_grid
        return np.concatenate(outputs) if outputs else np.zeros((0, grid, grid), np.int32)

    def lookup(self, indices):
        return self.quantizer.lookup(indices)

    def decode_indices(self, indices, batch_size: int = 32) -> np.ndarray:
        indices = np.asarray(indices, np.int32)
        size = self.config.image_size
        outputs = [ops.convert_to_numpy(self.decoder(self.lookup(indices[i:i + batch_size])))
                   for i in range(0, len(indices), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0, size, size, 1), np.float32)

    def reconstruct(self, images, batch_size: int = 32) -> np.ndarray:
        """Reconstructions clipped to [0, 1], as a person sees them."""
        return np.clip(self.decode_indices(self.encode_to_indices(images, batch_size), batch_size),
                       0.0, 1.0)

    def codebook(self) -> np.ndarray:
        return ops.convert_to_numpy(self.quantizer.codebook)

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_vqvae(config: VQVAEConfig) -> VQVAE:
    model = VQVAE(config, name="vqvae")
    model.build()
    return model
