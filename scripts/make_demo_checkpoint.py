"""Write a prior run's best bundle to checkpoints/demo/ with a model card made from the runs' records; or add a whole-brain prior to it.

    python scripts/make_demo_checkpoint.py --vqvae-run runs/demo-vqvae --prior-run runs/demo-prior-levelmap
    python scripts/make_demo_checkpoint.py --add-volume-run runs/demo-volume
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import runs  # noqa: E402
from core.bundles import load_bundle, save_bundle  # noqa: E402
from core.models.prior import PriorConfig  # noqa: E402

ROUND = re.compile(r"^  \d+\. ")  # a round of the whole-brain prior's training, one line each on the card


def epoch_records(run_dir: Path) -> list[dict]:
    return [r for r in runs.read_metrics(run_dir)[0] if r["kind"] == "epoch"]


def resumes(run_dir: Path) -> str:
    count = (run_dir / "train.log").read_text().count("Resuming")
    return (f" It was resumed from its last checkpoint {count} time(s) (`--resume`, to add "
            f"epochs or after an interruption)." if count else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vqvae-run", default="runs/demo-vqvae")
    parser.add_argument("--prior-run", default="runs/demo-prior-levelmap")
    parser.add_argument("--out", default=str(REPO / "checkpoints" / "demo"))
    parser.add_argument("--add-volume-run", default=None,
                        help="a whole-brain prior run trained from --out: add its best prior to --out")
    args = parser.parse_args()
    if args.add_volume_run:
        add_volume_prior(Path(args.add_volume_run), Path(args.out))
        return
    vqvae_run, prior_run, out = Path(args.vqvae_run), Path(args.prior_run), Path(args.out)
    bundle = load_bundle(prior_run)
    if out.exists():
        if not (out / "config.json").exists():  # only ever replace a bundle, never a user's folder
            raise SystemExit(f"error: {out} exists and is not a checkpoint bundle; choose another --out.")
        shutil.rmtree(out)

    vq_config, prior_config = runs.read_config(vqvae_run), runs.read_config(prior_run)
    vq_epochs, prior_epochs = epoch_records(vqvae_run), epoch_records(prior_run)
    vq_best = runs.checkpoint_pointer(vqvae_run, "best")
    prior_best = runs.checkpoint_pointer(prior_run, "best")
    vq_used = next(e for e in vq_epochs if e["step"] == vq_best["step"])

    levels = prior_config["model"].get("num_levels", 0)
    levels_line = (f"Conditioned on the slice level read from the file names ({levels} levels, "
                   f"case_001_slice_0 = base of the brain .. slice_{levels - 1} = vertex); it draws "
                   f"levels as often as the train split holds them unless one is asked for."
                   if levels else "Unconditional (the file names carried no slice level).")
    card = f"""# BrainVQ demo checkpoint

A VQ-VAE and a gated PixelCNN prior over its codes, trained on CPU so that every page of the
dashboard works on first launch. Files: `vqvae.keras`, `prior.keras`, `config.json` (both
model configs). Load with `core.bundles.load_bundle("checkpoints/demo")`.

## Data
The OASIS-like proxy (`../shared/oasis_proxy`: the MNI ICBM152 2009c template under random
deformations; not OASIS): train split, 1,280 slices of 256x256, for both models; the validate
split (256 slices) picked the best epoch. See `demo_data/NOTICE.md` for the template's notice.

## VQ-VAE
- Config: `{json.dumps(vq_config["model"])}`
- Training: {vq_config["train"]["epochs"]} epochs, batch {vq_config["train"]["batch_size"]},
  Adam lr {vq_config["train"]["learning_rate"]} ({vq_config["train"]["lr_schedule"]}), random
  {vq_config["data_settings"]["crop_size"]}x{vq_config["data_settings"]["crop_size"]} crops;
  {vq_epochs[-1]["elapsed_s"]:.0f} s on a 2-core CPU (shared with other jobs).{resumes(vqvae_run)}
- Best epoch {vq_best["epoch"]}: validation SSIM {vq_best["val_ssim"]:.4f}, PSNR
  {vq_best["val_psnr"]:.2f} dB, MSE {vq_best["val_mse"]:.5f}, codes used
  {vq_used["val_codes_used"]}/{vq_config["model"]["num_embeddings"]}, perplexity
  {vq_used["val_perplexity"]:.1f} (validation slices).

## Prior
- Config: `{json.dumps(prior_config["model"])}`
- Training: {prior_config["train"]["epochs"]} epochs on the cached codes of the train split,
  batch {prior_config["train"]["batch_size"]}, Adam lr {prior_config["train"]["learning_rate"]}
  ({prior_config["train"]["lr_schedule"]}); {prior_epochs[-1]["elapsed_s"]:.0f} s on the same CPU.{resumes(prior_run)}
- Best epoch {prior_best["epoch"]}: validation {prior_best["val_bits_per_code"]:.3f} bits per code,
  top-1 accuracy {prior_best["val_accuracy"]:.3f}.
- {levels_line}

