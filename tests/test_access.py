"""The access gate: nothing asked on localhost; served to a network, a token (or OIDC login) before any page, or a setup message."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui import access

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_addresses_are_this_machine_only(address):
    assert access.is_loopback(address)
    assert not access.served_to_network(address, None)


@pytest.mark.parametrize("address", [None, "", "0.0.0.0", "::", "192.168.1.20", "lab-server"])
def test_every_other_address_is_a_network(address):
    assert not access.is_loopback(address)
    assert access.served_to_network(address, None)


def test_the_switch_means_a_network_whatever_the_address():
    assert access.served_to_network("127.0.0.1", "lab")
    assert access.served_to_network("127.0.0.1", " LAB ")
    assert not access.served_to_network("127.0.0.1", "")


def test_token_matches_only_the_same_token():
    assert access.token_matches("s3cret-token", "s3cret-token")
    assert not access.token_matches("s3cret-toke", "s3cret-token")
    assert not access.token_matches("", "s3cret-token")


@pytest.fixture
def lab(app_env, monkeypatch):
    """The app served to a lab network (the switch), with no token unless a test sets one."""
    monkeypatch.setenv("BRAINVQ_SERVE", "lab")
    monkeypatch.delenv("BRAINVQ_TOKEN", raising=False)


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINVQ_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("BRAINVQ_SERVE", raising=False)


def run_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120).run()


def shows_train_page(at: AppTest) -> bool:
    return any(t.value == "Train" for t in at.title)


def test_locally_the_pages_show_without_any_prompt(app_env, monkeypatch):
    monkeypatch.delenv("BRAINVQ_TOKEN", raising=False)
    at = run_app()
    assert not at.exception
    assert shows_train_page(at)
    assert not any(t.label == "Access token" for t in at.text_input)


def test_served_without_a_login_configured_shows_only_how_to_set_one(lab):
    at = run_app()
    assert not at.exception
    assert not shows_train_page(at)
    assert any("no login configured" in e.value for e in at.error)
    assert not at.text_input  # no data-folder field, no token field: nothing to try


def test_a_wrong_token_is_refused_and_the_right_one_opens_the_pages(lab, monkeypatch):
    monkeypatch.setenv("BRAINVQ_TOKEN", "lab-token-123")
    at = run_app()
    assert not shows_train_page(at)
    field = next(t for t in at.text_input if t.label == "Access token")
    field.set_value("lab-token-12").run()
    assert any("Wrong access token" in e.value for e in at.error)
    assert not shows_train_page(at)
    next(t for t in at.text_input if t.label == "Access token").set_value("lab-token-123").run()
    assert not at.exception
    assert shows_train_page(at)
    at.run()  # remembered for this session: no second prompt
    assert shows_train_page(at)


def test_a_token_in_secrets_counts_too(lab):
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets["BRAINVQ_TOKEN"] = "from-secrets"
    at.run()
    assert not any("no login configured" in e.value for e in at.error)
    next(t for t in at.text_input if t.label == "Access token").set_value("from-secrets").run()
    assert shows_train_page(at)


def test_a_page_asked_for_by_path_still_gets_the_gate(lab):
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/codebook.py").run()
    assert not any(t.value == "Codebook" for t in at.title)
    assert any("no login configured" in e.value for e in at.error)
