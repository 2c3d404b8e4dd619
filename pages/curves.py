"""Curves page: live loss and validation curves of several runs (read from metrics.jsonl), and per-epoch reconstructions."""
import plotly.graph_objects as go
import plotly.colors
import streamlit as st

from core import curves, runs
from ui import access, shared

access.require()  # also when Streamlit runs this file straight from pages/, skipping app.py

st.title("Curves")
root = shared.runs_root()
with shared.guard("Listing runs"):
    summaries = runs.list_runs(root)
if not summaries:
    @st.fragment(run_every=2)
    def wait_for_a_run() -> None:
        if runs.list_runs(root):
            st.rerun()  # the whole page, now with a run to show
        st.info("No runs yet: start one on the Train page; its curves appear here while it trains.")

    wait_for_a_run()
    st.stop()

names = [s.name for s in summaries]
default = [s.name for s in summaries if s.state == "running"] or names[:1]
chosen = st.multiselect("Runs", names, default=default)
left, middle, right = st.columns(3)
x_axis = left.radio("x axis", list(curves.X_AXES), horizontal=True)
smoothing = middle.slider("EMA smoothing", 0.0, 0.99, 0.6, 0.01)
log_y = right.checkbox("log y (loss)", value=True)
COLOURS = plotly.colors.qualitative.Plotly


def figure(title: str, runs_records: dict, kind: str, metric: str, log: bool = False) -> go.Figure:
    """Each run's raw line faint behind its smoothed line, one colour per run."""
    fig = go.Figure()
    for i, (name, records) in enumerate(runs_records.items()):
        x, raw, smooth = curves.curve(records, kind, metric, x_axis, smoothing)
        colour = COLOURS[i % len(COLOURS)]
        if kind == "step":
            fig.add_trace(go.Scatter(x=x, y=raw, name=f"{name} raw", line=dict(color=colour, width=1),
                                     opacity=0.25, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=smooth if kind == "step" else raw, name=name,
                                 mode="lines" if kind == "step" else "lines+markers",
                                 line=dict(color=colour, width=2)))
    fig.update_layout(title=title, height=300, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title=x_axis, yaxis_type="log" if log else "linear",
                      legend=dict(orientation="h"))
    return fig


@st.fragment(run_every=2)
def live_curves() -> None:
    """Re-run every 2 s: read only the new lines of each chosen run's metrics.jsonl."""
    cursors = st.session_state.setdefault("metric_cursors", {})
    with shared.guard("Reading metrics"):
        records = {name: curves.follow_metrics(root / name, cursors.setdefault(name, {}))
                   for name in chosen}
    every = [r for rs in records.values() for r in rs]
    if not every:
        st.info("No metrics yet: a run writes its first line after a few steps.")
        return
    step_metrics, epoch_metrics = (curves.metric_names(every, "step"),
                                   curves.metric_names(every, "epoch"))
    top_left, top_right = st.columns(2)
    loss = top_left.selectbox("training metric", step_metrics, key="step_metric")
    val_default = next((m for m in ("val_ssim", "val_loss") if m in epoch_metrics), None)
    val = top_right.selectbox("validation metric", epoch_metrics, key="epoch_metric",
                              index=epoch_metrics.index(val_default) if val_default else 0)
    if loss:
        top_left.plotly_chart(figure(loss, records, "step", loss, log_y), key="loss_chart")
    if val:
        top_right.plotly_chart(figure(val, records, "epoch", val), key="val_chart")
    bottom_left, bottom_right = st.columns(2)
    for column, metric in ((bottom_left, "perplexity"), (bottom_right, "codes_used")):
        if metric in step_metrics:
            column.plotly_chart(figure(metric, records, "step", metric), key=f"{metric}_chart")


live_curves()

st.subheader("Reconstructions per epoch")
run_name = st.selectbox("Run", chosen or names, key="samples_run")
pictures = curves.sample_images(root / run_name)
if not pictures:
    st.info("No reconstruction pictures yet: one is written at the end of each epoch.")
else:
    epoch = st.select_slider("Epoch", [int(p.stem.split("_")[1]) for p in pictures],
                             value=int(pictures[-1].stem.split("_")[1]))
    st.image(str(root / run_name / "samples" / f"epoch_{epoch:03d}.png"),
             caption=f"{run_name}, epoch {epoch}: validation slices (top) and their "
                     f"reconstructions (bottom)", width="stretch")
