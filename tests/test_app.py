"""AppTest per page on a tiny checkpoint: renders without exception, key widgets, uploads, bad input as messages."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from helpers_bundle import make_tiny_bundle
from ui import charts

APP = str(Path(__file__).resolve().parent.parent / "app.py")
DEMO = Path(__file__).resolve().parent.parent / "checkpoints" / "demo"
PAGES = ["pages/train.py", "pages/curves.py", "pages/reconstruct.py", "pages/codebook.py",
         "pages/sample.py"]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def app_env(tiny_bundle, oasis_tree, tmp_path, monkeypatch) -> Path:
    """The app pointed at the tiny bundle, the tiny OASIS tree and an empty runs folder."""
    runs_root = tmp_path / "runs"
    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(tiny_bundle))
    monkeypatch.setenv("BRAINVQ_RUNS", str(runs_root))
    monkeypatch.setenv("BRAINVQ_DATA", str(oasis_tree))
    return runs_root


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page).run()
    return at


def no_trouble(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def drawn_runs(at: AppTest) -> list[str]:
    """The runs the Curves page says it draws (the caption under its run table)."""
    text = next(c.value for c in at.caption if "Drawn:" in c.value)
    drawn = text.split("Drawn:", 1)[1].strip().rstrip(".")
    return [] if drawn == "none" else [name.strip() for name in drawn.split(",")]


def choose_runs(at: AppTest, names: list[str]) -> None:
    """What ticking those rows of the Curves run table does (AppTest cannot click a row): its callback
    writes the chosen runs, and the page runs again."""
    at.session_state["runs_chosen"] = names
    at.run()


def png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def brain(size=32) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    return np.where(x ** 2 / 0.5 + y ** 2 / 0.7 < 1, 170, 0).astype(np.uint8)


def labels(elements) -> list[str]:
    return [e.label for e in elements]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(app_env, page):
    no_trouble(open_page(page))


def test_train_page_has_the_form_and_an_empty_run_list(app_env):
    at = open_page("pages/train.py")
    assert {"Run name", "Data folder (OASIS keras_png_slices_data)"} <= set(labels(at.text_input))
    numbers = {n.label: n for n in at.number_input}
    assert {"Image size (pixels)", "Codebook size (codes)", "Code size (values per code)", "Epochs",
            "Batch size", "Learning rate", "Crop size (pixels) (0 = whole slices)", "Prior epochs"} <= set(numbers)
    # Defaults come from the config dataclasses; the crop from the benchmark recipe.
    assert numbers["Epochs"].value == 30 and numbers["Learning rate"].value == pytest.approx(2e-3)
    assert numbers["Crop size (pixels) (0 = whole slices)"].value == 128
    assert {"Downsample factor (image / code grid)", "Device"} <= set(labels(at.selectbox))
    assert all("--" in n.help for n in numbers.values())  # each names its flag
    assert {"Mixed precision", "Then train the prior", "Whole-brain (volume) prior"} <= set(labels(at.checkbox))
    assert "Start" in labels(at.button)
    assert any("No runs yet" in i.value for i in at.info)


def test_train_refuses_a_folder_that_is_not_oasis_and_starts_nothing(app_env, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("BRAINVQ_DATA_ROOTS", str(tmp_path))  # offered, so the OASIS check speaks
    at = open_page("pages/train.py")
    data_input = next(t for t in at.text_input if t.label.startswith("Data folder"))
    data_input.set_value(str(tmp_path))
    at.button[0].click().run()
    assert not at.exception
    assert any("not an OASIS slice folder" in e.value for e in at.error)
    assert not app_env.exists() or not any(app_env.iterdir())


def test_train_starts_one_detached_run_refuses_a_second_and_curves_follow(app_env):
    at = open_page("pages/train.py")
    form = {t.label: t for t in at.number_input}
    form["Image size (pixels)"].set_value(32)
    form["Codebook size (codes)"].set_value(16)
    form["Code size (values per code)"].set_value(4)
    form["Epochs"].set_value(2)
    form["Batch size"].set_value(4)
    form["Steps per epoch (0 = one pass over the train split)"].set_value(2)
    form["Crop size (pixels) (0 = whole slices)"].set_value(0)
    next(t for t in at.text_input if t.label == "Run name").set_value("first")
    at.button[0].click().run()
    no_trouble(at)
    assert any("Started first" in s.value for s in at.success)
    assert (app_env / "first").is_dir()

    # A second submit (a double click, another tab) while the first runs: refused, nothing new.
    next(t for t in at.text_input if t.label == "Run name").set_value("second")
    at.button[0].click().run()
    assert not at.exception
    assert any("one job at a time" in e.value for e in at.error)
    assert not (app_env / "second").exists()
    assert "Runs" in [h.value for h in at.subheader]  # the refusal does not hide the run list

    deadline = time.time() + 240
    state = None
    while time.time() < deadline:
        status = (app_env / "first" / "status.json")
        if status.exists():
            from core import runs
            state = runs.read_status(app_env / "first")["state"]
            if state in ("finished", "failed", "stopped"):
                break
        time.sleep(1)
    log = (app_env / "first" / "console.log").read_text(errors="replace")[-2000:]
    assert state == "finished", log

    curves = open_page("pages/curves.py")
    no_trouble(curves)
    assert "first" in drawn_runs(curves)
    assert len(curves.get("vega_lite_chart")) >= 2  # loss and validation at least
    train = open_page("pages/train.py")
    no_trouble(train)
    assert "Train prior" in labels(train.button)


def test_reconstruct_upload_gives_reconstruction_and_ssim(app_env):
    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value([("one.png", png_bytes(brain()), "image/png"),
                                   ("two.png", png_bytes(brain()[::-1]), "image/png")])
    at.run()
    no_trouble(at)
    assert any("mean SSIM" in m.value for m in at.markdown)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 2
    assert "SSIM" in at.dataframe[0].value.columns
    assert at.get("download_button")


def test_reconstruct_converts_rgb_and_resizes_with_notices(app_env):
    at = open_page("pages/reconstruct.py")
    rgb = np.repeat(np.kron(brain(), np.ones((3, 3), np.uint8))[..., None], 3, axis=-1)  # 96x96
    at.file_uploader[0].set_value(("colour.png", png_bytes(rgb), "image/png")).run()
    no_trouble(at)
    notices = " ".join(i.value for i in at.info)
    assert "RGB" in notices and "96x96" in notices


@pytest.mark.parametrize("name, data, words", [
    ("notes.png", b"hello, not a picture", "not an image"),
    ("empty.png", b"", "empty"),
    ("cut.png", png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64)))[:200], "truncated"),
])
def test_reconstruct_bad_upload_is_a_message_not_a_traceback(app_env, name, data, words):
    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value((name, data, "image/png")).run()
    assert not at.exception
    assert any(words in e.value for e in at.error), [e.value for e in at.error]


def test_reconstruct_nifti_volume_offers_axis_and_slice(app_env):
    import nibabel as nib

    volume = np.random.default_rng(2).normal(100, 20, (24, 24, 12)).astype(np.float32)
    data = nib.Nifti1Image(volume, np.eye(4)).to_bytes()
    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value(("vol.nii", data, "application/octet-stream")).run()
    no_trouble(at)
    assert "Slice axis" in labels(at.radio) and at.slider[0].max == 11
    at.slider[0].set_value(3).run()
    no_trouble(at)
    assert "slice 3" in at.dataframe[0].value["slice"][0]


@pytest.mark.parametrize("shape", [(24, 24), (24, 24, 1)])
def test_reconstruct_a_nifti_of_one_slice_has_no_slider_to_break(app_env, shape):
    """A slider from 0 to 0 is an error in Streamlit: a 2-D NIfTI (or one slice thick) crashed the page."""
    import nibabel as nib

    volume = np.random.default_rng(3).normal(100, 20, shape).astype(np.float32)
    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value(("flat.nii", nib.Nifti1Image(volume, np.eye(4)).to_bytes(),
                                   "application/octet-stream")).run()
    no_trouble(at)
    assert not at.slider and "slice 0" in at.dataframe[0].value["slice"][0]
    at.radio(key="volume_axis").set_value(0).run()  # 24 slices this way: the slider is back
    no_trouble(at)
    assert at.slider[0].max == 23


def test_reconstruct_from_the_test_split(app_env):
    at = open_page("pages/reconstruct.py")
    at.radio[0].set_value("test split").run()
    no_trouble(at)
    assert len(at.multiselect[0].value) == 4
    assert len(at.dataframe[0].value) == 4


def test_codebook_page_shows_usage_map_projection_and_a_code(app_env):
    at = open_page("pages/codebook.py")
    no_trouble(at)
    assert {"Perplexity", "Codes used", "Dead codes"} <= {m.label for m in at.metric}
    assert len(at.get("plotly_chart")) == 3
    code_input = next(n for n in at.number_input if n.label == "Code")
    code_input.set_value(3).run()
    no_trouble(at)
    assert any("Code **3** occurs" in m.value for m in at.markdown)


def test_sample_generate_fills_the_gallery(app_env):
    at = open_page("pages/sample.py")
    next(n for n in at.number_input if n.label == "How many").set_value(3)
    next(b for b in at.button if b.label == "Generate").click().run()
    no_trouble(at)
    _, images, names = at.session_state["generated"]
    assert images.shape == (3, 32, 32) and len(names) == 3
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_sample_generate_at_a_chosen_slice_level(app_env):
    at = open_page("pages/sample.py")
    next(n for n in at.number_input if n.label == "How many").set_value(2)
    level = next(s for s in at.selectbox if s.label == "Slice level")
    assert level.value == "any (as in training)" and level.options[1:] == ["0", "1", "2", "3"]
    level.set_value(2)
    next(b for b in at.button if b.label == "Generate").click().run()
    no_trouble(at)
    _, _, names = at.session_state["generated"]
    assert names == ["brain_seed0_00_level2", "brain_seed0_01_level2"]


def test_sample_complete_keeps_the_top_rows(app_env):
    at = open_page("pages/sample.py")
    next(s for s in at.slider if s.label == "Keep code rows above").set_value(4)
    # A test slice's file name carries its level (case_..._slice_N): that is the default level.
    slice_name = next(s for s in at.selectbox if s.label == "Test slice").value
    level = next(s for s in at.selectbox if s.label == "Slice level of this slice")
    assert level.value == int(slice_name.split("_slice_")[1].split(".")[0])
    level.set_value("estimate from the kept rows")
    next(b for b in at.button if b.label == "Complete").click().run()
    no_trouble(at)
    _, images, names = at.session_state["completed"]
    assert images.shape == (4, 32, 32) and all("_level" in name for name in names)


def test_sample_page_says_when_no_checkpoint_has_a_prior(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(make_tiny_bundle(tmp_path / "vq", with_prior=False)))
    monkeypatch.setattr("core.bundles.DEMO_CHECKPOINT", tmp_path / "no-demo")
    at = open_page("pages/sample.py")
    assert not at.exception
    assert any("prior" in i.value for i in at.info)


def test_whole_brain_generates_a_volume_shown_in_three_linked_planes(app_env, tmp_path, monkeypatch):
    from core import jobs
    from core.bundles import load_bundle

    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(make_tiny_bundle(tmp_path / "both", with_volume_prior=True)))
    # The tiny bundle is untrained: its priors' logits are near-flat, so guided and unguided codes can decode
    # to the same grey, and only what the page asked the core for tells whether it guided.
    asked, generate_volumes = [], jobs.generate_volumes
    monkeypatch.setattr(jobs, "generate_volumes",
                        lambda *args, **kwargs: asked.append(kwargs) or generate_volumes(*args, **kwargs))
    at = open_page("pages/sample.py")
    no_trouble(at)
    next(b for b in at.button if b.label == "Generate a whole brain").click().run()
    no_trouble(at)
    _, seed, volume, through = at.session_state["volume"]
    assert through is None  # from the base up, through no real slice
    assert volume.shape == (4, 32, 32) and 0.0 <= volume.min() and volume.max() <= 1.0  # 4 levels: 4 slices
    sliders = {s.label: s for s in at.slider}
    assert sliders["Axial slice"].value == 2 and sliders["Coronal row"].value == 16
    assert any(b.label == "Download .nii.gz" for b in at.get("download_button"))
    views = shown_images(at)
    assert [caption for caption, _ in views[:3]] == ["axial, slice 2", "coronal, row 16", "sagittal, column 16"]
    assert views[3][0] == "base to vertex, looping" and views[3][1].endswith(".gif")
    # Moving one plane moves the cross-hair in the other two (they are redrawn through the new point).
    sliders["Axial slice"].set_value(0).run()
    no_trouble(at)
    moved = shown_images(at)
    assert [caption for caption, _ in moved[:3]] == ["axial, slice 0", "coronal, row 16", "sagittal, column 16"]
    assert all(moved[i][1] != views[i][1] for i in range(3))
    assert at.session_state["volume"][2] is volume or np.array_equal(at.session_state["volume"][2], volume)
    # Guidance: the slice prior's weight, the core's default; 0 makes the whole-brain prior's own volume.
    bundle = load_bundle(tmp_path / "both")
    guidance = at.slider(key="volume_guidance")
    assert guidance.value == jobs.VOLUME_GUIDANCE and not guidance.proto.disabled
    assert asked[0]["guidance"] == jobs.VOLUME_GUIDANCE and asked[0]["slice_prior"] is not None
    guided = generate_volumes(bundle.vqvae, bundle.volume_prior, 1, seed=0, slice_prior=bundle.prior,
                              guidance=jobs.VOLUME_GUIDANCE)[0]
    np.testing.assert_allclose(volume, guided, atol=1e-6)
    guidance.set_value(0.0).run()
    next(b for b in at.button if b.label == "Generate a whole brain").click().run()
    no_trouble(at)
    assert asked[-1]["guidance"] == 0.0
    unguided = generate_volumes(bundle.vqvae, bundle.volume_prior, 1, seed=0, guidance=0.0)[0]
    np.testing.assert_allclose(at.session_state["volume"][2], unguided, atol=1e-6)


def test_whole_brain_through_a_real_slice_keeps_it_at_its_level_and_opens_the_viewer_there(app_env, oasis_tree,
                                                                                            tmp_path, monkeypatch):
    from core import jobs
    from core.bundles import load_bundle

    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(make_tiny_bundle(tmp_path / "both", with_volume_prior=True)))
    at = open_page("pages/sample.py")
    at.radio(key="volume_start").set_value("a real slice").run()
    no_trouble(at)
    name = at.selectbox(key="volume_real_name").value
    assert at.selectbox(key=f"volume_real_level_{name}").value == "from its name, else estimated"
    next(b for b in at.button if b.label == "Generate a whole brain").click().run()
    no_trouble(at)
    _, seed, volume, (shown_name, level, found, _) = at.session_state["volume"]
    bundle = load_bundle(tmp_path / "both")
    real = jobs.load_split_slices(str(oasis_tree), [name], 32, "test")[0]
    assert shown_name == name and (level, found) == jobs.real_slice_level(bundle.vqvae, bundle.prior,
                                                                          bundle.volume_prior, name, real)
    np.testing.assert_array_equal(volume[level], real[..., 0])
    assert at.slider(key="volume_z").value == level
    caption = next(c.value for c in at.caption if f"kept at level {level}" in c.value)
    assert ("bits per code on the slice below" in caption) == (level > 0)  # level 0 has no slice below
    # A level chosen by hand puts it there instead.
    other = (level + 1) % 4
    at.selectbox(key=f"volume_real_level_{name}").set_value(other).run()
    next(b for b in at.button if b.label == "Generate a whole brain").click().run()
    no_trouble(at)
    _, _, volume, (_, level, found, _) = at.session_state["volume"]
    assert (level, found) == (other, "chosen") and np.array_equal(volume[other], real[..., 0])


def test_whole_brain_through_an_upload_waits_for_one_and_the_rest_of_the_page_goes_on(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(make_tiny_bundle(tmp_path / "both", with_volume_prior=True)))
    at = open_page("pages/sample.py")
    at.radio(key="volume_start").set_value("a real slice").run()
    at.radio(key="volume_real_source").set_value("upload").run()
    no_trouble(at)
    generate = next(b for b in at.button if b.label == "Generate a whole brain")
    assert generate.proto.disabled  # nothing to start from yet
    assert any(h.value == "Quality" for h in at.subheader)  # and the rest of the page is there


def shown_images(at: AppTest) -> list[tuple[str, str]]:
    """(caption, media url) of every image on the page, in order; the url names the picture's content."""
    found = []

    def walk(node):
        for child in getattr(node, "children", {}).values():
            if type(child).__name__ == "Image":
                found.extend((image.caption, image.url) for image in child.proto.imgs)
            walk(child)
    walk(at._tree)
    return found


