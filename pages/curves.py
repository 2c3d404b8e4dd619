"""Curves page: live loss and validation curves of several runs (read from metrics.jsonl), and per-epoch reconstructions.

Also a sortable run table whose selected rows pick the runs, and one epoch slider for all of them.
"""
import streamlit as st

from core import curves, runs
from ui import access, charts, shared

access.require(__file__)  # also when Streamlit runs this file straight from pages/, skipping app.py

st.title("Curves")
root = shared.runs_root()
CHOSEN = "runs_chosen"  # the runs drawn, by name; only the run table's row selection writes it


def chart(where, key: str, runs_records: dict, kind: str, metric: str, x_axis: str, smoothing: float,
          log: bool = False) -> None:
    """One metric of the chosen runs as a Vega-Lite chart (plotly's 4.6 MB script made a new tab's first
    visit to this page 1.7x as slow: 4.4 s against 2.6 s, BENCHMARKS.md)."""
    rows = charts.curve_rows(runs_records, kind, metric, x_axis, smoothing)
    where.vega_lite_chart(rows, charts.curve_spec(metric, kind, x_axis, log), key=key,
                          width="stretch")


@st.fragment(run_every=2)
def live_page() -> None:
    """The whole page, drawn again every 2 s: new runs, new metric lines (only those appended are read),
    each epoch's figures in the table. One fragment for all, never a rerun of the app from inside one:
    a run finishing an epoch a second had the page rerunning itself without pause, and a click on
    another page in the sidebar was lost 3-5 times in 40 (bench/page_switch.py)."""
    with shared.guard("Listing runs"):
        summaries = runs.list_runs(root)
    if not summaries:
        st.info("No runs yet: start one on the Train page; its curves appear here while it trains.")
        return
    chosen = run_table(summaries)
    if not chosen:
        st.info("No run chosen: tick a row of the table to draw that run's curves.")
        return
    left, middle, right = st.columns(3)
    x_axis = left.radio("x axis", list(curves.X_AXES), horizontal=True, key="x_axis")
    smoothing = middle.slider("EMA smoothing", 0.0, 0.99, charts.SMOOTHING, 0.01, key="smoothing")
    log_y = right.checkbox("log y (loss)", value=True, key="log_y")
    with shared.guard("Reading metrics", stop=False):
        metric_charts(chosen, x_axis, smoothing, log_y)
    reconstructions(chosen)


def run_table(summaries: list[runs.RunSummary]) -> list[str]:
    """The sortable run table; its ticked rows are the runs drawn, returned by name.

    The table is the only chooser: a second one (a "Runs" box on the same state) was overwritten by its
    own stale value when the 2 s refresh left the browser while a row click was on its way, and the
    click was undone (2 in 70 clicks, a browser check). Each listing of runs has its own table
    (`shared.run_table_key`).
    """
    names = [s.name for s in summaries]
    if CHOSEN not in st.session_state:  # the running runs, else the newest readable one
        readable = [s.name for s in summaries if s.state != "broken"]  # a broken newest run has no curves
        st.session_state[CHOSEN] = [s.name for s in summaries if s.state == "running"] or (readable or names)[:1]
    chosen = [name for name in st.session_state[CHOSEN] if name in names]  # a run removed from disk leaves it
    key = shared.run_table_key("run_table", names)

    def choose_rows() -> None:
        """Ticked rows (positions in `names`, whatever the sort) become the chosen runs."""
        st.session_state[CHOSEN] = [names[i] for i in st.session_state[key].selection.rows]

    all_settings = st.toggle("Show every setting (not only those that differ between the chosen runs)",
                             key="all_settings")
    with shared.guard("Comparing runs", stop=False):
        st.dataframe(curves.comparison_table(summaries, chosen, all_settings), key=key, on_select=choose_rows,
                     selection_mode="multi-row", hide_index=True,
                     selection_default={"selection": {"rows": [names.index(name) for name in chosen]}},
                     column_config={"wall time (min)": st.column_config.NumberColumn(format="%.1f")})
    st.caption("Click a column header to sort; tick rows to draw those runs' curves. "
               f"Drawn: {', '.join(chosen) if chosen else 'none'}.")
    return chosen


