"""`python -m core.train {vqvae,prior}`: train into a run directory (new, or --resume an old one)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core import atomic, cli, data, runs
from core.models.vqvae import VQVAEConfig
from core.training import loop, prior_task, vqvae_task
from core.training.loop import TrainConfig

log = logging.getLogger("brainvq.train")


# --- command line -------------------------------------------------------------------------------
def _add_train_flags(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--run-dir", required=True, help="run directory (new, or one to --resume)")
    group.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its last checkpoint")
    group.add_argument("--epochs", type=int, default=None,
                       help=f"epochs in all (default {defaults.epochs}; on --resume: the run's own)")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="slices per step")
    group.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float,
                       default=defaults.learning_rate, help="Adam's learning rate")
    group.add_argument("--lr-schedule", choices=["cosine", "constant"], default=defaults.lr_schedule,
                       help="cosine decays the rate to 1%% of --lr over all epochs")
    group.add_argument("--seed", type=int, default=defaults.seed, help="data order and crops")
    group.add_argument("--steps-per-epoch", type=int, default=None,
                       help="cap the steps of one epoch (default: one pass over the train split)")
    group.add_argument("--log-every", type=int, default=defaults.log_every,
                       help="steps between metric lines")
    group.add_argument("--checkpoint-every-s", type=float, default=defaults.checkpoint_every_s,
                       help="also checkpoint this often within an epoch")
    group.add_argument("--mixed-precision", action="store_true",
                       help="float16 on GPU (bfloat16 on CPU) with float32 weights")
    group.add_argument("--xla", action="store_true", help="compile the train step with XLA")
    group.add_argument("--strategy", choices=["default", "mirrored"], default=defaults.strategy,
                       help="'mirrored': data-parallel over all visible GPUs (tf.distribute)")
    group.add_argument("--device", choices=["auto", "cpu", "gpu"], default=defaults.device,
                       help="auto: the GPU when TensorFlow sees one, else the CPU")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.train",
                                     description="Train a BrainVQ model into a run directory.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True)
    model_defaults, train_defaults = VQVAEConfig(), TrainConfig()
    vq = kinds.add_parser("vqvae", help="train a VQ-VAE on OASIS slices",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    vq.add_argument("--data", help="OASIS folder (holds keras_png_slices_data/, or is it)")
    model = vq.add_argument_group("model")
    model.add_argument("--image-size", type=int, default=model_defaults.image_size,
                       help="slices are resized to this square side")
    grid = model.add_mutually_exclusive_group()
    grid.add_argument("--downsample-factor", type=int, default=None,
                      help=f"image side / code grid side, a power of two (when neither this nor "
                           f"--code-grid is given: {model_defaults.downsample_factor})")
    grid.add_argument("--code-grid", type=int, default=None,
                      help="code grid side, e.g. 64 for 64x64 codes of a 256x256 image")
    model.add_argument("--codebook-size", "--num-embeddings", dest="num_embeddings", type=int,
                       default=model_defaults.num_embeddings, help="K, codes in the codebook")
    model.add_argument("--code-dim", "--embedding-dim", dest="embedding_dim", type=int,
                       default=model_defaults.embedding_dim, help="D, size of one code vector")
    model.add_argument("--hidden-channels", type=int, default=model_defaults.hidden_channels,
                       help="width of the residual trunk at code-grid resolution")
    model.add_argument("--residual-blocks", dest="num_residual_blocks", type=int,
                       default=model_defaults.num_residual_blocks,
                       help="residual blocks in the encoder and in the decoder")
    model.add_argument("--commitment-cost", type=float, default=model_defaults.commitment_cost,
                       help="beta of the commitment loss")
    model.add_argument("--no-ema", dest="use_ema", action="store_false",
                       help="learn the codebook by gradient instead of EMA updates (EMA is on "
                            "without this flag)")
    model.add_argument("--ema-decay", type=float, default=model_defaults.ema_decay,
                       help="decay of the EMA codebook updates")
    model.add_argument("--crop-size", type=int, default=None,
                       help="train on random crops of this side (validation uses whole slices)")
    model.add_argument("--val-limit", type=int, default=256,
                       help="validation slices scored each epoch (evenly spaced)")
    _add_train_flags(vq, train_defaults)
    prior_task.add_parser(kinds, train_defaults, _add_train_flags)  # its flags live beside its task
    return parser


def _train_config(args, saved: dict | None) -> TrainConfig:
    values = dict(saved or {})
    if saved is None:
        values.update({f: getattr(args, f) for f in ("batch_size", "learning_rate", "lr_schedule", "seed",
                                                     "steps_per_epoch", "log_every")})
        values["epochs"] = args.epochs or TrainConfig().epochs
    elif args.epochs:
        values["epochs"] = args.epochs  # a resumed run may be given more epochs
    # How to run (not what to learn) may change between a run and its resume: a new machine.
    values.update({f: getattr(args, f) for f in ("checkpoint_every_s", "mixed_precision", "xla",
                                                 "strategy", "device")})
    return TrainConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_dir = Path(args.run_dir)
    try:
        if args.resume:
            saved = runs.read_config(run_dir)
            if saved.get("kind") != args.kind:
                raise runs.RunError(f"{run_dir} is a {saved.get('kind')} run, not {args.kind}.")
        else:
            saved = None
            runs.refuse_existing(run_dir)  # before any work touches the folder
        train = _train_config(args, saved and saved["train"])
        strategy = loop.setup_devices(train)
        if args.kind == "vqvae":
            task, config = vqvae_task.make_task(args, saved, train, strategy)
        else:
            task, config = prior_task.make_task(args, saved, train, strategy)
        if saved is None:
            runs.create_run(run_dir, config)
        elif args.epochs:
            atomic.write_json(run_dir / "config.json", {**saved, "train": train.to_dict()})
        file_log = logging.FileHandler(run_dir / "train.log")
        file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(file_log)
        state = loop.fit(run_dir, task, train, resume=args.resume)
        print(json.dumps({"run_dir": str(run_dir), "state": state}))
        return 0
    except (data.DataError, runs.RunError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception:
        log.exception("Training failed")  # the traceback goes to train.log too, for the dashboard
        return 1


if __name__ == "__main__":
    sys.exit(main())
