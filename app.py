"""Transfer Lab: the frame around the pages (navigation and the sidebar's status)."""

from transfer_core import quiet

quiet.install()  # before a page imports TensorFlow: no start-up chatter in the server's log

import streamlit as st  # noqa: E402

from app_pages import _ui as ui  # noqa: E402

st.set_page_config(page_title="Transfer Lab", page_icon=":material/science:", layout="wide")

navigation = st.navigation([
    st.Page(ui.PAGES["dataset"], title="Dataset", icon=":material/photo_library:", default=True),
    st.Page(ui.PAGES["train"], title="Train", icon=":material/model_training:"),
    st.Page(ui.PAGES["curves"], title="Curves", icon=":material/show_chart:"),
    st.Page(ui.PAGES["evaluate"], title="Evaluate", icon=":material/fact_check:"),
    st.Page(ui.PAGES["predict"], title="Predict", icon=":material/image_search:"),
    st.Page(ui.PAGES["compare"], title="Compare", icon=":material/leaderboard:"),
    st.Page(ui.PAGES["export"], title="Export", icon=":material/output:"),
])
ui.sidebar_status()
navigation.run()
