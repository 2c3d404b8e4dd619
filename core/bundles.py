"""Checkpoint bundles: the one writer (`save_bundle`) beside the one reader (`load_bundle`), and the picker's list.

    bundle/
      vqvae.keras        the VQ-VAE (always)
      prior.keras        the PixelCNN prior of single slices (only in a prior bundle)
      volume_prior.keras the whole-brain prior: slice z given slice z - 1 (optional)
      config.json        {"kind": "vqvae"|"prior", "vqvae": VQVAEConfig, "prior": PriorConfig (with prior.keras),
                          "volume_prior": PriorConfig (with volume_prior.keras),
                          "vqvae_source": the bundle or run the VQ-VAE came from (optional)}
      README.md          the model card (optional)

A checkpoint of a run (runs.save_checkpoint) is a bundle; so is checkpoints/demo.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras

from core import atomic, runs
from core.paths import DEMO_CHECKPOINT, runs_root

PICKABLE_STATES = ("finished", "stopped")  # a running run's checkpoints still change under you


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or loaded; the message says which and why."""


@dataclass(frozen=True)
class CheckpointChoice:
    """One entry of the checkpoint picker."""

    label: str
    path: Path
    has_prior: bool  # a slice prior or a whole-brain prior: something to sample from


@dataclass
class Bundle:
    """Loaded models and their configs. `prior` is None for a VQ-VAE-only checkpoint."""

    path: Path
    config: dict
    vqvae: keras.Model
    prior: keras.Model | None
    card: str  # the model card (README.md) or ""
    volume_prior: keras.Model | None = None

    @property
    def vqvae_config(self):
        return self.vqvae.config

    @property
    def image_size(self) -> int:
        return self.vqvae.config.image_size

    def require_prior(self) -> keras.Model:
        """The prior; a CheckpointError saying how to train one when this bundle has none."""
        if self.prior is None:
            raise CheckpointError(f"{self.path} holds no prior.keras: train one with "
                                  f"`python -m core.train prior --vqvae {self.path}`.")
        return self.prior

    def require_volume_prior(self) -> keras.Model:
        """The whole-brain prior; a CheckpointError saying how to train one when this bundle has none."""
        if self.volume_prior is None:
            raise CheckpointError(f"{self.path} holds no whole-brain prior (volume_prior.keras): train one with "
                                  f"`python -m core.train prior --volume --vqvae {self.path} --run-dir runs/my-volume`.")
        return self.volume_prior


def load_model(path: Path, what: str = "a Keras model") -> keras.Model:
    """One .keras file of ours, in Keras' safe mode; a CheckpointError, one line, when it will not load."""
    # Importing registers the custom layers with Keras before the file is read.
    import core.models.prior  # noqa: F401
    import core.models.reference  # noqa: F401
    import core.models.vqvae  # noqa: F401
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file; all mean "will not load"
        raise CheckpointError(f"{path} will not load as {what} ({type(error).__name__}: "
                              f"{str(error)[:200]}).") from error


def save_bundle(folder: str | Path, vqvae: keras.Model, prior: keras.Model | None = None, *,
                prior_config=None, vqvae_source: str | Path | None = None, card: str | None = None,
                volume_prior: keras.Model | None = None, volume_config=None) -> Path:
    """Write a bundle folder (made if missing); the layout is in this module's header."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vqvae.save(folder / "vqvae.keras")
    config = {"kind": "vqvae", "vqvae": vqvae.config.to_dict()}
    for name, model, model_config in (("prior", prior, prior_config), ("volume_prior", volume_prior, volume_config)):
        if model is None:
            continue
        if model_config is None:
            raise ValueError(f"Expected the {name}'s PriorConfig with it. Received: {name} config None")
        model.save(folder / f"{name}.keras")
        config.update({"kind": "prior", name: model_config.to_dict()})
    if config["kind"] == "prior" and vqvae_source is not None:
        config["vqvae_source"] = str(vqvae_source)
    atomic.write_json(folder / "config.json", config)
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle folder, or the best checkpoint of a run directory."""
    try:
        folder = runs.resolve_checkpoint(path)
    except runs.RunError as error:
        raise CheckpointError(str(error)) from error
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{folder / 'config.json'} is missing or not JSON.") from error
    if not (folder / "vqvae.keras").exists():
        raise CheckpointError(f"{folder} has no vqvae.keras.")
    vqvae = load_model(folder / "vqvae.keras")
    prior = load_model(folder / "prior.keras") if (folder / "prior.keras").exists() else None
    volume_path = folder / "volume_prior.keras"
    volume_prior = load_model(volume_path, "a whole-brain prior") if volume_path.exists() else None
    for name, model in (("prior.keras", prior), ("volume_prior.keras", volume_prior)):
        _check_made_for(folder, name, model, vqvae)
    card_path = folder / "README.md"
    card = card_path.read_text() if card_path.exists() else ""
    return Bundle(folder, config, vqvae, prior, card, volume_prior)


def _check_made_for(folder: Path, name: str, prior, vqvae) -> None:
    """A prior over another codebook or grid than its VQ-VAE's (copied in from another run) is refused
    here, not met as an index error deep in decoding."""
    if prior is None:
        return
    _, height, width = prior.inputs[0].shape
    codes, grid, size = prior.output_shape[-1], vqvae.config.code_grid, vqvae.config.num_embeddings
    if (height, width, codes) != (grid, grid, size):
        raise CheckpointError(f"{folder / name} predicts {codes} codes on a {height}x{width} grid, but "
                              f"{folder / 'vqvae.keras'} has {size} codes on a {grid}x{grid} grid: they were "
                              f"not trained together. Use the bundle a run saved, whole.")


def available_checkpoints(root: str | Path | None = None) -> list[CheckpointChoice]:
    """The shipped demo first, then every finished (or stopped) run with a checkpoint, newest first.

    A broken run (unreadable config, status or pointers) is left out; it never hides the others.
    """
    choices = []
    if (DEMO_CHECKPOINT / "vqvae.keras").exists():
        choices.append(CheckpointChoice("demo (shipped)", DEMO_CHECKPOINT, can_sample(DEMO_CHECKPOINT)))
    for summary in runs.list_runs(root if root is not None else runs_root()):
        if not summary.has_checkpoint or summary.state not in PICKABLE_STATES:
            continue
        try:
            folder = runs.resolve_checkpoint(summary.path)
        except (runs.RunError, OSError):
            continue  # its pointers changed or broke since it was listed
        choices.append(CheckpointChoice(f"{summary.name} ({summary.kind}, {summary.state})",
                                        summary.path, can_sample(folder)))
    return choices


def can_sample(folder: Path) -> bool:
    """Whether a bundle folder holds a prior to sample from: a slice prior or a whole-brain prior."""
    return (folder / "prior.keras").exists() or (folder / "volume_prior.keras").exists()
