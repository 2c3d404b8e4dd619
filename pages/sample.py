"""Sample page: generate new brain slices (seed, temperature, slice level) and whole brains (from the base, or through a real slice) in three planes, judge quality, complete a slice."""
import math

import streamlit as st

from core import images, jobs, uploads, volumes
from core.models.prior import num_levels
from ui import access, shared, viewer

access.require(__file__)  # also when Streamlit runs this file straight from pages/, skipping app.py

st.title("Sample")
bundle = shared.pick_checkpoint(need_prior=True)
size, grid = bundle.image_size, bundle.vqvae.config.code_grid
levels = num_levels(bundle.prior) if bundle.prior is not None else 0  # 0: no slice levels


def progress_bar(label: str):
    """A progress bar and the sampler callback that moves it, row by row."""
    bar = st.progress(0.0, text=label)
    return lambda done, total: bar.progress(done / total, text=f"{label}: row {done}/{total}")


def level_picker(where, label: str, default_choice: str, default_level: int | None = None, key: str = ""):
    """A select box of "default_choice" or a slice level (None when the prior has no levels)."""
    if not levels:
        return None
    options = [default_choice, *range(levels)]
    index = 0 if default_level is None or not 0 <= default_level < levels else default_level + 1
    choice = where.selectbox(label, options, index=index, key=key,
                             help=f"0 = base of the brain, {levels - 1} = vertex (as in OASIS file names)")
    return None if choice == default_choice else int(choice)


def gallery(slices, names, key: str) -> None:
    st.image(list(slices), caption=names, width=max(96, min(size, 192)), clamp=True)
    st.download_button("Download all (zip of PNGs)", images.zip_of_pngs(slices, names),
                       file_name=f"{key}.zip", mime="application/zip", key=f"{key}-zip", on_click="ignore")


