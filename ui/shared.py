"""What the pages share: cached loaders, the sidebar checkpoint picker, the guard that turns errors into messages, the surprise panel."""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from core import bundles, data, devices, paths, runs
from core.uploads import UploadError

USER_ERRORS = (UploadError, data.DataError, bundles.CheckpointError, runs.RunError, ValueError)
CHECKPOINT_KEY = "checkpoint_path"  # kept outside the widget key, so it survives page changes
OUTSIDE_ROOTS = ("That folder is outside the data folders this server offers (BRAINVQ_DATA, the demo "
                 "data, BRAINVQ_DATA_ROOTS).")


runs_root = paths.runs_root
default_data_folder = paths.default_data_folder


def run_table_key(prefix: str, names: list[str]) -> str:
    """A run table's widget key for this listing of runs. Its rows are positions, so a run added or
    removed (the rows moved) makes a new table, ticked where the chosen runs now are, and a click is
    always read against the listing it was made on."""
    listing = "\n".join(names).encode()
    return f"{prefix}_{hashlib.sha1(listing).hexdigest()[:16]}"


@contextmanager
def guard(doing: str, stop: bool = True):
    """Show any failure inside as one st.error line, never a traceback; then stop the page
    (`stop=False`: skip the rest of the `with` block only, and draw the rest of the page)."""
    try:
        yield
    except Exception as error:  # the app must keep running whatever core raises
        st.error(failure(doing, error))
        if stop:
            st.stop()


def failure(doing: str, error: Exception) -> str:
    """The one line a failure is shown as: a user's error in its own words, anything else named."""
    if isinstance(error, USER_ERRORS):
        return f"{doing} failed: {error}"
    return f"{doing} failed unexpectedly ({type(error).__name__}: {str(error)[:300]})."


def data_folder_input(label: str = "Data folder", container=st, stop: bool = True) -> str | None:
    """A data-folder text field limited to the allowed roots (core.paths): a folder outside gets one
    message that names nothing inside it, then the page stops (`stop=False`, inside a form whose
    submit button must still draw: the field's value is None instead)."""
    folder = container.text_input(label, str(default_data_folder()))
    if paths.is_allowed_data_folder(folder):
        return folder
    container.error(OUTSIDE_ROOTS)
    if stop:
        st.stop()
    return None


@st.cache_resource(show_spinner=False)
def gpu_count() -> int:
    devices.share_gpu_memory()  # before any model touches the GPU: training needs room too
    return devices.gpu_count()


@st.cache_resource(max_entries=2, show_spinner="Loading the checkpoint...")
def _load_bundle(folder: str, mtime: float) -> bundles.Bundle:
    gpu_count()
    return bundles.load_bundle(folder)


def checkpoint_choices() -> list[bundles.CheckpointChoice]:
    """BRAINVQ_CHECKPOINT (when set), the shipped demo, then every run with a checkpoint."""
    choices = []
    extra = os.environ.get("BRAINVQ_CHECKPOINT")
    if extra and Path(extra).is_dir():
        path = Path(extra)
        choices.append(bundles.CheckpointChoice(f"{path.name} (BRAINVQ_CHECKPOINT)", path,
                                                    bundles.can_sample(path)))
    with guard("Listing checkpoints", stop=False):  # a failure still leaves the ones above
        choices += bundles.available_checkpoints(runs_root())
    return choices


def load_checkpoint(path: Path) -> bundles.Bundle:
    """Load (cached by folder and modification time: a run's newer checkpoint reloads)."""
    with guard(f"Loading checkpoint {path}"):
        folder = runs.resolve_checkpoint(path)
        return _load_bundle(str(folder), _newest_change(folder))


