"""`python -m core.train vqvae`: the VQ-VAE task the training loop runs (data, step, validation, pictures, bundle)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from core import bundles, data, images, scoring, settings
from core.models.quantizer import across_replicas, code_counts, codes_used, perplexity
from core.models.vqvae import VQVAEConfig, build_vqvae
from core.training import loop
from core.settings import Config, setting
from core.training.loop import TrainConfig

SAMPLE_SLICES = 8


def validation_count(train_slices: int) -> int:
    """How many validation slices an epoch scores by default: one per 20 train slices, 32 to 256.

    Scoring a whole slice costs about two training crops of 128x128 on a CPU, so this keeps
    validation near a tenth of an epoch of the crop recipe (bench/evaluate.py); 256 slices
    (8 OASIS cases) already give a stable mean, so larger splits validate no more.
    """
    return max(32, min(256, train_slices // 20))


class VQVAETask(loop.KerasTask):
    """Trains a VQ-VAE on the train split; validation SSIM picks the best checkpoint."""

    kind = "vqvae"
    model_file = "vqvae.keras"
    selection_metric = "val_ssim"
    selection_mode = "max"

    def __init__(self, model_config: VQVAEConfig, train: TrainConfig, data_path: str,
                 strategy: tf.distribute.Strategy, crop_size: int | None = None,
                 val_limit: int | None = None):
        root = data.find_data_root(data_path)
        self.train_set = data.scan_split(root, "train")
        validate = data.scan_split(root, "validate")
        size = model_config.image_size
        self.config, self.train, self.strategy, self.crop_size = model_config, train, strategy, crop_size
        self.batch_size = min(train.batch_size, len(self.train_set))
        count = validation_count(len(self.train_set)) if val_limit is None else val_limit
        self.val_images = data.load_images(data.evenly_spaced(validate.paths, count), size)
        self.sample_images = np.stack(data.evenly_spaced(list(self.val_images), SAMPLE_SLICES))
        self._build(lambda: build_vqvae(model_config))

    def steps_per_epoch(self) -> int:
        count = len(self.train_set) // self.batch_size
        return min(count, self.train.steps_per_epoch or count)

    def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
        return self._distribute(lambda batch_size, shard: data.make_dataset(
            self.train_set.paths, batch_size=batch_size, image_size=self.config.image_size, shuffle=True,
            seed=self.train.seed * 1000 + epoch, crop_size=self.crop_size, drop_remainder=True, shard=shard))

    def _replica_step(self, images):
        model, quantizer = self.model, self.model.quantizer
        replicas = self.strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            latents = model.encoder(images, training=True)
            quantized, indices = quantizer(latents, training=True)
            reconstruction = model.decoder(quantized, training=True)
            reconstruction_loss = tf.reduce_mean(tf.square(tf.cast(reconstruction, tf.float32) - images))
            vq_loss = tf.add_n(quantizer.losses)
            loss = reconstruction_loss + vq_loss
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = model.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        # The one definition of usage, over the global batch as one process would count it.
        counts = across_replicas(code_counts(indices, self.config.num_embeddings), "sum")
        return {"loss": loss, "reconstruction_loss": reconstruction_loss, "vq_loss": vq_loss,
                "perplexity": perplexity(counts), "codes_used": tf.cast(codes_used(counts), tf.float32)}

    def validate(self) -> dict:
        scores = scoring.evaluate_images(self.model, self.val_images)
        return {f"val_{k}": v for k, v in scores.items() if k not in ("codebook_size", "dead_codes")}

    def write_samples(self, path: Path) -> None:
        originals_over_reconstructions = np.concatenate(
            [self.sample_images, self.model.reconstruct(self.sample_images)])
        path.write_bytes(images.png_bytes(images.mosaic(originals_over_reconstructions,
                                                              columns=len(self.sample_images))))

    def write_bundle(self, folder: Path) -> None:
        bundles.save_bundle(folder, self.model)

    def model_settings(self) -> VQVAEConfig:
        return self.model.config


# --- settings: flags, a new run's configs, a resumed run's -------------------------------------------
@dataclass(frozen=True)
class VQVAEData(Config):
    """Which data a VQ-VAE run trains on, and how it is cut: config.json's "data_settings"."""

    data: str | None = setting(None, help="OASIS folder (holds keras_png_slices_data/, or is it)", flag="--data")
    crop_size: int | None = setting(None, help="train on random square crops of this side (validation uses "
                                    "whole slices); 128 trains about 4x faster on 256x256 slices",
                                    flag="--crop-size", label="Crop size (pixels)", minimum=8, maximum=4096,
                                    none_means="whole slices")
    val_limit: int | None = setting(None, help="validation slices scored each epoch (evenly spaced)",
                                    flag="--val-limit", minimum=1, maximum=100000,
                                    none_means="one per 20 train slices, 32 to 256")

    def check_fits(self, model: VQVAEConfig) -> None:
        """A crop must fit the image and cover whole code cells: a ValueError, before any file, otherwise."""
        crop = self.crop_size
        if crop is not None and (crop > model.image_size or crop % model.downsample_factor):
            raise ValueError(f"Expected a crop size no larger than the image ({model.image_size}) and a multiple "
                             f"of the downsample factor ({model.downsample_factor}). Received: {crop}")


