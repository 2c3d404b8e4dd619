"""`python -m core.train prior`: the prior task the training loop runs, on the train split's cached VQ-VAE codes."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from core import atomic, bundles, cluster, data, images, runs, settings
from core.models.prior import PriorConfig, build_prior, prior_inputs, prior_loss, set_level_frequency
from core.models.sampler import sample_codes, sample_volumes
from core.settings import Config, setting
from core.training import loop
from core.training.loop import TrainConfig

SAMPLES_PER_EPOCH = 8
log = logging.getLogger("brainvq.train")


def encode_split(vqvae, data_root: Path, split: str, cache: Path, write: bool = True) -> np.ndarray:
    """The split's code grids (N, h, w) int16, encoded once and cached in the run directory (if `write`)."""
    if cache.exists():
        return np.load(cache)
    paths = data.scan_split(data_root, split).paths
    chunks = [vqvae.encode_to_indices(data.load_images(chunk, vqvae.config.image_size))
              for chunk in data.chunked(paths, 256)]
    codes = np.concatenate(chunks).astype(np.int16)
    if write:
        with atomic.replacing(cache, "wb") as handle:
            np.save(handle, codes)
    return codes


def split_levels(data_root: Path, split: str, codes: np.ndarray, num_levels: int) -> np.ndarray:
    """(N,) int32 slice level of each cached code grid, from the file names (zeros when unconditional)."""
    if not num_levels:
        return np.zeros(len(codes), np.int32)
    paths = data.list_slices(data_root, split)
    levels = data.slice_levels(paths)
    if levels is None:
        unnamed = next(p.name for p in paths if data.slice_level(p) is None)
        raise data.DataError(f"{unnamed} carries no slice level in its name (OASIS names slices "
                             f"case_001_slice_12.nii.png); this prior is conditioned on levels, so "
                             f"every {split} slice needs one.")
    if len(levels) != len(codes):
        raise data.DataError(f"The {split} split now has {len(levels)} slices, but its cached codes "
                             f"were made from {len(codes)}: the data folder changed since the run started.")
    if levels.max() >= num_levels:
        raise data.DataError(f"The {split} split has slice level {levels.max()}, but the prior knows "
                             f"levels 0..{num_levels - 1} (from the train split).")
    return levels


