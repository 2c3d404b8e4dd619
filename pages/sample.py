"""Sample page: generate new brain slices with the prior (seed, temperature), and complete a slice from its top rows."""
import streamlit as st

from core import uploads, workflows
from ui import shared

st.title("Sample")
bundle = shared.pick_checkpoint(need_prior=True)
size, grid = bundle.image_size, bundle.vqvae.config.code_grid


def progress_bar(label: str):
    """A progress bar and the sampler callback that moves it, row by row."""
    bar = st.progress(0.0, text=label)
    return lambda done, total: bar.progress(done / total, text=f"{label}: row {done}/{total}")


def gallery(images, names, key: str) -> None:
    st.image(list(images), caption=names, width=max(96, min(size, 192)), clamp=True)
    st.download_button("Download all (zip of PNGs)", workflows.zip_of_pngs(images, names),
                       file_name=f"{key}.zip", mime="application/zip", key=f"{key}-zip")


st.subheader("New brains")
left, middle, right = st.columns(3)
count = left.number_input("How many", 1, 64, 16)
seed = middle.number_input("Seed", 0, 2**31 - 1, 0)
temperature = right.slider("Temperature", 0.0, 2.0, 1.0, 0.05, help="0 = always the most likely code")
if st.button("Generate", type="primary"):
    with shared.guard("Generating"):
        images = workflows.generate_brains(bundle.vqvae, bundle.prior, int(count), seed=int(seed),
                                           temperature=temperature,
                                           progress=progress_bar(f"Generating {count}"))
    st.session_state["generated"] = (bundle.path, images,
                                     [f"brain_seed{seed}_{i:02d}" for i in range(len(images))])
if st.session_state.get("generated", (None,))[0] == bundle.path:  # made by this checkpoint
    gallery(*st.session_state["generated"][1:], key="generated")

st.subheader("Complete a brain")
st.caption("The code rows above the chosen row are kept from your slice; the prior draws the rest.")
source = st.radio("Slice from", ["test split", "upload"], horizontal=True, key="complete_source")
if source == "upload":
    files = shared.uploaded_files(st.file_uploader("One PNG / JPEG slice", type=["png", "jpg", "jpeg"],
                                                   key="complete_upload"))
    if not files:
        st.stop()
    with shared.guard("Reading the upload"):
        decoded = uploads.decode_uploads(files, size)
    for notice in decoded.notices:
        st.info(notice)
    image = decoded.images[0]
else:
    data_folder = str(shared.default_data_folder())
    with shared.guard("Listing the test split"):
        names = workflows.split_slice_names(data_folder, "test")
    name = st.selectbox("Test slice", names, index=len(names) // 2)
    with shared.guard("Loading the slice"):
        image = workflows.load_split_slices(data_folder, [name], size, "test")[0]
left, middle, right = st.columns(3)
keep_rows = left.slider("Keep code rows above", 0, grid, grid // 2)
completions = middle.number_input("Completions", 1, 16, 4)
left.image(image[..., 0], clamp=True, width=192,
           caption=f"the slice: rows above pixel {keep_rows * size // grid} are kept")
if right.button("Complete", type="primary"):
    with shared.guard("Completing"):
        images = workflows.complete_brain(bundle.vqvae, bundle.prior, image, keep_rows,
                                          int(completions), seed=int(seed), temperature=temperature,
                                          progress=progress_bar("Completing"))
    st.session_state["completed"] = (bundle.path, images,
                                     [f"completion_{i:02d}" for i in range(len(images))])
if st.session_state.get("completed", (None,))[0] == bundle.path:
    gallery(*st.session_state["completed"][1:], key="completed")
