"""Streamlit adapter modules for the BrainVQ pages (the only place besides pages/ that imports streamlit)."""
