"""Who may use the app: nobody asked on localhost; served to a network, an OIDC login or a shared token first."""
from __future__ import annotations

import hmac
import ipaddress
import os

import streamlit as st

SWITCH = "BRAINVQ_SERVE"  # BRAINVQ_SERVE=lab: served to a lab network, whatever the address says
TOKEN = "BRAINVQ_TOKEN"
SIGNED_IN_KEY = "brainvq_signed_in"  # in session_state: this browser session gave the right token
ROUTED_KEY = "brainvq_routed"  # in session_state: app.py's navigation has run in this session
REQUESTED_KEY = "brainvq_requested_page"  # a page asked for by URL before app.py's navigation ran
SETUP_HELP = (
    "This BrainVQ server is open to a network but has no login configured, so it shows nothing. "
    "Set a shared token (`BRAINVQ_TOKEN=... streamlit run app.py`, or `BRAINVQ_TOKEN = \"...\"` in "
    ".streamlit/secrets.toml), or an OIDC provider in an `[auth]` section of .streamlit/secrets.toml "
    "(see README, \"Serving to a lab network\").")


def is_loopback(address: str | None) -> bool:
    """Whether a server address listens on this machine only ('' and None mean every interface)."""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a network interface


def served_to_network(address: str | None, switch: str | None) -> bool:
    """Either sign is enough: the explicit switch, or a server address that is not a loopback one."""
    return (switch or "").strip().lower() == "lab" or not is_loopback(address)


def token_matches(given: str, expected: str) -> bool:
    """Compared in constant time, so the answer's timing says nothing about the token."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _secret(key: str):
    try:
        return st.secrets.get(key)
    except FileNotFoundError:  # no secrets.toml at all (StreamlitSecretNotFoundError is one)
        return None


def configured_token() -> str | None:
    """$BRAINVQ_TOKEN, else BRAINVQ_TOKEN in secrets.toml; an empty one counts as none."""
    token = os.environ.get(TOKEN) or _secret(TOKEN)
    return str(token) if token else None


def oidc_configured() -> bool:
    return bool(_secret("auth"))


def sign_in_page() -> None:
    """The one page a visitor sees before access: an OIDC login, a token field, or how to set one up."""
    st.title("BrainVQ")
    if oidc_configured():
        st.info("Log in to use BrainVQ.")
        st.button("Log in", on_click=st.login, type="primary")
        return
    token = configured_token()
    if token is None:
        st.error(SETUP_HELP)
        return
    given = st.text_input("Access token", type="password")
    if not given:
        st.info("Enter the access token of this BrainVQ server.")
    elif token_matches(given, token):
        st.session_state[SIGNED_IN_KEY] = True
        st.rerun()
    else:
        st.error("Wrong access token.")


def has_access() -> bool:
    if not served_to_network(st.get_option("server.address"), os.environ.get(SWITCH)):
        return True
    if oidc_configured():
        return bool(st.user.is_logged_in)
    return configured_token() is not None and bool(st.session_state.get(SIGNED_IN_KEY))


def require(page_file: str) -> None:
    """Stop a page here unless this visitor has access, and hand a page run outside app.py back to it.

    Each page calls it with its own `__file__`: on a fresh server, Streamlit runs a file of pages/ asked
    for by URL on its own, before app.py ever calls st.navigation (its pages-folder mode), so the gate in
    app.py alone could be walked around, and that first visitor would get the folder's file names as
    navigation. Such a run goes to app.py, which comes back to the page asked for (`requested_page`)."""
    if ROUTED_KEY not in st.session_state:
        st.session_state[REQUESTED_KEY] = f"pages/{os.path.basename(page_file)}"
        st.switch_page("app.py")
    if not has_access():
        sign_in_page()
        st.stop()


def requested_page() -> None:
    """Once this visitor has access, open the page a pages-folder run asked for (see `require`)."""
    if has_access() and REQUESTED_KEY in st.session_state:
        st.switch_page(st.session_state.pop(REQUESTED_KEY))


def gate(pages: list) -> list:
    """The pages this visitor may see: all of them, or only the sign-in page (navigation always runs,
    so no page file can be reached around the gate)."""
    st.session_state[ROUTED_KEY] = True
    if has_access():
        if oidc_configured() and served_to_network(st.get_option("server.address"),
                                                   os.environ.get(SWITCH)):
            st.sidebar.button("Log out", on_click=st.logout)
        return pages
    return [st.Page(sign_in_page, title="Sign in", icon=":material/lock:", default=True)]
