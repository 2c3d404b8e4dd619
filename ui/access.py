"""Who may use the dashboard: nobody needs to log in on 127.0.0.1; served to a network, every visitor logs in first."""
from __future__ import annotations

import hmac
import ipaddress
import os

import streamlit as st

SERVE_SWITCH = "BRAINVQ_SERVE"  # "lab": served to a network on purpose (scripts/serve_lab.sh)
TOKEN_VARIABLE = "BRAINVQ_TOKEN"  # the shared token, when no OIDC provider is configured
TOKEN_SECRET = "brainvq_token"  # the same, from .streamlit/secrets.toml
_PASSED = "access_granted"


def served_to_network() -> bool:
    """True unless the server listens on a loopback address only (and the lab switch is off)."""
    if os.environ.get(SERVE_SWITCH, "").strip().lower() == "lab":
        return True
    address = (st.get_option("server.address") or "").strip()
    if address == "localhost":
        return False
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return True  # empty (every interface) or a host name: assume others can reach it


def _secret(name: str):
    try:
        return st.secrets.get(name)
    except Exception:  # no secrets.toml at all: Streamlit raises rather than returning nothing
        return None


def _shared_token() -> str | None:
    token = os.environ.get(TOKEN_VARIABLE) or _secret(TOKEN_SECRET)
    return str(token) if token else None


def require_login() -> None:
    """Stop the page until the visitor is let in; returns at once when the app serves this machine only."""
    if not served_to_network() or st.session_state.get(_PASSED):
        return
    if _secret("auth"):  # an OIDC provider in .streamlit/secrets.toml: Streamlit's own login
        if st.user.is_logged_in:
            st.sidebar.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
            st.sidebar.button("Log out", on_click=st.logout)
            return
        st.title("BrainVQ")
        st.info("This dashboard is served to a network: log in to use it.")
        st.button("Log in", on_click=st.login, type="primary")
        st.stop()
    token = _shared_token()
    st.title("BrainVQ")
    if token is None:
        st.error("This dashboard is served to a network but no login is configured, so it shows "
                 f"nothing. Set {TOKEN_VARIABLE} (a shared token) or an [auth] OIDC provider in "
                 ".streamlit/secrets.toml, then restart it (README: Serving to a lab network).")
        st.stop()
    with st.form("login"):
        given = st.text_input("Access token", type="password")
        submitted = st.form_submit_button("Enter", type="primary")
    if submitted:
        if hmac.compare_digest(given.encode(), token.encode()):
            st.session_state[_PASSED] = True
            st.rerun()
        st.error("That token is not right.")
    st.stop()