class PriorTask(loop.KerasTask):
    """Trains the prior (or, with config.previous_slice, the whole-brain prior); validation bits per code
    pick the best checkpoint."""

    kind = "prior"
    model_file = "prior.keras"
    selection_metric = "val_bits_per_code"
    selection_mode = "min"

    def __init__(self, run_dir: Path, vqvae_source: str, data_path: str, model_config: PriorConfig,
                 train: TrainConfig, strategy: tf.distribute.Strategy, below_noise: float = 0.0):
        self.source = bundles.load_bundle(vqvae_source)
        self.vqvae = self.source.vqvae
        root = data.find_data_root(data_path)
        chief = cluster.is_chief()  # the other workers of a multi-worker job write nothing
        if chief:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.train_codes = encode_split(self.vqvae, root, "train", run_dir / "codes_train.npy", chief)
        self.val_codes = encode_split(self.vqvae, root, "validate", run_dir / "codes_validate.npy", chief)
        self.train_levels = split_levels(root, "train", self.train_codes, model_config.num_levels)
        self.val_levels = split_levels(root, "validate", self.val_codes, model_config.num_levels)
        self.volume = model_config.previous_slice
        if self.volume:
            self.model_file = "volume_prior.keras"
            # Each slice's neighbour one level down in the same case (-1: the base of a stack).
            self.train_below = data.slice_below(data.list_slices(root, "train"))
            self.val_below = data.slice_below(data.list_slices(root, "validate"))
        self.config, self.train, self.strategy = model_config, train, strategy
        self.below_noise = below_noise
        # The splits' codes as tensors, made once: a whole-brain prior looks up the slices below in them.
        self._train_table = tf.constant(self.train_codes) if self.volume else None
        self._val_table = tf.constant(self.val_codes) if self.volume else None
        self.batch_size = min(train.batch_size, len(self.train_codes))
        self._build(self._new_model)
        self._compiled_logits = tf.function(lambda *inputs: self._logits(*inputs, training=False))

    def _new_model(self):
        model = build_prior(self.config)
        if self.config.num_levels:
            set_level_frequency(model, self.train_levels)
        if self.volume and self.source.prior is not None:
            _start_from(model, self.source.prior, self.source.path)
        return model

    def _logits(self, codes, levels, previous=None, training: bool = False):
        inputs = prior_inputs(self.model, codes, levels if self.config.num_levels else None, previous)
        return tf.cast(self.model(inputs, training=training), tf.float32)

    def _batch_inputs(self, table, codes, levels, *below):
        """A batch as the model takes it: int32 codes, levels, and for a whole-brain prior the codes of
        the slices below, looked up by their (B,) indices into the split's int16 `table` (-1: none,
        the start token), with the training swaps of `_swaps` when there are some."""
        inputs = (tf.cast(codes, tf.int32), levels)
        if not below:
            return inputs
        indices, *swaps = below
        found = tf.cast(tf.gather(table, tf.maximum(indices, 0)), tf.int32)
        start = self.config.num_embeddings
        previous = tf.where((indices >= 0)[:, None, None], found, start)
        if swaps:  # a start token stays one: the base of a stack has no slice below to blur
            previous = tf.where((swaps[0] >= 0) & (previous != start), swaps[0], previous)
        return (*inputs, previous)

    def _swaps(self, epoch: int, position):
        """For the slice at `position` in this epoch's order: a random code at a `below_noise` fraction of
        its grid (the slice below's code there is swapped for it), -1 elsewhere: the guess being that a
        prior which saw only real slices below trusts generated ones too much, so errors pile up from the
        base of a stack (measured: not so at 0.3, BENCHMARKS.md). Drawn from (seed, epoch, position): the
        same after a resume and for any number of workers."""
        seed = tf.stack([tf.constant(self.train.seed * 1000 + epoch, tf.int64), position])
        draw, pick = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        shape = (self.config.grid_height, self.config.grid_width)
        swapped = tf.random.stateless_uniform(shape, draw) < self.below_noise
        codes = tf.random.stateless_uniform(shape, pick, maxval=self.config.num_embeddings, dtype=tf.int32)
        return tf.where(swapped, codes, -1)

    def steps_per_epoch(self) -> int:
        count = len(self.train_codes) // self.batch_size
        return min(count, self.train.steps_per_epoch or count)

    def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
        # The codes stay int16 (as cached) until a batch is made: an int32 copy of a full OASIS split is
        # 160 MB more.
        arrays = (self.train_codes, self.train_levels, *((self.train_below,) if self.volume else ()))

        def make(batch_size, shard):
            grids = tf.data.Dataset.from_tensor_slices(arrays).shuffle(
                len(self.train_codes), seed=self.train.seed * 1000 + epoch, reshuffle_each_iteration=False)
            if self.volume and self.below_noise:
                grids = grids.enumerate().map(lambda position, grid: (*grid, self._swaps(epoch, position)))
            grids = (data.shard_batches(grids, batch_size, *shard) if shard
                     else grids.batch(batch_size, drop_remainder=True))
            return grids.map(lambda *batch: self._batch_inputs(self._train_table, *batch)).prefetch(tf.data.AUTOTUNE)
        return self._distribute(make)

    def _replica_step(self, batch):
        codes, levels, *below = batch  # below: the codes of the slices below, for a whole-brain prior
        with tf.GradientTape() as tape:
            logits = self._logits(codes, levels, *below, training=True)
            loss = prior_loss(codes, logits)
            scaled = self.optimizer.scale_loss(loss / self.strategy.num_replicas_in_sync)
        variables = self.model.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        accuracy = tf.reduce_mean(tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == codes, tf.float32))
        return {"loss": loss, "bits_per_code": loss / np.log(2.0), "accuracy": accuracy}

    def validate(self) -> dict:
        total_nats, correct, count = 0.0, 0.0, 0
        # In training-sized batches: the (batch, H, W, K) logits of 32 grids lifted the trainer's
        # peak memory by 0.4 GB above the training step's (BENCHMARKS.md, the real OASIS size).
        size = self.batch_size
        for start in range(0, len(self.val_codes), size):
            batch = (self.val_codes[start:start + size], self.val_levels[start:start + size],
                     *((self.val_below[start:start + size],) if self.volume else ()))
            codes, *rest = self._batch_inputs(self._val_table, *batch)
            logits = self._compiled_logits(codes, *rest)
            total_nats += float(prior_loss(codes, logits)) * codes.shape[0]
            correct += float(tf.reduce_mean(tf.cast(
                tf.argmax(logits, -1, output_type=tf.int32) == codes, tf.float32))) * codes.shape[0]
            count += codes.shape[0]
        count = max(count, 1)
        return {"val_bits_per_code": total_nats / count / np.log(2.0), "val_accuracy": correct / count}

    def write_samples(self, path: Path) -> None:
        if self.volume:  # one whole brain, base to vertex
            stack = sample_volumes(self.model, 1, seed=0)[0]
            samples = self.vqvae.decode_indices(stack)
            path.write_bytes(images.png_bytes(images.mosaic(samples, columns=8)))
            return
        samples = self.vqvae.decode_indices(sample_codes(self.model, SAMPLES_PER_EPOCH, seed=0))
        path.write_bytes(images.png_bytes(images.mosaic(samples, columns=SAMPLES_PER_EPOCH)))

    def write_bundle(self, folder: Path) -> None:
        if self.volume:  # beside the slice prior of the bundle it started from, when there is one
            source_prior = self.source.prior
            bundles.save_bundle(folder, self.vqvae, source_prior, vqvae_source=self.source.path,
                                prior_config=PriorConfig.from_dict(self.source.config["prior"]) if source_prior else None,
                                volume_prior=self.model, volume_config=self.config)
            return
        bundles.save_bundle(folder, self.vqvae, self.model, prior_config=self.config,
                            vqvae_source=self.source.path)


