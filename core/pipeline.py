"""`python -m core.pipeline`: a VQ-VAE, then its prior when (and only when) the VQ-VAE finished, as one detached job."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from core import cli, runs
from core.paths import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(prog="python -m core.pipeline",
                        description="Train a VQ-VAE, then a prior on its codes.")
    parser.add_argument("--vqvae-args", required=True,
                        help="JSON list of `core.train vqvae` flags, --run-dir included")
    parser.add_argument("--prior-args", required=True,
                        help="JSON list of `core.train prior` flags, --run-dir included "
                             "(--vqvae is the VQ-VAE run)")
    args = parser.parse_args(argv)
    vqvae_args, prior_args = json.loads(args.vqvae_args), json.loads(args.prior_args)
    vqvae_run = Path(vqvae_args[vqvae_args.index("--run-dir") + 1])
    prior_run = Path(prior_args[prior_args.index("--run-dir") + 1])
    code = subprocess.call([sys.executable, "-m", "core.train", "vqvae", *vqvae_args],
                           cwd=REPO_ROOT)
    state = runs.read_status(vqvae_run).get("state")
    if code != 0 or state != "finished":
        print(f"pipeline: the VQ-VAE run ended {state} (exit code {code}); the prior was not "
              f"started and its run name is free again.", flush=True)
        if not (prior_run / "config.json").exists():
            shutil.rmtree(prior_run, ignore_errors=True)
        return code or 1
    with open(prior_run / "console.log", "ab") as log:
        code = subprocess.call([sys.executable, "-m", "core.train", "prior", "--vqvae",
                                str(vqvae_run), *prior_args], cwd=REPO_ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
    return code


if __name__ == "__main__":
    sys.exit(main())
