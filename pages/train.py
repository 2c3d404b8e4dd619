"""Train page: a form that launches `python -m core.train` detached, and the live run list with Stop / Resume."""
import time

import streamlit as st

from core import launcher, runs
from core.models.vqvae import VQVAEConfig
from core.training import prior_task, vqvae_task
from core.training.loop import TrainConfig
from core.training.vqvae_task import VQVAEData
from ui import access, forms, shared

access.require()  # also when Streamlit runs this file straight from pages/, skipping app.py

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


def run_actions(summary: runs.RunSummary, column) -> None:
    """The buttons of one run; each one is a single core call."""
    key = summary.name
    if summary.state == "running" and column.button("Stop", key=f"stop-{key}"):
        runs.request_stop(summary.path)
        column.info("Stop requested: the run stops after its current step, with a checkpoint.")
    if summary.state in ("stopped", "failed") and summary.has_checkpoint and column.button(
            "Resume", key=f"resume-{key}"):
        with shared.guard(f"Resuming {key}", stop=False):
            launcher.resume(root, summary.path, gpus)
            column.success("Resumed.")
    if (summary.kind == "vqvae" and summary.state == "finished"
            and not (root / launcher.prior_run_name(key)).exists()
            and column.button("Train prior", key=f"prior-{key}")):
        with shared.guard(f"Starting the prior of {key}", stop=False):
            prior_dir = launcher.start_prior(root, summary.path, prior_train(prior_epochs), gpus)
            column.success(f"Started {prior_dir.name}.")


@st.fragment(run_every=3)
def run_list() -> None:
    st.subheader("Runs")
    with shared.guard("Listing runs"):
        summaries, pending = runs.list_runs(root), launcher.pending_runs(root)
    for item in pending:
        st.markdown(f"**{item.name}**: {'starting / queued' if item.alive else 'did not start'}")
        if item.console_tail and not item.alive:
            st.code(item.console_tail, language=None)
    if not summaries and not pending:
        st.info("No runs yet: fill in the form and press Start.")
    for summary in summaries:
        info, bar, actions = st.columns([3, 4, 1])
        info.markdown(f"**{summary.name}** · {summary.kind} · `{summary.state}`")
        if summary.state == "broken":  # unreadable files: say why, offer nothing
            bar.caption(summary.error[:300])
            continue
        bar.progress(summary.progress, text=f"epoch {summary.epoch}/{summary.epochs}, step "
                     f"{summary.step}/{summary.total_steps}, elapsed {fmt_seconds(summary.elapsed_s)}"
                     f", ETA {fmt_seconds(summary.eta_s)}")
        failure = launcher.launch_failure(summary.path) if summary.state != "running" else None
        if failure:
            info.warning(f"resume failed: {failure}")
        elif summary.error and summary.state == "failed":
            info.caption(summary.error[:300])
        run_actions(summary, actions)


run_list()