def metric_charts(chosen: list[str], x_axis: str, smoothing: float, log_y: bool) -> None:
    """The chosen runs' training and validation curves, with perplexity and codes used when logged."""
    cursors = st.session_state.setdefault("metric_cursors", {})
    records = {name: curves.follow_metrics(root / name, cursors.setdefault(name, {})) for name in chosen}
    every = [r for rs in records.values() for r in rs]
    if not every:
        st.info("No metrics yet: a run writes its first line after a few steps.")
        return
    step_metrics, epoch_metrics = (curves.metric_names(every, "step"),
                                   curves.metric_names(every, "epoch"))
    top_left, top_right = st.columns(2)
    # A box only once there is a metric to offer: an empty one keeps its empty choice (None) after the
    # run's first epoch brings one, and no chart would be drawn.
    loss = top_left.selectbox("training metric", step_metrics, key="step_metric") if step_metrics else None
    val_default = next((m for m in ("val_ssim", "val_loss") if m in epoch_metrics), None)
    val = top_right.selectbox("validation metric", epoch_metrics, key="epoch_metric",
                              index=epoch_metrics.index(val_default) if val_default else 0) if epoch_metrics else None
    if loss:
        chart(top_left, "loss_chart", records, "step", loss, x_axis, smoothing, log_y)
    if val:
        chart(top_right, "val_chart", records, "epoch", val, x_axis, smoothing)
    bottom_left, bottom_right = st.columns(2)
    for column, metric in ((bottom_left, "perplexity"), (bottom_right, "codes_used")):
        if metric in step_metrics:
            chart(column, f"{metric}_chart", records, "step", metric, x_axis, smoothing)


def epoch_slider(epochs: list[int]) -> int:
    """One epoch for every chosen run. Like TensorBoard's step slider: at the newest epoch it moves on with
    a training run; put back on an older one, it stays there (it kept the epoch it was at, so a user
    watching a run saw the newest picture only after moving the slider by hand)."""
    key, follows = "samples_epoch", "samples_epoch_follows"
    state = st.session_state
    if state.get(follows, True) or state.get(key) not in epochs:  # the epoch kept may be of a run unticked
        state[key] = epochs[-1]

    def moved() -> None:
        state[follows] = state[key] == epochs[-1]

    return st.select_slider("Epoch", epochs, key=key, on_change=moved)


def picture(path):
    """A per-epoch picture's pixels, decoded once per version of the file, not at every 2 s refresh."""
    try:
        version = path.stat().st_mtime_ns
    except OSError:
        return None
    return decoded_picture(str(path), version)


@st.cache_data(max_entries=64, show_spinner=False)
def decoded_picture(path: str, version: int):
    return curves.load_picture(path)


def reconstructions(chosen: list[str]) -> None:
    """The chosen runs' per-epoch reconstruction pictures side by side, at one epoch for all."""
    st.subheader("Reconstructions per epoch")
    pictures = {name: curves.sample_epochs(root / name) for name in chosen}
    epochs = sorted({e for found in pictures.values() for e in found})
    if not epochs:
        st.info("No reconstruction pictures yet: one is written at the end of each epoch.")
        return
    epoch = epochs[0] if len(epochs) == 1 else epoch_slider(epochs)
    columns = st.columns(min(len(chosen), 3))
    for i, name in enumerate(chosen):
        shown = curves.picture_at(pictures[name], epoch)
        column = columns[i % len(columns)]
        pixels = None if shown is None else picture(shown[1])
        if shown is None:
            column.info(f"{name}: no picture at or before epoch {epoch}.")
        elif pixels is None:
            column.info(f"{name}: the picture of epoch {shown[0]} ({shown[1].name}) cannot be read.")
        else:
            column.image(pixels, width="stretch",
                         caption=f"{name}, epoch {shown[0]}: validation slices (top), reconstructions (bottom)")


live_page()
