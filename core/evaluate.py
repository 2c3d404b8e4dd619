"""`python -m core.evaluate [samples]`: score a checkpoint's reconstructions on slices, or its samples against real slices; prints ONE JSON object.

`surprise` prints each slice's bits under the prior (core.surprise) and can write the bits maps.
"""
from __future__ import annotations

import json
import sys
import time

from core import cli

cli.import_tensorflow()  # before the modules below import it: its start-up lines held back
from core import data, settings  # noqa: E402


positive_int = settings.number(int, "value", minimum=1)  # a bad value is one `error:` line at parse time


DATA_HELP = ("an OASIS folder, a folder holding only the split's keras_png_slices_<split>/, or a plain "
             "folder of PNG slices (then --split is not used)")


def _command(prog: str, description: str, checkpoint_help: str, split: str) -> cli.Parser:
    """A parser with the flags every evaluate command takes: which checkpoint, which slices."""
    parser = cli.Parser(prog=prog, description=description)
    parser.add_argument("--checkpoint", required=True, type=settings.text("checkpoint"), help=checkpoint_help)
    parser.add_argument("--data", required=True, type=settings.text("data"), help=DATA_HELP)
    parser.add_argument("--split", choices=data.SPLITS, default=split)
    return parser


def build_parser() -> cli.Parser:
    parser = _command("python -m core.evaluate", "Score a VQ-VAE checkpoint's reconstructions on a data split.",
                      "a run directory (its best checkpoint) or a bundle folder", "test")
    parser.add_argument("--limit", type=positive_int, default=None, help="score only the first N slices")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    return parser


def build_samples_parser() -> cli.Parser:
    parser = _command("python -m core.evaluate samples",
                      "Generate brains from a prior checkpoint and compare them with real slices: FD and KID "
                      "on reference features, MS-SSIM diversity, brain area by level; real train slices "
                      "give the baseline.", "a prior run directory or bundle folder", "validate")
    parser.add_argument("--n", type=cli.sample_count_type(), default=256,
                        help="samples (and real slices) to compare")
    parser.add_argument("--seed", type=cli.seed_type(), default=0)
    parser.add_argument("--reference", default=None, type=settings.text("reference"),
                        help="reference network folder (default: checkpoints/reference)")
    return parser


PRIOR_CHOICES = ("auto", "slice", "whole-brain")


def build_surprise_parser() -> cli.Parser:
    parser = _command("python -m core.evaluate surprise",
                      "Bits of every code of each slice under a prior checkpoint (one teacher-forced pass): "
                      "prints {\"slices\": [{name, bits, expected_bits, max_bits, hot_spot_bits, level, "
                      "given_below}]}; expected_bits: the entropy of the prior's predictions; hot_spot_bits: "
                      "the largest mean over 4x4 codes of bits above expected, what a small lesion raises; "
                      "level null: no level in the name, marginalised over p(level); given_below: the "
                      "whole-brain prior scored the slice given its slice below in the folder (a base "
                      "slice: given none, as trained).",
                      "a prior run directory or bundle folder", "validate")
    parser.add_argument("--limit", type=positive_int, default=None, help="score N evenly spaced slices")
    parser.add_argument("--prior", choices=PRIOR_CHOICES, default="auto",
                        help="whole-brain: score each slice given the slice below it in the folder (its names "
                             "must carry case and slice numbers); slice: the slice prior alone; auto: "
                             "whole-brain when the checkpoint has one and the names allow it")
    parser.add_argument("--out", default=None, type=settings.text("out"),
                        help="write OUT/<slice name>.npy: each slice's code grid of bits per code (OUT: new, "
                             "empty, or made by this command before)")
    return parser


def surprise_prior(bundle, choice: str, data_path: str, split: str):
    """The prior --prior names: a whole-brain one needs the bundle to hold it and the names to say
    which slice lies below which (a DataError naming a file when they do not)."""
    if choice == "slice" or (choice == "auto" and bundle.volume_prior is None):
        return bundle.require_prior()
    volume_prior = bundle.require_volume_prior()
    try:
        data.slice_below(data.find_slices(data_path, split))
    except data.DataError:
        if choice == "whole-brain" or bundle.prior is None:
            raise
        return bundle.prior
    return volume_prior


def score_surprise(args) -> dict:
    from pathlib import Path

    import numpy as np

    from core import surprise
    from core.bundles import load_bundle

    if args.out is not None:
        cli.check_output_folder(Path(args.out))  # before the slices are scored
    bundle = load_bundle(args.checkpoint)
    prior = surprise_prior(bundle, args.prior, args.data, args.split)
    result = surprise.folder_surprise(bundle.vqvae, prior, args.data, args.split, args.limit)
    if args.out is not None:
        out = cli.make_output_folder(Path(args.out))
        for name, bits in zip(result.names, result.bits):
            np.save(out / f"{name}.npy", bits.astype(np.float32))
    return {"slices": result.rows()}


def score_reconstructions(args) -> dict:
    from core import scoring
    from core.bundles import load_bundle

    bundle = load_bundle(args.checkpoint)
    result = scoring.evaluate_split(bundle.vqvae, args.data, args.split, args.limit, args.batch_size)
    return {**result, "checkpoint": str(bundle.path)}


def score_samples(args) -> dict:
    from core import sample_quality
    from core.bundles import load_bundle

    started = time.perf_counter()
    bundle = load_bundle(args.checkpoint)
    bundle.require_prior()
    reference = sample_quality.load_reference(args.reference)
    report = sample_quality.sample_quality(bundle.vqvae, bundle.prior, reference, args.data,
                                           split=args.split, n=args.n, seed=args.seed)
    return {**report, "seconds": round(time.perf_counter() - started, 2), "checkpoint": str(bundle.path)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["samples"]:
        args, command = build_samples_parser().parse_args(argv[1:]), score_samples
    elif argv[:1] == ["surprise"]:
        args, command = build_surprise_parser().parse_args(argv[1:]), score_surprise
    else:
        args, command = build_parser().parse_args(argv), score_reconstructions
    try:
        result = command(args)
    except cli.user_error_types() as error:
        return cli.report(error)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
