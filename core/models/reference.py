"""Reference feature network: a small CNN trained to tell a slice's level, whose pooled features judge sample realism (FD, KID)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import layers, ops

# Why a network of our own: FID-style distances need features that respond to anatomy, and the
# usual feature networks (Inception, Med3D, RadImageNet) are downloads this offline project cannot
# make. Its distances are only comparable with distances from this same network.


@dataclass(frozen=True)
class ReferenceConfig:
    """Everything needed to rebuild the reference network; saved inside the .keras file."""

    input_size: int = 64  # slices are resized to this square side first: anatomy, not pixel noise
    filters: tuple[int, ...] = (16, 32, 64, 128)  # one conv block per entry, each halving the side
    feature_dim: int = 128  # length of the feature vector FD and KID are computed on
    num_levels: int = 32  # classes of the level head (slice level within a case, from file names)

    def __post_init__(self):
        if self.input_size < 2 ** len(self.filters):
            raise ValueError(f"Expected input_size >= 2**len(filters) = {2 ** len(self.filters)}. "
                             f"Received: input_size={self.input_size}")
        if self.feature_dim < 1 or self.num_levels < 2 or not self.filters or min(self.filters) < 1:
            raise ValueError(f"Expected feature_dim >= 1, num_levels >= 2 and positive filters. "
                             f"Received: feature_dim={self.feature_dim}, num_levels={self.num_levels}, "
                             f"filters={self.filters}")

    def to_dict(self) -> dict:
        return {**asdict(self), "filters": list(self.filters)}

    @classmethod
    def from_dict(cls, values: dict) -> "ReferenceConfig":
        return cls(**{**values, "filters": tuple(values.get("filters", cls.filters))})


@keras.saving.register_keras_serializable(package="brainvq")
class ReferenceNetwork(keras.Model):
    """(N, H, W, 1) slices in [0, 1] -> level logits (N, num_levels); `features` gives the (N, feature_dim) embedding.

    The features are the ReLU outputs of the layer before the level head, after global average
    pooling: translation-tolerant summaries of where tissue, ventricles and skull are.
    """

    def __init__(self, config: dict | ReferenceConfig | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = ReferenceConfig.from_dict(config)
        self.config = config or ReferenceConfig()
        self.blocks = []
        for index, width in enumerate(self.config.filters):
            self.blocks += [layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{index}a"),
                            layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{index}b"),
                            layers.MaxPooling2D(2, name=f"pool{index}")]
        self.pool = layers.GlobalAveragePooling2D(name="global_pool")
        self.embed = layers.Dense(self.config.feature_dim, activation="relu", name="features")
        self.level_head = layers.Dense(self.config.num_levels, name="level_logits")

    def build(self, input_shape=None):
        side = self.config.input_size
        shape = (None, side, side, 1)
        for layer in self.blocks:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.embed.build((None, shape[-1]))
        self.level_head.build((None, self.config.feature_dim))
        self.built = True

    def embed_images(self, images, training=False):
        """(N, H, W, 1) in [0, 1] -> (N, feature_dim) features (tensors in, tensors out)."""
        side = self.config.input_size
        x = ops.cast(images, "float32")
        if x.shape[1] != side or x.shape[2] != side:
            x = ops.image.resize(x, (side, side), interpolation="bilinear", antialias=True)
        x = x * 2.0 - 1.0  # centred inputs train faster
        for layer in self.blocks:
            x = layer(x, training=training)
        return self.embed(self.pool(x), training=training)

    def call(self, images, training=False):
        return self.level_head(self.embed_images(images, training=training))

    def features(self, images, batch_size: int = 64) -> np.ndarray:
        """NumPy (N, H, W, 1) or (N, H, W) slices -> (N, feature_dim) float64 features, in batches."""
        images = np.asarray(images, np.float32)
        if images.ndim == 3:
            images = images[..., None]
        outputs = [ops.convert_to_numpy(self.embed_images(images[i:i + batch_size]))
                   for i in range(0, len(images), batch_size)]
        if not outputs:
            return np.zeros((0, self.config.feature_dim))
        return np.concatenate(outputs).astype(np.float64)

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_reference_network(config: ReferenceConfig | None = None) -> ReferenceNetwork:
    model = ReferenceNetwork(config or ReferenceConfig(), name="reference")
    model.build()
    return model