def test_whole_brain_without_a_whole_brain_prior_says_how_to_train_one(app_env):
    at = open_page("pages/sample.py")
    no_trouble(at)
    assert any("python -m core.train prior --volume" in i.value for i in at.info)
    assert not any(b.label == "Generate a whole brain" for b in at.button)
    assert any(b.label == "Generate" for b in at.button)  # single slices still work


def test_a_checkpoint_with_only_a_whole_brain_prior_offers_whole_brains(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(make_tiny_bundle(tmp_path / "vol", with_prior=False,
                                                                  with_volume_prior=True)))
    monkeypatch.setattr("core.bundles.DEMO_CHECKPOINT", tmp_path / "no-demo")
    at = open_page("pages/sample.py")
    no_trouble(at)
    assert any("whole-brain prior only" in i.value for i in at.info)
    assert not any(b.label == "Generate" for b in at.button)
    guidance = at.slider(key="volume_guidance")
    assert guidance.value == 0.0 and guidance.proto.disabled  # no slice prior to guide with
    next(b for b in at.button if b.label == "Generate a whole brain").click().run()
    no_trouble(at)
    assert at.session_state["volume"][2].shape == (4, 32, 32)


def test_a_checkpoint_that_will_not_load_is_a_message(app_env, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "vqvae.keras").write_bytes(b"not a keras file")
    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(broken))
    at = open_page("pages/reconstruct.py")
    assert not at.exception
    assert any("will not load" in e.value for e in at.error)


