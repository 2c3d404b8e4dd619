"""`python -m core.pipeline`: a VQ-VAE, then its prior when (and only when) the VQ-VAE finished, as one detached job."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from core import cli, runs


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(prog="python -m core.pipeline",
                        description="Train a VQ-VAE, then a prior on its codes.")
    parser.add_argument("--vqvae-args", required=True,
                        help="JSON list of `core.train vqvae` flags, --run-dir included")
    parser.add_argument("--prior-args", required=True,
                        help="JSON list of `core.train prior` flags, --run-dir included "
                             "(--vqvae is the VQ-VAE run)")
    args = parser.parse_args(argv)
    vqvae_args, vqvae_run = _flags(parser, "--vqvae-args", args.vqvae_args)
    prior_args, prior_run = _flags(parser, "--prior-args", args.prior_args)
    try:  # before the VQ-VAE's hours, not after: a user's folder or an old run is never the prior's
        runs.refuse_existing(prior_run)
    except runs.RunError as error:
        return cli.report(error)
    code = _check_prior_flags(vqvae_run, prior_args)  # a typo there, too, is told before those hours
    if code != 0:
        return code
    # The children run where this process runs (the repository, for `python -m`), so relative
    # folders name the same place for them as for the checks here.
    code = subprocess.call([sys.executable, "-m", "core.train", "vqvae", *vqvae_args])
    state = runs.read_status(vqvae_run).get("state")
    if code != 0 or state != "finished":
        print(f"pipeline: the VQ-VAE run ended {state} (exit code {code}); the prior was not "
              f"started and its run name is free again.", flush=True)
        reserved = (prior_run / runs.LAUNCHER_FILE).is_file()  # by the launcher: a user's empty folder stays
        if reserved and not runs.foreign_files(prior_run):  # and nothing wrote into it since
            shutil.rmtree(prior_run, ignore_errors=True)
        return code or 1
    prior_run.mkdir(parents=True, exist_ok=True)
    console = prior_run / "console.log"
    offset = console.stat().st_size if console.exists() else 0
    with open(console, "ab") as log:
        code = subprocess.call([sys.executable, "-m", "core.train", "prior", "--vqvae",
                                str(vqvae_run), *prior_args], stdout=log, stderr=subprocess.STDOUT)
    if code != 0:  # its one `error:` line went to the prior's console.log: say it here too
        errors = [line for line in runs.console_text(prior_run, offset).splitlines() if line.startswith("error:")]
        print((errors or [f"error: the prior run ended with exit code {code}"])[-1], file=sys.stderr)
    return code


def _check_prior_flags(vqvae_run: Path, prior_args: list[str]) -> int:
    """Parse the prior's flags as `core.train prior` will, in a child that exits 2 with its one `error:`
    line for a bad one (the parser imports TensorFlow, which this long-lived process need not hold)."""
    check = "import sys; from core import train; train.build_parser().parse_args(sys.argv[1:])"
    return subprocess.call([sys.executable, "-c", check, "prior", "--vqvae", str(vqvae_run), *prior_args])


def _flags(parser: cli.Parser, name: str, text: str) -> tuple[list[str], Path]:
    """A JSON list of string flags that holds --run-dir FOLDER, and that folder; else one `error:` line."""
    try:
        flags = json.loads(text)
    except ValueError:
        flags = None
    if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
        parser.error(f"{name} must be a JSON list of strings (flags). Received: {text[:80]!r}")
    if "--run-dir" not in flags[:-1] or not flags[flags.index("--run-dir") + 1].strip():
        parser.error(f"{name} must hold --run-dir FOLDER. Received: {text[:80]!r}")
    return flags, Path(flags[flags.index("--run-dir") + 1])


if __name__ == "__main__":
    sys.exit(main())