def _start_from(model, slice_prior, source) -> None:
    """Warm-start a whole-brain prior from a slice prior of the same shape: every layer they share
    (all but the encoder of the slice below) takes its weights, so training begins at the slice
    prior's likelihood and learns what the slice below adds."""
    shared = 0
    for layer in model.layers:
        try:
            other = slice_prior.get_layer(layer.name)
        except ValueError:
            continue
        mine, theirs = layer.get_weights(), other.get_weights()
        if mine and [w.shape for w in mine] == [w.shape for w in theirs]:
            layer.set_weights(theirs)
            shared += 1
    if shared:
        log.info("The whole-brain prior starts from the slice prior of %s (%d layers).", source, shared)
    else:
        log.info("The slice prior of %s has another shape: the whole-brain prior starts afresh.", source)



# --- settings: flags, a new run's configs, a resumed run's -------------------------------------------
@dataclass(frozen=True)
class PriorData(Config):
    """Which VQ-VAE and data a prior run learns from: config.json's "data_settings"."""

    vqvae: str | None = setting(None, help="VQ-VAE run directory (its best checkpoint) or bundle folder",
                                flag="--vqvae")
    data: str | None = setting(None, help="OASIS folder (default: the one the VQ-VAE run trained on)",
                               flag="--data")
    levels: str = setting("auto", help="condition on the slice level in the file names (case_001_slice_12 -> "
                          "12); auto: when every train slice's name has one", flag="--levels",
                          choices=("auto", "off"))
    below_noise: float = setting(0.0, help="whole-brain prior: the fraction of the slice-below codes swapped for "
                                 "random codes while it trains (an experiment against drift up the stack: at "
                                 "0.3 it made whole brains worse, BENCHMARKS.md)", flag="--below-noise", minimum=0.0, below=1.0)