def fake_finished_run(runs_root: Path, name: str, bundle: Path) -> Path:
    """A run directory as the trainer leaves it, holding a copy of `bundle` as its checkpoint."""
    import shutil

    from core import atomic, runs

    run_dir = runs_root / name
    runs.create_run(run_dir, {"kind": "prior", "train": {"epochs": 1}})
    shutil.copytree(bundle, run_dir / "checkpoints" / "step_0000001_1")
    atomic.write_json(run_dir / "checkpoints" / "last.json", {"dir": "step_0000001_1", "step": 1})
    atomic.write_json(run_dir / "status.json", {"state": "finished", "step": 1, "epoch": 1})
    return run_dir


def test_the_checkpoint_choice_follows_the_user_across_pages(app_env, tiny_bundle):
    fake_finished_run(app_env, "older-run", tiny_bundle)
    at = open_page("pages/reconstruct.py")
    options = at.selectbox(key="checkpoint_picker").options
    assert len(options) >= 2 and any("older-run" in o for o in options)
    index = next(i for i, o in enumerate(options) if "older-run" in o)
    at.selectbox(key="checkpoint_picker").set_value(index).run()
    no_trouble(at)
    chosen = at.session_state["checkpoint_path"]
    at.switch_page("pages/codebook.py").run()
    no_trouble(at)
    assert at.session_state["checkpoint_path"] == chosen and "older-run" in chosen
    assert at.selectbox(key="checkpoint_picker").value == index


