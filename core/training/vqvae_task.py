"""`python -m core.train vqvae`: the VQ-VAE task the training loop runs (data, step, validation, pictures, bundle)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from core import bundles, data, images, scoring
from core.models.vqvae import VQVAEConfig, build_vqvae
from core.training import loop
from core.training.loop import TrainConfig

SAMPLE_SLICES = 8


class VQVAETask(loop.KerasTask):
    """Trains a VQ-VAE on the train split; validation SSIM picks the best checkpoint."""

    kind = "vqvae"
    model_file = "vqvae.keras"
    selection_metric = "val_ssim"
    selection_mode = "max"

    def __init__(self, model_config: VQVAEConfig, train: TrainConfig, data_path: str,
                 strategy: tf.distribute.Strategy, crop_size: int | None = None,
                 val_limit: int = 256):
        root = data.find_data_root(data_path)
        self.train_set = data.scan_split(root, "train")
        validate = data.scan_split(root, "validate")
        size = model_config.image_size
        self.config, self.train, self.strategy, self.crop_size = model_config, train, strategy, crop_size
        self.batch_size = min(train.batch_size, len(self.train_set))
        self.val_images = data.load_images(data.evenly_spaced(validate.paths, val_limit), size)
        self.sample_images = np.stack(data.evenly_spaced(list(self.val_images), SAMPLE_SLICES))
        self._build(lambda: build_vqvae(model_config))

    def steps_per_epoch(self) -> int:
        count = len(self.train_set) // self.batch_size
        return min(count, self.train.steps_per_epoch or count)

    def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
        dataset = data.make_dataset(self.train_set.paths, batch_size=self.batch_size,
                                    image_size=self.config.image_size, shuffle=True,
                                    seed=self.train.seed * 1000 + epoch, crop_size=self.crop_size,
                                    drop_remainder=True)
        return self._distribute(dataset)

    def _replica_step(self, images):
        model, quantizer = self.model, self.model.quantizer
        replicas = self.strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            latents = model.encoder(images, training=True)
            indices = quantizer.indices(latents)
            quantized = quantizer(latents, training=True)
            reconstruction = model.decoder(quantized, training=True)
            reconstruction_loss = tf.reduce_mean(tf.square(tf.cast(reconstruction, tf.float32) - images))
            vq_loss = tf.add_n(quantizer.losses)
            loss = reconstruction_loss + vq_loss
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = model.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(tf.reshape(indices, [-1]), tf.float32),
                                              tf.reshape(indices, [-1]), self.config.num_embeddings)
        probabilities = counts / tf.reduce_sum(counts)
        perplexity = tf.exp(-tf.reduce_sum(probabilities * tf.math.log(probabilities + 1e-10)))
        return {"loss": loss, "reconstruction_loss": reconstruction_loss, "vq_loss": vq_loss,
                "perplexity": perplexity, "codes_used": tf.reduce_sum(tf.cast(counts > 0, tf.float32))}

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


def make_task(args, saved, train, strategy):
    if saved is None:
        if not args.data:
            raise data.DataError("--data is required for a new run: the OASIS folder to train on.")
        factor = args.downsample_factor or (args.image_size // args.code_grid if args.code_grid
                                            else VQVAEConfig().downsample_factor)
        if args.code_grid and args.image_size % args.code_grid:
            raise ValueError(f"--code-grid must divide --image-size. Received: "
                             f"{args.code_grid} and {args.image_size}")
        model_config = VQVAEConfig(
            image_size=args.image_size, downsample_factor=factor,
            num_embeddings=args.num_embeddings, embedding_dim=args.embedding_dim,
            hidden_channels=args.hidden_channels, num_residual_blocks=args.num_residual_blocks,
            commitment_cost=args.commitment_cost, use_ema=args.use_ema, ema_decay=args.ema_decay)
        extra = {"data": str(Path(args.data).resolve()), "crop_size": args.crop_size,
                 "val_limit": args.val_limit}
    else:
        model_config = VQVAEConfig.from_dict(saved["model"])
        extra = saved["data_settings"]
        if args.data:
            extra = {**extra, "data": str(Path(args.data).resolve())}  # the data moved
    task = VQVAETask(model_config, train, extra["data"], strategy, crop_size=extra["crop_size"],
                     val_limit=extra["val_limit"])
    config = {"kind": "vqvae", "model": model_config.to_dict(), "train": train.to_dict(),
              "data_settings": extra}
    return task, config