def pick_checkpoint(need_prior: bool = False) -> bundles.Bundle:
    """The sidebar picker shared by Reconstruct, Codebook and Sample; the choice follows the user."""
    choices = [c for c in checkpoint_choices() if c.has_prior or not need_prior]
    if not choices:
        st.info("No checkpoint with a prior yet: train one on the Train page (tick 'then train "
                "the prior')." if need_prior else
                "No checkpoint yet: train a VQ-VAE on the Train page.")
        st.stop()
    paths = [str(c.path) for c in choices]
    kept = st.session_state.get(CHECKPOINT_KEY)
    index = paths.index(kept) if kept in paths else 0
    label = st.sidebar.selectbox("Checkpoint", range(len(choices)), index=index,
                                 format_func=lambda i: choices[i].label, key="checkpoint_picker")
    st.session_state[CHECKPOINT_KEY] = paths[label]
    bundle = load_checkpoint(choices[label].path)
    config = bundle.vqvae.config
    st.sidebar.caption(f"{config.image_size}x{config.image_size} slices -> "
                       f"{config.code_grid}x{config.code_grid} codes, "
                       f"num_embeddings={config.num_embeddings}, "
                       f"prior: {'yes' if bundle.prior is not None else 'no'}, "
                       f"whole-brain prior: {'yes' if bundle.volume_prior is not None else 'no'}")
    return bundle


def uploaded_files(uploads) -> list[tuple[str, bytes]]:
    """st.file_uploader's value (None, one file or a list) -> (name, bytes) pairs, kept in memory."""
    if uploads is None:
        return []
    uploads = uploads if isinstance(uploads, list) else [uploads]
    return [(u.name, u.getvalue()) for u in uploads]


def bundle_key(bundle: bundles.Bundle) -> str:
    """What identifies a loaded bundle in st.cache_data keys (the model itself is not hashed)."""
    return f"{bundle.path}:{_newest_change(bundle.path)}"


def _newest_change(folder: Path) -> float:
    """The latest modification time of a checkpoint folder's files: a rewritten model changes it."""
    return max(p.stat().st_mtime for p in folder.iterdir())


@st.cache_data(max_entries=8, show_spinner="Reconstructing...")
def reconstruct(_bundle: bundles.Bundle, key: str, images, names: list[str]):
    """jobs.reconstruct_and_score, remembered for the same slices and checkpoint."""
    from core import jobs

    return jobs.reconstruct_and_score(_bundle.vqvae, images, names)


@st.cache_data(max_entries=4, show_spinner="Encoding the split...")
def split_codebook_report(_bundle: bundles.Bundle, key: str, data_folder: str, split: str,
                          limit: int):
    """core.codebook.split_codebook_report, remembered per checkpoint, folder, split and limit."""
    from core import codebook

    return codebook.split_codebook_report(_bundle.vqvae, data_folder, split, limit)


@st.cache_data(max_entries=4, show_spinner=False)
def sample_quality(_bundle: bundles.Bundle, key: str, data_folder: str, n: int, seed: int, _progress=None):
    """core.sample_quality's report (samples vs the validate split, train slices as the baseline), remembered per checkpoint, folder, n and seed."""
    from core import sample_quality as quality

    return quality.sample_quality(_bundle.vqvae, _bundle.prior, quality.load_reference(), data_folder,
                                  split="validate", n=n, seed=seed, progress=_progress)


@st.cache_data(max_entries=16, show_spinner="Scoring the codes under the prior...")
def slice_surprise(_bundle: bundles.Bundle, key: str, images, names: list[str], whole_brain: bool, below=None):
    """core.surprise.image_surprise of slices (by the whole-brain prior given `below`, else the slice
    prior), remembered per checkpoint, slices and context."""
    from core import surprise

    prior = _bundle.volume_prior if whole_brain else _bundle.prior
    return surprise.image_surprise(_bundle.vqvae, prior, images, list(names), below if whole_brain else None)


@st.cache_data(max_entries=4, show_spinner="Scoring validation slices under the prior...")
def reference_surprise(_bundle: bundles.Bundle, key: str, data_folder: str, limit: int, whole_brain: bool):
    """The bits of `limit` evenly spaced validation slices, scored as the slice is: what it is ranked against."""
    from core import surprise

    prior = _bundle.volume_prior if whole_brain else _bundle.prior
    return surprise.folder_surprise(_bundle.vqvae, prior, data_folder, "validate", limit)


