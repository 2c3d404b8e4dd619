"""core.training.vqvae_task: one quantizer pass per training step, and its codebook metrics."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from helpers_bundle import TINY_VQVAE as TINY
from oasis_fixtures import make_oasis_tree
from core.models.quantizer import codebook_usage
from core.models.vqvae import VQVAEConfig
from core.training.loop import TrainConfig
from core.training.vqvae_task import VQVAETask


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = make_oasis_tree(tmp_path_factory.mktemp("oasis"), {"train": 4, "validate": 2}, image_size=32)
    return VQVAETask(VQVAEConfig(**TINY), TrainConfig(epochs=1, batch_size=4), str(root),
                     tf.distribute.get_strategy(), val_limit=2)


def count_distance_passes(monkeypatch, quantizer) -> dict:
    seen = {"passes": 0}
    nearest = quantizer.nearest_indices

    def counted_nearest(flat):
        seen["passes"] += 1
        return nearest(flat)

    monkeypatch.setattr(quantizer, "nearest_indices", counted_nearest)
    return seen


def record_call_indices(monkeypatch, quantizer) -> list:
    """The indices each call of the quantizer returned."""
    seen = []
    call = quantizer.call

    def recorded_call(*args, **kwargs):
        quantized, indices = call(*args, **kwargs)
        seen.append(np.asarray(indices))
        return quantized, indices

    monkeypatch.setattr(quantizer, "call", recorded_call)
    return seen


def test_training_step_computes_the_distances_once(task, monkeypatch):
    seen = count_distance_passes(monkeypatch, task.model.quantizer)
    images = np.random.default_rng(0).uniform(size=(4, 32, 32, 1)).astype(np.float32)
    task._replica_step(tf.constant(images))  # eagerly, so every pass is seen
    assert seen["passes"] == 1


def test_training_step_metrics_equal_codebook_usage_of_its_indices(task, monkeypatch):
    seen = record_call_indices(monkeypatch, task.model.quantizer)
    images = np.random.default_rng(1).uniform(size=(4, 32, 32, 1)).astype(np.float32)
    metrics = task._replica_step(tf.constant(images))
    [indices] = seen
    assert indices.shape == (4, 8, 8)
    usage = codebook_usage(indices, TINY["num_embeddings"])
    assert float(metrics["perplexity"]) == pytest.approx(usage.perplexity, rel=1e-6)
    assert float(metrics["codes_used"]) == usage.codes_used


def test_validation_count_is_one_per_twenty_train_slices_within_32_to_256():
    from core.training.vqvae_task import validation_count

    assert validation_count(1_280) == 64  # the proxy's train split
    assert validation_count(9_664) == 256  # OASIS: capped
    assert validation_count(100) == 32 and validation_count(0) == 32
    assert validation_count(2_000) == 100


def test_by_default_a_task_validates_validation_count_evenly_spaced_slices(tmp_path):
    from core.training.vqvae_task import validation_count

    # 4 train slices: the floor of 32 of the 40 validate slices.
    root = make_oasis_tree(tmp_path, {"train": 4, "validate": 40}, image_size=32)
    default = VQVAETask(VQVAEConfig(**TINY), TrainConfig(epochs=1, batch_size=4), str(root),
                        tf.distribute.get_strategy())
    assert len(default.val_images) == validation_count(4) == 32
    chosen = VQVAETask(VQVAEConfig(**TINY), TrainConfig(epochs=1, batch_size=4), str(root),
                       tf.distribute.get_strategy(), val_limit=5)
    assert len(chosen.val_images) == 5
