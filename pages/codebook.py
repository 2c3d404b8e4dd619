"""Codebook page: code-index maps, usage histogram with dead codes, perplexity, where a code occurs, a 2-D projection.

Also a log-scale usage toggle and the shown slice's surprise map.
"""
import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import codebook, data, jobs
from ui import access, shared, viewer

access.require(__file__)  # also when Streamlit runs this file straight from pages/, skipping app.py

st.title("Codebook")
bundle = shared.pick_checkpoint()
config = bundle.vqvae.config

left, middle, right = st.columns([3, 1, 1])
data_folder = shared.data_folder_input("Data folder", left)
split = middle.selectbox("Split", data.SPLITS, index=2)
limit = right.number_input("Slices (evenly spaced)", 1, 2000, 64)
with shared.guard("Encoding the split"):
    report = shared.split_codebook_report(bundle, shared.bundle_key(bundle), data_folder, split,
                                          int(limit))
stats = report.stats

a, b, c = st.columns(3)
a.metric("Perplexity", f"{stats.perplexity:.1f}", help="exp(entropy) of code usage: 1 = one "
         "code for everything, num_embeddings = all codes equally")
b.metric("Codes used", f"{stats.codes_used} / {stats.num_embeddings}")
c.metric("Dead codes", len(stats.dead_codes), help="codes no position of these slices chose")

dead = stats.dead_codes
log_usage = st.toggle("Log scale (when one code dominates)", key="usage_log")
# A log axis cannot show 0: on it each bar is uses + 1, so a dead code still sits on the axis.
shift = 1 if log_usage else 0
usage = go.Figure(go.Bar(x=np.arange(stats.num_embeddings), y=stats.counts + shift, name="uses",
                         customdata=stats.counts, hovertemplate="code %{x}: %{customdata} uses<extra></extra>"))
usage.add_trace(go.Scatter(x=dead, y=np.full(len(dead), shift), mode="markers", name="dead code",
                           marker=dict(symbol="x", color="crimson", size=7),
                           hovertemplate="code %{x}: dead<extra></extra>"))
usage.update_layout(title=f"Code usage over {len(report.names)} {split} slices", height=300,
                    xaxis_title="code", yaxis_title="uses + 1 (log)" if log_usage else "uses",
                    yaxis_type="log" if log_usage else "linear", margin=dict(l=10, r=10, t=40, b=10))
st.plotly_chart(usage, key="usage_chart")

map_column, projection_column = st.columns(2)
shown = map_column.selectbox("Slice", range(len(report.names)),
                             format_func=lambda i: report.names[i], key="code_map_slice")
grid, scale = config.code_grid, config.image_size / config.code_grid
code_map = px.imshow(report.images[shown], color_continuous_scale="gray", zmin=0, zmax=1)
code_map.add_trace(go.Heatmap(z=report.indices[shown], x0=(scale - 1) / 2, dx=scale,
                              y0=(scale - 1) / 2, dy=scale, opacity=0.35, colorscale="Turbo",
                              showscale=False, hovertemplate="code %{z}<extra></extra>"))
code_map.update_layout(title="Code-index map (hover shows the code)", height=420,
                       coloraxis_showscale=False, margin=dict(l=10, r=10, t=40, b=10))
map_column.plotly_chart(code_map, key="code_map")
if bundle.prior is not None and map_column.toggle("Surprise map of this slice (prior)", key="codebook_surprise"):
    shared.surprise_panel(bundle, report.images[shown], report.names[shown], report.images[shown], data_folder,
                          key="codebook_surprise_map", where=map_column,
                          find=lambda name: jobs.find_split_slice(data_folder, name, config.image_size, split))

projection = px.scatter(x=report.projection[:, 0], y=report.projection[:, 1],
                        color=np.log10(stats.counts + 1), color_continuous_scale="Viridis",
                        hover_name=[f"code {k} ({n} uses)" for k, n in enumerate(stats.counts)],
                        labels={"x": f"PC1 ({report.explained[0]:.0%})",
                                "y": f"PC2 ({report.explained[1]:.0%})", "color": "log10 uses"})
projection.update_layout(title="Code vectors, PCA to 2-D, coloured by usage", height=420,
                         margin=dict(l=10, r=10, t=40, b=10))
projection_column.plotly_chart(projection, key="projection")

st.subheader("One code")
code = st.number_input("Code", 0, stats.num_embeddings - 1, int(np.argmax(stats.counts)))
with shared.guard("Finding the code"):
    occurrences = codebook.code_occurrences(report.indices, int(code))
    patch = codebook.decode_code(bundle.vqvae, int(code))
where = occurrences.slices_with_code[:6]
st.markdown(f"Code **{code}** occurs **{occurrences.total}** times in "
            f"**{int((occurrences.counts > 0).sum())}** of {len(report.names)} slices.")
columns = st.columns(7)
columns[0].image(patch, clamp=True, caption="decodes to (grid of this code)", width="stretch")
for column, i in zip(columns[1:], where):
    column.image(codebook.overlay_mask(report.images[i], occurrences.masks[i]), width="stretch",
                 caption=f"{report.names[i]}: {occurrences.counts[i]}x")
