"""Reconstruct page: uploaded slices (PNG/JPEG/NIfTI) or test-split slices -> original, reconstruction and difference, SSIM, PSNR.

Also window/level, linked zoom, wipe and flicker, the local SSIM map, a volume's SSIM strip and the surprise map.
"""
import streamlit as st

from core import images, jobs, metrics, paths, uploads
from ui import access, shared, viewer

access.require(__file__)  # also when Streamlit runs this file straight from pages/, skipping app.py

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
        axis = left.radio("Slice axis", [0, 1, 2], index=2, horizontal=True, key="volume_axis")
        if shape[axis] > 1:
            index = right.slider("Slice", 0, shape[axis] - 1, shape[axis] // 2)
        else:  # a 2-D file, or one slice thick: nothing to slide (Streamlit refuses a 0..0 slider)
            index = 0
            right.caption(f"One slice along axis {axis}.")
        if st.toggle("SSIM of every slice along this axis", key="volume_strip"):
            with shared.guard("Scoring the volume", stop=False):
                strip = shared.volume_ssim(bundle, shared.bundle_key(bundle), volume_bytes, volume_name, axis)
                st.plotly_chart(viewer.strip_figure(strip, index, f"SSIM per slice along axis {axis} "
                                                                   f"(red: the slice shown)"), key="volume_strip_chart")
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
original, reconstruction = report.originals[shown], report.reconstructions[shown]
window = viewer.window_controls(original, key="reconstruct")
compare = st.radio("Compare", viewer.COMPARE_MODES, horizontal=True, key="compare")
st.caption(f"{report.names[shown]}: reconstruction · SSIM {report.ssim[shown]:.4f} · "
           f"PSNR {report.psnr[shown]:.2f} dB · "
           f"window {window[0]:.2f}-{window[1]:.2f} · drag to pan, scroll or box to zoom (all panels follow)")
if compare == "side by side":
    ssim_map = metrics.local_ssim(original[None], reconstruction[None])[0]
    panels = [("original", viewer.apply_window(original, window)),
              ("reconstruction", viewer.apply_window(reconstruction, window)),
              ("difference (blue below, red above, ±0.5)",
               images.diverging_rgb(report.differences[shown], limit=0.5)),
              ("local SSIM (dark: low)", viewer.colour_map(ssim_map, "Viridis", 0.0, 1.0), 5)]
elif compare == "wipe":
    position = st.slider("Wipe: original left, reconstruction right", 0, 100, 50, key="wipe")
    panels = [("original | reconstruction", viewer.apply_window(
        viewer.wipe(original, reconstruction, position / 100), window))]
else:
    flipped = st.toggle("Show the reconstruction (flip back and forth)", key="flicker")
    panels = [("reconstruction" if flipped else "original",
               viewer.apply_window(reconstruction if flipped else original, window))]
st.plotly_chart(viewer.linked_views(panels), key="linked_views")

if bundle.prior is not None and st.toggle("Surprise map: bits of each code under the prior", key="surprise"):
    if source == "test split":
        reference_folder, find = data_folder, lambda name: jobs.find_split_slice(data_folder, name, size, "test")
    else:  # the slice below may be among the uploads
        reference_folder, uploaded = str(paths.default_data_folder()), dict(zip(names, slices))
        find = uploaded.get
    shared.surprise_panel(bundle, original, report.names[shown], viewer.apply_window(original, window),
                          reference_folder, key="surprise_map", find=find)
st.dataframe(report.rows(), hide_index=True)
st.download_button("Download reconstructions (zip of PNGs)",
                   images.zip_of_pngs(report.reconstructions, report.names),
                   file_name="reconstructions.zip", mime="application/zip", on_click="ignore")
