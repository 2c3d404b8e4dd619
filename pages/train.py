"""Train page: a form that launches `python -m core.train` detached, and the live run table; the picked run with Stop / Resume and its loss."""
import time

import streamlit as st

from core import curves, launcher, runs
from core.models.vqvae import VQVAEConfig
from core.training import prior_task, vqvae_task
from core.training.loop import TrainConfig
from core.training.vqvae_task import VQVAEData
from ui import access, charts, forms, shared

access.require(__file__)  # also when Streamlit runs this file straight from pages/, skipping app.py

st.title("Train")
root, gpus = shared.runs_root(), shared.gpu_count()
st.caption(f"Runs live in `{root}`. TensorFlow sees "
           f"{f'{gpus} GPU(s): training runs on the GPU' if gpus else 'no GPU: training runs on the CPU'}.")

# A default name fixed for this session until a run starts: a second submit of the same form
# finds its folder exists; any other start is refused while a job runs.
st.session_state.setdefault("default_run_name", time.strftime("vqvae-%Y%m%d-%H%M%S"))

MODEL_FIELDS = ("image_size", "downsample_factor", "num_embeddings", "embedding_dim")
TRAIN_FIELDS = ("epochs", "batch_size", "learning_rate", "steps_per_epoch", "device", "mixed_precision")
train_defaults = TrainConfig(mixed_precision=bool(gpus))
devices = {"device": ("auto", "gpu", "cpu") if gpus else ("cpu",)}

with st.form("train_form"):
    name = st.text_input("Run name", st.session_state["default_run_name"])
    data_folder = shared.data_folder_input("Data folder (OASIS keras_png_slices_data)", stop=False)
    st.markdown("**Model**")
    model_values = forms.config_inputs(VQVAEConfig, MODEL_FIELDS, st.columns(4))
    st.markdown("**Training**")
    columns = st.columns(4)
    train_values = forms.config_inputs(TrainConfig, TRAIN_FIELDS, columns, train_defaults, choices=devices)
    crop = forms.config_inputs(VQVAEData, ("crop_size",), columns[2:], vqvae_task.FAST_RECIPE)
    st.markdown("**Prior** (a PixelCNN over this VQ-VAE's codes, trained when it finishes)")
    left, right = st.columns(2)
    with_prior = left.checkbox("Then train the prior", value=False,
                               help="Starts the prior on this VQ-VAE's codes when it finishes.")
    prior_epochs = right.number_input("Prior epochs", 1, 100000, prior_task.TRAIN_DEFAULTS.epochs,
                                      help="epochs of the prior run (flag --epochs of `core.train prior`)")
    prior_model = forms.config_inputs(prior_task.MODEL_CONFIG, ("previous_slice",), [left])
    submitted = st.form_submit_button("Start", type="primary")


def prior_train(epochs: int) -> TrainConfig:
    """The prior's training settings: its own defaults, with this form's batch, device and precision."""
    shared_values = {k: train_values[k] for k in ("batch_size", "steps_per_epoch", "device", "mixed_precision")}
    return prior_task.TRAIN_DEFAULTS.replace(epochs=int(epochs), **shared_values)


if submitted and data_folder is not None:
    with shared.guard("Starting the run", stop=False):  # the run list below still shows
        job = launcher.TrainJob(name.strip(), VQVAEConfig(**model_values), TrainConfig(**train_values),
                                VQVAEData(data=data_folder, **crop), prior_train(prior_epochs) if with_prior else None,
                                prior_model if with_prior else None)
        run_dir = launcher.start(root, job, gpus)
        st.success(f"Started {run_dir.name}" + (f", then {launcher.prior_run_name(job.name)}." if with_prior else "."))
        st.session_state["default_run_name"] = time.strftime("vqvae-%Y%m%d-%H%M%S-2")


def fmt_seconds(seconds):
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


NOTICE = "train_run_notice"  # (kind, text): what the last button did, shown once with the run


def press(doing: str, action, outcome: str) -> None:
    """A button's work, run as its on_click callback: Streamlit calls it before the fragment runs
    again, so a periodic rerun arriving just after the click cannot swallow it."""
    try:
        st.session_state[NOTICE] = ("success", outcome.format(action()))
    except Exception as error:  # shown with the run, never a traceback
        st.session_state[NOTICE] = ("error", shared.failure(doing, error))


def run_actions(summary: runs.RunSummary, column) -> None:
    """The buttons of one run; each one is a single core call."""
    key, path = summary.name, summary.path
    if summary.state == "running":
        column.button("Stop", key=f"stop-{key}", on_click=press, args=(
            f"Stopping {key}", lambda: runs.request_stop(path),
            "Stop requested: the run stops after its current step, with a checkpoint."))
    if summary.state in ("stopped", "failed") and summary.has_checkpoint:
        if launcher.still_exiting(path):  # a resume now would be refused: offered once it is gone
            column.caption("exiting…")
        else:
            column.button("Resume", key=f"resume-{key}", on_click=press, args=(
                f"Resuming {key}", lambda: launcher.resume(root, path, gpus), "Resumed."))
    if (summary.kind == "vqvae" and summary.state == "finished"
            and not (root / launcher.prior_run_name(key)).exists()):
        column.button("Train prior", key=f"prior-{key}", on_click=press, args=(
            f"Starting the prior of {key}", lambda: launcher.start_prior(root, path, prior_train(prior_epochs), gpus).name,
            "Started {}."))


