"""Write a prior run's best bundle to checkpoints/demo/ with a model card made from the two runs' records.

    python scripts/make_demo_checkpoint.py --vqvae-run runs/demo-vqvae --prior-run runs/demo-prior-levelmap
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import runs  # noqa: E402
from core.bundles import load_bundle, save_bundle  # noqa: E402
from core.models.prior import PriorConfig  # noqa: E402


def epoch_records(run_dir: Path) -> list[dict]:
    return [r for r in runs.read_metrics(run_dir)[0] if r["kind"] == "epoch"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vqvae-run", default="runs/demo-vqvae")
    parser.add_argument("--prior-run", default="runs/demo-prior-levelmap")
    parser.add_argument("--out", default=str(REPO / "checkpoints" / "demo"))
    args = parser.parse_args()
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
    def resumes(run_dir: Path) -> str:
        count = (run_dir / "train.log").read_text().count("Resuming")
        return (f" It was resumed from its last checkpoint {count} time(s) (`--resume`, to add "
                f"epochs or after an interruption)." if count else "")

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

## Limits
Trained on a single template's deformations: it reconstructs and samples that anatomy well and
has not seen real OASIS scans, pathology or other contrasts. Use it to explore the tool, not
for research conclusions.
"""
    # No vqvae_source: a path on the machine that trained it means nothing elsewhere.
    save_bundle(out, bundle.vqvae, bundle.prior, prior_config=PriorConfig.from_dict(bundle.config["prior"]),
                card=card)
    print(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
