"""Devices for TensorFlow: how many GPUs there are, and GPU memory that grows so training and the app can share."""
from __future__ import annotations


def gpu_count() -> int:
    """GPUs TensorFlow sees in this process (no GPU memory is allocated to ask)."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def share_gpu_memory() -> None:
    """Let this process grow its GPU memory instead of taking it all, so another process can share."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # GPU already initialised: the setting was made earlier or cannot change now