def broken_run(runs_root: Path, name: str = "broken-run") -> Path:
    """A run folder whose config.json is not JSON (a hand edit, a disk error)."""
    run_dir = runs_root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text('{"kind": "vqvae", "train": ')
    return run_dir


def test_train_page_tables_every_run_and_says_why_one_is_broken(app_env, tiny_bundle):
    from core import runs

    runs.append_metrics(fake_finished_run(app_env, "good-run", tiny_bundle),
                        [{"kind": "step", "step": step, "epoch": 1, "loss": 1.0 / step} for step in (1, 2, 3)])
    broken_run(app_env)
    at = open_page("pages/train.py")
    no_trouble(at)
    rows = {row["run"]: row for row in at.dataframe[0].value.to_dict("records")}
    assert list(rows) == ["broken-run", "good-run"]  # newest first
    assert rows["good-run"]["state"] == "finished" and rows["good-run"]["epoch"] == "1/1"
    assert rows["broken-run"]["state"] == "broken" and "config.json" in rows["broken-run"]["note"]
    # Below the table: the newest run that can be read, with its buttons and its loss.
    assert any(m.value.startswith("**good-run**") for m in at.markdown)
    assert len(at.get("vega_lite_chart")) == 1
    # A picked row (the table's selection writes its name) is shown instead: the broken one says why.
    at.session_state["train_run_shown"] = "broken-run"
    at.run()
    no_trouble(at)
    assert any(m.value.startswith("**broken-run**") and "`broken`" in m.value for m in at.markdown)
    assert any("Broken run" in c.value and "config.json" in c.value for c in at.caption)
    assert not at.get("vega_lite_chart")