# The prior's own default rate: the one the demo prior was trained with (checkpoints/demo/README.md).
TRAIN_DEFAULTS = TrainConfig(learning_rate=1e-3)
MODEL_CONFIG, DATA_SETTINGS = PriorConfig, PriorData  # what the CLI derives this command's flags from
# Flags of PriorConfig's fields that come from the VQ-VAE (codes, grid) or the data (levels) have none.
_PLACEHOLDER_GRID = dict(num_embeddings=2, grid_height=1, grid_width=1)


def add_flags(parser) -> None:
    """The prior command's own flags: its VQ-VAE and data, and its model (training flags are shared)."""
    settings.add_flags(parser.add_argument_group("data"), PriorData)
    settings.add_flags(parser.add_argument_group("prior model"), PriorConfig)


def new_settings(args) -> tuple[dict, PriorData]:
    """The prior's model flags typed (checked now, with a placeholder grid) and its data settings."""
    chosen = settings.given(PriorConfig, args)
    PriorConfig.from_dict({**_PLACEHOLDER_GRID, **chosen})  # every rule between flags, before any file
    data_settings = PriorData.from_dict(settings.given(PriorData, args))
    if data_settings.vqvae is None:
        raise runs.RunError("--vqvae is required for a new prior run: the VQ-VAE run or bundle.")
    source = str(Path(data_settings.vqvae).resolve())
    data_path = data_settings.data or _vqvae_data(source)
    return chosen, data_settings.replace(vqvae=source, data=str(Path(data_path).resolve()))


def resumed_settings(saved: dict, args) -> tuple[PriorConfig, PriorData]:
    """A resumed run's configs: as saved, with the data folder moved when --data says so."""
    data_settings = PriorData.from_dict(saved["data_settings"])
    if hasattr(args, "data"):
        data_settings = data_settings.replace(data=str(Path(args.data).resolve()))
    return PriorConfig.from_dict(saved["model"]), data_settings


def make_task(model: PriorConfig | dict, data_settings: PriorData, train: TrainConfig, strategy,
              run_dir: Path) -> tuple[PriorTask, dict]:
    """The task, and the run's config.json. A new run's model flags (a dict) meet its VQ-VAE's grid here."""
    if isinstance(model, dict):
        vqvae_config = bundles.load_bundle(data_settings.vqvae).vqvae.config
        model = PriorConfig.from_dict({
            **model, "num_levels": _level_count(data_settings.data, data_settings.levels),
            "num_embeddings": vqvae_config.num_embeddings, "grid_height": vqvae_config.code_grid,
            "grid_width": vqvae_config.code_grid})
    if model.previous_slice:
        root = data.find_data_root(data_settings.data)
        for split in ("train", "validate"):  # a name without case and slice numbers, found before any encoding
            data.slice_below(data.list_slices(root, split))
        if not model.num_levels:
            raise data.DataError("A whole-brain prior (--volume) generates slice z at level z: it needs the slice "
                                 "levels in the file names, and --levels auto.")
    elif data_settings.below_noise:
        raise runs.RunError("--below-noise blurs the slice below a whole-brain prior learns from: it needs --volume.")
    task = PriorTask(run_dir, data_settings.vqvae, data_settings.data, model, train, strategy,
                     data_settings.below_noise)
    return task, {"kind": "prior", "model": model.to_dict(), "train": train.to_dict(),
                  "data_settings": data_settings.to_dict()}


def _level_count(data_path: str, mode: str) -> int:
    """How many slice levels to condition on: 1 + the largest level named in the train split, or 0."""
    if mode == "off":
        return 0
    levels = data.slice_levels(data.list_slices(data.find_data_root(data_path), "train"))
    if levels is None:
        log.warning("The train slices' names carry no slice level (case_001_slice_12...): "
                    "the prior is unconditional.")
        return 0
    log.info("Conditioning the prior on %d slice levels, read from the file names.", levels.max() + 1)
    return int(levels.max()) + 1


def _vqvae_data(source: str) -> str:
    try:
        return runs.read_config(source)["data_settings"]["data"]
    except (runs.RunError, KeyError):
        raise data.DataError(f"{source} is a bundle, not a VQ-VAE run: say which data to encode "
                             f"with --data.") from None