TRAIN_DEFAULTS = TrainConfig()
# The benchmark recipe's crops (BENCHMARKS.md: 184 images/s on 128x128 crops, 44 on whole 256x256 slices):
# what the Train page offers first. The CLI's default stays whole slices.
FAST_RECIPE = VQVAEData(crop_size=128)
MODEL_CONFIG, DATA_SETTINGS = VQVAEConfig, VQVAEData  # what the CLI derives this command's flags from


def add_flags(parser) -> None:
    """The VQ-VAE command's own flags: its data and its model (training flags are shared)."""
    settings.add_flags(parser.add_argument_group("data"), VQVAEData)
    model = parser.add_argument_group("model")
    settings.add_flags(model, VQVAEConfig)
    model.add_argument("--code-grid", type=settings.number(int, "code_grid", minimum=1),
                       default=argparse.SUPPRESS,
                       help="code-grid side instead of --downsample-factor, e.g. 64 for 64x64 codes of a "
                            "256x256 image")


def new_settings(args) -> tuple[VQVAEConfig, VQVAEData]:
    """A new run's configs from the flags typed; every rule between flags is checked here, before any file."""
    chosen = settings.given(VQVAEConfig, args)
    if hasattr(args, "code_grid"):
        if "downsample_factor" in chosen:
            raise ValueError("Give --code-grid or --downsample-factor, not both.")
        size = chosen.get("image_size", VQVAEConfig().image_size)
        if size % args.code_grid:
            raise ValueError(f"Expected a --code-grid that divides --image-size. Received: "
                             f"{args.code_grid} and {size}")
        chosen["downsample_factor"] = size // args.code_grid
    model = VQVAEConfig.from_dict(chosen)
    data_settings = VQVAEData.from_dict(settings.given(VQVAEData, args))
    if data_settings.data is None:
        raise data.DataError("--data is required for a new run: the OASIS folder to train on.")
    data_settings.check_fits(model)
    return model, data_settings.replace(data=str(Path(data_settings.data).resolve()))


def resumed_settings(saved: dict, args) -> tuple[VQVAEConfig, VQVAEData]:
    """A resumed run's configs: as saved, with the data folder moved when --data says so."""
    data_settings = VQVAEData.from_dict(saved["data_settings"])
    if hasattr(args, "data"):
        data_settings = data_settings.replace(data=str(Path(args.data).resolve()))
    return VQVAEConfig.from_dict(saved["model"]), data_settings


def make_task(model: VQVAEConfig, data_settings: VQVAEData, train: TrainConfig, strategy,
              run_dir: Path) -> tuple[VQVAETask, dict]:
    """The task, and the run's config.json that says how it was made."""
    task = VQVAETask(model, train, data_settings.data, strategy, crop_size=data_settings.crop_size,
                     val_limit=data_settings.val_limit)
    return task, {"kind": "vqvae", "model": model.to_dict(), "train": train.to_dict(),
                  "data_settings": data_settings.to_dict()}