## Commands
    python -m core.train vqvae --data ../shared/oasis_proxy --run-dir runs/demo-vqvae --epochs {vq_config["train"]["epochs"]} --crop-size 128 --batch-size 16 --lr 2e-3 --log-every 20
    python -m core.train prior --vqvae runs/demo-vqvae --run-dir {prior_run} --data ../shared/oasis_proxy --epochs {prior_config["train"]["epochs"]} --batch-size 16 --lr 1e-3
    python scripts/make_demo_checkpoint.py --vqvae-run {vqvae_run} --prior-run {prior_run}
    (then the whole-brain prior's rounds, with --add-volume-run)

## Limits
Trained on a single template's deformations: it reconstructs and samples that anatomy well and
has not seen real OASIS scans, pathology or other contrasts. Use it to explore the tool, not
for research conclusions.
"""
    # No vqvae_source: a path on the machine that trained it means nothing elsewhere.
    save_bundle(out, bundle.vqvae, bundle.prior, prior_config=PriorConfig.from_dict(bundle.config["prior"]),
                card=card)
    print(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


def add_volume_prior(volume_run: Path, out: Path) -> None:
    """Add the run's whole-brain prior to the bundle in `out` it was trained from, with its section of the card.

    Only volume_prior.keras, config.json and README.md change: the bundle is written whole by
    save_bundle in a temporary folder, and the unchanged models are not copied back (a rewritten
    .keras file differs in its bytes and would add megabytes to the repository's history).
    """
    demo, trained = load_bundle(out), load_bundle(volume_run)
    probe = __import__("numpy").random.default_rng(0).uniform(0, 1, (1, demo.image_size, demo.image_size, 1))
    if not (demo.vqvae.encode_to_indices(probe) == trained.vqvae.encode_to_indices(probe)).all():
        raise SystemExit(f"error: {volume_run} was not trained on the VQ-VAE of {out}.")
    config = runs.read_config(volume_run)
    epochs = epoch_records(volume_run)
    best = runs.checkpoint_pointer(volume_run, "best")
    train = config["train"]
    below_generated = config["data_settings"].get("below_generated", 0.0)
    # A run from a bundle that already holds a whole-brain prior started from it (core.training.prior_task):
    # the card lists every round, the earlier ones as the card has them.
    earlier = demo.card.split("## Whole-brain prior", 1)[1] if demo.volume_prior is not None else ""
    rounds = [line for line in earlier.splitlines() if ROUND.match(line)]
    if demo.volume_prior is not None and not rounds:
        raise SystemExit(f"error: the card of {out} lists no rounds of its whole-brain prior (lines '  1. ...').")
    generated = (f"; {below_generated:.0%} of the train slices learned from a slice below the round before "
                 "generated one step up, instead of the real one" if below_generated else "")
    generated_flag = f" --below-generated {below_generated}" if below_generated else ""
    rounds.append(f"  {len(rounds) + 1}. {train['epochs']} epochs, batch {train['batch_size']}, Adam lr "
                  f"{train['learning_rate']} ({train['lr_schedule']}){generated}; {epochs[-1]['elapsed_s']:.0f} s "
                  f"on the same CPU.{resumes(volume_run)} `python -m core.train prior --volume --vqvae "
                  f"checkpoints/demo --run-dir {volume_run} --data ../shared/oasis_proxy --epochs {train['epochs']} "
                  f"--batch-size {train['batch_size']} --lr {train['learning_rate']}{generated_flag}`")
    rounds_text = "\n".join(rounds)
    section = f"""## Whole-brain prior
- `volume_prior.keras`: the same gated PixelCNN, also conditioned on the codes of the slice below
  (slice z given slice z - 1 of the same case; slice 0 given a "no slice below" token), so that
  `python -m core.sample --volume` and the Sample page's *Whole brain* generate {config["model"]["num_levels"]}-slice
  stacks from the base up. Config: `{json.dumps(config["model"])}`
- Training, on consecutive slice pairs of the train split's cases, in rounds: the first from the
  slice prior above (every shared layer), each later one from the whole-brain prior of the round
  before; each round's run added here with `python scripts/make_demo_checkpoint.py --add-volume-run RUN`.
{rounds_text}
- Best epoch of the last round, {best["epoch"]}: validation {best["val_bits_per_code"]:.3f} bits per
  code (the slice prior: see above), top-1 accuracy {best["val_accuracy"]:.3f}.

"""
    # The card's other sections stay as they are, in their order; this one goes before the commands.
    sections = re.split(r"(?m)^(?=## )", demo.card)
    sections = [part for part in sections if not part.startswith("## Whole-brain prior")]
    at = next((i for i, part in enumerate(sections) if part.startswith("## Commands")), len(sections))
    card = "".join(part.rstrip() + "\n\n" for part in [*sections[:at], section, *sections[at:]]).rstrip() + "\n"
    with tempfile.TemporaryDirectory() as folder:
        save_bundle(folder, demo.vqvae, demo.prior, prior_config=PriorConfig.from_dict(demo.config["prior"]),
                    volume_prior=trained.volume_prior,
                    volume_config=PriorConfig.from_dict(trained.config["volume_prior"]), card=card)
        for name in ("volume_prior.keras", "config.json", "README.md"):
            shutil.copyfile(Path(folder) / name, out / name)
    print(f"added the whole-brain prior of {volume_run} to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