def test_curves_page_lists_a_broken_run_without_failing(app_env, tiny_bundle):
    fake_finished_run(app_env, "good-run", tiny_bundle)
    broken_run(app_env)
    at = open_page("pages/curves.py")
    no_trouble(at)
    assert set(at.dataframe[0].value["run"]) == {"good-run", "broken-run"}
    assert drawn_runs(at) == ["good-run"]


def test_the_picker_still_offers_the_good_checkpoints_beside_a_broken_run(app_env, tiny_bundle):
    fake_finished_run(app_env, "good-run", tiny_bundle)
    broken_run(app_env)
    at = open_page("pages/reconstruct.py")
    no_trouble(at)
    options = at.selectbox(key="checkpoint_picker").options
    assert any("good-run" in o for o in options) and any("BRAINVQ_CHECKPOINT" in o for o in options)
    assert not any("broken-run" in o for o in options)
    if (DEMO / "vqvae.keras").exists():
        assert any("demo" in o for o in options)


def test_a_failed_run_listing_still_offers_the_set_checkpoint(app_env, monkeypatch):
    def failing(root):
        raise OSError("runs folder unreadable")

    monkeypatch.setattr("core.bundles.available_checkpoints", failing)
    at = open_page("pages/reconstruct.py")
    assert not at.exception
    assert any("Listing checkpoints failed" in e.value for e in at.error)
    assert any("BRAINVQ_CHECKPOINT" in o for o in at.selectbox(key="checkpoint_picker").options)


def test_train_page_shows_why_a_resume_died_before_writing_status(app_env, tiny_bundle):
    from core import atomic, launcher

    run_dir = fake_finished_run(app_env, "resumed-run", tiny_bundle)
    atomic.write_json(run_dir / "status.json", {"state": "failed", "step": 1, "heartbeat": 1.0,
                                                "error": "killed"})
    (run_dir / "console.log").write_text("Traceback? no.\nerror: the data folder moved\n")
    atomic.write_json(run_dir / launcher.LAUNCHER_FILE, {"pid": 0, "pid_start": 1,
                                                         "started": 2.0})  # long dead
    at = open_page("pages/train.py")
    assert not at.exception
    assert any(w.value == "resume failed: the data folder moved" for w in at.warning)


@pytest.mark.skipif(not (DEMO / "vqvae.keras").exists(), reason="checkpoints/demo not shipped yet")
@pytest.mark.parametrize("page", ["pages/reconstruct.py", "pages/codebook.py", "pages/sample.py"])
def test_pages_render_with_the_demo_checkpoint(page, tmp_path, monkeypatch):
    monkeypatch.delenv("BRAINVQ_CHECKPOINT", raising=False)
    monkeypatch.delenv("BRAINVQ_DATA", raising=False)
    monkeypatch.setenv("BRAINVQ_RUNS", str(tmp_path / "runs"))
    at = open_page(page)
    no_trouble(at)
    if page == "pages/reconstruct.py":
        at.radio[0].set_value("test split").run()
        no_trouble(at)
        assert any("mean SSIM" in m.value for m in at.markdown)


@pytest.mark.parametrize("page, label", [("pages/train.py", "Data folder (OASIS keras_png_slices_data)"),
                                         ("pages/codebook.py", "Data folder")])
@pytest.mark.parametrize("outside", ["/", "/etc", "~", "~nosuchuser/data", "/tmp/data\x00"])
def test_a_data_folder_outside_the_allowed_roots_shows_one_message_and_lists_nothing(
        app_env, page, label, outside):
    at = open_page(page)
    next(t for t in at.text_input if t.label == label).set_value(outside)
    (at.button[0].click() if page == "pages/train.py" else at).run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    assert "outside the data folders this server offers" in shown
    assert "not an OASIS slice folder" not in shown and "Found:" not in shown  # no listing
    assert not app_env.exists() or not any(app_env.iterdir())  # no run started


