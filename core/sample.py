"""`python -m core.sample`: generate new brain slices (or complete one), or whole volumes (from the base, or through a real slice), from a prior checkpoint into files."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from core import cli

cli.import_tensorflow()  # before the modules below import it: its start-up lines held back
from core import images, jobs, settings, uploads, volumes  # noqa: E402
from core.bundles import load_bundle  # noqa: E402


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="python -m core.sample", description="Sample new brain slices from a PixelCNN prior.")
    parser.add_argument("--checkpoint", required=True, type=settings.text("checkpoint"),
                        help="prior run directory (its best checkpoint) or bundle folder")
    parser.add_argument("--n", type=cli.sample_count_type(), default=16,
                        help="how many slices")
    parser.add_argument("--seed", type=cli.seed_type(), default=0)
    parser.add_argument("--temperature", type=settings.number(float, "temperature", minimum=0.0, maximum=100.0),
                        default=None, help="divides the logits; 0 always takes the most likely code (default: 1.0 "
                                           f"for slices, {jobs.VOLUME_TEMPERATURE} for --volume, where it keeps "
                                           "neighbouring slices as alike as real ones)")
    parser.add_argument("--top-k", type=settings.number(int, "top_k", minimum=1), default=None,
                        help="sample among the k most likely codes only (default: all)")
    parser.add_argument("--complete", type=settings.text("complete"),
                        help="a PNG slice whose top code rows are kept; with --volume, a real slice kept whole, the "
                             "brain generated above and below it")
    parser.add_argument("--keep-rows", type=settings.number(int, "keep_rows", minimum=0), default=None,
                        help="code rows kept from --complete (default: half the grid)")
    parser.add_argument("--level", type=settings.number(int, "level", minimum=0), default=None,
                        help="slice level, 0 = base of the brain (level-conditioned priors); default: "
                             "drawn as often as in training; for --complete, the level in the file's "
                             "name (case_441_slice_12 -> 12), else drawn given the kept rows (with --volume: the "
                             "slice prior's most likely level for it)")
    parser.add_argument("--volume", action="store_true",
                        help="whole brains: --n volumes of every slice level, base to vertex, from the bundle's "
                             "whole-brain prior, each as NIfTI (.nii.gz), a montage and a three-plane preview")
    parser.add_argument("--guidance", type=settings.number(float, "guidance", minimum=0.0, maximum=1.0), default=None,
                        help="--volume: the slice prior's weight in each slice's logits, which holds slices to "
                             "their level against drift up the stack (0 = the whole-brain prior alone; default: "
                             f"{jobs.VOLUME_GUIDANCE} when the bundle has a slice prior)")
    parser.add_argument("--out", default="samples", type=settings.text("out"),
                        help="folder for the files: new, empty, or one this command made before (a folder of "
                             "other files is refused)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.temperature is None:
        args.temperature = jobs.VOLUME_TEMPERATURE if args.volume else 1.0
    out = Path(args.out)
    try:
        cli.check_output_folder(out)  # found now, not after the samples are made
        if args.volume and args.keep_rows is not None:
            raise ValueError("--keep-rows keeps code rows of one slice; with --volume, --complete's slice is kept "
                             "whole: leave --keep-rows out.")
        if args.volume and args.level is not None and args.complete is None:
            raise ValueError("--volume makes every slice level of a brain; --level applies to its real slice, "
                             "with --complete SLICE.png.")
        if args.guidance is not None and not args.volume:
            raise ValueError("--guidance applies to whole brains only: add --volume.")
        if args.keep_rows is not None and args.complete is None:
            raise ValueError("--keep-rows says how much of --complete's slice is kept: add --complete SLICE.png.")
        bundle = load_bundle(args.checkpoint)
        if args.volume:
            report = _volumes(bundle, args, out)
            print(json.dumps(report))
            return 0
        prior = bundle.require_prior()
        started = time.perf_counter()
        notices = []
        if args.complete:
            image, notices = uploads.read_slice_file(args.complete, bundle.image_size)
            keep_rows = args.keep_rows if args.keep_rows is not None else bundle.vqvae.config.code_grid // 2
            level = args.level if args.level is not None else jobs.level_from_name(prior, args.complete)
            brains = jobs.complete_brain(bundle.vqvae, prior, image, keep_rows, args.n, seed=args.seed,
                                         temperature=args.temperature, top_k=args.top_k, level=level)
        else:
            brains = jobs.generate_brains(bundle.vqvae, prior, args.n, seed=args.seed,
                                          temperature=args.temperature, top_k=args.top_k, level=args.level)
        seconds = time.perf_counter() - started
        cli.make_output_folder(out)
        stem = f"{'completion' if args.complete else 'sample'}_{args.seed}"
        files = []
        for image, name in zip(brains.images, brains.names(stem)):
            path = out / f"{name}.png"
            path.write_bytes(images.png_bytes(image))
            files.append(str(path))
        grid = out / f"{stem}_grid.png"
        grid.write_bytes(images.png_bytes(images.mosaic(brains.images, columns=4)))
    except cli.user_error_types() as error:
        return cli.report(error)
    print(json.dumps({"n": len(brains.images), "seconds": round(seconds, 3), "grid": str(grid),
                      "files": files, "levels": None if brains.levels is None else brains.levels.tolist(),
                      "checkpoint": str(bundle.path), **({"notices": notices} if args.complete else {})}))
    return 0


def _volumes(bundle, args, out: Path) -> dict:
    """Generate --n whole brains (through --complete's slice, if given) and write each as .nii.gz, montage PNG and three-plane PNG."""
    volume_prior = bundle.require_volume_prior()
    guidance = args.guidance
    if guidance is None:
        guidance = jobs.default_guidance(bundle.prior)
    elif guidance and bundle.prior is None:
        raise ValueError(f"--guidance {guidance} needs a slice prior (prior.keras), and {bundle.path} holds none: "
                         "give --guidance 0.")
    options = dict(seed=args.seed, temperature=args.temperature, top_k=args.top_k, slice_prior=bundle.prior,
                   guidance=guidance)
    started = time.perf_counter()
    if args.complete:
        image, notices = uploads.read_slice_file(args.complete, bundle.image_size)
        level, level_from = ((args.level, "--level") if args.level is not None else
                             jobs.real_slice_level(bundle.vqvae, bundle.prior, bundle.volume_prior, args.complete, image))
        completed = jobs.complete_volumes(bundle.vqvae, volume_prior, np.repeat(image[None], args.n, axis=0), level,
                                          **options)
        brains = completed.volumes
    else:
        brains = jobs.generate_volumes(bundle.vqvae, volume_prior, args.n, **options)
    seconds = time.perf_counter() - started
    cli.make_output_folder(out)
    files = []
    for index, volume in enumerate(brains):
        stem = out / f"{'completion' if args.complete else 'brain'}_seed{args.seed}_{index:02d}"
        written = {"nifti": stem.with_name(stem.name + ".nii.gz"), "montage": stem.with_name(stem.name + "_montage.png"),
                   "planes": stem.with_name(stem.name + "_planes.png")}
        written["nifti"].write_bytes(volumes.nifti_bytes(volume))
        written["montage"].write_bytes(images.png_bytes(volumes.montage(volume)))
        written["planes"].write_bytes(images.png_bytes(volumes.three_plane(volume)))
        files.append({k: str(v) for k, v in written.items()})
    report = {"n": len(brains), "shape": list(brains.shape[1:]), "seconds": round(seconds, 3), "files": files,
              "temperature": args.temperature, "guidance": guidance, "checkpoint": str(bundle.path)}
    if args.complete:
        report.update(complete=args.complete, notices=notices, level=level, level_from=level_from,
                      bits_per_code_on_the_slice_below=[None if np.isnan(b) else round(float(b), 4)
                                                        for b in completed.below_bits])
    return report


if __name__ == "__main__":
    sys.exit(main())