SURPRISE_MAPS = ("bits", "bits above expected")


def surprise_panel(bundle: bundles.Bundle, image, name: str, shown, reference_folder: str, key: str,
                   where=st, find=None) -> None:
    """One slice's bits under the prior: its total and hot spot, each ranked against validation
    slices of its level, and the map with the hot spot boxed. `shown`: the picture under the map.

    `find(name)`: the slice of that name where this one came from, or None. With a whole-brain
    prior and the slice below found (or a base slice), the slice is scored given the slice below.
    """
    from core import surprise
    from ui import viewer

    with guard("Scoring the slice under the prior", stop=False):
        whole_brain, below = False, None
        if bundle.volume_prior is not None and find is not None:
            whole_brain, below = surprise.slice_below_of(name, find)
        reference = None
        if whole_brain:
            try:
                reference = reference_surprise(bundle, bundle_key(bundle), reference_folder, 64, True)
            except data.DataError:  # reference names without case and slice numbers: the slice prior for both
                whole_brain, below = False, None
        if reference is None:
            reference = reference_surprise(bundle, bundle_key(bundle), reference_folder, 64, False)
        scored = slice_surprise(bundle, bundle_key(bundle), image[None], [name], whole_brain,
                                [below] if whole_brain else None)
        level = scored.levels[0]
        total, spot = float(scored.total_bits[0]), float(scored.hot_spot_bits[0])
        expected = float(scored.expected_bits[0].sum())
        total_rank, compared = surprise.rank(total, level, reference.total_bits, reference.levels)
        spot_rank, _ = surprise.rank(spot, level, reference.hot_spot_bits, reference.levels)
        against = (f"validation slices of level {level}" if level is not None and level in reference.levels
                   else "validation slices")
        side = scored.hot_spot_side
        how = ("whole-brain prior, given the slice below" if whole_brain and below is not None
               else "whole-brain prior, as a base slice" if whole_brain else "slice prior")
        where.markdown(f"**{total:.0f} bits** (expected {expected:.0f}; "
                       f"{'level ' + str(level) if level is not None else 'level marginalised'}; {how})"
                       f" · more surprising than **{total_rank:.0%}** of {compared} {against}")
        where.markdown(f"Hot spot (boxed): **{spot:.2f} bits above expected per code** over {side}x{side} "
                       f"codes · higher than **{spot_rank:.0%}** of them",
                       help="The block of codes the prior found most unexpected: bits above the entropy of "
                            "its predictions there. A slice's total bits mostly measure how much brain it "
                            "holds; a small lesion shows as a hot spot instead (bench/surprise.py).")
        shown_map = where.radio("Map", SURPRISE_MAPS, horizontal=True, key=f"{key}_kind")
        values = scored.bits[0] if shown_map == SURPRISE_MAPS[0] else scored.excess_bits[0]
        title = ("Surprise: -log2 p(code | codes before it)" if shown_map == SURPRISE_MAPS[0]
                 else "Surprise above expected: bits - entropy of the prediction")
        row, column = scored.hot_spot_corner[0]
        where.plotly_chart(viewer.overlay_figure(shown, values, title, "bits", box=(int(row), int(column), side)),
                           key=key)


@st.cache_data(max_entries=4, show_spinner="Reconstructing every slice of the volume...")
def volume_ssim(_bundle: bundles.Bundle, key: str, volume_bytes: bytes, name: str, axis: int):
    """(slices,) SSIM of each slice of a NIfTI volume along `axis`, reconstructed by the VQ-VAE."""
    import numpy as np

    from core import scoring, uploads

    volume, _ = uploads.read_nifti_volume(volume_bytes, name)
    size = _bundle.image_size
    slices = np.stack([uploads.nifti_slice(volume, axis, i, size) for i in range(volume.shape[axis])])
    return scoring.score_slices(_bundle.vqvae, slices[..., None] if slices.ndim == 3 else slices).ssim
