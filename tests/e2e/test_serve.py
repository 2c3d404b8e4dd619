"""Serving safely, in a real browser: localhost only by default; served to a network, no page without a login or token."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO_ROOT, start_streamlit, stop_process

PAGE_PATHS = ["", "curves", "reconstruct", "codebook", "sample"]
PAGE_TITLES = ["Train", "Curves", "Reconstruct", "Codebook", "Sample"]


@pytest.fixture
def lab_server(chromium_path, e2e_paths, tmp_path):
    """Start `BRAINVQ_SERVE=lab streamlit run app.py` with the given token (None: no token)."""
    started = []

    def start(token):
        env = {"BRAINVQ_SERVE": "lab", "BRAINVQ_TOKEN": token, "BRAINVQ_RUNS": str(e2e_paths["runs"]),
               "BRAINVQ_CHECKPOINT": None if e2e_paths["uses_demo"] else str(e2e_paths["bundle"]),
               "BRAINVQ_DATA": None if e2e_paths["uses_demo"] else str(e2e_paths["train_data"])}
        process, url = start_streamlit(env, tmp_path / f"streamlit-{len(started)}.log")
        started.append(process)
        return url

    yield start
    for process in started:
        stop_process(process)


@pytest.fixture
def new_page(browser):
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)
        return page

    yield make
    for context in contexts:
        context.close()


def test_served_without_credentials_every_page_shows_only_the_setup_message(lab_server, new_page):
    url = lab_server(None)
    for path, title in zip(reversed(PAGE_PATHS), reversed(PAGE_TITLES)):  # a fresh server, first visit
        page = new_page()
        page.goto(f"{url}/{path}")
        page.get_by_text("no login configured").wait_for()
        page.wait_for_timeout(1500)  # time for a page that got through to draw
        assert page.get_by_role("heading", name=title).count() == 0, path
        assert page.get_by_label("Access token").count() == 0
        assert page.get_by_text("Data folder").count() == 0
        assert page.get_by_text("keras_png_slices").count() == 0


def test_served_with_a_token_refuses_a_wrong_one_and_opens_with_the_right_one(lab_server, new_page):
    url = lab_server("e2e-token-42")
    page = new_page()
    page.goto(f"{url}/codebook")  # the first visit to a fresh server asks for a page directly
    token = page.get_by_label("Access token")
    token.wait_for()
    page.wait_for_timeout(1500)
    assert page.get_by_role("heading", name="Codebook").count() == 0
    token.fill("e2e-token-4")
    token.press("Enter")
    page.get_by_text("Wrong access token").wait_for()
    assert page.get_by_role("heading", name="Codebook").count() == 0
    token.fill("e2e-token-42")
    token.press("Enter")
    page.get_by_role("heading", name="Codebook").wait_for()  # the page asked for, now shown
    page.get_by_label("Access token").wait_for(state="detached")  # the field goes once the token is right


def listening_addresses(port: int) -> set[str]:
    """The local addresses of LISTEN sockets on `port`, read from /proc/net/tcp and tcp6."""
    found = set()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"]:
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_by_default_the_server_listens_on_loopback_only(chromium_path, tmp_path):
    process, url = start_streamlit({"BRAINVQ_SERVE": None}, tmp_path / "streamlit.log")
    try:
        port = int(url.rsplit(":", 1)[1])
        # 127.0.0.1 as /proc writes it (little-endian hex); 0.0.0.0 would be 00000000, :: all zeros.
        assert listening_addresses(port) == {"0100007F"}
    finally:
        stop_process(process)
    assert (REPO_ROOT / ".streamlit" / "config.toml").exists()


def test_a_fresh_servers_first_visit_by_url_gets_the_apps_own_navigation(chromium_path, browser, e2e_paths, tmp_path):
    """Streamlit runs a pages/ file asked for by URL on its own until app.py has once called
    st.navigation: that first visitor must still get the app's five pages, not the folder's file names."""
    env = {"BRAINVQ_SERVE": None, "BRAINVQ_RUNS": str(e2e_paths["runs"]),
           "BRAINVQ_CHECKPOINT": None if e2e_paths["uses_demo"] else str(e2e_paths["bundle"]),
           "BRAINVQ_DATA": None if e2e_paths["uses_demo"] else str(e2e_paths["train_data"])}
    process, url = start_streamlit(env, tmp_path / "streamlit.log")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{url}/codebook")
        page.get_by_role("heading", name="Codebook").wait_for()
        page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')")
        links = page.get_by_test_id("stSidebarNavLink")
        assert [" ".join(t.split()[-1:]) for t in links.all_inner_texts()] == PAGE_TITLES
        assert page.url.endswith("/codebook")
        assert page.get_by_test_id("stException").count() == 0
    finally:
        context.close()
        stop_process(process)