def test_a_data_folder_under_brainvq_data_roots_is_accepted(app_env, oasis_tree, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("BRAINVQ_DATA", str(tmp_path / "elsewhere"))
    at = open_page("pages/codebook.py")
    next(t for t in at.text_input if t.label == "Data folder").set_value(str(oasis_tree)).run()
    assert any("outside the data folders" in e.value for e in at.error)
    monkeypatch.setenv("BRAINVQ_DATA_ROOTS", str(oasis_tree.parent))
    at.run()
    no_trouble(at)
    assert any(m.label == "Perplexity" for m in at.metric)


def test_sample_quality_panel_measures_only_when_asked(app_env):
    at = open_page("pages/sample.py")
    assert "quality" not in at.session_state  # nothing computed on opening the page
    next(n for n in at.number_input if n.label == "Samples to judge").set_value(6)
    next(b for b in at.button if b.label == "Measure quality").click().run()
    no_trouble(at)
    path, report = at.session_state["quality"]
    assert report["n"] == 6 and {"fd", "fd_real", "kid", "kid_real", "ms_ssim_samples", "ms_ssim_real"} <= set(report)
    table = at.table[0].value
    assert list(table.columns) == ["", "samples vs validate", "real train vs validate"]
    assert table["samples vs validate"].iloc[0] == pytest.approx(report["fd"])


def test_sample_quality_panel_shows_a_missing_reference_network_as_a_message(app_env, monkeypatch, tmp_path):
    monkeypatch.setattr("core.sample_quality.REFERENCE_CHECKPOINT", tmp_path / "no-reference")
    at = open_page("pages/sample.py")
    next(n for n in at.number_input if n.label == "Samples to judge").set_value(4)
    next(b for b in at.button if b.label == "Measure quality").click().run()
    assert not at.exception
    assert any("Measuring quality failed" in e.value and "make_reference_network" in e.value for e in at.error)


def test_reconstruct_window_level_auto_full_and_manual(app_env):
    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value(("one.png", png_bytes(brain()), "image/png")).run()
    no_trouble(at)
    mode = next(r for r in at.radio if r.label == "Window / level")
    assert mode.value.startswith("auto")
    assert len(at.get("plotly_chart")) == 1  # the linked views
    caption = lambda: " ".join(c.value for c in at.caption)
    assert "window 0.00-0.67" in caption()  # 0.1-99.9 percentiles of a 0 / 170 brain
    mode.set_value("full range").run()
    no_trouble(at)
    assert "window 0.00-1.00" in caption()
    next(r for r in at.radio if r.label == "Window / level").set_value("manual").run()
    no_trouble(at)
    window = next(s for s in at.slider if s.label == "Window (black, white)")
    window.set_value((0.2, 0.5)).run()
    no_trouble(at)
    assert "window 0.20-0.50" in caption()


def test_reconstruct_linked_views_show_difference_and_ssim_map_on_shared_axes(app_env):

    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value(("one.png", png_bytes(brain()), "image/png")).run()
    no_trouble(at)
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    titles = [a["text"] for a in figure["layout"]["annotations"]]
    assert titles[:2] == ["original", "reconstruction"] and "difference" in titles[2] and "SSIM" in titles[3]
    assert len(figure["data"]) == 4 and figure["layout"]["xaxis2"]["matches"] == "x"
    assert figure["data"][3]["x0"] == 5  # the SSIM map sits at the centre of its first window


def test_reconstruct_wipe_and_flicker_comparisons(app_env):

    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value(("one.png", png_bytes(brain()), "image/png")).run()
    next(r for r in at.radio if r.label == "Compare").set_value("wipe").run()
    no_trouble(at)
    next(s for s in at.slider if s.label.startswith("Wipe")).set_value(30).run()
    no_trouble(at)
    titles = lambda: [a["text"] for a in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["annotations"]]
    assert titles() == ["original | reconstruction"]
    next(r for r in at.radio if r.label == "Compare").set_value("flicker").run()
    assert titles() == ["original"]
    at.toggle(key="flicker").set_value(True).run()
    no_trouble(at)
    assert titles() == ["reconstruction"]


def test_reconstruct_surprise_map_gives_bits_and_a_rank(app_env):

    at = open_page("pages/reconstruct.py")
    at.radio[0].set_value("test split").run()
    at.toggle(key="surprise").set_value(True).run()
    no_trouble(at)
    text = " ".join(m.value for m in at.markdown)
    assert "bits**" in text and "more surprising than" in text and "validation slices of level" in text
    assert "Hot spot (boxed)" in text and "bits above expected per code** over 4x4 codes" in text
    assert "slice prior" in text  # the tiny bundle has no whole-brain prior
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    spec = json.loads(charts[1].proto.spec)
    shapes = spec["layout"]["shapes"]
    assert len(shapes) == 1 and shapes[0]["type"] == "rect"  # the hot spot, boxed on the map
    assert "-log2 p(code" in spec["layout"]["title"]["text"]
    next(r for r in at.radio if r.label == "Map").set_value("bits above expected").run()
    no_trouble(at)
    spec = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert "above expected" in spec["layout"]["title"]["text"] and len(spec["layout"]["shapes"]) == 1


def test_reconstruct_surprise_uses_the_slice_below_with_a_whole_brain_prior(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(make_tiny_bundle(tmp_path / "both", with_volume_prior=True)))
    at = open_page("pages/reconstruct.py")
    at.radio[0].set_value("test split").run()
    names = at.multiselect(key="test_slices").options
    above_base = next(n for n in names if "_slice_0." not in n)
    at.multiselect(key="test_slices").set_value([above_base]).run()
    at.toggle(key="surprise").set_value(True).run()
    no_trouble(at)
    text = " ".join(m.value for m in at.markdown)
    assert "whole-brain prior, given the slice below" in text and "more surprising than" in text
    # An upload alone has no slice below among the uploads: the slice prior scores it.
    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value((above_base, png_bytes(brain()), "image/png")).run()
    at.toggle(key="surprise").set_value(True).run()
    no_trouble(at)
    assert "slice prior" in " ".join(m.value for m in at.markdown)


def test_reconstruct_nifti_ssim_strip_across_the_volume(app_env):
    import nibabel as nib

    volume = np.random.default_rng(2).normal(100, 20, (24, 24, 12)).astype(np.float32)
    at = open_page("pages/reconstruct.py")
    at.file_uploader[0].set_value(("vol.nii", nib.Nifti1Image(volume, np.eye(4)).to_bytes(),
                                   "application/octet-stream")).run()
    at.toggle(key="volume_strip").set_value(True).run()
    no_trouble(at)
    strip = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(strip["data"][0]["y"]) == 12 and "SSIM per slice" in strip["layout"]["title"]["text"]


def test_codebook_usage_log_scale_toggle(app_env):

    at = open_page("pages/codebook.py")
    layout = lambda: json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
    assert layout()["yaxis"].get("type", "linear") == "linear"
    at.toggle(key="usage_log").set_value(True).run()
    no_trouble(at)
    assert layout()["yaxis"]["type"] == "log" and "log" in layout()["yaxis"]["title"]["text"]


def test_codebook_surprise_map_of_the_shown_slice(app_env):
    at = open_page("pages/codebook.py")
    at.toggle(key="codebook_surprise").set_value(True).run()
    no_trouble(at)
    assert any("bits**" in m.value and "more surprising than" in m.value for m in at.markdown)
    assert any("Hot spot (boxed)" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) == 4


def run_with_pictures(runs_root: Path, name: str, epochs: list[int], num_embeddings: int) -> Path:
    """A finished run with per-epoch pictures and validation SSIM, as the trainer leaves them."""
    from core import atomic, runs

    run_dir = runs_root / name
    runs.create_run(run_dir, {"kind": "vqvae", "model": {"num_embeddings": num_embeddings},
                              "train": {"epochs": max(epochs), "batch_size": 8}})
    runs.append_metrics(run_dir, [{"kind": "epoch", "step": e, "epoch": e, "val_ssim": 0.5 + e / 100}
                                  for e in epochs])
    for e in epochs:
        Image.fromarray(np.full((8, 16), 40 * e, np.uint8)).save(
            (run_dir / "samples").mkdir(exist_ok=True) or run_dir / "samples" / f"epoch_{e:03d}.png")
    atomic.write_json(run_dir / "status.json", {"state": "finished", "step": max(epochs),
                                                "epoch": max(epochs), "elapsed_s": 90.0})
    return run_dir


def test_curves_table_compares_every_run_and_survives_a_broken_one(app_env):
    run_with_pictures(app_env, "small", [1, 2], 64)
    run_with_pictures(app_env, "large", [1, 2, 3], 256)
    broken_run(app_env)
    at = open_page("pages/curves.py")
    no_trouble(at)
    table = at.dataframe[0].value
    assert set(table["run"]) == {"small", "large", "broken-run"}
    assert table.set_index("run").loc["large", "best val_ssim"] == pytest.approx(0.53)
    assert table.set_index("run").loc["broken-run", "state"] == "broken"
    choose_runs(at, ["small", "large"])
    no_trouble(at)
    assert "model.num_embeddings" in at.dataframe[0].value.columns
    assert "train.epochs" in at.dataframe[0].value.columns
    assert "train.batch_size" not in at.dataframe[0].value.columns  # the same in both chosen runs
    at.toggle(key="all_settings").set_value(True).run()
    no_trouble(at)
    assert "train.batch_size" in at.dataframe[0].value.columns


def test_curves_epoch_slider_shows_the_chosen_runs_side_by_side(app_env):
    run_with_pictures(app_env, "small", [1, 2], 64)
    run_with_pictures(app_env, "large", [1, 2, 3], 256)
    at = open_page("pages/curves.py")
    choose_runs(at, ["small", "large"])
    no_trouble(at)
    (chart,) = at.get("vega_lite_chart")  # these runs log validation only: one chart
    spec = json.loads(chart.proto.spec)
    assert spec["title"] == "val_ssim"
    drawn = pyarrow.ipc.open_stream(chart.proto.data.data).read_all().to_pandas()
    assert sorted(drawn.groupby("run").value.max().round(4).items()) == [("large", 0.53), ("small", 0.52)]
    # Each chosen run in its colour, in the order chosen.
    assert drawn.groupby("run").colour.first().to_dict() == {"small": charts.COLOURS[0], "large": charts.COLOURS[1]}
    slider = at.select_slider(key="samples_epoch")
    assert list(slider.options) == ["1", "2", "3"] and slider.value == 3
    captions = lambda: sorted(i.proto.imgs[0].caption.split(":")[0] for i in at.get("image"))
    assert captions() == ["large, epoch 3", "small, epoch 2"]  # small stopped at 2: its latest
    slider.set_value(1).run()
    no_trouble(at)
    assert captions() == ["large, epoch 1", "small, epoch 1"]


def test_curves_epoch_slider_stays_where_the_user_put_it_while_a_run_adds_epochs(app_env):
    # Like TensorBoard's step slider: at the newest epoch it follows the run; moved back, it stays there
    # (it jumped to the newest epoch on every refresh that brought a new picture).
    run_dir = run_with_pictures(app_env, "live", [1, 2, 3], 64)
    at = open_page("pages/curves.py")
    no_trouble(at)
    slider = lambda: at.select_slider(key="samples_epoch")
    captions = lambda: [i.proto.imgs[0].caption.split(":")[0] for i in at.get("image")]
    assert slider().value == 3
    add_picture = lambda e: Image.fromarray(np.full((8, 16), 40 * e, np.uint8)).save(
        run_dir / "samples" / f"epoch_{e:03d}.png")
    add_picture(4)
    at.run()
    no_trouble(at)
    assert slider().value == 4 and captions() == ["live, epoch 4"]  # at the newest: it follows
    slider().set_value(2).run()
    no_trouble(at)
    add_picture(5)
    at.run()
    no_trouble(at)
    assert list(slider().options) == ["1", "2", "3", "4", "5"]
    assert slider().value == 2 and captions() == ["live, epoch 2"]  # moved back: it stays
    slider().set_value(5).run()
    add_picture(6)
    at.run()
    no_trouble(at)
    assert slider().value == 6 and captions() == ["live, epoch 6"]  # back at the newest: it follows again


def test_curves_picture_rewritten_on_disk_is_read_again(app_env):
    # Pictures are decoded once per version of the file: a file replaced under the same name is not
    # served from what was decoded before.
    run_dir = run_with_pictures(app_env, "rewritten", [1], 64)
    at = open_page("pages/curves.py")
    no_trouble(at)
    assert len(at.get("image")) == 1
    picture = run_dir / "samples" / "epoch_001.png"
    picture.write_bytes(b"not a png any more")
    os.utime(picture, ns=(picture.stat().st_atime_ns, picture.stat().st_mtime_ns + 10**9))
    at.run()
    no_trouble(at)
    assert not at.get("image") and any("cannot be read" in i.value for i in at.info)


def test_curves_first_choice_skips_a_newest_broken_run(app_env):
    run_with_pictures(app_env, "good", [1], 64)
    time.sleep(0.05)
    broken_run(app_env)  # newest: listed first
    at = open_page("pages/curves.py")
    no_trouble(at)
    assert drawn_runs(at) == ["good"]
    assert len(at.get("vega_lite_chart")) >= 1


def test_curves_table_ticks_the_drawn_runs_and_keeps_them_when_a_new_run_moves_the_rows(app_env):
    # The table is the page's one chooser: its ticked rows are the runs drawn. Rows are positions, newest
    # first, so a new run moves every row down: the table then starts afresh, ticked at the new rows.
    run_with_pictures(app_env, "small", [1], 64)
    time.sleep(0.05)
    run_with_pictures(app_env, "large", [1], 256)
    at = open_page("pages/curves.py")
    no_trouble(at)
    ticked = lambda: json.loads(at.dataframe[0].proto.selection_default)["selection"]["rows"]
    assert at.dataframe[0].value["run"].tolist() == ["large", "small"]
    assert drawn_runs(at) == ["large"] and ticked() == [0]
    choose_runs(at, ["small"])
    no_trouble(at)
    assert drawn_runs(at) == ["small"]
    first_table = at.dataframe[0].key
    time.sleep(0.05)
    run_with_pictures(app_env, "newer", [1], 64)
    at.run()
    no_trouble(at)
    assert at.dataframe[0].value["run"].tolist() == ["newer", "large", "small"]
    assert at.dataframe[0].key != first_table  # a new table for the new listing...
    assert drawn_runs(at) == ["small"] and ticked() == [2]  # ...ticked where "small" now is
    choose_runs(at, [])  # every row unticked
    no_trouble(at)
    assert drawn_runs(at) == [] and any("tick a row" in i.value for i in at.info)
    assert not at.get("vega_lite_chart")


def test_train_table_keeps_the_picked_run_ticked_when_a_new_run_moves_the_rows(app_env):
    run_with_pictures(app_env, "older", [1], 64)
    time.sleep(0.05)
    run_with_pictures(app_env, "newer", [1], 64)
    at = open_page("pages/train.py")
    no_trouble(at)
    at.session_state["train_run_shown"] = "older"  # what picking its row does (AppTest cannot click a row)
    at.run()
    ticked = lambda: json.loads(at.dataframe[0].proto.selection_default)["selection"]["rows"]
    assert at.dataframe[0].value["run"].tolist() == ["newer", "older"] and ticked() == [1]
    time.sleep(0.05)
    run_with_pictures(app_env, "newest", [1], 64)
    at.run()
    no_trouble(at)
    assert at.dataframe[0].value["run"].tolist() == ["newest", "newer", "older"] and ticked() == [2]
    assert any(m.value.startswith("**older**") for m in at.markdown)  # the run shown below the table


def test_curves_validation_metric_is_chosen_once_the_first_epoch_is_in(app_env):
    # Opened before any epoch, the page had no validation metric to offer; a rerun after the first
    # epoch (any widget, or the run table following the run) left the choice empty and no chart drawn.
    from core import atomic, runs

    run_dir = app_env / "young"
    runs.create_run(run_dir, {"kind": "vqvae", "model": {}, "train": {"epochs": 5}})
    runs.append_metrics(run_dir, [{"kind": "step", "step": 1, "epoch": 1, "loss": 0.5}])
    atomic.write_json(run_dir / "status.json", {"state": "stopped", "step": 1, "epoch": 0})
    at = open_page("pages/curves.py")
    no_trouble(at)
    runs.append_metrics(run_dir, [{"kind": "epoch", "step": 2, "epoch": 1, "val_ssim": 0.5}])
    at.run()
    no_trouble(at)
    assert at.selectbox(key="epoch_metric").value == "val_ssim"
    assert len(at.get("vega_lite_chart")) == 2  # loss and val_ssim


def test_curves_page_survives_damaged_pictures_and_metric_lines(app_env):
    run_dir = run_with_pictures(app_env, "damaged", [1, 2], 64)
    (run_dir / "samples" / "epoch_002.png").write_bytes(b"not a png at all")
    (run_dir / "samples" / "epoch_003.png").mkdir()
    (run_dir / "samples" / "epoch_\u00b2.png").write_bytes(b"")
    with open(run_dir / "metrics.jsonl", "a") as metrics:
        metrics.write('{"kind": "epoch", "epoch": 3, "val_ssim": 0.1, "val_codes_used": 1e400}\n'
                      '{"kind": "step", "step": "x", "epoch": 1, "loss": 0.5}\n')
    at = open_page("pages/curves.py")
    at.radio[0].set_value("epoch").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.dataframe) == 1 and at.dataframe[0].value["run"].tolist() == ["damaged"]
    assert any("cannot be read" in i.value for i in at.info)  # the epoch-2 picture, named
    at.select_slider(key="samples_epoch").set_value(1).run()
    assert not at.exception and len(at.get("image")) == 1
