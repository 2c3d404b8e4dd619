"""core.pipeline: the VQ-VAE -> prior chain runs the prior only when the VQ-VAE finished (the whole chain from the launcher is in test_launcher)."""
from __future__ import annotations

import json

import pytest

from core import atomic, pipeline


def run_pipeline(vqvae_flags: list, prior_flags: list) -> int:
    return pipeline.main(["--vqvae-args", json.dumps(vqvae_flags), "--prior-args", json.dumps(prior_flags)])


def test_the_chain_skips_the_prior_when_the_vqvae_fails_and_frees_its_name(tmp_path):
    vqvae_dir, prior_dir = tmp_path / "bad", tmp_path / "bad-prior"
    prior_dir.mkdir()
    (prior_dir / "launcher.json").write_text("{}")  # reserved by the launcher, as the Train page does
    code = run_pipeline(["--run-dir", str(vqvae_dir), "--data", str(tmp_path / "nowhere"), "--epochs", "1"],
                        ["--run-dir", str(prior_dir)])
    assert code != 0
    assert not prior_dir.exists()


def test_a_users_folder_as_the_prior_run_is_refused_before_any_training_and_left_whole(tmp_path, capsys):
    vqvae_dir, users = tmp_path / "vq", tmp_path / "thesis"
    users.mkdir()
    (users / "thesis.txt").write_text("precious")
    code = run_pipeline(["--run-dir", str(vqvae_dir), "--data", str(tmp_path / "nowhere")],
                        ["--run-dir", str(users)])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "thesis.txt" in errors[0]
    assert sorted(p.name for p in users.iterdir()) == ["thesis.txt"]
    assert (users / "thesis.txt").read_text() == "precious"
    assert not vqvae_dir.exists()  # refused before the VQ-VAE started


@pytest.mark.parametrize("flags", ["not json", "[]", "{}", '["--run-dir"]', '[1, 2]', '"--run-dir x"'])
def test_flags_that_are_not_a_json_list_with_a_run_dir_are_one_error_line(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipeline.main(["--vqvae-args", flags, "--prior-args", '["--run-dir", "p"]'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--vqvae-args" in err[0]


def test_a_new_prior_folder_is_made_for_its_console_log_and_the_prior_error_is_echoed(tmp_path, monkeypatch, capsys):
    """From a shell the prior folder need not exist (the launcher reserves it; a user need not)."""
    vqvae_dir, prior_dir = tmp_path / "vq", tmp_path / "runs" / "vq-prior"
    calls = []

    def fake_call(command, stdout=None, **kwargs):  # the two trainers, by what they leave behind
        if "-c" in command:  # the prior's flags, checked before the VQ-VAE starts
            return 0
        calls.append(command)
        if "vqvae" in command:
            vqvae_dir.mkdir()
            atomic.write_json(vqvae_dir / "status.json", {"state": "finished"})
            return 0
        stdout.write(b"training...\nerror: the prior could not start (a reason)\n")
        return 2

    monkeypatch.setattr(pipeline.subprocess, "call", fake_call)
    code = run_pipeline(["--run-dir", str(vqvae_dir)], ["--run-dir", str(prior_dir)])
    assert code == 2 and len(calls) == 2
    assert "error: the prior could not start" in (prior_dir / "console.log").read_text()
    assert capsys.readouterr().err.strip() == "error: the prior could not start (a reason)"


def test_a_users_empty_folder_as_the_prior_run_is_left_when_the_vqvae_fails(tmp_path):
    vqvae_dir, users = tmp_path / "bad", tmp_path / "mine"
    users.mkdir()  # made by the user (a mount point, say), not reserved by the launcher
    code = run_pipeline(["--run-dir", str(vqvae_dir), "--data", str(tmp_path / "nowhere"), "--epochs", "1"],
                        ["--run-dir", str(users)])
    assert code != 0
    assert users.is_dir() and list(users.iterdir()) == []


def test_the_priors_flags_are_checked_before_the_vqvae_starts(tmp_path, capfd):
    vqvae_dir, prior_dir = tmp_path / "vq", tmp_path / "vq-prior"
    code = run_pipeline(["--run-dir", str(vqvae_dir), "--data", str(tmp_path / "nowhere")],
                        ["--run-dir", str(prior_dir), "--filters", "-3"])
    assert code == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--filters" in errors[0]
    assert not vqvae_dir.exists() and not prior_dir.exists()  # nothing trained, nothing made
