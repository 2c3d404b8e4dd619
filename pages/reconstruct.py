"""Reconstruct page: uploaded slices (PNG/JPEG/NIfTI) or test-split slices -> original, reconstruction and difference, SSIM, PSNR."""
import streamlit as st

from core import images, jobs, uploads
from ui import access, shared

access.require()  # also when Streamlit runs this file straight from pages/, skipping app.py

st.title("Reconstruct")
bundle = shared.pick_checkpoint()
size = bundle.image_size

source = st.radio("Slices from", ["upload", "test split"], horizontal=True)
if source == "upload":
    files = shared.uploaded_files(st.file_uploader(
        f"PNG / JPEG slices (up to {uploads.MAX_FILES}) or one NIfTI volume (.nii, .nii.gz)",
        type=["png", "jpg", "jpeg", "nii", "gz"], accept_multiple_files=True, key="upload"))
    if not files:
        st.info(f"Upload slices to reconstruct them; the model works on {size}x{size} slices "
                f"(other sizes are resized). Or pick slices from the test split above.")
        st.stop()
    axis, index = 2, None
    volumes = [(name, data) for name, data in files if uploads.is_nifti(name)]
    if volumes:
        volume_name, volume_bytes = volumes[0]
        with shared.guard(f"Reading {volume_name}"):
            shape = uploads.nifti_shape(volume_bytes, volume_name)
        left, right = st.columns(2)
        axis = left.radio("Slice axis", [0, 1, 2], index=2, horizontal=True)
        index = right.slider("Slice", 0, shape[axis] - 1, shape[axis] // 2)
    with shared.guard("Reading the upload"):
        decoded = uploads.decode_uploads(files, size, axis=axis, slice_index=index)
    for notice in decoded.notices:
        st.info(notice)
    slices, names = decoded.images, decoded.names
else:
    data_folder = shared.data_folder_input("Data folder")
    with shared.guard("Listing the test split"):
        available = jobs.split_slice_names(data_folder, "test")
    names = st.multiselect("Test slices", available, default=available[:4], max_selections=64,
                           key="test_slices")
    if not names:
        st.info("Pick one or more test slices.")
        st.stop()
    with shared.guard("Loading test slices"):
        slices = jobs.load_split_slices(data_folder, names, size, "test")

with shared.guard("Reconstructing"):
    report = shared.reconstruct(bundle, shared.bundle_key(bundle), slices, list(names))

mean_ssim, mean_psnr = float(report.ssim.mean()), float(report.psnr.mean())
st.markdown(f"**{len(report.names)} slice(s)** · mean SSIM **{mean_ssim:.4f}** · "
            f"mean PSNR **{mean_psnr:.2f} dB**")
shown = st.selectbox("Show slice", range(len(report.names)), format_func=lambda i: report.names[i])
original, reconstruction, difference = st.columns(3)
original.image(report.originals[shown], caption="original", clamp=True, width="stretch")
reconstruction.image(report.reconstructions[shown], clamp=True, width="stretch",
                     caption=f"reconstruction · SSIM {report.ssim[shown]:.4f} · "
                             f"PSNR {report.psnr[shown]:.2f} dB")
difference.image(images.diverging_rgb(report.differences[shown], limit=0.5), width="stretch",
                 caption="difference (reconstruction - original): blue below, red above, "
                         "white equal; full colour at ±0.5")
st.dataframe(report.rows(), hide_index=True)
st.download_button("Download reconstructions (zip of PNGs)",
                   images.zip_of_pngs(report.reconstructions, report.names),
                   file_name="reconstructions.zip", mime="application/zip")