def run_note(summary: runs.RunSummary) -> str:
    """What went wrong with a run, in its own words ("" when nothing did)."""
    if summary.state == "broken":
        return summary.error[:300]
    failure = launcher.launch_failure(summary.path) if summary.state != "running" else None
    if failure:  # a resume that died says more than the failure it was resuming from
        return f"resume failed: {failure}"
    return summary.error[:300] if summary.error and summary.state == "failed" else ""


def run_table(summaries: list[runs.RunSummary]) -> list[dict]:
    """One row per run, newest first: what it is, how far it got, and what went wrong."""
    return [{"run": s.name, "kind": s.kind, "state": s.state,
             "progress": None if s.state == "broken" else s.progress,
             "epoch": "" if s.state == "broken" else f"{s.epoch}/{s.epochs}",
             "elapsed": fmt_seconds(s.elapsed_s), "ETA": fmt_seconds(s.eta_s), "note": run_note(s)}
            for s in summaries]


SHOWN = "train_run_shown"  # the run picked in the table, by name: rows move when a new run starts


def loss_chart(summary: runs.RunSummary) -> None:
    """The run's training loss, raw and smoothed, as the Curves page draws it (new lines only are read)."""
    cursors = st.session_state.setdefault("train_metric_cursors", {})
    records = {summary.name: curves.follow_metrics(summary.path, cursors.setdefault(summary.name, {}))}
    if not any(r.get("kind") == "step" and "loss" in r for r in records[summary.name]):
        st.caption("No loss yet: a run writes its first metric line after a few steps.")
        return
    st.vega_lite_chart(charts.curve_rows(records, "step", "loss", "step", charts.SMOOTHING),
                       {**charts.curve_spec("loss", "step", "step", log=True), "height": 180},
                       key="train_loss_chart", width="stretch")


def show_run(summary: runs.RunSummary, note: str) -> None:
    """One run up close: its state, progress, trouble (`note`, as its table row says), buttons and loss."""
    info, actions = st.columns([7, 1])
    info.markdown(f"**{summary.name}** · {summary.kind} · `{summary.state}`")
    if summary.state == "broken":  # unreadable files: say why, offer nothing
        info.caption(note)
        return
    info.progress(summary.progress, text=f"epoch {summary.epoch}/{summary.epochs}, step "
                  f"{summary.step}/{summary.total_steps}, elapsed {fmt_seconds(summary.elapsed_s)}"
                  f", ETA {fmt_seconds(summary.eta_s)}")
    if note.startswith("resume failed: "):
        info.warning(note)
    elif note:
        info.caption(note)
    run_actions(summary, actions)
    if NOTICE in st.session_state:
        kind, text = st.session_state.pop(NOTICE)
        (info.success if kind == "success" else info.error)(text)
    with shared.guard("Reading metrics", stop=False):
        loss_chart(summary)


@st.fragment(run_every=3)
def run_list() -> None:
    st.subheader("Runs")
    with shared.guard("Listing runs"):
        summaries, pending = runs.list_runs(root), launcher.pending_runs(root)
    for item in pending:
        st.markdown(f"**{item.name}**: {'starting / queued' if item.alive else 'did not start'}")
        if item.console_tail and not item.alive:
            st.code(item.console_tail, language=None)
    if not summaries:
        if not pending:
            st.info("No runs yet: fill in the form and press Start.")
        return
    names = [s.name for s in summaries]
    key = shared.run_table_key("train_run_table", names)

    def remember_row() -> None:
        rows = st.session_state[key].selection.rows
        st.session_state[SHOWN] = names[rows[0]] if rows else None

    table = run_table(summaries)
    ticked = [names.index(st.session_state[SHOWN])] if st.session_state.get(SHOWN) in names else []
    st.dataframe(table, key=key, on_select=remember_row, selection_mode="single-row",
                 selection_default={"selection": {"rows": ticked}},
                 hide_index=True, column_config={"progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0)})
    running = [s for s in summaries if s.state == "running"]
    readable = [s for s in summaries if s.state != "broken"]
    picked = next((s for s in summaries if s.name == st.session_state.get(SHOWN)), None)
    shown = picked or (running or readable or summaries)[0]
    st.caption("Pick a row to see that run below; without one, the newest running run (else the newest).")
    show_run(shown, table[summaries.index(shown)]["note"])


run_list()
