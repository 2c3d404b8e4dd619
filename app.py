"""BrainVQ dashboard: wires the five pages with st.navigation behind the access gate (run: streamlit run app.py)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st  # noqa: E402

from ui import access  # noqa: E402

st.set_page_config(page_title="BrainVQ", page_icon=":brain:", layout="wide")

PAGES = [
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page("pages/curves.py", title="Curves", icon=":material/show_chart:"),
    st.Page("pages/reconstruct.py", title="Reconstruct", icon=":material/compare:"),
    st.Page("pages/codebook.py", title="Codebook", icon=":material/grid_on:"),
    st.Page("pages/sample.py", title="Sample", icon=":material/auto_awesome:"),
]

page = st.navigation(access.gate(PAGES))  # only a sign-in page until access is given
access.requested_page()  # a fresh server's first visitor may have asked for a page by URL
st.sidebar.caption("BrainVQ: a VQ-VAE and a PixelCNN prior over OASIS brain MRI slices.")
page.run()