def real_slice(key: str):
    """A slice to start from, picked in the test split or uploaded: (image (H, W, 1), name), or None (none yet,
    or an upload that cannot be read: its message is shown, and the rest of the page still works)."""
    source = st.radio("Slice from", ["test split", "upload"], horizontal=True, key=f"{key}_source")
    if source == "upload":
        files = shared.uploaded_files(st.file_uploader("One PNG / JPEG slice", type=["png", "jpg", "jpeg"],
                                                       key=f"{key}_upload"))
        if not files:
            return None
        with shared.guard("Reading the upload", stop=False):
            decoded = uploads.decode_uploads(files, size)
            for notice in decoded.notices:
                st.info(notice)
            return decoded.images[0], decoded.names[0]
        return None  # the guard showed why
    data_folder = str(shared.default_data_folder())
    with shared.guard("Listing the test split", stop=False):
        names = jobs.split_slice_names(data_folder, "test")
        name = st.selectbox("Test slice", names, index=len(names) // 2, key=f"{key}_name")
        return jobs.load_split_slices(data_folder, [name], size, "test")[0], name
    return None  # the guard showed why


def whole_brain() -> None:
    """Generate one whole brain with the whole-brain prior; show it in three linked planes."""
    st.subheader("Whole brain")
    if bundle.volume_prior is None:
        st.info("This checkpoint holds no whole-brain prior, so it makes single slices only. Train one on "
                "the Train page (tick *Whole-brain (volume) prior* for the prior) or with "
                f"`python -m core.train prior --volume --vqvae {bundle.path} --run-dir runs/my-volume`.")
        return
    depth = num_levels(bundle.volume_prior)
    st.caption(f"{depth} axial slices from the base of the brain up, each drawn given the slice below it"
               + (" and held to its level by the slice prior (guidance)." if bundle.prior is not None else "."))
    settings = st.columns(4)
    volume_seed = settings[0].number_input("Seed", 0, 2**31 - 1, 0, key="volume_seed")
    volume_temperature = settings[1].slider("Temperature", 0.0, 2.0, jobs.VOLUME_TEMPERATURE, 0.05,
                                            key="volume_temperature",
                                            help="0 = always the most likely code; the default keeps neighbouring "
                                                 "slices as alike as in real brains")
    guidance = settings[2].slider(
        "Slice-prior guidance", 0.0, 1.0, jobs.default_guidance(bundle.prior), 0.05,
        key="volume_guidance", disabled=bundle.prior is None,
        help="The slice prior's weight in each slice's choice: more keeps each slice like real slices of its "
             "level (errors compound less up the stack), less keeps neighbours more alike; 0 = the whole-brain "
             "prior alone" + ("" if bundle.prior is not None else ". This checkpoint has no slice prior."))
    start = st.radio("Start from", ["the base (a new brain)", "a real slice"], horizontal=True, key="volume_start",
                     help="A real slice is kept as it is at its level; the slices above and below it are generated")
    picked, chosen_level = None, None
    if start == "a real slice":
        left, right = st.columns([2, 1])
        with left:
            picked = real_slice("volume_real")
        if picked is not None:
            right.image(picked[0][..., 0], clamp=True, width=192, caption=picked[1])
            choices = ["from its name, else estimated", *range(depth)]
            choice = right.selectbox("Its slice level", choices, key=f"volume_real_level_{picked[1]}",
                                     help=f"0 = base of the brain, {depth - 1} = vertex. A name such as "
                                          "case_441_slice_12 gives 12; otherwise the slice prior estimates it")
            chosen_level = None if choice == choices[0] else int(choice)
    if settings[3].button("Generate a whole brain", type="primary", disabled=start == "a real slice" and picked is None):
        bar = st.progress(0.0, text="Generating a whole brain")
        show = lambda done, total: bar.progress(done / total, text=f"Generating: slice {done}/{total}")
        options = dict(seed=int(volume_seed), temperature=volume_temperature, slice_prior=bundle.prior,
                       guidance=guidance, progress=show)
        with shared.guard("Generating a whole brain", stop=False):
            if picked is None:
                volume, made = jobs.generate_volumes(bundle.vqvae, bundle.volume_prior, 1, **options)[0], None
            else:
                image, name = picked
                level, found = ((chosen_level, "chosen") if chosen_level is not None else
                                jobs.real_slice_level(bundle.vqvae, bundle.prior, bundle.volume_prior, name, image))
                completed = jobs.complete_volumes(bundle.vqvae, bundle.volume_prior, image[None], level, **options)
                volume, made = completed.volumes[0], (name, level, found, completed.below_bits[0])
                st.session_state["volume_z"] = level  # the viewer opens on the real slice
            st.session_state["volume"] = (bundle.path, int(volume_seed), volume, made)
        bar.empty()
    if st.session_state.get("volume", (None,))[0] != bundle.path:  # none yet from this checkpoint
        return
    _, made_with_seed, volume, made = st.session_state["volume"]
    if made is not None:
        name, level, found, below_bits = made
        st.caption(f"Through the real slice {name}, kept at level {level} ({found}); every other slice is generated. "
                   "Those above grow from it; those below are drawn from the base up (the prior only knows the "
                   "upward way), so a seam shows under the real slice"
                   + ("." if math.isnan(below_bits) else f": the real slice costs {below_bits:.2f} bits per code "
                      "given the slice below it (given their own real neighbour, validation slices of levels 8-24 "
                      "cost 1.1-1.9)."))
    slices, height, width = volume.shape
    if not 0 <= st.session_state.get("volume_z", -1) < slices:  # none yet, or from a checkpoint of more slices
        st.session_state["volume_z"] = slices // 2
    sliders = st.columns(3)
    z = sliders[0].slider("Axial slice", 0, slices - 1, key="volume_z", help="0 = base of the brain")
    y = sliders[1].slider("Coronal row", 0, height - 1, height // 2, key="volume_y", help="0 = front (top row)")
    x = sliders[2].slider("Sagittal column", 0, width - 1, width // 2, key="volume_x", help="0 = left edge")
    for column, (title, picture) in zip(st.columns(3), viewer.three_planes(volume, z, y, x)):
        column.image(picture, caption=title, width="stretch", output_format="PNG")  # a crisp cross-hair
    with st.expander("Play through the axial slices"):
        st.image(images.gif_bytes(volume), caption="base to vertex, looping", width=min(width, 256))
    stem = "brain" if made is None else "completion"
    st.download_button("Download .nii.gz", volumes.nifti_bytes(volume), file_name=f"{stem}_seed{made_with_seed}.nii.gz",
                       mime="application/gzip", key="volume_download", on_click="ignore",
                       help="NIfTI, RAS, 1 x 1 x 5 mm nominal voxels, marked synthetic; the Reconstruct page reads it")


if bundle.prior is None:
    st.info("This checkpoint holds a whole-brain prior only; single slices, quality and completion need a "
            "slice prior.")
    whole_brain()
    st.stop()

st.subheader("New brains")
columns = st.columns(4 if levels else 3)
count = columns[0].number_input("How many", 1, 64, 16)
seed = columns[1].number_input("Seed", 0, 2**31 - 1, 0)
temperature = columns[2].slider("Temperature", 0.0, 2.0, 1.0, 0.05, help="0 = always the most likely code")
level = level_picker(columns[-1], "Slice level", "any (as in training)", key="generate_level")
if st.button("Generate", type="primary"):
    with shared.guard("Generating"):
        brains = jobs.generate_brains(bundle.vqvae, bundle.prior, int(count), seed=int(seed),
                                           temperature=temperature, level=level,
                                           progress=progress_bar(f"Generating {count}"))
    st.session_state["generated"] = (bundle.path, brains.images, brains.names(f"brain_seed{seed}"))
if st.session_state.get("generated", (None,))[0] == bundle.path:  # made by this checkpoint
    gallery(*st.session_state["generated"][1:], key="generated")

whole_brain()

st.subheader("Quality")
with st.expander("How to read this"):
    st.markdown(
        "Each figure compares samples of this checkpoint with the **validate** slices, beside the same "
        "figure for **real train slices** (the best a model can hope for). **FD** and **KID**: distance "
        "between samples and real slices on the features of a small reference network of our own "
        "(lower is better; near the real baseline is good; not comparable with published FID). "
        "**MS-SSIM between pairs**: how alike two slices of one set are; a good model matches the real "
        "value; much higher means the samples look alike (collapse). **Brain area**: mean fraction of "
        "pixels above 0.1, per slice level in the chart.")
quality_columns = st.columns(2)
quality_n = quality_columns[0].number_input("Samples to judge", 2, 1024, 256, key="quality_n")
if quality_columns[1].button("Measure quality", help="Generates the samples: tens of seconds"):
    bar = st.progress(0.0, text="Measuring quality")
    with shared.guard("Measuring quality", stop=False):
        report = shared.sample_quality(bundle, shared.bundle_key(bundle), str(shared.default_data_folder()),
                                       int(quality_n), int(seed), lambda done, text: bar.progress(done, text=text))
        st.session_state["quality"] = (bundle.path, report)
    bar.empty()
if st.session_state.get("quality", (None,))[0] == bundle.path:
    report = st.session_state["quality"][1]
    st.table({"": ["FD (lower is better)", "KID (lower is better)", "MS-SSIM between pairs", "brain area"],
              "samples vs validate": [report["fd"], report["kid"], report["ms_ssim_samples"],
                                      report["area_samples"]],
              "real train vs validate": [report["fd_real"], report["kid_real"], report["ms_ssim_real"],
                                         report["area_real"]]})
    if report.get("area_by_level"):
        st.caption("Brain area by slice level")
        st.line_chart({"samples": [v["samples"] for v in report["area_by_level"].values()],
                       "real": [v["real"] for v in report["area_by_level"].values()]})
    st.caption(f"{report['n']} samples against {report['n_real']} validate slices, {report['seconds']} s.")

st.subheader("Complete a brain")
st.caption("The code rows above the chosen row are kept from your slice; the prior draws the rest.")
picked = real_slice("complete")
if picked is None:
    st.stop()
image, name = picked
left, middle, right = st.columns(3)
keep_rows = left.slider("Keep code rows above", 0, grid, grid // 2)
completions = middle.number_input("Completions", 1, 16, 4)
# A level in the file name (case_441_slice_12) is the slice's own; otherwise the kept rows tell it.
complete_level = level_picker(middle, "Slice level of this slice", "estimate from the kept rows",
                              jobs.level_from_name(bundle.prior, name), key=f"complete_level_{name}")
left.image(image[..., 0], clamp=True, width=192,
           caption=f"the slice: rows above pixel {keep_rows * size // grid} are kept")
if right.button("Complete", type="primary"):
    with shared.guard("Completing"):
        brains = jobs.complete_brain(bundle.vqvae, bundle.prior, image, keep_rows,
                                          int(completions), seed=int(seed), temperature=temperature,
                                          level=complete_level, progress=progress_bar("Completing"))
    st.session_state["completed"] = (bundle.path, brains.images, brains.names("completion"))
if st.session_state.get("completed", (None,))[0] == bundle.path:
    gallery(*st.session_state["completed"][1:], key="completed")
