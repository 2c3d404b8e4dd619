"""Safe to serve, in a real browser: by default the app listens on 127.0.0.1 only; served to a lab network, no page shows anything before login."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import start_streamlit, stop_process

PAGE_PATHS = ["", "curves", "reconstruct", "codebook", "sample"]
PAGE_TITLES = ["Train", "Curves", "Reconstruct", "Codebook", "Sample"]


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at `port`, read from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.fixture
def served(tmp_path, chromium_path, browser):
    """Start the app with extra environment; yields (url, a fresh page) and stops it afterwards."""
    started = []

    def serve(env: dict):
        process, url = start_streamlit({"BRAINVQ_RUNS": str(tmp_path / "runs"), **env},
                                       tmp_path / f"streamlit{len(started)}.log")
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        started.append((process, context))
        page = context.new_page()
        page.set_default_timeout(60_000)
        return url, page

    yield serve
    for process, context in started:
        context.close()
        stop_process(process)


def test_by_default_the_app_listens_on_loopback_only(served):
    url, page = served({})
    port = int(url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and no tcp6 wildcard
    page.goto(url)
    page.get_by_role("heading", name="Train").wait_for()  # no login on this machine alone
    assert page.get_by_label("Access token").count() == 0


def test_served_to_a_network_without_a_login_configured_every_page_shows_nothing(served):
    url, page = served({"BRAINVQ_SERVE": "lab", "BRAINVQ_TOKEN": None})
    for path, title in zip(PAGE_PATHS, PAGE_TITLES):
        page.goto(f"{url}/{path}")
        page.get_by_text("no login is configured").wait_for()
        assert page.get_by_role("heading", name=title).count() == 0
        assert page.get_by_role("textbox").count() == 0


def test_served_to_a_network_only_the_right_token_opens_the_pages(served):
    url, page = served({"BRAINVQ_SERVE": "lab", "BRAINVQ_TOKEN": "lab-secret-42"})
    for path, title in zip(PAGE_PATHS, PAGE_TITLES):
        page.goto(f"{url}/{path}")
        page.get_by_label("Access token").wait_for()
        assert page.get_by_role("heading", name=title).count() == 0
    page.goto(url)
    page.get_by_label("Access token").fill("not-the-token")
    page.get_by_role("button", name="Enter").click()
    page.get_by_text("That token is not right").wait_for()
    assert page.get_by_role("heading", name="Train").count() == 0
    page.get_by_label("Access token").fill("lab-secret-42")
    page.get_by_role("button", name="Enter").click()
    page.get_by_role("heading", name="Train").wait_for()
