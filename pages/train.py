"""Train page: a form that launches `python -m core.train` detached, and the live run list with Stop / Resume."""
import time

import streamlit as st

from core import launcher, runs
from ui import access, shared

access.require()  # also when Streamlit runs this file straight from pages/, skipping app.py

st.title("Train")
root, gpus = shared.runs_root(), shared.gpu_count()
st.caption(f"Runs live in `{root}`. TensorFlow sees "
           f"{f'{gpus} GPU(s): training runs on the GPU' if gpus else 'no GPU: training runs on the CPU'}.")

# A default name fixed for this session until a run starts: a second submit of the same form
# finds its folder exists; any other start is refused while a job runs.
st.session_state.setdefault("default_run_name", time.strftime("vqvae-%Y%m%d-%H%M%S"))

with st.form("train_form"):
    name = st.text_input("Run name", st.session_state["default_run_name"])
    data_folder = shared.data_folder_input("Data folder (OASIS keras_png_slices_data)", stop=False)
    left, middle, right = st.columns(3)
    image_size = left.number_input("image_size", 16, 512, 256, step=16)
    code_grid = left.number_input("code grid (side)", 2, 256, 64, step=2)
    num_embeddings = middle.number_input("num_embeddings (codebook size)", 2, 4096, 256)
    embedding_dim = middle.number_input("embedding_dim (code dim)", 1, 256, 16)
    epochs = right.number_input("epochs", 1, 1000, 30)
    batch_size = right.number_input("batch size", 1, 512, 16)
    learning_rate = left.number_input("learning rate", 1e-6, 1.0, 2e-3, step=1e-4, format="%.5f")
    steps_per_epoch = middle.number_input("steps per epoch (0 = whole split)", 0, 100000, 0)
    device = right.selectbox("device", ["gpu", "cpu"] if gpus else ["cpu"],
                             help="GPU when TensorFlow sees one, else CPU.")
    mixed_precision = left.checkbox("mixed precision", value=bool(gpus))
    with_prior = middle.checkbox("then train the prior", value=False,
                                 help="Starts the prior on this VQ-VAE's codes when it finishes.")
    prior_epochs = right.number_input("prior epochs", 1, 1000, 30)
    submitted = st.form_submit_button("Start", type="primary")

if submitted:
    request = launcher.TrainRequest(
        name=name.strip(), data=data_folder, image_size=int(image_size), code_grid=int(code_grid),
        num_embeddings=int(num_embeddings), embedding_dim=int(embedding_dim), epochs=int(epochs),
        batch_size=int(batch_size), learning_rate=float(learning_rate),
        steps_per_epoch=int(steps_per_epoch) or None, device=device,
        mixed_precision=mixed_precision, prior_epochs=int(prior_epochs) if with_prior else None)
    with shared.guard("Starting the run", stop=False):  # the run list below still shows
        run_dir = launcher.start(root, request, gpus)
        st.success(f"Started {run_dir.name}" + (f", then {request.prior_name}." if with_prior else "."))
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
            and not (root / f"{key}-prior").exists()
            and column.button("Train prior", key=f"prior-{key}")):
        with shared.guard(f"Starting the prior of {key}", stop=False):
            launcher.start_prior(root, summary.path, int(prior_epochs), gpus, int(batch_size), device)
            column.success(f"Started {key}-prior.")


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
