"""Helpers for model tests: random weights that make every dependency visible."""
import numpy as np


def randomize_weights(model, seed=0):
    """Unit-scale random trainable weights with non-zero biases (zero biases would hide bias bugs).

    Non-trainable weights (a prior's level frequencies) are data, and keep their values.
    """
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        scale = 0.3 if len(w.shape) == 1 else 1.0 / np.sqrt(np.prod(w.shape[:-1]))
        w.assign(rng.normal(0.0, scale, w.shape).astype("float32"))
    return model
