"""ui.access: on 127.0.0.1 nobody logs in; served to a network, no page shows anything until the visitor does."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers_bundle import make_tiny_bundle

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app_env(tmp_path, oasis_tree, monkeypatch):
    monkeypatch.setenv("BRAINVQ_CHECKPOINT", str(make_tiny_bundle(tmp_path / "tiny")))
    monkeypatch.setenv("BRAINVQ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("BRAINVQ_DATA", str(oasis_tree))
    monkeypatch.delenv("BRAINVQ_SERVE", raising=False)
    monkeypatch.delenv("BRAINVQ_TOKEN", raising=False)


def run() -> AppTest:
    """The app as a browser opens it (AppTest.switch_page would run a page file around app.py's gate;
    tests/e2e/test_serve.py opens every page's URL in a real browser)."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    return at


def shows_the_page(at: AppTest) -> bool:
    return any(t.value in ("Train", "Curves", "Reconstruct", "Codebook", "Sample") for t in at.title)


def test_locally_every_page_shows_without_a_login(app_env):
    at = run()
    assert shows_the_page(at) and not at.exception
    assert not [t for t in at.text_input if t.label == "Access token"]


def test_served_to_a_network_without_a_login_configured_nothing_is_shown(app_env, monkeypatch):
    monkeypatch.setenv("BRAINVQ_SERVE", "lab")
    at = run()
    assert not shows_the_page(at) and not at.exception
    assert any("no login is configured" in e.value for e in at.error)
    assert not at.text_input and not at.number_input and not at.dataframe


def test_served_to_a_network_with_a_token_the_visitor_is_asked_for_it_first(app_env, monkeypatch):
    # The wrong and right token are tried in a real browser (tests/e2e/test_serve.py): AppTest reruns
    # the page file alone after a widget changes, around app.py's gate.
    monkeypatch.setenv("BRAINVQ_SERVE", "lab")
    monkeypatch.setenv("BRAINVQ_TOKEN", "lab-secret-42")
    at = run()
    assert not shows_the_page(at) and not at.exception
    assert [t.label for t in at.text_input] == ["Access token"]


@pytest.mark.parametrize("address, networked", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                                ("127.0.0.2", False), ("0.0.0.0", True), ("", True),
                                                ("192.168.1.5", True), ("::", True), ("lab-host", True)])
def test_only_a_loopback_address_counts_as_this_machine_alone(monkeypatch, address, networked):
    from ui import access

    monkeypatch.delenv("BRAINVQ_SERVE", raising=False)
    monkeypatch.setattr(access.st, "get_option", lambda key: address)
    assert access.served_to_network() is networked
    monkeypatch.setenv("BRAINVQ_SERVE", "lab")
    assert access.served_to_network() is True
